"""The fixed, seeded benchmark workload: simulated order-fulfilment traffic, cached on disk.

The simulator is exact but slow (a few ms per instance, for the ground truth it also computes), so
the records of a config are generated once and kept in `bench/.cache/` (gitignored) under a hash
of the config: every later run, and every variant process of a run, loads the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

from connectors.simulator import Faults, SimulatorConfig, simulate
from dataflows.settings import BUNDLED_DEFINITIONS
from schemas.event import RawRecord
from state.catalog import load_catalog

CACHE = Path(__file__).resolve().parent / ".cache"
Partitions = list[list[RawRecord]]
# Per-instance probabilities, chosen so that of all events (about 5 per order) roughly 5 % are
# duplicates, 5 % out of order within the lateness and 1 % dead letters; outcome mix, timeouts
# (12 % of instances) and the other habits are the simulator's realistic defaults.
FAULTS = Faults(duplicate=0.25, out_of_order=0.25, malformed_json=0.02, payload_invalid=0.015,
                unknown_type=0.015, future_stamped=0.0, late_after_timeout=0.03, after_end=0.02)


def workload_config(instances: int, seed: int = 7) -> SimulatorConfig:
    """The benchmark's simulation of `instances` orders over 4 partitions (the Kafka topic's)."""
    return SimulatorConfig(seed=seed, instances=instances, partitions=4,
                           workflows=("order_fulfilment",), faults=FAULTS)


CACHE_FORMAT = 2  # raise when the pickled `RawRecord` changes shape (2: no longer frozen)


def cache_path(config: SimulatorConfig) -> Path:
    digest = hashlib.sha256(f"{CACHE_FORMAT}{config.model_dump_json()}".encode()).hexdigest()[:16]
    return CACHE / f"workload-{config.instances}-{digest}.pickle"


def load_workload(config: SimulatorConfig) -> Partitions:
    """The records of `config`, from the cache or simulated (then cached, written atomically)."""
    path = cache_path(config)
    if path.exists():
        with path.open("rb") as f:
            partitions: Partitions = pickle.load(f)
        return partitions
    partitions = simulate(config, load_catalog(BUNDLED_DEFINITIONS)).partitions
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        pickle.dump(partitions, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return partitions

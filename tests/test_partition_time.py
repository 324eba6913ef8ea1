"""Event time belongs to the input partition: whether an event is late, and so every ledger
disposition, correction and outcome, is the same however many shards (`--buckets`) a partition is
split into and however many workers run them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import TestingSink, cluster_main, run_main

from connectors.simulator import SimulatorSource, simulate
from connectors.simulator.truth import Simulation
from dataflows.pipeline import build_flow
from dataflows.settings import Settings
from dataflows.sources import simulator_config
from schemas.event import RawRecord
from schemas.payloads.registry import PayloadRegistry
from state.admission import Admission
from state.catalog import load_catalog
from state.output import Out
from state.shard import Shard, ShardConfig
from state.sharding import shard_of
from tests.engine_kit import ORDER_V1, ce, write_catalog

SEED = {"sim_instances": 800, "sim_seed": 31, "out": Path("unused")}
VERDICT_TABLES = ("ledger", "corrections", "outcomes")

Verdicts = dict[str, list[tuple[tuple[str, str], ...]]]


@pytest.fixture(scope="module")
def simulation() -> Simulation:
    settings = Settings.from_flags(**SEED)
    return simulate(simulator_config(settings), load_catalog(settings.definitions))


def verdicts(simulation: Simulation, buckets: int, workers: int) -> Verdicts:
    """The ledger, corrections and outcomes of one run, each row without the shard it ran in."""
    rows: list[tuple[str, dict[str, Any]]] = []
    flow = build_flow(Settings.from_flags(**SEED, buckets=buckets),
                      source=SimulatorSource(simulation.partitions), sink=TestingSink(rows))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    tables: Verdicts = {table: [] for table in VERDICT_TABLES}
    for table, row in rows:
        if table in tables:
            tables[table].append(tuple(sorted((k, repr(v)) for k, v in row.items()
                                              if k != "shard")))
    return {table: sorted(found) for table, found in tables.items()}


@pytest.fixture(scope="module")
def one_bucket(simulation: Simulation) -> Verdicts:
    return verdicts(simulation, buckets=1, workers=1)


def test_the_stream_has_late_events_and_corrections(one_bucket: Verdicts) -> None:
    """The comparison below means something: the stream makes events late and verdicts change."""
    dispositions = Counter(dict(row)["disposition"] for row in one_bucket["ledger"])
    assert dispositions["'late'"] >= 10, dispositions
    assert len(one_bucket["corrections"]) >= 5
    assert len(one_bucket["outcomes"]) == 800


@pytest.mark.parametrize(("buckets", "workers"), [(16, 1), (64, 1), (1, 2), (16, 2), (64, 2)])
def test_same_verdicts_at_any_bucket_and_worker_count(simulation: Simulation,
                                                      one_bucket: Verdicts, buckets: int,
                                                      workers: int) -> None:
    """`--buckets 16` and `64`, with 1 and 2 workers, give the 1-bucket run's rows exactly."""
    assert verdicts(simulation, buckets, workers) == one_bucket


def test_a_quiet_shard_times_out_on_its_partitions_time(tmp_path: Path) -> None:
    """An order alone in its shard times out once other traffic in the same partition moves event
    time past its deadline: admission ticks every shard of the partition, no drain needed."""
    catalog = write_catalog(tmp_path, ORDER_V1)
    rules = catalog.decode_rules(PayloadRegistry())
    admission = Admission(rules, buckets=2)
    quiet, busy = (next(f"o{n}" for n in range(100) if shard_of(0, f"o{n}".encode(), 2) == name)
                   for name in ("0/0", "0/1"))
    shards = {name: Shard(name, catalog, rules, ShardConfig(allowed_lateness_ms=60_000))
              for name in ("0/0", "0/1")}
    out = Out("test")
    values = [(quiet, ce("e1", "OrderPlaced", 0, quiet)), (busy, ce("e2", "OrderPlaced", 40, busy))]
    for offset, (order, value) in enumerate(values):
        record = RawRecord("test", 0, offset, value, order.encode())
        for name, admitted in admission.admit([record]).items():
            for item in admitted:
                shards[name].receive(item, out)
                shards[name].release(out)
    outcomes = [row for table, row in out.rows if table == "outcomes"]
    assert [(row["instance_id"], row["outcome"]) for row in outcomes] == [(quiet, "timed_out")]

"""Memory per open instance: hold a million open orders in the shards, then snapshot and restore.

Each instance gets one `OrderPlaced` and nothing else, all within 8 minutes of event time, so no
deadline fires and every instance stays open with its two armed deadlines queued. Runs in its own
process (`python -m bench.memory`) so the resident-set growth is the shards' alone. The snapshot
size is that of the pickled `Shard.snapshot()` data, which is what Bytewax stores per shard; the
restore time includes unpickling, as a resumed dataflow does.
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from connectors.simulator.wire import rfc3339
from dataflows.settings import BUNDLED_DEFINITIONS
from schemas.event import RawRecord
from schemas.payloads.bundled import bundled_registry
from state.admission import Admission
from state.catalog import load_catalog
from state.output import Discard
from state.shard import Shard, ShardConfig
from state.sharding import shard_of

OPEN_INSTANCES = 1_000_000
PARTITIONS, BUCKETS = 4, 16
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
TEMPLATE = ('{{"specversion":"1.0","id":"placed-{n}","source":"/bench","type":"OrderPlaced",'
            '"time":"{time}","dataversion":"2","data":{{"order_id":"ord-{n:07d}",'
            '"customer_id":"cus-{n:07d}","total_cents":2599,"currency":"EUR",'
            '"items":[{{"sku":"SKU-1","quantity":1}}]}}}}')


def rss_kib() -> int:
    """Resident set size now (not the peak), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def hold_open(instances: int) -> dict[str, Any]:
    """Open `instances` orders in the shards; measure memory, snapshot size and restore time."""
    catalog = load_catalog(BUNDLED_DEFINITIONS)
    rules = catalog.decode_rules(bundled_registry())
    config = ShardConfig()
    shards: dict[str, Shard] = {}
    admissions = [Admission(rules, BUCKETS) for _ in range(PARTITIONS)]
    gc.collect()
    before = rss_kib()
    for n in range(instances):
        key = f"ord-{n:07d}".encode()
        partition = n % PARTITIONS
        name = shard_of(partition, key, BUCKETS)
        shard = shards.get(name) or shards.setdefault(name, Shard(name, catalog, rules, config))
        value = TEMPLATE.format(n=n, time=rfc3339(T0 + n // 2)).encode()
        out = Discard(name)
        for admitted in admissions[partition].admit([RawRecord("bench", partition, n, value,
                                                               key)])[name]:
            shard.receive(admitted, out)
        shard.release(out)
    for shard in shards.values():  # apply the events still held back for lateness
        shard.advance_to(shard.clock.frontier + 1, Discard(shard.name))
    gc.collect()
    held = rss_kib() - before
    opened = sum(s.open_instances for s in shards.values())
    snapshots = [pickle.dumps(s.snapshot(), protocol=pickle.HIGHEST_PROTOCOL)
                 for s in shards.values()]
    snapshot_bytes = sum(len(s) for s in snapshots)
    shards.clear()
    gc.collect()
    started = time.perf_counter()
    restored = [Shard.restore(pickle.loads(s), catalog, rules, config) for s in snapshots]
    restore_s = time.perf_counter() - started
    assert sum(s.open_instances for s in restored) == opened
    return {"open_instances": opened, "rss_growth_mib": held / 1024,
            "rss_bytes_per_instance": held * 1024 / opened,
            "snapshot_mib": snapshot_bytes / 2**20,
            "snapshot_bytes_per_instance": snapshot_bytes / opened,
            "restore_seconds": restore_s}


def memory_measurement(instances: int, repeats: int, scratch: Path) -> dict[str, Any]:
    """`hold_open(OPEN_INSTANCES)` once, in a fresh process (the workload does not apply)."""
    done = subprocess.run([sys.executable, "-m", "bench.memory", str(OPEN_INSTANCES)],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                          check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("instances", type=int, nargs="?", default=OPEN_INSTANCES)
    print(json.dumps(hold_open(parser.parse_args().instances)))

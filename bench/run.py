"""`make bench` / `flowkeeper bench`: run every variant side by side, print the table, save JSON.

    python -m bench.run                    # full: 100k instances, 3 repeats, every variant
    python -m bench.run --quick            # 1k instances, 1 repeat, no Kafka/memory/peer
    python -m bench.run --variants baseline,pipeline --repeats 5

The machine is shared and noisy, so each repeat runs every variant once, one after the other
(interleaved), each in a fresh process; ratios are taken within a repeat and then the median.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.report import render, summarise
from bench.spawn import ROOT, measure
from bench.variants import VARIANTS
from bench.workload import load_workload, workload_config

RESULTS = ROOT / "bench" / "results"
THROUGHPUT = [*(v for v in VARIANTS if not v.startswith("kafka")), "pipeline_2proc"]
QUICK_INSTANCES = 1_000


def extras() -> dict[str, Callable[[int, int, Path], dict[str, Any]]]:
    """Measurements with their own shape (memory, Kafka, latency, the peer, whole `run` commands),
    run once each."""
    from bench.cli_bench import cli_measurements
    from bench.kafka_bench import kafka_measurements
    from bench.memory import memory_measurement

    return {"memory": memory_measurement, "kafka": kafka_measurements, "cli": cli_measurements}


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine()}


def run(instances: int, repeats: int, variants: list[str],
        extra_names: list[str]) -> dict[str, Any]:
    """Every repeat runs each variant once, interleaved; then the extras once each."""
    load_workload(workload_config(instances))  # generate (or check) the cache before timing
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="flowkeeper-bench-") as tmp:
        for repeat in range(repeats):
            for variant in variants:
                scratch = Path(tmp) / f"{variant}-{repeat}"
                scratch.mkdir()
                result = measure(variant, instances, scratch)
                runs.append({**result, "repeat": repeat})
                rate = result["records"] / result["seconds"]
                print(f"  {variant:<20} repeat {repeat}: {rate:>9,.0f} records/s",
                      file=sys.stderr, flush=True)
                shutil.rmtree(scratch, ignore_errors=True)
        found = extras()
        measured = {}
        for name in extra_names:
            print(f"  {name} ...", file=sys.stderr, flush=True)
            measured[name] = found[name](instances, repeats, Path(tmp))
    return {"started": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
            "instances": instances, "repeats": repeats, "runs": runs,
            "summary": summarise(runs), "extras": measured}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=100_000,
                        help="workflow instances (default 100,000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every variant (default 3)")
    parser.add_argument("--variants", default="", help="comma-separated subset of: "
                        + ", ".join([*THROUGHPUT, "memory", "kafka", "cli"]))
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_INSTANCES:,} instances, 1 repeat, throughput variants only")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the JSON result")
    args = parser.parse_args(argv)
    chosen = [v for v in args.variants.split(",") if v] or [*THROUGHPUT, *extras()]
    if args.quick:
        args.instances, args.repeats = QUICK_INSTANCES, 1
        chosen = [v for v in chosen if v in THROUGHPUT]
    unknown = set(chosen) - {*THROUGHPUT, *extras()}
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}")
    started = time.monotonic()
    result = run(args.instances, args.repeats, [v for v in chosen if v in THROUGHPUT],
                 [v for v in chosen if v not in THROUGHPUT])
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, path)
    print(render(result))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One variant in a fresh process: `python -m bench.measure VARIANT --instances N --scratch DIR`.

A process per measurement keeps variants from sharing heap, caches or garbage-collector state,
and gives each its own peak RSS. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from bench.variants import VARIANTS, pipeline_2proc
from bench.workload import load_workload, workload_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.measure")
    parser.add_argument("variant", choices=[*sorted(VARIANTS), "pipeline_2proc"])
    parser.add_argument("--instances", type=int, required=True)
    parser.add_argument("--scratch", type=Path, required=True, help="an empty folder for outputs")
    parser.add_argument("--process", type=int, default=0, help="pipeline_2proc: this process (-i)")
    parser.add_argument("--addresses", default="", help="pipeline_2proc: host:port,... (-a)")
    args = parser.parse_args(argv)
    partitions = load_workload(workload_config(args.instances))
    if args.variant == "pipeline_2proc":
        measured = pipeline_2proc(partitions, args.scratch, args.process, args.addresses.split(","))
    else:
        measured = VARIANTS[args.variant](partitions, args.scratch)
    print(json.dumps({
        "variant": args.variant, "records": measured.records, "seconds": measured.seconds,
        "rows": measured.rows, "ended_at": time.time(),
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `bench` command: runs the benchmark suite in `bench/` (a checkout's folder, not
installed)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from dataflows.settings import REPO_ROOT
from schemas.errors import FlowkeeperError

Handler = Callable[[argparse.Namespace], int]


def add_bench(sub: Any) -> Handler:
    bench = sub.add_parser("bench", help="measure throughput, latency and memory (bench/)",
                           description="Run the benchmark variants side by side on a seeded "
                           "workload, print the table and write it to bench/results/.")
    bench.add_argument("--instances", type=int, help="workflow instances (default 100,000)")
    bench.add_argument("--repeats", type=int, help="runs of every variant (default 3)")
    bench.add_argument("--variants", help="comma-separated subset (see `python -m bench.run -h`)")
    bench.add_argument("--quick", action="store_true",
                       help="small workload, 1 repeat (a smoke test)")
    return cmd_bench


def cmd_bench(args: argparse.Namespace) -> int:
    """Run `python -m bench.run` from the checkout, with the flags given."""
    if not (REPO_ROOT / "bench" / "run.py").exists():
        raise FlowkeeperError(f"no bench/ folder in {REPO_ROOT}: run the benchmark from a checkout")
    flags = [f"--{name}={value}" for name in ("instances", "repeats", "variants")
             if (value := getattr(args, name)) is not None]
    flags += ["--quick"] if args.quick else []
    return subprocess.run([sys.executable, "-m", "bench.run", *flags], cwd=REPO_ROOT).returncode

"""Running one variant in fresh process(es) (`python -m bench.measure`) and reading its result:
used by `bench.run` and the Kafka measurements alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def measure(variant: str, instances: int, scratch: Path,
            env: dict[str, str] | None = None) -> dict[str, Any]:
    """One variant in fresh process(es); the 2-process variant spans both processes' runs.
    `env` adds environment variables (the Kafka variants' `FLOWKEEPER_*` settings)."""
    if variant != "pipeline_2proc":
        return _child(variant, instances, scratch, [], env)[0]
    from tests.kafka_broker import free_port

    addresses = ",".join(f"127.0.0.1:{free_port()}" for _ in range(2))
    results = _child(variant, instances, scratch,
                     [["--process", str(i), "--addresses", addresses] for i in range(2)], env)
    started = min(r["ended_at"] - r["seconds"] for r in results)
    ended = max(r["ended_at"] for r in results)
    return {**results[0], "seconds": ended - started, "rows": sum(r["rows"] for r in results),
            "peak_rss_kib": sum(r["peak_rss_kib"] for r in results)}


def _child(variant: str, instances: int, scratch: Path, each: list[list[str]],
           env: dict[str, str] | None) -> list[dict[str, Any]]:
    base = [sys.executable, "-m", "bench.measure", variant, "--instances", str(instances),
            "--scratch", str(scratch)]
    procs = [subprocess.Popen([*base, *extra], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, **(env or {})})
             for extra in each or [[]]]
    results = []
    for proc in procs:
        stdout, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"variant {variant!r} failed (exit {proc.returncode})")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results

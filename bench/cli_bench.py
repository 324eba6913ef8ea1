"""What a user sees on the command line: `flowkeeper run --source file` on the bench workload
written as one JSON Lines file, timed as a whole command with `--processes 1` and `--processes 2`
(start-up, the dataflow and the DuckDB load it waits for), interleaved `repeats` times.

The in-process variants time the dataflow alone; this one answers the question a user asks of
`--processes`: does the second core make my run finish sooner?
"""

from __future__ import annotations

import heapq
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.spawn import ROOT
from bench.workload import load_workload, workload_config

PROCESSES = (1, 2)
FILE_PARTITIONS = 4  # the Kafka topic's partitions: both process counts split the same work


def write_events(instances: int, path: Path) -> int:
    """The workload's records as a JSON Lines file in arrival order (as a relay would export
    it); records a line cannot carry (binary-mode headers, a value with a newline) are left out.
    Returns the lines written."""
    partitions = load_workload(workload_config(instances))
    lines = 0
    with path.open("wb") as f:
        for record in heapq.merge(*partitions, key=lambda r: r.arrived_ms):
            if record.headers or b"\n" in record.value or not record.value.strip():
                continue
            f.write(record.value + b"\n")
            lines += 1
    return lines


def cli_measurements(instances: int, repeats: int, scratch: Path) -> dict[str, Any]:
    """Records/s of `flowkeeper run --source file --processes N` for N in `PROCESSES`, as the
    median over `repeats`, and their ratio within each repeat."""
    events = scratch / "events.jsonl"
    lines = write_events(instances, events)
    rates: dict[int, list[float]] = {n: [] for n in PROCESSES}
    for repeat in range(repeats):
        for processes in PROCESSES:
            out = scratch / f"cli-{processes}-{repeat}"
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "dataflows.cli", "run", "--source", "file", str(events),
                 "--file-partitions", str(FILE_PARTITIONS), "--processes", str(processes),
                 "--out", str(out)],
                cwd=ROOT, capture_output=True, text=True,
                env={k: v for k, v in os.environ.items() if not k.startswith("FLOWKEEPER_")})
            seconds = time.perf_counter() - started
            if done.returncode != 0:
                return {"cli": f"skipped: run --processes {processes} failed: "
                               f"{done.stderr[-300:]}"}
            rates[processes].append(lines / seconds)
            print(f"  cli --processes {processes} repeat {repeat}: {lines / seconds:>9,.0f} "
                  "records/s", file=sys.stderr, flush=True)
            shutil.rmtree(out, ignore_errors=True)
    ratios = [two / one for one, two in zip(rates[1], rates[2], strict=True)]
    return {"records": lines,
            **{f"processes_{n}_per_s_median": statistics.median(rates[n]) for n in PROCESSES},
            "processes_2_vs_1": statistics.median(ratios),
            "processes_2_vs_1_per_repeat": ", ".join(f"{r:.2f}" for r in ratios)}

"""Replay benchmark: write a large synthetic archive, replay it, report events/s and peak RSS.

    python tests/replay_benchmark.py generate DIR --events 1000000
    python tests/replay_benchmark.py source DIR     # the archive source alone: read every record
    python tests/replay_benchmark.py flow DIR       # the whole dataflow, Parquet into DIR/out

Each step runs in its own process so the peak RSS printed (`ru_maxrss`) is the replay's alone.
The events are case-tracking cases of 10 activities a minute apart, a case starting every 2 s of
event time, 4 input partitions; cases close 5 minutes after their last event and are evicted, and
their tombstones expire after a day of event time, so from the second day on the dataflow's state
stays flat (a million events span 2.3 days).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import pyarrow as pa

from connectors.archive_source import ArchiveSource
from connectors.parquet_sink import write_atomically
from schemas.tables import ARCHIVE

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
PARTITIONS, STEPS, FILE_ROWS = 4, 10, 50_000
CASE_GAP_MS, STEP_MS, DAY_MS = 2_000, 60_000, 86_400_000
DEFINITION = """workflow: bench
mode: case_tracking
version: 1
events: any
close_after_idle: 5m
retention: 1m
rules:
  - {within: 5m, from: step0, to: step9}
"""


def generate(folder: Path, events: int) -> None:
    """`events` records in `folder/archive` (the pipeline's layout) and `folder/definition.yaml`.

    Case c starts at c * CASE_GAP_MS and takes one step every STEP_MS, so walking CASE_GAP_MS
    slots yields every event in time order without sorting a million tuples.
    """
    cases, lag = events // STEPS, STEP_MS // CASE_GAP_MS
    writers = [_PartitionWriter(folder / "archive", p) for p in range(PARTITIONS)]
    for slot in range(cases + (STEPS - 1) * lag):
        ms = T0 + slot * CASE_GAP_MS
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
        for step in range(STEPS):
            case = slot - step * lag
            if 0 <= case < cases:
                writers[case % PARTITIONS].add(case, step, stamp, ms)
    for writer in writers:
        writer.flush()
    (folder / "definition.yaml").write_text(DEFINITION)


_VALUE = ('{"specversion":"1.0","id":"c%d-%d","source":"bench","type":"step%d","subject":"case-%d",'
          '"time":"%s","data":{"resource":"r%d","amount":%d}}')


class _PartitionWriter:
    """Buffers one partition's rows as columns; writes files of `FILE_ROWS` as the sink would."""

    def __init__(self, archive: Path, partition: int) -> None:
        self.archive, self.partition, self.offset, self.seq = archive, partition, 0, 0
        self.keys: list[bytes] = []
        self.values: list[bytes] = []
        self.arrivals: list[int] = []

    def add(self, case: int, step: int, stamp: str, ms: int) -> None:
        if self.arrivals and ms // DAY_MS != self.arrivals[0] // DAY_MS:
            self.flush()  # a file per date folder, as the sink writes them
        self.keys.append(b"case-%d" % case)
        value = _VALUE % (case, step, step, case, stamp, case % 17, case % 1000)
        self.values.append(value.encode())
        self.arrivals.append(ms)
        if len(self.keys) == FILE_ROWS:
            self.flush()

    def flush(self) -> None:
        rows, first = len(self.keys), self.offset
        if not rows:
            return
        offsets = range(first, first + rows)
        table = pa.table({
            "row_id": [f"bench/{self.partition}/{o}" for o in offsets],
            "source": ["bench"] * rows, "partition": [self.partition] * rows,
            "offset": list(offsets), "key": self.keys, "value": self.values,
            "headers": [[]] * rows, "arrived_at": self.arrivals, "error": [None] * rows,
        }, schema=ARCHIVE)
        day = time.strftime("%Y-%m-%d", time.gmtime(self.arrivals[0] // 1000))
        name = f"part-w{self.partition:03d}-{self.seq:06d}.parquet"
        folder = self.archive / f"date={day}" / f"partition={self.partition}"
        write_atomically([(table, folder / name)])
        self.offset, self.seq = first + rows, self.seq + 1
        self.keys, self.values, self.arrivals = [], [], []


def replay_source(folder: Path) -> int:
    """Read every record of every partition through the replay source, as the dataflow would."""
    source, count = ArchiveSource(folder), 0
    for part in source.list_parts():
        partition = source.build_part("input", part, None)
        while True:
            try:
                count += len(list(partition.next_batch()))
            except StopIteration:
                break
    return count


def replay_flow(folder: Path) -> int:
    """The whole dataflow on the archive, Parquet outputs into `folder/out`."""
    from bytewax.run import cli_main

    from dataflows.pipeline import build_flow
    from dataflows.settings import Settings
    from runtime.progress import PROGRESS

    settings = Settings.from_flags(source="archive", archive_path=folder, out=folder / "out",
                        definitions=folder / "definition.yaml", duckdb=False, archive=False)
    cli_main(build_flow(settings), workers_per_process=1)
    return PROGRESS.records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["generate", "source", "flow"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    started = time.monotonic()
    if args.step == "generate":
        generate(args.folder, args.events)
        seconds = round(time.monotonic() - started, 1)
        print(json.dumps({"generated": args.events, "seconds": seconds}))
        return
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    count = replay_source(args.folder) if args.step == "source" else replay_flow(args.folder)
    seconds = time.monotonic() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"step": args.step, "events": count, "seconds": round(seconds, 1),
                      "events_per_s": round(count / seconds), "peak_rss_mb": round(peak_mb),
                      "baseline_rss_mb": round(baseline_mb)}))


if __name__ == "__main__":
    main()

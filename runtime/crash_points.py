"""Fault injection for the crash tests, the one interface production code calls for it:
`FLOWKEEPER_CRASH_AFTER=name:N` kills this process with SIGKILL the N-th time execution passes
`crash_point(name)`. The variable is read once, when this module is imported; without it
`crash_point` is a function that returns at once (one call, nothing read).

The points: `parquet_after_rename` (a Parquet file committed, its offsets not yet snapshotted),
`duckdb_load_in_transaction` (the DuckDB loader inserted a pass's rows and file records, not yet
committed), `duckdb_after_commit` (a load committed) and `shard_snapshot` (a shard's state taken,
the epoch not yet written). Random kills almost never land in those instants, which is where
exactly-once sinks break; these hooks put the kill exactly there (`tests/test_recovery.py`).
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable

CRASH_VARIABLE = "FLOWKEEPER_CRASH_AFTER"


def _off(name: str) -> None:
    """No fault injection asked for."""


def _armed(target: str, count: int) -> Callable[[str], None]:
    passed: Counter[str] = Counter()

    def crash_point(name: str) -> None:
        """Die here the `count`-th time (a real SIGKILL: no cleanup, no flush)."""
        if name != target:
            return
        passed[name] += 1
        if passed[name] >= count:
            os.kill(os.getpid(), signal.SIGKILL)

    return crash_point


def _from_environment() -> Callable[[str], None]:
    wanted = os.environ.get(CRASH_VARIABLE)
    if not wanted:
        return _off
    target, _, count = wanted.partition(":")
    return _armed(target, int(count or 1))


crash_point = _from_environment()

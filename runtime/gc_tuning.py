"""Garbage-collector settings for a long-running dataflow process.

The engine keeps many small long-lived objects (instances, buffered events, seen event ids) and
allocates several short-lived ones per record (rows, facts). With CPython's default thresholds
(700, 10, 10) the collector walks the young generation every 700 allocations: on the benchmark
workload that was 15-20 % of the run, for garbage that is almost all freed by reference counting
anyway (rows and facts hold no cycles). A higher first threshold keeps cycle collection, only
rarer; `gc.freeze` moves what exists at start-up (modules, definitions) out of every later scan.
They are unfrozen at exit, so the interpreter's last collection still frees them: otherwise
nanobind-built extensions (DuckDB) print dozens of "leaked instance" lines after every run.
"""

from __future__ import annotations

import atexit
import gc

THRESHOLDS = (100_000, 50, 100)


def tune_gc() -> None:
    """Apply the dataflow's collector settings to this process (idempotent)."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    atexit.unregister(gc.unfreeze)
    atexit.register(gc.unfreeze)

"""Keep every record on the worker that read it: which worker runs this thread, and a count of
records the stateful step handled on another worker than the one that read them.

Bytewax tells a source or sink which worker builds it, but not a `flat_map_batch`. So an empty
input step (`probe_workers`) notes `(worker_index, worker_count)` per thread when each worker
builds the dataflow, which is before any batch flows; steps running later on that thread (every
Bytewax worker is one OS thread) look it up with `this_worker`. Keyed by `threading.get_ident`,
not `threading.local`: on Bytewax's own (Rust) worker threads a `threading.local` set in `build`
is empty again in later calls (Python thread state is not kept between calls from Rust).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.operators import StatefulBatchLogic

from operators.progress import PROGRESS
from schemas.event import RawRecord
from state.output import Row

_WORKERS: dict[int, tuple[int, int]] = {}

ReadGroup = tuple[int, list[RawRecord]]
"""Records of one shard from one source batch, with the index of the worker that read them."""


class _Nothing(StatelessSourcePartition[Any]):
    def next_batch(self) -> list[Any]:
        raise StopIteration


class _WorkerProbe(DynamicSource[Any]):
    """Built once per worker, on its thread, when the dataflow is built; emits nothing."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Nothing:
        _WORKERS[threading.get_ident()] = (worker_index, worker_count)
        return _Nothing()


def probe_workers(step_id: str, flow: Dataflow) -> None:
    """Add the empty input that makes `this_worker` answer on every worker of `flow`."""
    op.input(step_id, flow, _WorkerProbe())


def this_worker() -> tuple[int, int]:
    """`(worker_index, worker_count)` of the Bytewax worker running this thread."""
    try:
        return _WORKERS[threading.get_ident()]
    except KeyError:
        msg = "this_worker() called outside a dataflow built with probe_workers()"
        raise RuntimeError(msg) from None


class CountMoved(StatefulBatchLogic[ReadGroup, list[Row], dict[str, Any]]):
    """Runs `inner` on the records of `ReadGroup`s and counts (in `PROGRESS.moved`) those read
    on another worker than this one: what the shard keys are chosen to keep at zero."""

    def __init__(self, inner: StatefulBatchLogic[list[RawRecord], list[Row], dict[str, Any]]
                 ) -> None:
        self.inner = inner
        self.worker = this_worker()[0]

    def on_batch(self, values: list[ReadGroup]) -> tuple[Iterable[list[Row]], bool]:
        moved = sum(len(records) for reader, records in values if reader != self.worker)
        if moved:
            PROGRESS.add_moved(moved)
        return self.inner.on_batch([records for _, records in values])

    def on_notify(self) -> tuple[Iterable[list[Row]], bool]:
        return self.inner.on_notify()

    def on_eof(self) -> tuple[Iterable[list[Row]], bool]:
        return self.inner.on_eof()

    def notify_at(self) -> datetime | None:
        return self.inner.notify_at()

    def snapshot(self) -> dict[str, Any]:
        return self.inner.snapshot()

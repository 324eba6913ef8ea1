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
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.operators import StatefulBatchLogic

from runtime.progress import PROGRESS
from state.sharding import routing_key

_WORKERS: dict[int, tuple[int, int]] = {}

T = TypeVar("T")
U = TypeVar("U")
S = TypeVar("S")

ReadGroup = tuple[int, T]
"""A stateful step's input: the index of the worker that read the records, and the records (or
what admission made of them)."""


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


def to_this_worker(groups: Iterable[tuple[str, T]], saved: Mapping[str, str]
                   ) -> list[tuple[str, ReadGroup[tuple[str, T]]]]:
    """Each named group under the Bytewax key that keeps it on this worker, stamped with this
    worker's index. A name with state in the recovery folder keeps the key it was saved under
    (`saved`, by name) wherever that puts it: its state is found only there (after a change of
    worker count, or of which worker reads a partition)."""
    worker, workers = this_worker()
    return [(saved.get(name) or routing_key(name, worker, workers), (worker, (name, group)))
            for name, group in groups]


def worker_of_thread() -> tuple[int, int] | None:
    """`this_worker()`, or None on a thread that is no Bytewax worker of a probed dataflow."""
    return _WORKERS.get(threading.get_ident())


def this_worker() -> tuple[int, int]:
    """`(worker_index, worker_count)` of the Bytewax worker running this thread."""
    try:
        return _WORKERS[threading.get_ident()]
    except KeyError:
        msg = "this_worker() called outside a dataflow built with probe_workers()"
        raise RuntimeError(msg) from None


class CountMoved(StatefulBatchLogic[ReadGroup[T], U, S]):
    """Runs `inner` on the payloads of `ReadGroup`s and counts (in `PROGRESS.moved`) the records
    (`size` of a payload) read on another worker than this one: what keys are chosen to keep at
    zero."""

    def __init__(self, inner: StatefulBatchLogic[T, U, S], size: Callable[[T], int]) -> None:
        self.inner, self.size = inner, size
        self.worker = this_worker()[0]

    def on_batch(self, values: list[ReadGroup[T]]) -> tuple[Iterable[U], bool]:
        moved = sum(self.size(payload) for reader, payload in values if reader != self.worker)
        if moved:
            PROGRESS.add_moved(moved)
        return self.inner.on_batch([payload for _, payload in values])

    def on_notify(self) -> tuple[Iterable[U], bool]:
        return self.inner.on_notify()

    def on_eof(self) -> tuple[Iterable[U], bool]:
        return self.inner.on_eof()

    def notify_at(self) -> datetime | None:
        return self.inner.notify_at()

    def snapshot(self) -> S:
        return self.inner.snapshot()

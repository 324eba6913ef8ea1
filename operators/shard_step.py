"""The stateful step: one Bytewax key per shard, each holding a `state.shard.Shard`.

Shards are `"{partition}/{bucket}"` where the bucket is a stable hash of the record key (the
workflow instance id on keyed topics); each shard's Bytewax key is its name, salted where needed so
the shard lives on the worker that reads its partition (`operators.locality.to_this_worker`). A few
hundred shard keys instead of one key per instance: Bytewax's resume time grows with the square of
its key count, and per-key timers are rescanned on every activation, while one timer per shard
stays flat.

Event time comes from the records, through their partition's frontier (`operators.admission_step`
stamps it). Wall-clock time enters only through the optional idle grace: when a live shard has seen
no input for `idle_grace`, its watermark moves to now minus the grace, so a deadline in a silent
stream still fires about `idle_grace` after it is due.

The `metrics` rows come out of the shards with the other rows: each shard folds its metric facts
into its own windows (`state.metric_windows`) and emits a window once its fact clock has passed
it. On a live stream the fact clock also follows the watermark after every call, and a shard
wakes a grace after its earliest open window ends, so windows close on time in a silent stream.
At the end of the input every open window is emitted (drained or not, as Bytewax's windows did).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import StatefulBatchLogic

from operators.admission_step import ShardSlice
from operators.locality import CountMoved, ReadGroup
from operators.telemetry import Telemetry, observe_batch, timing_snapshot
from runtime.crash_points import crash_point
from runtime.progress import PROGRESS
from schemas.decode import DecodeRules
from state.admission import Admitted, TimeJump
from state.catalog import Catalog
from state.clock import Clock, utc_now
from state.output import Out
from state.shard import END_OF_TIME, Shard, ShardConfig
from state.table_rows import TableRows


@dataclass(frozen=True)
class ShardStepConfig:
    """What every shard logic needs; `clock` is the only wall clock the step reads."""

    catalog: Catalog
    rules: DecodeRules
    shard: ShardConfig
    buckets: int = 16
    drain_at_eof: bool = True
    idle_grace: timedelta | None = None
    clock: Clock = utc_now
    telemetry: Telemetry | None = None


class ShardLogic(StatefulBatchLogic[ShardSlice, TableRows, dict[str, Any]]):
    """Bytewax glue around one `Shard`: admitted records in, and out one chunk of rows per call
    (every item crossing a Bytewax step costs a Python call there, so rows travel together, as
    per-table value tuples), snapshots as plain data."""

    def __init__(self, config: ShardStepConfig, resume: dict[str, Any] | None) -> None:
        self.config = config
        self.shard: Shard | None = None
        if resume is not None:
            started = time.perf_counter()
            self.shard = Shard.restore(resume, config.catalog, config.rules, config.shard)
            PROGRESS.restored(len(self.shard.keys.instances), time.perf_counter() - started)
        self.last_input = config.clock()

    def on_batch(self, values: list[ShardSlice]) -> tuple[Iterable[TableRows], bool]:
        shard = self._shard(values[0][0])
        out = Out(shard.name)
        records = 0
        for _, items in values:
            records += _records(items)
            # Released after every record, not every batch: outcome counts and metric stamps
            # then depend on the records alone, not on how the source batched them.
            shard.take(items, out)
        if self.config.idle_grace is not None:
            shard.follow_watermark(out)
        self.last_input = self.config.clock()
        PROGRESS.add(shard.name, records, out.tables.count("dead_letters"), shard.open_instances)
        observe_batch(self.config.telemetry, shard, records, out)
        return [out.tables], False

    def notify_at(self) -> datetime | None:
        grace = self.config.idle_grace
        if grace is None or self.shard is None:
            return None
        return self.shard.wake_at(self.last_input, grace)

    def on_notify(self) -> tuple[Iterable[TableRows], bool]:
        assert self.shard is not None and self.config.idle_grace is not None
        now = self.config.clock()
        out = Out(self.shard.name)
        self.shard.idle_advance(now, self.last_input, self.config.idle_grace, out)
        self.shard.follow_watermark(out)
        observe_batch(self.config.telemetry, self.shard, 0, out)
        return ([out.tables] if len(out.tables) else []), False

    def on_eof(self) -> tuple[Iterable[TableRows], bool]:
        if self.shard is None:
            return [], False
        out = Out(self.shard.name)
        if self.config.drain_at_eof:
            self.shard.advance_to(END_OF_TIME, out)
        self.shard.close_metrics(out)
        observe_batch(self.config.telemetry, self.shard, 0, out)
        return ([out.tables] if len(out.tables) else []), False

    def snapshot(self) -> dict[str, Any]:
        assert self.shard is not None
        with timing_snapshot(self.config.telemetry):
            snapshot = self.shard.snapshot()
        crash_point("shard_snapshot")
        return snapshot

    def _shard(self, name: str) -> Shard:
        if self.shard is None:
            self.shard = Shard(name, self.config.catalog, self.config.rules, self.config.shard)
        return self.shard


def _records(items: list[Admitted]) -> int:
    """Records in a shard's slice: not its tick (last, if any) nor event-time jump notes."""
    return sum(1 for _, decoded in items if decoded is not None and type(decoded) is not TimeJump)


def run_shards(step_id: str, slices: Stream[tuple[str, ReadGroup[ShardSlice]]],
               config: ShardStepConfig) -> Stream[TableRows]:
    """Run the workflow engine on each shard's admitted slices (`operators.admission_step.admit`
    keyed them to the worker that read them): one `TableRows` (`metrics` rows included) per
    engine call."""
    rows = op.stateful_batch(step_id, slices,
                             lambda resume: CountMoved(ShardLogic(config, resume),
                                                        lambda named: _records(named[1])))
    return op.map(f"{step_id}_unkey", rows, lambda key_rows: key_rows[1])

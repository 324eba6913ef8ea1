"""The stateful step: one Bytewax key per shard, each holding a `state.shard.Shard`.

Shards are `"{partition}/{bucket}"` where the bucket is a stable hash of the record key (the
workflow instance id on keyed topics); each shard's Bytewax key is its name, salted where needed so
the shard lives on the worker that reads its partition (`run_shards`). A few hundred shard keys
instead of one key per instance: Bytewax's resume time grows with the square of its key count,
and per-key timers are rescanned on every activation, while one timer per shard stays flat.

Event time comes from the records. Wall-clock time enters only through the optional idle grace:
when a live shard has seen no input for `idle_grace`, its watermark moves to now minus the grace,
so a deadline in a silent stream still fires about `idle_grace` after it is due.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import StatefulBatchLogic

from operators.crash_points import crash_point
from operators.locality import CountMoved, ReadGroup, probe_workers, this_worker
from operators.progress import PROGRESS
from operators.telemetry import Telemetry, observe_batch, timing_snapshot
from operators.timeutil import from_ms, to_ms
from schemas.decode import DecodeRules
from schemas.event import RawRecord
from state.catalog import Catalog
from state.clock import Clock, utc_now
from state.output import Out, Row
from state.shard import END_OF_TIME, Shard, ShardConfig
from state.sharding import routing_key, shard_of


def shard_key(record: RawRecord, buckets: int) -> str:
    """Same instance, same shard (see `state.sharding`)."""
    return shard_of(record.partition, record.key, buckets)


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


class ShardLogic(StatefulBatchLogic[list[RawRecord], list[Row], dict[str, Any]]):
    """Bytewax glue around one `Shard`: lists of records in, and out one list of rows per call
    (every item crossing a Bytewax step costs a Python call there, so rows travel in lists),
    snapshots as plain data."""

    def __init__(self, config: ShardStepConfig, resume: dict[str, Any] | None) -> None:
        self.config = config
        self.shard: Shard | None = None
        if resume is not None:
            started = time.perf_counter()
            self.shard = Shard.restore(resume, config.catalog, config.rules, config.shard)
            PROGRESS.restored(len(self.shard.instances), time.perf_counter() - started)
        self.last_input = config.clock()

    def on_batch(self, values: list[list[RawRecord]]) -> tuple[Iterable[list[Row]], bool]:
        records = [record for group in values for record in group]
        shard = self._shard(records[0])
        out = Out(shard.name, fact_clock=shard.fact_clock)
        for record in records:
            # Release after every record, not every batch: outcome counts and metric stamps then
            # depend on the records alone, not on how the source batched them (Kafka: arbitrarily).
            shard.receive(record, out)
            shard.release(out)
            shard.gauge_facts(out)
        self.last_input = self.config.clock()
        dead = sum(1 for table, _ in out.rows if table == "dead_letters")
        PROGRESS.add(shard.name, len(records), dead, shard.open_instances)
        first = records[0]
        rows = out.with_facts(f"{first.source}/{first.partition}/{first.offset}")
        observe_batch(self.config.telemetry, shard, len(records), rows)
        return [rows], False

    def notify_at(self) -> datetime | None:
        grace = self.config.idle_grace
        if grace is None or self.shard is None:
            return None
        due = self.shard.next_due()
        if due is None or due >= END_OF_TIME:
            return None
        return max(self.last_input, from_ms(due)) + grace

    def on_notify(self) -> tuple[Iterable[list[Row]], bool]:
        assert self.shard is not None and self.config.idle_grace is not None
        now = self.config.clock()
        out = Out(self.shard.name)
        if now - self.last_input >= self.config.idle_grace:
            self.shard.advance_to(to_ms(now - self.config.idle_grace), out)
            self.shard.gauge_facts(out)
        rows = out.with_facts(f"idle/{to_ms(now)}")
        observe_batch(self.config.telemetry, self.shard, 0, rows)
        return ([rows] if rows else []), False

    def on_eof(self) -> tuple[Iterable[list[Row]], bool]:
        if self.shard is None or not self.config.drain_at_eof:
            return [], False
        out = Out(self.shard.name)
        self.shard.advance_to(END_OF_TIME, out)
        self.shard.gauge_facts(out)
        rows = out.with_facts("eof")
        observe_batch(self.config.telemetry, self.shard, 0, rows)
        return ([rows] if rows else []), False

    def snapshot(self) -> dict[str, Any]:
        assert self.shard is not None
        with timing_snapshot(self.config.telemetry):
            snapshot = self.shard.snapshot()
        crash_point("shard_snapshot")
        return snapshot

    def _shard(self, record: RawRecord) -> Shard:
        if self.shard is None:
            name = shard_key(record, self.config.buckets)
            self.shard = Shard(name, self.config.catalog, self.config.rules, self.config.shard)
        return self.shard


def group_by_shard(records: list[RawRecord], buckets: int) -> list[tuple[str, list[RawRecord]]]:
    """One source batch as one (shard, records in order) item per shard it touches: an item
    crossing Bytewax operators (and, between processes, pickled on its own) costs microseconds,
    so records travel to their shard in lists, not one by one."""
    groups: dict[str, list[RawRecord]] = {}
    for record in records:
        key = shard_key(record, buckets)
        group = groups.get(key)
        if group is None:
            groups[key] = [record]
        else:
            group.append(record)
    return list(groups.items())


def group_on_reader(records: list[RawRecord], buckets: int,
                    saved: Mapping[str, str]) -> list[tuple[str, ReadGroup]]:
    """`group_by_shard`, each group under the Bytewax key that keeps it on this worker (the one
    that read it) and stamped with this worker's index. A shard with state in the recovery folder
    keeps the key it was saved under (`saved`, by shard name), wherever that puts it: its state is
    found only there (after a change of worker count, or of which worker reads a partition)."""
    reader, workers = this_worker()
    return [(saved.get(name) or routing_key(name, reader, workers), (reader, group))
            for name, group in group_by_shard(records, buckets)]


def run_shards(step_id: str, records: Stream[RawRecord], config: ShardStepConfig,
               saved: Mapping[str, str] | None = None) -> Stream[list[Row]]:
    """Group records by shard and run the workflow engine on each shard's slice: one list of rows
    (tables, then fact tallies) per engine call. Grouping runs on the worker that read the records
    and keys each group to that worker, so records never cross workers or processes on their way
    to their shard; `saved` are the keys of the shards in the recovery snapshot."""
    probe_workers(f"{step_id}_worker_probe", records.flow())
    keys = saved or {}
    grouped = op.flat_map_batch(f"{step_id}_group", records,
                                lambda batch: group_on_reader(batch, config.buckets, keys))
    rows = op.stateful_batch(step_id, grouped,
                             lambda resume: CountMoved(ShardLogic(config, resume)))
    return op.map(f"{step_id}_unkey", rows, lambda key_rows: key_rows[1])

"""Replay source: an input archive fed back through the dataflow, one partition per archived one.

Each archived `(source, partition)` becomes one Bytewax source partition that yields its records in
offset order, exactly as they were read (same bytes, key, headers, coordinates and arrival time),
so each shard sees the same sequence and reaches the same watermarks and verdicts as the recorded
run. Never the whole archive is read: a partition opens a file only when its merge by offset
reaches it and turns its rows into records a batch at a time, so memory is bounded by about one
file per partition (files hold at most the sink's `parquet_batch_rows` rows). Rows stored twice
(a run that resumed after a crash writes some again) are yielded once. Resume state: the next
offset.

Optional filters (arrival time range, workflow types, instance ids as record keys) and pacing at
`speed` times the original arrival rate, against an injectable wall clock.

Delivery guarantee: exactly the archived records once each, in order, on resume too (the state is
the next offset to yield).
"""

from __future__ import annotations

import bisect
import heapq
import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from itertools import pairwise
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.archive_format import ArchiveFile, find_archive, partition_files, records_of
from schemas.decode import DecodeRules
from schemas.event import RawRecord
from state.clock import Clock, utc_now

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_END = 2**63  # beyond every offset



@dataclass(frozen=True)
class ReplayFilter:
    """Which archived records to replay; empty sets and None bounds keep everything.

    Arrival times are `[since_ms, until_ms)`. A workflow filter routes each record's CloudEvents
    `type` through `rules`; records whose type cannot be read (they would be dead letters) and
    types of no listed workflow are left out.
    """

    since_ms: int | None = None
    until_ms: int | None = None
    workflows: frozenset[str] = frozenset()
    instances: frozenset[str] = frozenset()
    rules: DecodeRules | None = None

    def dates(self) -> tuple[str | None, str | None]:
        """The first and last `date=` folders that can hold records of the time range."""
        def day(ms: int) -> str:
            return (_EPOCH + timedelta(milliseconds=ms)).date().isoformat()
        return (day(self.since_ms) if self.since_ms is not None else None,
                day(self.until_ms - 1) if self.until_ms is not None else None)

    def rows(self, table: pa.Table) -> pa.Table:
        """Keep the rows in the time range and of the instances (vectorised, before conversion)."""
        arrived = pc.cast(table["arrived_at"], pa.int64())
        masks = []
        if self.since_ms is not None:
            masks.append(pc.greater_equal(arrived, self.since_ms))
        if self.until_ms is not None:
            masks.append(pc.less(arrived, self.until_ms))
        if self.instances:
            keys = pa.array(sorted(i.encode() for i in self.instances), pa.binary())
            masks.append(pc.is_in(table["key"], value_set=keys))
        if not masks:
            return table
        keep = masks[0]
        for mask in masks[1:]:
            keep = pc.and_(keep, mask)
        return table.filter(keep)

    def keeps(self, record: RawRecord) -> bool:
        """The workflow filter, per record (it needs the event type)."""
        if not self.workflows or self.rules is None:
            return True
        event_type = _event_type(record)
        route = self.rules.route(event_type) if event_type is not None else None
        return route is not None and route.workflow_type in self.workflows


def _event_type(record: RawRecord) -> str | None:
    """The CloudEvents `type`: the `ce_type` header (binary mode) or the JSON attribute."""
    for key, value in record.headers:
        if key == "ce_type" and value is not None:
            return value.decode("utf-8", "replace")
    try:
        envelope = json.loads(record.value)
    except ValueError:
        return None
    event_type = envelope.get("type") if isinstance(envelope, dict) else None
    return event_type if isinstance(event_type, str) else None


class ArchiveSource(FixedPartitionedSource[RawRecord, int]):
    """Replays an archive folder (see `connectors.archive_format.find_archive`)."""

    def __init__(self, archive: Path, *, replay_filter: ReplayFilter | None = None,
                 speed: float | None = None, clock: Clock = utc_now,
                 batch_size: int = 2_000) -> None:
        self.archive = find_archive(Path(archive))
        self.filter = replay_filter or ReplayFilter()
        self.speed, self.clock, self.batch_size = speed, clock, batch_size
        self._started: datetime | None = None

    @cached_property
    def files(self) -> list[ArchiveFile]:
        """The archive's files in the filter's date range (footers read once per process)."""
        return partition_files(self.archive, *self.filter.dates())

    def list_parts(self) -> list[str]:
        """One part per archived `(source, partition)`, named `source/partition` like row ids."""
        return sorted({f"{f.source}/{f.partition}" for f in self.files})

    def build_part(self, step_id: str, for_part: str,
                   resume_state: int | None) -> _ArchivePartition:
        """A fresh paced start anchors every partition at the archive's first arrival (so they
        keep step); a resumed one at its own next record (so it does not wait out the past)."""
        source, partition = for_part.rsplit("/", 1)
        files = [f for f in self.files if f.source == source and f.partition == int(partition)]
        pacer = None
        if self.speed is not None and resume_state is None:
            since = self.filter.since_ms
            origin = since if since is not None else min(f.first_arrival_ms for f in self.files)
            self._started = self._started or self.clock()
            pacer = Pacer(self.speed, origin, self._started)
        merge = _Merge(files, source, resume_state or 0, self.filter)
        return _ArchivePartition(merge, self.filter, self.speed, pacer, self.clock, self.batch_size)


@dataclass(frozen=True)
class Pacer:
    """When a record is due: `started` plus its arrival after `origin_ms`, divided by `speed`."""

    speed: float
    origin_ms: int
    started: datetime

    def due(self, record: RawRecord) -> datetime:
        lag_ms = max(record.arrived_ms - self.origin_ms, 0) / self.speed
        return self.started + timedelta(milliseconds=lag_ms)


class _ArchivePartition(StatefulSourcePartition[RawRecord, int]):
    """Yields one archived partition's records in offset order, paced if asked."""

    def __init__(self, merge: _Merge, replay_filter: ReplayFilter, speed: float | None,
                 pacer: Pacer | None, clock: Clock, batch_size: int) -> None:
        self.merge, self.filter, self.speed, self.pacer = merge, replay_filter, speed, pacer
        self.clock, self.batch_size = clock, batch_size
        self.held: deque[RawRecord] = deque()  # read, not yet due (paced replays)

    def next_batch(self) -> Iterable[RawRecord]:
        if not self.held:
            self.held.extend(r for r in self.merge.take(self.batch_size) if self.filter.keeps(r))
            if not self.held and self.merge.done:
                raise StopIteration
        if self.speed is None:
            batch = list(self.held)
            self.held.clear()
            return batch
        if self.pacer is None and self.held:  # resumed: anchor at the next record
            self.pacer = Pacer(self.speed, self.held[0].arrived_ms, self.clock())
        now, batch = self.clock(), []
        while self.held and self.pacer is not None and self.pacer.due(self.held[0]) <= now:
            batch.append(self.held.popleft())
        return batch

    def next_awake(self) -> datetime | None:
        """Paced: when the next held record is due; otherwise at once."""
        if self.pacer is not None and self.held:
            return self.pacer.due(self.held[0])
        return None

    def snapshot(self) -> int:
        """The next offset to yield: held records were not yielded yet."""
        return self.held[0].offset if self.held else self.merge.next_offset


@dataclass(order=True)
class _Cursor:
    """One file's rows of one archived partition, sorted by offset, converted a slice at a time."""

    offset: int  # of the row at `pos`: the heap key
    path: Path = field(compare=False)
    table: pa.Table = field(compare=False, repr=False)
    offsets: list[int] = field(compare=False, repr=False)
    pos: int = field(default=0, compare=False)

    def take(self, most: int, bound: int) -> list[RawRecord]:
        """Up to `most` rows from here with offsets at most `bound` (at least one row)."""
        end = max(bisect.bisect_right(self.offsets, bound, self.pos), self.pos + 1)
        end = min(end, self.pos + most, len(self.offsets))
        records = records_of(self.table.slice(self.pos, end - self.pos))
        self.pos = end
        if end < len(self.offsets):
            self.offset = self.offsets[end]
        return records

    @property
    def exhausted(self) -> bool:
        return self.pos >= len(self.offsets)


class _Merge:
    """Merges one partition's files by offset, opening each file only when the merge reaches it."""

    def __init__(self, files: list[ArchiveFile], source: str, next_offset: int,
                 replay_filter: ReplayFilter) -> None:
        self.pending = deque(f for f in sorted(files) if f.last_offset >= next_offset)
        self.source, self.next_offset, self.filter = source, next_offset, replay_filter
        self.open: list[_Cursor] = []

    @property
    def done(self) -> bool:
        return not self.open and not self.pending

    def take(self, most: int) -> list[RawRecord]:
        """The next records after `next_offset`, at most `most`, each offset once."""
        batch: list[RawRecord] = []
        while len(batch) < most:
            self._open_due()
            if not self.open:
                break
            cursor = heapq.heappop(self.open)
            bound = min(self.open[0].offset if self.open else _END,
                        self.pending[0].first_offset if self.pending else _END)
            for record in cursor.take(most - len(batch), bound):
                if record.offset >= self.next_offset:
                    batch.append(record)
                    self.next_offset = record.offset + 1
            if not cursor.exhausted:
                heapq.heappush(self.open, cursor)
        return batch

    def _open_due(self) -> None:
        """Open the next files while they start at or before the merge's position."""
        while self.pending and (not self.open
                                or self.pending[0].first_offset <= self.open[0].offset):
            cursor = self._cursor(self.pending.popleft())
            if cursor is not None:
                heapq.heappush(self.open, cursor)

    def _cursor(self, file: ArchiveFile) -> _Cursor | None:
        """The file's rows of this partition from `next_offset` on that the filter keeps."""
        table = pq.ParquetFile(file.path, pre_buffer=False).read(use_threads=False)
        if file.shared:
            table = table.filter(pc.equal(table["source"], self.source))
        if file.first_offset < self.next_offset:
            table = table.filter(pc.greater_equal(table["offset"], self.next_offset))
        table = self.filter.rows(table)
        offsets = table["offset"].to_pylist()
        if not offsets:
            return None
        if any(a > b for a, b in pairwise(offsets)):
            table = table.sort_by("offset")
            offsets.sort()
        return _Cursor(offsets[0], file.path, table, offsets)

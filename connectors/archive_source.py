"""Replay source: an input archive fed back through the dataflow, one partition per archived one.

Each archived `(source, partition)` becomes one Bytewax source partition that yields its records in
offset order, exactly as they were read (same bytes, key, headers, coordinates and arrival time).
Records of event files (sources `file:<name>`) share one per partition, file after file in name
order, as the file source read them. So each shard sees the same sequence and reaches the same
watermarks and verdicts as the recorded run. Never the whole archive is read: a partition opens a
file only when its merge by position reaches it and turns its rows into records a batch at a time,
so memory is bounded by about one file per partition (files hold at most the sink's
`parquet_batch_rows` rows). Rows stored twice (a run that resumed after a crash writes some again)
are yielded once. Resume state: the next position (source, offset).

Optional filters (arrival time range, workflow types, instance ids as record keys) and pacing at
`speed` times the original arrival rate, against an injectable wall clock.

Delivery guarantee: exactly the archived records once each, in order, on resume too (the state is
the next position to yield).
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
from schemas.mapped import MappingFailed
from state.clock import Clock, utc_now

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_END = 2**63  # beyond every offset
_LAST = ("\U0010ffff", _END)  # beyond every position

ArchivePosition = tuple[str, int]
"""Where a replay partition stands: the source and offset of the next record to yield."""


def replay_part(source: str) -> str:
    """The replay partition a source's records go to, beside their partition number: files share
    one (their order across files is their names'); any other source has its own."""
    return "file:" if source.startswith("file:") else source



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
        event_type = _event_type(record, self.rules)
        route = self.rules.route(event_type) if event_type is not None else None
        return route is not None and route.workflow_type in self.workflows


def _event_type(record: RawRecord, rules: DecodeRules) -> str | None:
    """The CloudEvents `type`: the `ce_type` header (binary mode) or the JSON attribute; or the
    type the run's format reads."""
    rules = rules.for_source(record.source)
    if rules.reader is not None:
        try:
            return rules.reader.read(record).event_type
        except MappingFailed:
            return None
    for key, value in record.headers:
        if key == "ce_type" and value is not None:
            return value.decode("utf-8", "replace")
    try:
        envelope = json.loads(record.value)
    except ValueError:
        return None
    event_type = envelope.get("type") if isinstance(envelope, dict) else None
    return event_type if isinstance(event_type, str) else None


class ArchiveSource(FixedPartitionedSource[RawRecord, ArchivePosition]):
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
        """One part per archived `(source, partition)`, named `source/partition` like row ids
        (`file:/partition` for every file's records in that partition)."""
        return sorted({f"{replay_part(f.source)}/{f.partition}" for f in self.files})

    def build_part(self, step_id: str, for_part: str,
                   resume_state: ArchivePosition | int | None) -> _ArchivePartition:
        """A fresh paced start anchors every partition at the archive's first arrival (so they
        keep step); a resumed one at its own next record (so it does not wait out the past).
        A bare offset is the resume state of a version before positions named their source."""
        part, partition = for_part.rsplit("/", 1)
        files = [f for f in self.files
                 if replay_part(f.source) == part and f.partition == int(partition)]
        pacer = None
        if self.speed is not None and resume_state is None:
            since = self.filter.since_ms
            origin = since if since is not None else min(f.first_arrival_ms for f in self.files)
            self._started = self._started or self.clock()
            pacer = Pacer(self.speed, origin, self._started)
        start = (part, resume_state) if isinstance(resume_state, int) else resume_state
        merge = _Merge(files, start or ("", 0), self.filter)
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


class _ArchivePartition(StatefulSourcePartition[RawRecord, ArchivePosition]):
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

    def snapshot(self) -> ArchivePosition:
        """The next position to yield: held records were not yielded yet."""
        return (self.held[0].source, self.held[0].offset) if self.held else self.merge.next


@dataclass(order=True)
class _Cursor:
    """One file's rows of one source and partition, sorted by offset, converted a slice at a
    time."""

    position: ArchivePosition  # of the row at `pos`: the heap key
    path: Path = field(compare=False)
    table: pa.Table = field(compare=False, repr=False)
    offsets: list[int] = field(compare=False, repr=False)
    pos: int = field(default=0, compare=False)

    def take(self, most: int, bound: ArchivePosition) -> list[RawRecord]:
        """Up to `most` rows from here at positions at most `bound` (at least one row)."""
        source = self.position[0]
        last = bound[1] if bound[0] == source else _END
        end = max(bisect.bisect_right(self.offsets, last, self.pos), self.pos + 1)
        end = min(end, self.pos + most, len(self.offsets))
        records = records_of(self.table.slice(self.pos, end - self.pos))
        self.pos = end
        if end < len(self.offsets):
            self.position = (source, self.offsets[end])
        return records

    @property
    def exhausted(self) -> bool:
        return self.pos >= len(self.offsets)


class _Merge:
    """Merges one replay partition's files by position (source, then offset), opening each file
    only when the merge reaches it."""

    def __init__(self, files: list[ArchiveFile], start: ArchivePosition,
                 replay_filter: ReplayFilter) -> None:
        self.pending = deque(f for f in sorted(files, key=_first) if _last(f) >= start)
        self.next, self.filter = start, replay_filter
        self.open: list[_Cursor] = []

    @property
    def done(self) -> bool:
        return not self.open and not self.pending

    def take(self, most: int) -> list[RawRecord]:
        """The next records from `next` on, at most `most`, each position once."""
        batch: list[RawRecord] = []
        while len(batch) < most:
            self._open_due()
            if not self.open:
                break
            cursor = heapq.heappop(self.open)
            bound = min(self.open[0].position if self.open else _LAST,
                        _first(self.pending[0]) if self.pending else _LAST)
            for record in cursor.take(most - len(batch), bound):
                if (record.source, record.offset) >= self.next:
                    batch.append(record)
                    self.next = (record.source, record.offset + 1)
            if not cursor.exhausted:
                heapq.heappush(self.open, cursor)
        return batch

    def _open_due(self) -> None:
        """Open the next files while they start at or before the merge's position."""
        while self.pending and (not self.open
                                or _first(self.pending[0]) <= self.open[0].position):
            cursor = self._cursor(self.pending.popleft())
            if cursor is not None:
                heapq.heappush(self.open, cursor)

    def _cursor(self, file: ArchiveFile) -> _Cursor | None:
        """The file's rows of its source in this partition from `next` on that the filter keeps."""
        table = pq.ParquetFile(file.path, pre_buffer=False).read(use_threads=False)
        if file.shared:
            table = table.filter(pc.equal(table["source"], file.source))
        if file.source == self.next[0] and file.first_offset < self.next[1]:
            table = table.filter(pc.greater_equal(table["offset"], self.next[1]))
        table = self.filter.rows(table)
        offsets = table["offset"].to_pylist()
        if not offsets:
            return None
        if any(a > b for a, b in pairwise(offsets)):
            table = table.sort_by("offset")
            offsets.sort()
        return _Cursor((file.source, offsets[0]), file.path, table, offsets)


def _first(file: ArchiveFile) -> ArchivePosition:
    return (file.source, file.first_offset)


def _last(file: ArchiveFile) -> ArchivePosition:
    return (file.source, file.last_offset)

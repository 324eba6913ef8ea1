"""File source: a user's event files (`connectors.event_files`) as `partitions` virtual input
partitions, so a run on a file is deterministic and spreads over workers like a Kafka topic.

Each record is keyed by its instance id, found the way the definitions say (`instance_id_of`),
and placed in a partition by Kafka's default partitioner (murmur2 of the key), so `produce --file`
into a topic of as many partitions puts every record where this source does. Records without an
id (they will be dead letters) and read failures go to partition 0. Within a partition the order
is the files' name order, then row order. Every partition reads every file and keeps its own
records, so no partition waits for another or for another worker.

Arrival time: the `arrival_field` attribute or column if named and readable, else the event time,
else (a row that is not an event) the arrival of the file's row before it, or at the very start
of the input that of the next row with a time. Resume state: the file and row to read next, and
the last arrival.

Delivery guarantee: every row once, in order, on resume too.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.event_files import EventFile, FileEvent, read_events, time_ms
from connectors.partitioner import partition_of
from schemas.decode import DecodeRules, instance_id_of
from schemas.errors import ConfigError
from schemas.event import ARRIVAL_FIELD_HEADER, RawRecord
from schemas.mapped import MappingFailed

FilePosition = tuple[str, int, int]
"""Resume state: the file's name, the row to read next in it, and the last arrival time."""


class FileSource(FixedPartitionedSource[RawRecord, FilePosition]):
    """The records of `files` over `partitions` virtual partitions (parts named "0", "1", ...)."""

    def __init__(self, files: list[EventFile], rules: DecodeRules, partitions: int,
                 arrival_field: str | None = None, batch_size: int = 2_000) -> None:
        self.files, self.rules, self.partitions = files, rules, partitions
        self.arrival_field, self.batch_size = arrival_field, batch_size
        # JSON lines keep the arrival attribute in the value: the decoder leaves it out of the
        # duplicate comparison (columnar rows drop the arrival column from the event already).
        self.headers: tuple[tuple[str, bytes], ...] = (
            ((ARRIVAL_FIELD_HEADER, arrival_field.encode()),) if arrival_field else ())

    def list_parts(self) -> list[str]:
        return [str(p) for p in range(self.partitions)]

    def build_part(self, step_id: str, for_part: str,
                   resume_state: FilePosition | None) -> _FilePartition:
        return _FilePartition(self, int(for_part), resume_state)


def file_records(source: FileSource) -> Iterator[RawRecord]:
    """Every record of the files, partition after partition, as a run would read them (for
    `produce --file`: the records keep their partition, key and arrival time)."""
    for part in source.list_parts():
        partition = source.build_part("produce", part, None)
        try:
            while True:
                yield from partition.next_batch()
        except StopIteration:
            pass
        finally:
            partition.close()


def _written_ms(file: EventFile) -> int:
    """When a file was last written: the arrival of rows nothing else dates."""
    return int(file.path.stat().st_mtime * 1000)


class _FilePartition(StatefulSourcePartition[RawRecord, FilePosition]):
    """Reads every file from the saved position on and yields this partition's records."""

    def __init__(self, source: FileSource, partition: int, resume: FilePosition | None) -> None:
        self.source, self.partition = source, partition
        names = [f.name for f in source.files]
        name, row, arrived = resume if resume is not None else (names[0], 1, 0)
        if name not in names:
            raise ConfigError(f"the recovery folder resumes file {name!r}, which is not among "
                              f"the input files ({', '.join(names)}): give the same files, or "
                              "start over with a new recovery folder")
        self.position: FilePosition = (name, row, arrived)
        # The file's last row with an event, any partition, and the rules of its file's format.
        self.previous: tuple[FileEvent, DecodeRules] | None = None
        self.rows = self._rows(names.index(name), row)

    def _rows(self, index: int, first: int) -> Generator[tuple[EventFile, FileEvent]]:
        max_bytes = self.source.rules.max_bytes
        for file in self.source.files[index:]:
            for event in read_events(file, max_bytes=max_bytes, first=first,
                                     arrival_field=self.source.arrival_field):
                yield file, event
            first = 1

    def next_batch(self) -> Iterable[RawRecord]:
        """Up to `batch_size` records, from at most `batch_size` times `partitions` rows, so a
        partition with few records still hands control back often."""
        batch: list[RawRecord] = []
        source, partitions = self.source, self.source.partitions
        undated: list[tuple[EventFile, FileEvent, bytes | None]] = []
        rows = 0
        while rows < source.batch_size * partitions or undated:
            rows += 1
            if len(undated) >= source.batch_size:  # no time in sight (a format without `time`)
                self._place(batch, undated, _written_ms(undated[0][0]))
            found = next(self.rows, None)
            if found is None:
                if undated:  # no row of the input has a time
                    self._place(batch, undated, _written_ms(undated[0][0]))
                if batch:
                    return batch
                raise StopIteration
            file, event = found
            rules = source.rules.for_source(file.source)  # its file's format
            instance = instance_id_of(event.envelope, rules) if event.envelope else None
            key = instance.encode() if instance is not None else None
            mine = partition_of(key, partitions) == self.partition
            if undated and (dated := self._dated(event, rules)) is not None:
                self._place(batch, undated, dated)
            if mine:
                arrived = self._arrival(event, rules)
                if arrived is None:
                    undated.append((file, event, key))  # dated by the next row with a time
                    continue
                self.position = (file.name, event.number + 1, arrived)
                batch.append(RawRecord(file.source, self.partition, event.number, event.value(),
                                       key, source.headers, arrived, event.error))
            else:
                self.position = (file.name, event.number + 1, self.position[2])
            if event.envelope is not None:
                self.previous = event, rules
            if len(batch) >= source.batch_size and not undated:
                break
        return batch

    def _place(self, batch: list[RawRecord], undated: list[tuple[EventFile, FileEvent,
                                                                   bytes | None]],
               arrived: int) -> None:
        """The first rows of the input, which had no time to read, with the arrival `arrived`."""
        for file, event, key in undated:
            self.position = (file.name, event.number + 1, arrived)
            batch.append(RawRecord(file.source, self.partition, event.number, event.value(), key,
                                   self.source.headers, arrived, event.error))
        undated.clear()

    def _arrival(self, event: FileEvent, rules: DecodeRules) -> int | None:
        """The named arrival attribute or column, else the event time; a row with neither (not
        JSON, no time) arrives with the file's row before it (never at the epoch), or, at the
        start of the input, with the next row that has a time (None: not known yet)."""
        for candidate in ((event, rules), self.previous):
            if candidate is not None and (ms := self._dated(*candidate)) is not None:
                return ms
        return self.position[2] if self.position[2] != 0 else None

    def _dated(self, event: FileEvent, rules: DecodeRules) -> int | None:
        """The row's arrival attribute or column, else its event time (where its `--format`
        finds it), else None."""
        field = self.source.arrival_field
        envelope: dict[str, Any] = event.envelope or {}
        named = event.arrival if event.arrival is not None else (
            envelope.get(field) if field else None)
        for value in (named, self._event_time(event, envelope, rules)):
            ms = time_ms(value) if value is not None else None
            if ms is not None:
                return ms
        return None

    def _event_time(self, event: FileEvent, envelope: dict[str, Any], rules: DecodeRules) -> Any:
        reader = rules.reader
        if reader is None or event.envelope is None:
            return envelope.get("time")
        try:
            return reader.read(RawRecord("file", self.partition, event.number,
                                         event.value())).time
        except MappingFailed:  # unreadable by the format: the decoder dead-letters it, undated
            return None

    def snapshot(self) -> FilePosition:
        return self.position

    def close(self) -> None:
        self.rows.close()

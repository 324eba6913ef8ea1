"""File source: a user's event files (`connectors.event_files`) as `partitions` virtual input
partitions, so a run on a file is deterministic and spreads over workers like a Kafka topic.

Each record is keyed by its instance id, found the way the definitions say (`instance_id_of`),
and placed in a partition by Kafka's default partitioner (murmur2 of the key), so `produce --file`
into a topic of as many partitions puts every record where this source does. Records without an
id (they will be dead letters) and read failures go to partition 0. Within a partition the order
is the files' name order, then row order. Every partition reads every file and keeps its own
records, so no partition waits for another or for another worker.

Arrival time: the `arrival_field` attribute or column if named and readable, else the event time,
else the arrival of the partition's record before. Resume state: the file and row to read next.

Delivery guarantee: every row once, in order, on resume too.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from functools import lru_cache
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from kafka.partitioner.default import murmur2

from connectors.event_files import EventFile, FileEvent, read_events, time_ms
from schemas.decode import DecodeRules, instance_id_of
from schemas.errors import ConfigError
from schemas.event import RawRecord

FilePosition = tuple[str, int, int]
"""Resume state: the file's name, the row to read next in it, and the last arrival time."""


@lru_cache(maxsize=65_536)
def partition_of(key: bytes | None, partitions: int) -> int:
    """Kafka's default partitioner (the Java client's, and kafka-python's) for a keyed record."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions if key is not None else 0


class FileSource(FixedPartitionedSource[RawRecord, FilePosition]):
    """The records of `files` over `partitions` virtual partitions (parts named "0", "1", ...)."""

    def __init__(self, files: list[EventFile], rules: DecodeRules, partitions: int,
                 arrival_field: str | None = None, batch_size: int = 2_000) -> None:
        self.files, self.rules, self.partitions = files, rules, partitions
        self.arrival_field, self.batch_size = arrival_field, batch_size

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
        for _ in range(source.batch_size * partitions):
            found = next(self.rows, None)
            if found is None:
                if batch:
                    return batch
                raise StopIteration
            file, event = found
            instance = instance_id_of(event.envelope, source.rules) if event.envelope else None
            key = instance.encode() if instance is not None else None
            mine = partition_of(key, partitions) == self.partition
            arrived = self._arrival(event) if mine else self.position[2]
            self.position = (file.name, event.number + 1, arrived)
            if not mine:
                continue
            batch.append(RawRecord(file.source, self.partition, event.number, event.value(), key,
                                   (), arrived, event.error))
            if len(batch) >= source.batch_size:
                break
        return batch

    def _arrival(self, event: FileEvent) -> int:
        field = self.source.arrival_field
        envelope: dict[str, Any] = event.envelope or {}
        named = event.arrival if event.arrival is not None else (
            envelope.get(field) if field else None)
        for value in (named, envelope.get("time")):
            ms = time_ms(value) if value is not None else None
            if ms is not None:
                return ms
        return self.position[2]

    def snapshot(self) -> FilePosition:
        return self.position

    def close(self) -> None:
        self.rows.close()

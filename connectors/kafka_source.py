"""Kafka source: one keyed input topic, read with Bytewax's `KafkaSource`, as `RawRecord`s.

One topic per run: the topic's partitions are the source partitions (spread over all workers and
processes), and a shard sees its partition's records in offset order. Records of several topics
would meet in the same shards in an order that changes from run to run, so the event-time
verdicts would too.

Offsets are part of Bytewax's recovery state (snapshotted with the shards), not of a consumer
group: a new deployment starts every partition at its `earliest` or `latest` offset, a recovered
one resumes from its snapshot. With `latest`, a partition that received nothing before the first
snapshot starts at its end again after a restart, as with Kafka's `auto.offset.reset=latest`.
A resume offset the broker no longer has is not skipped silently (`auto.offset.reset=error`).

Every message becomes a record with its coordinates (`kafka:{topic}`, partition, offset), raw key,
value, headers and the message timestamp as arrival time (the future-skew guard compares event
time with it). A Kafka error becomes a record with `error` set, which the decoder dead-letters as
`source_error`; repeats of the same error before the next message are folded into the first.
`tail=False` stops each partition when it first reaches its end (tests, backfills).

Delivery guarantee: each offset once per run; after a crash, from the last snapshot on again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Literal

from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TIMESTAMP_NOT_AVAILABLE

from connectors.kafka_connection import (
    KafkaConnection,
    offset_range,
    serves_offset,
    topic_partitions,
)
from runtime.fatal import exit_with_message
from schemas.errors import ConfigError
from schemas.event import RawRecord
from state.clock import Clock, utc_now

Message = KafkaSourceMessage[bytes | None, bytes | None]
Item = Message | KafkaError[bytes | None, bytes | None]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FETCH_MAX_BYTES = 16 * 1024 * 1024  # deliver oversized records: dead-lettered, never stuck



def source_name(topic: str) -> str:
    """The `source` of every record read from `topic` (ledger and dead-letter coordinates)."""
    return f"kafka:{topic}"


def record_of(message: Message) -> RawRecord:
    """One Kafka message as the raw record the decoder takes."""
    kind, stamp = message.timestamp or (TIMESTAMP_NOT_AVAILABLE, 0)
    return RawRecord(
        source=source_name(message.topic or ""),
        partition=message.partition if message.partition is not None else -1,
        offset=message.offset if message.offset is not None else -1,
        value=message.value or b"",
        key=message.key,
        headers=tuple(message.headers),
        arrived_ms=stamp if kind != TIMESTAMP_NOT_AVAILABLE else 0,
    )


def error_record(error: KafkaError[bytes | None, bytes | None], topic: str, partition: int,
                 position: int, now: datetime) -> RawRecord:
    """A Kafka error as a record to dead-letter, with the coordinates it has.

    An error without an offset of its own gets minus the microseconds since the epoch (unique, and
    never a real offset, so its ledger row cannot hide the record that later arrives at
    `position`).
    """
    message = error.msg
    micros = (now - _EPOCH) // timedelta(microseconds=1)
    offset = message.offset if message.offset is not None and message.offset >= 0 else -micros
    at = f"next offset {position}" if position >= 0 else "before its first record"
    text = (f"Kafka error {error.err.name()} on topic {topic!r} partition {partition} ({at}): "
            f"{error.err.str()}")
    return RawRecord(source_name(topic), partition, offset, message.value or b"", message.key,
                     tuple(message.headers), micros // 1000, error=text)


class KafkaInput(FixedPartitionedSource[RawRecord, int]):
    """The partitions of one topic as `RawRecord` streams; see the module docstring."""

    def __init__(self, connection: KafkaConnection, topic: str, *,
                 start: Literal["earliest", "latest"] = "earliest", tail: bool = True,
                 batch_size: int = 1000, fetch_wait_ms: int = 50,
                 clock: Clock = utc_now) -> None:
        self.connection, self.topic, self.clock = connection, topic, clock
        self.start = OFFSET_BEGINNING if start == "earliest" else OFFSET_END
        consumer = {**connection.librdkafka(), "fetch.message.max.bytes": str(FETCH_MAX_BYTES),
                    "auto.offset.reset": "error", "fetch.wait.max.ms": str(fetch_wait_ms)}
        self.kafka = KafkaSource(list(connection.servers), [topic], tail=tail,
                                 starting_offset=self.start, add_config=consumer,
                                 batch_size=batch_size, raise_on_errors=False)

    def list_parts(self) -> list[str]:
        """Named like Bytewax's own parts (`"{partition}-{topic}"`), so recovery data agrees."""
        return [f"{p}-{self.topic}" for p in topic_partitions(self.connection, self.topic)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _KafkaPartition:
        partition = int(for_part.split("-", 1)[0])
        # A negative resume state is a logical start (earliest/latest), not an offset.
        if resume_state is not None and resume_state >= 0:
            check_resume_offset(self.connection, self.topic, partition, resume_state)
        inner = self.kafka.build_part(step_id, for_part, resume_state)
        start = resume_state if resume_state is not None else self.start
        return _KafkaPartition(inner, self.topic, partition, start, self.clock)


def check_resume_offset(connection: KafkaConnection, topic: str, partition: int,
                        offset: int) -> None:
    """Fail loudly when a snapshot's offset lies outside the partition (topic re-created or
    truncated): resuming would hang or silently skip records.

    The offset may equal the end (nothing new yet); beyond it, or before the start, is an error.
    An offset beyond the reported end counts when the broker serves the record before it: some
    brokers (Tansu) report less than the end they serve.
    """
    low, high = offset_range(connection, topic, partition)
    beyond_reported_end = offset > high and serves_offset(connection, topic, partition, offset - 1)
    if not low <= offset <= high and not beyond_reported_end:
        exit_with_message(ConfigError(
            f"the recovery snapshot resumes {topic!r} partition {partition} at offset {offset}, "
            f"but the broker holds offsets {low}..{high}: the topic was re-created or truncated "
            "since. "
            "Start with a new --recovery-dir (and --kafka-start earliest) to read it from the "
            "beginning, or point --kafka-topic at the topic the snapshot was taken from"))


class _KafkaPartition(StatefulSourcePartition[RawRecord, int]):
    """Converts one Bytewax Kafka partition's items and keeps the resume offset itself: Bytewax's
    own would become an error's `-1001 + 1` when a snapshot falls right after an error."""

    def __init__(self, inner: StatefulSourcePartition[Item, int | None], topic: str,
                 partition: int, next_offset: int, clock: Clock) -> None:
        self.inner, self.topic, self.partition = inner, topic, partition
        self.next_offset, self.clock = next_offset, clock
        self.last_error: str | None = None

    def next_batch(self) -> Iterable[RawRecord]:
        batch = []
        for item in self.inner.next_batch():
            if isinstance(item, KafkaError):
                record = self._error(item)
                if record is not None:
                    batch.append(record)
                continue
            self.last_error = None
            record = record_of(item)
            self.next_offset = record.offset + 1
            batch.append(record)
        return batch

    def _error(self, error: KafkaError[bytes | None, bytes | None]) -> RawRecord | None:
        if error.msg.offset is not None and error.msg.offset >= 0:
            self.next_offset = error.msg.offset + 1
        elif error.err.str() == self.last_error:
            return None
        self.last_error = error.err.str()
        return error_record(error, self.topic, self.partition, self.next_offset, self.clock())

    def snapshot(self) -> int:
        return self.next_offset

    def close(self) -> None:
        self.inner.close()

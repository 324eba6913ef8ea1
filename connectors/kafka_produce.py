"""Writing records into a topic with kafka-python, for `flowkeeper produce`: the simulator's or an
archive's records exactly as they were read (same partition, key, bytes and arrival time as the
Kafka timestamp, so consuming them reproduces the embedded run), or event files' records as the
file source reads them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from kafka import KafkaProducer

from connectors.cloudevents_binary import to_binary_mode
from connectors.kafka_connection import KafkaUnavailableError
from schemas.event import RawRecord


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to send; None partition and timestamp leave them to the producer."""

    value: bytes
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    partition: int | None = None
    timestamp_ms: int | None = None

    def binary(self) -> Outgoing:
        """The same event in binary mode; a value that is no JSON object stays as it is."""
        converted = to_binary_mode(self.value)
        if converted is None:
            return self
        headers, data = converted
        return Outgoing(data, self.key, (*self.headers, *headers), self.partition,
                        self.timestamp_ms)


def replayed(records: Iterable[RawRecord]) -> Iterator[Outgoing]:
    """Records as they were read: same partition, key, value, headers and arrival time."""
    for r in records:
        yield Outgoing(r.value, r.key, r.headers, r.partition, r.arrived_ms or None)


def produce(producer: KafkaProducer, topic: str, messages: Iterable[Outgoing], *,
            rate: float = 0.0, on_progress: Callable[[int], None] = lambda n: None) -> int:
    """Send every message (at most `rate` per second; 0: as fast as possible), wait for the acks.

    Raises `KafkaUnavailableError` naming the first failure when any message was not acknowledged.
    """
    failures: list[Exception] = []
    started, sent = time.monotonic(), 0
    for message in messages:
        if rate > 0:
            time.sleep(max(0.0, started + sent / rate - time.monotonic()))
        future = producer.send(topic, value=message.value, key=message.key,
                               headers=list(message.headers), partition=message.partition,
                               timestamp_ms=message.timestamp_ms)
        future.add_errback(failures.append)
        sent += 1
        on_progress(sent)
    producer.flush()
    if failures:
        raise KafkaUnavailableError(f"{len(failures)} of {sent} messages to {topic!r} were not "
                                    f"acknowledged; the first failure: {failures[0]}")
    return sent

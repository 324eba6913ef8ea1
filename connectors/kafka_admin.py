"""kafka-python clients for the tools (`topics`, `produce`, `tail`): admin work and slow paths only.

The dataflow itself reads and writes through Bytewax's librdkafka connectors (measured: ~8x the
throughput of a kafka-python consumer). Every client gets the connection's timeouts, so a wrong
address fails in seconds with the servers named (`KafkaConnection.unreachable`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaTimeoutError, TopicAlreadyExistsError

from connectors.kafka_connection import KafkaConnection, topic_partitions
from schemas.errors import ConfigError

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # tools pass oversized records on: the pipeline rejects them
Client = TypeVar("Client")


def _connect(connection: KafkaConnection, make: Callable[..., Client], **kwargs: Any) -> Client:
    try:
        return make(**connection.kafka_python(), **kwargs)
    except KafkaTimeoutError as e:
        raise connection.unreachable(str(e)) from e


def producer(connection: KafkaConnection) -> KafkaProducer:
    """Acks from all in-sync replicas; large requests allowed (poison records are sent too)."""
    return _connect(connection, KafkaProducer, acks="all", linger_ms=5,
                    max_request_size=MAX_MESSAGE_BYTES)


def consumer(connection: KafkaConnection, idle_timeout_s: float | None) -> KafkaConsumer:
    """No consumer group, no commits: the tools only look."""
    timeout = int(idle_timeout_s * 1000) if idle_timeout_s else float("inf")
    return _connect(connection, KafkaConsumer, group_id=None, enable_auto_commit=False,
                    consumer_timeout_ms=timeout, max_partition_fetch_bytes=MAX_MESSAGE_BYTES)


@dataclass(frozen=True)
class TopicInfo:
    """What `flowkeeper topics describe` prints."""

    name: str
    partitions: list[dict[str, Any]]  # kafka-python's partition metadata: leader, replicas, isr
    offsets: dict[int, tuple[int, int]]  # partition → (first, end) as the broker reports them

    @property
    def replication(self) -> int:
        return len(self.partitions[0]["replica_nodes"]) if self.partitions else 0


def create_topic(connection: KafkaConnection, topic: str, partitions: int, replication: int,
                 configs: dict[str, str]) -> None:
    """Create a topic; an existing one is an error (its partition count may not be right)."""
    admin = _connect(connection, KafkaAdminClient)
    try:
        admin.create_topics([NewTopic(topic, partitions, replication, topic_configs=configs)])
    except TopicAlreadyExistsError as e:
        raise ConfigError(f"Kafka topic {topic!r} already exists on {connection.describe()}; "
                          "`flowkeeper topics describe` shows it") from e
    finally:
        admin.close()


def describe_topic(connection: KafkaConnection, topic: str) -> TopicInfo:
    """Partitions, replicas and offsets of an existing topic."""
    topic_partitions(connection, topic)  # a clear error for a missing topic
    admin = _connect(connection, KafkaAdminClient)
    try:
        (found,) = admin.describe_topics([topic])
    finally:
        admin.close()
    partitions = sorted(found["partitions"], key=lambda p: int(p["partition_index"]))
    reader = consumer(connection, None)
    try:
        parts = [TopicPartition(topic, p["partition_index"]) for p in partitions]
        first, end = reader.beginning_offsets(parts), reader.end_offsets(parts)
    finally:
        reader.close()
    offsets = {tp.partition: (first[tp], end[tp]) for tp in parts}
    return TopicInfo(topic, partitions, offsets)

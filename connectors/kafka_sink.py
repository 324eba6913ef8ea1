"""Kafka outputs: commands, outcomes, corrections and dead letters as CloudEvents on Kafka topics.

Each row becomes one structured-mode CloudEvent (JSON value), keyed by the instance id so one
instance's events stay in order on one partition:

    id      the row's `row_id` (for a command, its idempotency key)
    source  "flowkeeper"
    type    flowkeeper.command.<Command> | flowkeeper.outcome | flowkeeper.correction |
            flowkeeper.dead_letter
    subject the instance id (a dead letter: its raw key, when that is text)
    time    the row's time column (`schemas.tables.TIME_COLUMN`), RFC 3339
    data    the row, times as RFC 3339 strings and bytes as base64

Delivery guarantee: at-least-once (Bytewax's `KafkaSink`): after a restart the rows since the last
snapshot are sent again with the same `id`, so consumers deduplicate on it. A write the cluster
refuses or times out stops the dataflow with an error naming the topic, never silently.
A dead letter whose event would exceed `max_message_bytes` is sent without its raw value (the
whole record stays in the Parquet and DuckDB `dead_letters` table).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from functools import partial
from typing import Any

import bytewax.operators as op
import pyarrow as pa
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage
from bytewax.dataflow import Stream
from confluent_kafka import KafkaError, Message

from connectors.arrow_rows import schema_of
from connectors.kafka_connection import KafkaConnection, KafkaUnavailableError, topic_partitions
from connectors.simulator.wire import rfc3339
from schemas.tables import TIME_COLUMN
from state.output import Row

EVENT_TYPES = {"commands": "flowkeeper.command", "outcomes": "flowkeeper.outcome",
               "corrections": "flowkeeper.correction", "dead_letters": "flowkeeper.dead_letter"}
MAX_MESSAGE_BYTES = 1_000_000  # Kafka's default `message.max.bytes`

OutMessage = KafkaSinkMessage[bytes | None, bytes]


def _plain(value: Any) -> Any:
    """JSON-ready: bytes as base64, recursively (dead-letter headers hold bytes too)."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def row_event(table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """The CloudEvent of one output row (see the module docstring)."""
    times = {f.name for f in schema_of(table) if pa.types.is_timestamp(f.type)}
    data = {k: rfc3339(v) if k in times and v is not None else _plain(v) for k, v in row.items()}
    event_type = EVENT_TYPES[table]
    if table == "commands":
        event_type += f".{row['command']}"
    event: dict[str, Any] = {"specversion": "1.0", "id": row["row_id"], "source": "flowkeeper",
                             "type": event_type}
    subject = _subject(table, row)
    if subject is not None:
        event["subject"] = subject
    if row.get(TIME_COLUMN[table]) is not None:
        event["time"] = data[TIME_COLUMN[table]]
    event["datacontenttype"] = "application/json"
    event["data"] = data
    return event


def _subject(table: str, row: Mapping[str, Any]) -> str | None:
    if table != "dead_letters":
        return str(row["instance_id"])
    try:
        return row["raw_key"].decode("utf-8") if row["raw_key"] else None
    except UnicodeDecodeError:
        return None


def to_message(table: str, row: Mapping[str, Any], topic: str,
               max_message_bytes: int = MAX_MESSAGE_BYTES) -> OutMessage:
    """The Kafka message of one row: key = instance id (a dead letter: its raw key)."""
    key = row["raw_key"] if table == "dead_letters" else str(row["instance_id"]).encode()
    value = json.dumps(row_event(table, row), separators=(",", ":")).encode()
    if len(value) > max_message_bytes and table == "dead_letters":
        slim = {**row, "raw_value": None, "headers": [],
                "message": f"{row['message']} [raw value ({len(row['raw_value'])} bytes) and "
                           "headers left out: too large for Kafka; see the dead_letters table]"}
        value = json.dumps(row_event(table, slim), separators=(",", ":")).encode()
    return KafkaSinkMessage(key, value, topic=topic)


def _messages(topics: Mapping[str, str], item: Row) -> list[OutMessage]:
    table, row = item
    topic = topics.get(table)
    return [to_message(table, row, topic)] if topic else []


def _raise_on_failure(connection: KafkaConnection, err: KafkaError | None, msg: Message) -> None:
    """librdkafka's delivery report: Bytewax's sink ignores failures, we stop on them."""
    if err is not None:
        raise KafkaUnavailableError(
            f"Kafka did not take a message for topic {msg.topic()!r} on {connection.describe()}: "
            f"{err.str()}; check that the topic exists, the producer may write to it (ACLs) and "
            "messages of this size are allowed (message.max.bytes)")


class CheckedKafkaSink(KafkaSink):
    """Bytewax's `KafkaSink`, failing at start-up when a topic is missing (instead of after
    librdkafka's 5-minute message timeout) and on every failed delivery."""

    def __init__(self, connection: KafkaConnection, topics: Mapping[str, str]) -> None:
        config: dict[str, Any] = {**connection.librdkafka(),
                                  "on_delivery": partial(_raise_on_failure, connection)}
        super().__init__(list(connection.servers), None, add_config=config)
        self.connection, self.topics = connection, dict(topics)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> Any:
        for topic in sorted(set(self.topics.values())):
            topic_partitions(self.connection, topic)
        return super().build(step_id, worker_index, worker_count)


def send_to_kafka(step_id: str, rows: Stream[Row], connection: KafkaConnection,
                  topics: Mapping[str, str]) -> None:
    """Write the rows of each table in `topics` (table → topic) to that topic."""
    unknown = set(topics) - set(EVENT_TYPES)
    if unknown:
        msg = f"step {step_id!r}: tables {sorted(unknown)} have no Kafka event type"
        raise ValueError(msg)
    messages = op.flat_map(f"{step_id}_messages", rows, partial(_messages, dict(topics)))
    op.output(step_id, messages, CheckedKafkaSink(connection, topics))

"""Reading a topic for people, for `flowkeeper tail`: one block per event, of one instance or all.

Reads input topics (structured or binary CloudEvents, and whatever else is on them) and the
output topics flowkeeper writes (CloudEvents too).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from schemas.envelope import envelope_from_headers, is_binary_mode

DATA_CHARS = 400  # of the data shown per event


def envelope(value: bytes | None, headers: tuple[tuple[str, bytes], ...]) -> dict[str, Any] | str:
    """The CloudEvent's attributes and data, or why the message is none."""
    try:
        if is_binary_mode(headers):
            return envelope_from_headers(headers, value or b"")
        found = json.loads(value or b"")
    except ValueError as e:
        return f"not a CloudEvent ({e})"
    return found if isinstance(found, dict) else "not a CloudEvent (JSON, but no object)"


def pretty(partition: int, offset: int, key: bytes | None, value: bytes | None,
           headers: tuple[tuple[str, bytes], ...]) -> str:
    """`p2@15  2026-01-01T00:00:01.000Z  OrderPlaced  o-12  id=…` and the data below it."""
    where = f"p{partition}@{offset}"
    event = envelope(value, headers)
    if isinstance(event, str):
        return f"{where}  key={key!r}  {event}: {(value or b'')[:80]!r}"
    mode = "  (binary mode)" if is_binary_mode(headers) else ""
    line = (f"{where}  {event.get('time', '-')}  {event.get('type', '?')}  "
            f"{event.get('subject') or (key or b'').decode('utf-8', 'replace')}  "
            f"id={event.get('id', '?')}{mode}")
    data = json.dumps(event.get("data"), separators=(",", ":"), ensure_ascii=False)
    return f"{line}\n    {data[:DATA_CHARS]}{'…' if len(data) > DATA_CHARS else ''}"


def belongs_to(instance: str, key: bytes | None, value: bytes | None,
               headers: tuple[tuple[str, bytes], ...]) -> bool:
    """Keyed by the instance id, or naming it as `subject` (events routed by a data field are
    keyed by it on topics flowkeeper reads and writes)."""
    if key == instance.encode():
        return True
    event = envelope(value, headers)
    return isinstance(event, dict) and event.get("subject") == instance


def follow(reader: KafkaConsumer, topic: str, partitions: list[int], *, from_beginning: bool,
           instance: str | None, limit: int | None, show: Callable[[str], None]) -> int:
    """Print the topic's events (of `instance`), from the start or from now, until `limit` events
    or the reader's idle timeout; returns how many were shown."""
    parts = [TopicPartition(topic, p) for p in partitions]
    reader.assign(parts)
    if from_beginning:
        reader.seek_to_beginning(*parts)
    else:
        reader.seek_to_end(*parts)
    shown = 0
    for message in reader:
        headers = tuple(message.headers or ())
        if instance is not None and not belongs_to(instance, message.key, message.value, headers):
            continue
        show(pretty(message.partition, message.offset, message.key, message.value, headers))
        shown += 1
        if limit is not None and shown >= limit:
            break
    return shown

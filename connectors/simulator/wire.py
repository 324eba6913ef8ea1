"""Simulated events on the wire: RFC 3339 stamps and structured-mode CloudEvents JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339(ms: int) -> str:
    """`2026-01-01T00:00:00.123Z`: millisecond precision, always UTC."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def stamp(ms: int) -> tuple[str, int]:
    """The first millisecond at or after `ms` whose stamp reads back exactly, and that stamp.

    A decoder that goes through float seconds reads some stamps 1 ms early; times that read back
    exactly either way keep the truth's due times and orderings identical to the engine's.
    """
    while _float_read(rfc3339(ms)) != ms:
        ms += 1
    return rfc3339(ms), ms


def _float_read(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def cloudevent(*, event_id: str, source: str, event_type: str, time: str, data: dict[str, Any],
               version: int, traceparent: str, subject: str | None = None,
               sequence: int | None = None) -> dict[str, Any]:
    """A CloudEvents 1.0 envelope with the extensions flowkeeper honours."""
    envelope: dict[str, Any] = {"specversion": "1.0", "id": event_id, "source": source,
                                "type": event_type, "time": time}
    if subject is not None:
        envelope["subject"] = subject
    envelope["datacontenttype"] = "application/json"
    envelope["dataversion"] = str(version)
    if sequence is not None:
        envelope["sequence"] = str(sequence)
    envelope["traceparent"] = traceparent
    envelope["data"] = data
    return envelope


def to_bytes(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, separators=(",", ":")).encode()

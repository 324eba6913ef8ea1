"""How numbers, durations and times read in the report and the timeline (one spelling for both)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DASH = "\N{EN DASH}"


def count(n: int | None) -> str:
    """`1,698`."""
    return DASH if n is None else f"{n:,}"


def percent(rate: float | None) -> str:
    """`8.33 %` for 0.0833."""
    return DASH if rate is None else f"{rate * 100:.2f} %"


def human_ms(ms: float | None) -> str:
    """A duration as precise as a person needs: `850 ms`, `12.3 s`, `15m 3s`, `2h`, `3d 4h`."""
    if ms is None:
        return DASH
    sign, ms = ("-", -ms) if ms < 0 else ("", ms)
    if ms < 1_000:
        return f"{sign}{ms:.0f} ms"
    if ms < 60_000:
        return f"{sign}{ms / 1_000:.1f} s"
    seconds = int(ms // 1_000)
    for unit, size, sub_unit, sub_size in (("d", 86_400, "h", 3_600), ("h", 3_600, "m", 60),
                                           ("m", 60, "s", 1)):
        if seconds >= size:
            rest = seconds % size // sub_size
            return f"{sign}{seconds // size}{unit}" + (f" {rest}{sub_unit}" if rest else "")
    raise AssertionError("unreachable: seconds >= 60 here")


def deadline_action(command: str | None, goto: str | None) -> str:
    """What a deadline does: `CancelOrder → timed_out`, `SendPaymentReminder`, `→ timed_out`."""
    return " ".join(p for p in (command, f"→ {goto}" if goto else None) if p)


def utc(moment: datetime | None) -> str:
    """`2026-01-03 00:15:00.000` in UTC."""
    return DASH if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def utc_text(text: str | None) -> str:
    """`utc` of an ISO 8601 string (the JSON form of a time): whole, whatever its precision."""
    return DASH if not text else utc(datetime.fromisoformat(text))


def utc_ms(ms: int | None) -> str:
    """`utc` of epoch milliseconds."""
    return DASH if ms is None else utc(_EPOCH + timedelta(milliseconds=ms))


def json_ready(value: Any) -> Any:
    """Plain JSON data: times as ISO 8601 strings, bytes as base64, containers walked."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value

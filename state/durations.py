"""Durations as written in definitions and settings ("500ms", "30s", "15m", "2h", "3d") to
milliseconds; business durations ("8 business hours", "2 business days") a calendar counts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

_UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PATTERN = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")


@lru_cache(maxsize=256)  # definitions hold a few durations, read again on every deadline
def parse_duration_ms(text: str) -> int:
    """Parse one duration; raises ValueError with the accepted forms."""
    match = _PATTERN.match(text)
    if not match:
        msg = (f"{text!r} is not a duration; write a whole number and a unit: "
               "500ms, 30s, 15m, 2h, 3d")
        raise ValueError(msg)
    return int(match.group(1)) * _UNITS[match.group(2)]


def to_ms(delta: timedelta) -> int:
    """A duration in whole milliseconds, as the engine and the connectors count time."""
    return delta // timedelta(milliseconds=1)


def format_duration(delta: timedelta) -> str:
    """A duration as written in definitions and settings, in its largest whole unit ("5s")."""
    ms = to_ms(delta)
    for unit in ("d", "h", "m", "s"):
        if ms and ms % _UNITS[unit] == 0:
            return f"{ms // _UNITS[unit]}{unit}"
    return f"{ms}ms" if ms else "0s"


_BUSINESS = re.compile(r"^\s*(\d+)\s+business\s+(minute|hour|day)s?\s*$")
_BUSINESS_UNIT_MS = {"minutes": 60_000, "hours": 3_600_000}


@dataclass(frozen=True)
class BusinessDuration:
    """A duration in a calendar's business time: working minutes or hours, or business days."""

    amount: int
    unit: str  # "minutes" | "hours" | "days"

    @property
    def ms(self) -> int:
        """Working time in ms (minutes and hours only; a business day has no fixed length)."""
        return self.amount * _BUSINESS_UNIT_MS[self.unit]


@lru_cache(maxsize=256)
def parse_business(text: str) -> BusinessDuration | None:
    """`8 business hours`, `30 business minutes`, `2 business days`; None if not of this form."""
    match = _BUSINESS.match(text)
    if not match:
        return None
    return BusinessDuration(int(match.group(1)), match.group(2) + "s")


def parse_deadline_duration(text: str) -> int | BusinessDuration:
    """A deadline's `after`: wall time in ms, or a business duration; ValueError names both."""
    business = parse_business(text)
    if business is not None:
        return business
    try:
        return parse_duration_ms(text)
    except ValueError:
        msg = (f"{text!r} is not a duration; write a whole number and a unit (500ms, 30s, 15m, "
               "2h, 3d) or business time with a calendar (30 business minutes, 8 business hours, "
               "2 business days)")
        raise ValueError(msg) from None

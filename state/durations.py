"""Durations as written in definitions and settings ("500ms", "30s", "15m", "2h", "3d") to
milliseconds."""

from __future__ import annotations

import re
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

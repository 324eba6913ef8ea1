"""Durations as written in definitions ("500ms", "30s", "15m", "2h", "3d") to milliseconds."""

from __future__ import annotations

import re
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

"""Conversion from Bytewax's aware datetimes to the engine's UTC milliseconds."""

from __future__ import annotations

from datetime import datetime


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)

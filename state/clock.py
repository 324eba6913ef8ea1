"""The wall clock, read in this one place. Whatever depends on wall time (the idle grace of live
streams, paced sources, live metrics windows) takes a `Clock` defaulting to `utc_now`, so tests
inject their own and replays, which judge by event time alone, never read it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Now, as an aware UTC datetime (no naive or local times anywhere)."""
    return datetime.now(UTC)

"""A shard's event-time clock: the partition's frontier as far as the shard has been told, and the
watermark that releases buffered events and timers (the stamp of metric facts is the metrics
windows' own clock, `state.metric_windows`).

The frontier is the largest event time of the shard's *partition* (admission stamps it on every
record and tick), so whether an event is late never depends on the shard count. The watermark is
the frontier minus the allowed lateness; it never moves back. Two things move it further: the end
of a bounded input (`END_OF_TIME`: every pending deadline is due) and, on a live stream only, the
idle grace (`idle_advance`: a silent shard follows the wall clock, so a deadline still fires about
a grace after it falls due). The clock is given the wall time; it never reads one.

The clock snapshots itself (`snapshot` / `restore`) as a dict of named values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from state.admission import NEVER

END_OF_TIME = 2**62


@dataclass(slots=True)
class ShardClock:
    """Frontier and watermark of one shard."""

    allowed_lateness_ms: int
    frontier: int = NEVER
    watermark: int = NEVER

    def catch_up(self, frontier: int) -> bool:
        """Take the partition's frontier as a record or tick carries it; True when the watermark
        moved (something may now be due)."""
        if frontier <= self.frontier:
            return False
        self.frontier = frontier
        watermark = frontier - self.allowed_lateness_ms
        if watermark > self.watermark:
            self.watermark = watermark
            return True
        return False

    def observe(self, time_ms: int) -> bool:
        """An in-time event at `time_ms` moves the frontier (and with it the watermark); True when
        it is out of order (behind the frontier)."""
        out_of_order = time_ms < self.frontier
        if not out_of_order:
            self.frontier = time_ms
        watermark = self.frontier - self.allowed_lateness_ms
        if watermark > self.watermark:
            self.watermark = watermark
        return out_of_order

    def advance_to(self, watermark_ms: int) -> None:
        """Move the watermark (never back); `END_OF_TIME` also moves the frontier there."""
        self.watermark = max(self.watermark, watermark_ms)
        if watermark_ms >= END_OF_TIME:
            self.frontier = max(self.frontier, self.watermark)

    def idle_advance(self, now: datetime, last_input: datetime, grace: timedelta) -> bool:
        """On a live stream quiet for at least `grace` since `last_input`, follow the wall clock:
        the watermark moves to `now - grace`. True when it was quiet that long."""
        if now - last_input < grace:
            return False
        self.advance_to(int((now - grace).timestamp() * 1000))
        return True

    @staticmethod
    def wake_at(due_ms: int | None, last_input: datetime, grace: timedelta) -> datetime | None:
        """When an idle live shard should look at the wall clock again: a grace after both its
        last input and its next due item (`due_ms`; None or `END_OF_TIME`: never)."""
        if due_ms is None or due_ms >= END_OF_TIME:
            return None
        return max(last_input, datetime.fromtimestamp(due_ms / 1000, tz=UTC)) + grace

    def snapshot(self) -> dict[str, int]:
        return {"frontier": self.frontier, "watermark": self.watermark}

    @classmethod
    def restore(cls, allowed_lateness_ms: int, data: dict[str, int]) -> ShardClock:
        return cls(allowed_lateness_ms, data["frontier"], data["watermark"])

"""A shard's event-time scheduler: buffered events and timers, released in one order once the
watermark passes them.

The order is by time; at equal times an event comes before a timer (a payment at exactly the
deadline is in time), events then by `sequence` and arrival, timers by kind (deadline, eviction,
forget, re-judge) and arrival. Arrival numbers are unique, so no comparison reaches an event or a
key.

Two heaps, not one: events wait only the allowed lateness while timers wait hours or days (about
2,000 per shard at 20k orders), and a pop from a small heap is cheap. Entries are named tuples:
compared as tuples, read by name.
"""

from __future__ import annotations

import heapq
from typing import NamedTuple

from schemas.event import Event
from state.machine import DeadlineRef

EVENT, DEADLINE, EVICT, FORGET, REJUDGE = 0, 1, 2, 3, 4


class Buffered(NamedTuple):
    """An event waiting for the watermark to pass it."""

    time_ms: int
    kind: int  # EVENT: sorts before every timer kind at the same time
    sequence: int
    arrival: int
    event: Event
    out_of_order: bool
    key: str  # the event's interned instance key (not in snapshots: it follows from the event)


class Timer(NamedTuple):
    """An armed deadline (with the reference the instance armed it under), the eviction or
    forgetting of a key, or when a correction's in-time run reaches its next deadline."""

    due_ms: int
    kind: int  # DEADLINE | EVICT | FORGET | REJUDGE
    arrival: int
    key: str
    ref: DeadlineRef | None


class Scheduler:
    """The two heaps and the arrival counter that breaks ties."""

    def __init__(self, arrivals: int = 0) -> None:
        self.events: list[Buffered] = []
        self.timers: list[Timer] = []
        self.arrivals = arrivals

    def buffer(self, event: Event, out_of_order: bool, key: str) -> None:
        self.arrivals += 1
        sequence = event.sequence if event.sequence is not None else 0
        heapq.heappush(self.events, Buffered(event.time_ms, EVENT, sequence, self.arrivals, event,
                                             out_of_order, key))

    def schedule(self, due_ms: int, kind: int, key: str, ref: DeadlineRef | None = None) -> None:
        self.arrivals += 1
        heapq.heappush(self.timers, Timer(due_ms, kind, self.arrivals, key, ref))

    def pop_due(self, watermark: int) -> Buffered | Timer | None:
        """The next entry before `watermark` in release order, or None."""
        events, timers = self.events, self.timers
        if events and events[0].time_ms < watermark and (
                not timers or events[0].time_ms <= timers[0].due_ms):
            return heapq.heappop(events)
        if timers and timers[0].due_ms < watermark:
            return heapq.heappop(timers)
        return None

    def next_due(self) -> int | None:
        """Time of the earliest entry, for the dataflow's wall-clock idle timer."""
        heads = [heap[0][0] for heap in (self.events, self.timers) if heap]
        return min(heads) if heads else None

    def due(self, watermark: int) -> bool:
        """Whether anything is before `watermark` (due for release): the head of either heap."""
        events, timers = self.events, self.timers
        return bool((events and events[0].time_ms < watermark)
                    or (timers and timers[0].due_ms < watermark))

    def evictions(self) -> set[str]:
        """Keys with an eviction scheduled."""
        return {timer.key for timer in self.timers if timer.kind == EVICT}

    def restore(self, events: list[Buffered], timers: list[Timer], arrivals: int) -> None:
        """Take the entries and arrival counter of a snapshot (`state.shard_snapshot`)."""
        self.events, self.timers, self.arrivals = events, timers, arrivals
        heapq.heapify(self.events)
        heapq.heapify(self.timers)

"""Windowed metrics per workflow type, shard and minute of event time, on Bytewax windowing.

The shard step emits metric facts, tallied per workflow type and window (`state.output.FactTally`)
and stamped with a per-shard monotonic event-time clock. Windows
are keyed by (workflow type, shard), so each key's facts arrive in stamp order and no window sees
a late fact in a deterministic run; the `EventClock`'s system-time component is frozen for
bounded inputs (replays, the simulator) so window closing never depends on machine speed.
Step latencies go into a DDSketch (mergeable, 1 % relative accuracy). Facts that do arrive late
(a live run stalled longer than the wait) are counted in a row of their own, never dropped.
Each window adds up tallies, so the rows do not depend on how the input was batched.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import accumulate
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
from ddsketch import DDSketch

from operators.timeutil import EPOCH, from_ms, to_ms
from state.clock import Clock, utc_now
from state.output import FACT_WINDOW_MS, FactTally, Row

OUTCOME_COLUMNS = ("completed", "failed", "cancelled", "timed_out", "compensated",
                   "compensation_failed")
WINDOW = timedelta(milliseconds=FACT_WINDOW_MS)  # the engine tallies facts per window


@dataclass
class MetricsWindow:
    """What one (workflow type, shard, minute) window accumulates: the tallies of its facts."""

    counts: dict[str, int] = field(default_factory=dict)
    open_at_end: int = 0
    latency: DDSketch | None = None  # made by the first step latency: most windows have none

    def _sketch(self) -> DDSketch:
        if self.latency is None:
            self.latency = DDSketch(relative_accuracy=0.01)
        return self.latency

    def add(self, fact: dict[str, Any]) -> MetricsWindow:
        """Add one `_fact` row's tally (tallies of a key arrive in stamp order)."""
        tally: FactTally = fact["tally"]
        for kind, n in tally.counts.items():
            self.counts[kind] = self.counts.get(kind, 0) + n
        if tally.latencies:
            sketch = self._sketch()
            for value in tally.latencies:
                sketch.add(max(value, 0.0))
        if tally.open_at_end is not None:
            self.open_at_end = tally.open_at_end
        return self

    def merge(self, other: MetricsWindow) -> MetricsWindow:
        for kind, n in other.counts.items():
            self.counts[kind] = self.counts.get(kind, 0) + n
        self.open_at_end = other.open_at_end
        if other.latency is not None:
            self._sketch().merge(other.latency)
        return self


def metric_row(key: str, window_start_ms: int, acc: MetricsWindow) -> dict[str, Any]:
    """The `metrics` table row of one closed window."""
    workflow_type, shard = key.split("|", 1)
    c = acc.counts
    sketch = acc.latency
    p50, p95, p99 = _quantiles(sketch) if sketch is not None else (None, None, None)

    return {
        "row_id": f"{workflow_type}/{shard}/{window_start_ms}",
        "workflow_type": workflow_type, "shard": shard,
        "window_start": window_start_ms, "window_end": window_start_ms + to_ms(EPOCH + WINDOW),
        "events_in": c.get("event_in", 0), "started": c.get("started", 0),
        **{name: c.get(f"outcome:{name}", 0) for name in OUTCOME_COLUMNS},
        "duplicates": c.get("duplicate", 0), "late": c.get("late", 0),
        "anomalies": c.get("anomalous", 0), "dead_letters": c.get("dead_letter", 0),
        "open_at_end": acc.open_at_end,
        "latency_count": int(sketch.count) if sketch is not None else 0,
        "latency_p50_ms": p50, "latency_p95_ms": p95, "latency_p99_ms": p99,
    }


def _quantiles(sketch: DDSketch) -> list[float | None]:
    """p50, p95 and p99 exactly as `sketch.get_quantile_value` gives them, from one running sum
    of the bins (bisected) instead of a Python loop over hundreds of bins per quantile: windows
    close by the thousand. Latencies are clamped at 0 (`MetricsWindow.add`), so the negative
    store is empty and the zero bin comes first."""
    if sketch.count == 0:
        return [None, None, None]
    store, zeros = sketch._store, sketch._zero_count
    running = list(accumulate(store.bins))  # the sums `DenseStore.key_at_rank` compares, in order
    values: list[float | None] = []
    for p in (0.5, 0.95, 0.99):
        rank = p * (sketch.count - 1)
        if rank < zeros:
            values.append(0.0)
            continue
        index = bisect_right(running, rank - zeros)  # the first bin whose running sum exceeds it
        key = index + store.offset if index < len(running) else store.max_key
        values.append(float(sketch._mapping.value(key)))
    return values



def frozen_now() -> datetime:
    """A system clock that never moves: window closing then depends on event time alone."""
    return EPOCH


def window_metrics(step_id: str, facts: Stream[dict[str, Any]], *, live: bool,
                   now: Clock | None = None) -> Stream[Row]:
    """Fold facts into one-minute tumbling windows; return `metrics` rows (late facts included)."""
    keyed = op.key_on(f"{step_id}_key", facts, lambda f: f"{f['workflow_type']}|{f['shard']}")
    clock: EventClock[dict[str, Any]] = EventClock(
        ts_getter=lambda f: from_ms(f["stamp"]),
        wait_for_system_duration=timedelta(seconds=10) if live else timedelta(0),
        now_getter=now or (utc_now if live else frozen_now),
        to_system_utc=(lambda t: t) if live else (lambda t: None),
    )
    windower = TumblingWindower(length=WINDOW, align_to=EPOCH)
    out = fold_window(step_id, keyed, clock, windower, MetricsWindow,
                      lambda acc, f: acc.add(f), lambda a, b: a.merge(b))
    window_ms = to_ms(EPOCH + WINDOW)

    def closed(item: tuple[str, tuple[int, MetricsWindow]]) -> Row:
        key, (window_id, acc) = item
        return ("metrics", metric_row(key, window_id * window_ms, acc))

    def late(item: tuple[str, tuple[int, dict[str, Any]]]) -> Row:
        key, (window_id, fact) = item
        acc = MetricsWindow().add(fact)
        row = metric_row(key, window_id * window_ms, acc)
        row["row_id"] += f"/late/{fact['stamp']}/{fact['origin']}"
        return ("metrics", row)

    return op.merge(f"{step_id}_rows", op.map(f"{step_id}_closed", out.down, closed),
                    op.map(f"{step_id}_late", out.late, late))

"""The `metrics` table, folded in the shard: one-minute windows per workflow type of one shard.

The engine tallies metric facts per workflow type and window (`state.output.Out.fact`), stamped
with the shard's monotonic fact clock. At the end of each call the shard folds its tallies into
its open windows (`MetricWindows.fold`), and a window closes, as a `metrics` row, once the fact
clock has passed its end. Windows are keyed by shard and the clock is the shard's own and never
moves back, so no fact can arrive for a window that has closed: nothing is late, nothing waits
for wall time, and nothing but the closed windows' rows leaves the shard. Open windows are part
of the shard's snapshot (`snapshot` / `restore`), so a resumed run closes them with every fact.

Step latencies go into a DDSketch (1 % relative accuracy); latencies are clamped at 0.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from ddsketch import DDSketch

from state.output import FACT_WINDOW_MS, FactTally, Out

OUTCOME_COLUMNS = ("completed", "failed", "cancelled", "timed_out", "compensated",
                   "compensation_failed")
NEVER_CLOSES = 2**63  # `closes_at` while no window is open
# A window in a snapshot: workflow type, window number, counts, open_at_end, latency sketch.
WindowRow = tuple[str, int, dict[str, int], int, dict[str, Any] | None]


@dataclass(slots=True)
class MetricsWindow:
    """What one (workflow type, shard, minute) window accumulates: the tallies of its facts."""

    counts: dict[str, int] = field(default_factory=dict)
    open_at_end: int = 0
    latency: DDSketch | None = None  # made by the first step latency: most windows have none

    def add(self, tally: FactTally) -> None:
        """Add one engine call's tally (tallies of a window arrive in fact-clock order)."""
        counts = self.counts
        for kind, n in tally.counts.items():
            counts[kind] = counts.get(kind, 0) + n
        if tally.latencies:
            if self.latency is None:
                self.latency = DDSketch(relative_accuracy=0.01)
            add = self.latency.add
            for value in tally.latencies:
                add(max(value, 0.0))
        if tally.open_at_end is not None:
            self.open_at_end = tally.open_at_end


class MetricWindows:
    """A shard's open metrics windows and its fact clock (the stamp of every fact)."""

    __slots__ = ("clock", "closes_at", "open", "shard")

    def __init__(self, shard: str, clock: int = 0) -> None:
        self.shard = shard
        self.clock = clock  # the latest fact's stamp; never moves back
        self.open: dict[tuple[str, int], MetricsWindow] = {}
        self.closes_at = NEVER_CLOSES  # the end of the earliest open window

    def fold(self, out: Out) -> None:
        """Take `out`'s tallies into the open windows and the fact clock from it; emit, as
        `metrics` rows of `out`, every window the clock has passed."""
        if out.fact_clock > self.clock:
            self.clock = out.fact_clock
        tallies = out.tallies
        if tallies:
            opened = self.open
            for key, tally in tallies.items():
                window = opened.get(key)
                if window is None:
                    window = opened[key] = MetricsWindow()
                    self.closes_at = min(self.closes_at, (key[1] + 1) * FACT_WINDOW_MS)
                window.add(tally)
            out.folded.extend(tallies.items())
            out.tallies = {}
        if self.clock >= self.closes_at:
            self.close(self.clock, out)

    def advance_to(self, clock_ms: int, out: Out) -> None:
        """Move the fact clock to `clock_ms` (never back) and emit the windows it passes: later
        facts are stamped no earlier. Live streams only (the clock follows the watermark)."""
        if clock_ms > self.clock:
            self.clock = out.fact_clock = clock_ms
            if clock_ms >= self.closes_at:
                self.close(clock_ms, out)

    def close(self, until_ms: int, out: Out) -> None:
        """Emit the windows that end at or before `until_ms`, in window order."""
        closing = sorted(key for key in self.open if (key[1] + 1) * FACT_WINDOW_MS <= until_ms)
        for key in closing:
            out.row("metrics", metric_row(key[0], self.shard, key[1] * FACT_WINDOW_MS,
                                          self.open.pop(key)))
        self.closes_at = min(((key[1] + 1) * FACT_WINDOW_MS for key in self.open),
                             default=NEVER_CLOSES)

    def snapshot(self) -> list[WindowRow]:
        """The open windows as plain rows (`restore` reads them)."""
        return [(workflow_type, number, dict(w.counts), w.open_at_end, _sketch_data(w.latency))
                for (workflow_type, number), w in self.open.items()]

    @classmethod
    def restore(cls, shard: str, clock: int, rows: list[WindowRow]) -> MetricWindows:
        windows = cls(shard, clock)
        for workflow_type, number, counts, open_at_end, sketch in rows:
            windows.open[(workflow_type, number)] = MetricsWindow(
                dict(counts), open_at_end, None if sketch is None else _sketch_from(sketch))
        windows.closes_at = min(((n + 1) * FACT_WINDOW_MS for _, n in windows.open),
                                default=NEVER_CLOSES)
        return windows


def metric_row(workflow_type: str, shard: str, window_start_ms: int,
               acc: MetricsWindow) -> dict[str, Any]:
    """The `metrics` table row of one closed window."""
    c = acc.counts
    sketch = acc.latency
    p50, p95, p99 = _quantiles(sketch) if sketch is not None else (None, None, None)

    return {
        "row_id": f"{workflow_type}/{shard}/{window_start_ms}",
        "workflow_type": workflow_type, "shard": shard,
        "window_start": window_start_ms, "window_end": window_start_ms + FACT_WINDOW_MS,
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


def _sketch_data(sketch: DDSketch | None) -> dict[str, Any] | None:
    """A latency sketch as plain data: its non-empty bins by key, the zero bin and the summary
    values (the bins' layout in memory is not kept: the quantiles do not depend on it)."""
    if sketch is None:
        return None
    store = sketch._store
    return {"bins": [(i + store.offset, n) for i, n in enumerate(store.bins) if n],
            "zeros": sketch._zero_count, "sum": sketch._sum, "min": sketch._min,
            "max": sketch._max}


def _sketch_from(data: dict[str, Any]) -> DDSketch:
    sketch = DDSketch(relative_accuracy=0.01)
    for key, weight in data["bins"]:
        sketch._store.add(key, weight)
    sketch._zero_count = data["zeros"]
    sketch._count = sketch._store.count + data["zeros"]
    sketch._sum, sketch._min, sketch._max = data["sum"], data["min"], data["max"]
    return sketch

"""The `metrics` table, folded in the shard: one-minute windows per workflow type of one shard.

The engine tallies metric facts per workflow type and window (`state.output.Out.fact`), stamped
with the shard's monotonic fact clock. At the end of each call the shard folds its tallies into
its open windows (`MetricWindows.fold`), and a window closes, as a `metrics` row, once the fact
clock has passed its end. Windows are keyed by shard and the clock is the shard's own and never
moves back, so no fact can arrive for a window that has closed: nothing is late, nothing waits
for wall time, and nothing but the closed windows' rows leaves the shard. Open windows are part
of the shard's snapshot (`snapshot` / `restore`), so a resumed run closes them with every fact.

Step latencies go into a DDSketch of 1 % relative accuracy: the `ddsketch` package's logarithmic
mapping, its bins kept sparse per window as {bin key: count} (most windows hold one or two
latencies, and building the package's dense sketch per window cost more than the rest of the
row). The quantiles are exactly those of `ddsketch.DDSketch(0.01)` fed the same latencies, which
are clamped at 0.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from ddsketch.mapping import LogarithmicMapping

from state.output import FACT_WINDOW_MS, FactTally, Out

OUTCOME_COLUMNS = ("completed", "failed", "cancelled", "timed_out", "compensated",
                   "compensation_failed")
NEVER_CLOSES = 2**63  # `closes_at` while no window is open
SKETCH = LogarithmicMapping(0.01)  # the mapping of `ddsketch.DDSketch(relative_accuracy=0.01)`
ZERO_BIN = -(2**62)  # the sketch's zero bin (latencies at or below `SKETCH.min_possible`): first
# A window in a snapshot: workflow type, window number, counts, open_at_end, latency bins.
WindowRow = tuple[str, int, dict[str, int], int, list[tuple[int, int]] | None]


@dataclass(slots=True)
class MetricsWindow:
    """What one (workflow type, shard, minute) window accumulates: the tallies of its facts."""

    counts: dict[str, int] = field(default_factory=dict)
    open_at_end: int = 0
    latency: dict[int, int] | None = None  # sketch bins: made by the first step latency

    def add(self, tally: FactTally) -> None:
        """Add one engine call's tally (tallies of a window arrive in fact-clock order)."""
        counts = self.counts
        for kind, n in tally.counts.items():
            counts[kind] = counts.get(kind, 0) + n
        if tally.latencies:
            bins = self.latency
            if bins is None:
                bins = self.latency = {}
            key, smallest = SKETCH.key, SKETCH.min_possible
            for value in tally.latencies:
                bin_key = key(value) if value > smallest else ZERO_BIN  # (negatives: zero bin)
                bins[bin_key] = bins.get(bin_key, 0) + 1
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
        self.closes_at = self._earliest_end()

    def _earliest_end(self) -> int:
        """When the earliest open window ends (`closes_at`, kept so a call need not scan)."""
        return min(((number + 1) * FACT_WINDOW_MS for _, number in self.open),
                   default=NEVER_CLOSES)

    def snapshot(self) -> list[WindowRow]:
        """The open windows as plain rows (`restore` reads them)."""
        return [(workflow_type, number, dict(w.counts), w.open_at_end,
                 None if w.latency is None else list(w.latency.items()))
                for (workflow_type, number), w in self.open.items()]

    @classmethod
    def restore(cls, shard: str, clock: int, rows: list[WindowRow]) -> MetricWindows:
        windows = cls(shard, clock)
        for workflow_type, number, counts, open_at_end, bins in rows:
            windows.open[(workflow_type, number)] = MetricsWindow(
                dict(counts), open_at_end, None if bins is None else dict(bins))
        windows.closes_at = windows._earliest_end()
        return windows


def metric_row(workflow_type: str, shard: str, window_start_ms: int,
               acc: MetricsWindow) -> dict[str, Any]:
    """The `metrics` table row of one closed window."""
    c = acc.counts
    bins = acc.latency
    p50, p95, p99 = _quantiles(bins) if bins is not None else (None, None, None)

    return {
        "row_id": f"{workflow_type}/{shard}/{window_start_ms}",
        "workflow_type": workflow_type, "shard": shard,
        "window_start": window_start_ms, "window_end": window_start_ms + FACT_WINDOW_MS,
        "events_in": c.get("event_in", 0), "started": c.get("started", 0),
        **{name: c.get(f"outcome:{name}", 0) for name in OUTCOME_COLUMNS},
        "duplicates": c.get("duplicate", 0), "late": c.get("late", 0),
        "anomalies": c.get("anomalous", 0), "dead_letters": c.get("dead_letter", 0),
        "open_at_end": acc.open_at_end,
        "latency_count": sum(bins.values()) if bins is not None else 0,
        "latency_p50_ms": p50, "latency_p95_ms": p95, "latency_p99_ms": p99,
    }


def _quantiles(bins: dict[int, int]) -> list[float | None]:
    """p50, p95 and p99 exactly as `DDSketch.get_quantile_value` gives them for the same values:
    the value of the first bin, in key order with the zero bin first, whose running count exceeds
    the rank `q * (count - 1)` (its dense store's `key_at_rank`), found by bisection."""
    keys = sorted(bins)
    running = list(accumulate(bins[key] for key in keys))
    count = running[-1]
    values: list[float | None] = []
    for p in (0.5, 0.95, 0.99):
        key = keys[bisect_right(running, p * (count - 1))]
        values.append(0.0 if key == ZERO_BIN else float(SKETCH.value(key)))
    return values

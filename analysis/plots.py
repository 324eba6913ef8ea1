"""The figures of a run, drawn from the views: shared by `flowkeeper report` and the notebooks.

Each function takes a connection from `analysis.outputs.open_outputs` and returns a matplotlib
`Figure` built without pyplot, so nothing depends on (or changes) the global backend: a notebook
displays the figure, the report embeds `png_bytes(figure)`.
"""

from __future__ import annotations

import base64
import io
from collections import defaultdict
from datetime import datetime, timedelta

import duckdb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

OUTCOME_COLORS = {
    "completed": "#2e7d32", "failed": "#c62828", "cancelled": "#757575", "timed_out": "#ef6c00",
    "compensated": "#1565c0", "compensation_failed": "#6a1b9a",
}
_BUCKET_MINUTES = (1, 5, 15, 60, 360, 1440, 10080)
_WIDTH = 9.0


def png_bytes(figure: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG, for embedding."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def png_data_uri(figure: Figure, dpi: int = 100) -> str:
    """The figure as a `data:` URI, for an `<img src>` that loads nothing from elsewhere."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(figure, dpi)).decode("ascii")


def bucket_minutes(first: datetime, last: datetime, max_bars: int = 120) -> int:
    """The smallest of 1 min, 5 min, ... 1 week that draws `first`..`last` in at most `max_bars`."""
    span = (last - first) / timedelta(minutes=1) + 1
    return next((w for w in _BUCKET_MINUTES if span / w <= max_bars), _BUCKET_MINUTES[-1])


def _bucketed(conn: duckdb.DuckDBPyConnection, view: str, series: str,
              value: str) -> tuple[int, dict[str, dict[datetime, int]]]:
    """`value` summed per time bucket of `view`'s `minute` column and per `series` expression."""
    first, last = conn.sql(f"SELECT min(minute), max(minute) FROM {view}").fetchall()[0]
    if first is None:
        return 1, {}
    width = bucket_minutes(first, last)
    rows = conn.execute(
        f"SELECT {series}, time_bucket(to_minutes(CAST(? AS BIGINT)), minute) AS bucket, "
        f"sum({value}) FROM {view} GROUP BY ALL ORDER BY bucket", [width]).fetchall()
    found: dict[str, dict[datetime, int]] = defaultdict(dict)
    for name, bucket, total in rows:
        found[name][bucket] = int(total)
    return width, found


def _days(moments: list[datetime]) -> list[float]:
    """Matplotlib's date numbers (days since 1970, with `ax.xaxis_date()`)."""
    return [m.timestamp() / 86_400 for m in moments]


def _empty(figure: Figure, text: str) -> Figure:
    figure.text(0.5, 0.5, text, ha="center", va="center", color="#757575")
    return figure


def outcomes_over_time(conn: duckdb.DuckDBPyConnection) -> Figure:
    """Finished instances by the time they started and how they ended, stacked by outcome."""
    figure = Figure(figsize=(_WIDTH, 3.6))
    width, series = _bucketed(conn, "outcome_mix_per_minute", "outcome", "instances")
    if not series:
        return _empty(figure, "no finished instances")
    ax = figure.subplots()
    buckets = sorted({b for counts in series.values() for b in counts})
    bottom = [0] * len(buckets)
    order = list(OUTCOME_COLORS)
    for outcome in sorted(series, key=lambda o: order.index(o) if o in order else len(order)):
        heights = [series[outcome].get(b, 0) for b in buckets]
        ax.bar(_days(buckets), heights, width=width / 1440 * 0.9, bottom=bottom, align="edge",
               label=outcome, color=OUTCOME_COLORS.get(outcome))
        bottom = [a + b for a, b in zip(bottom, heights, strict=True)]
    ax.xaxis_date()
    ax.set_title(f"Outcomes by start time ({width} min buckets, event time, UTC)")
    ax.set_ylim(top=max(bottom) * 1.3)  # room for the legend
    ax.set_ylabel("instances")
    ax.legend(fontsize="small", ncols=3)
    figure.autofmt_xdate()
    return figure


def step_latency(conn: duckdb.DuckDBPyConnection) -> Figure:
    """Time spent in each state per workflow (log scale), with each state's deadlines as SLA lines:
    red where the deadline times the instance out, orange where it only reminds or escalates."""
    rows = conn.sql(
        """SELECT workflow_type, from_state, list(greatest(state_duration_ms, 1) / 1000.0)
           FROM transitions WHERE from_state IS NOT NULL AND state_duration_ms IS NOT NULL
           GROUP BY ALL ORDER BY workflow_type, from_state""").fetchall()
    by_workflow: dict[str, list[tuple[str, list[float]]]] = defaultdict(list)
    for workflow, step, seconds in rows:
        by_workflow[workflow].append((step, seconds))
    deadlines = conn.sql(
        """SELECT DISTINCT workflow_type, state, after_ms / 1000.0, goto IS NOT NULL,
                  from_event IS NOT NULL
           FROM step_deadlines WHERE kind = 'deadline' AND after_ms IS NOT NULL""").fetchall()
    figure = Figure(figsize=(_WIDTH, 1.0 + sum(0.45 * len(s) + 0.6 for s in by_workflow.values())))
    if not by_workflow:
        return _empty(figure, "no state was left yet")
    axes = figure.subplots(len(by_workflow), 1, squeeze=False,
                           height_ratios=[len(s) for s in by_workflow.values()])
    for ax, (workflow, steps) in zip(axes[:, 0], by_workflow.items(), strict=True):
        ax.boxplot([seconds for _, seconds in steps], orientation="horizontal",
                   tick_labels=[step for step, _ in steps], flierprops={"markersize": 2})
        ax.set_xscale("log")
        ax.set_title(workflow, fontsize="medium", loc="left")
        for y, (step, _) in enumerate(steps, start=1):
            lines = [d[2:] for d in deadlines if d[:2] == (workflow, step)]
            for after_s, moves, from_event in lines:
                ax.vlines(after_s, y - 0.4, y + 0.4, colors="#c62828" if moves else "#ef6c00",
                          linestyles="dashed" if from_event else "solid", linewidth=2)
    axes[-1, 0].set_xlabel("seconds in state (event time, log scale)")
    figure.suptitle("Step latency with SLA lines", x=0.02, ha="left")
    figure.legend(handles=[Line2D([], [], color="#c62828", lw=2, label="deadline: times out"),
                           Line2D([], [], color="#ef6c00", lw=2, label="deadline: reminds")],
                  fontsize="small", loc="upper right", ncols=2)
    figure.tight_layout()
    return figure


def dead_letter_mix(conn: duckdb.DuckDBPyConnection) -> Figure:
    """Rejected input records per reason."""
    query = "SELECT reason, records FROM dead_letters_by_reason ORDER BY records, reason DESC"
    rows = conn.sql(query).fetchall()
    figure = Figure(figsize=(_WIDTH, 0.6 + 0.4 * max(len(rows), 1)))
    if not rows:
        return _empty(figure, "no dead letters")
    ax = figure.subplots()
    ax.barh([r for r, _ in rows], [n for _, n in rows], color="#6d4c41")
    for y, (_, n) in enumerate(rows):
        ax.text(n, y, f" {n:,}", va="center", fontsize="small")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Dead letters by reason")
    ax.set_xlabel("records")
    return figure


def throughput(conn: duckdb.DuckDBPyConnection) -> Figure:
    """Input records per time bucket of arrival, by what became of them (log scale)."""
    figure = Figure(figsize=(_WIDTH, 3.4))
    columns = ("applied", "ignored", "anomalous", "duplicates", "late", "dead_letters")
    unpivoted = (f"(UNPIVOT throughput_per_minute ON {', '.join(columns)} "
                 "INTO NAME disposition VALUE n)")
    width, series = _bucketed(conn, unpivoted, "disposition", "n")
    if not series:
        return _empty(figure, "no input records")
    ax = figure.subplots()
    for disposition in columns:
        counts = series.get(disposition, {})
        if any(counts.values()):
            points = sorted(counts.items())
            ax.plot(_days([b for b, _ in points]), [n for _, n in points], marker="o",
                    markersize=3, linestyle="none", label=disposition)
    ax.xaxis_date()
    ax.set_yscale("log")
    ax.set_title(f"Input records per {width} min of arrival time")
    ax.set_ylabel("records")
    ax.legend(fontsize="small", ncols=3)
    figure.autofmt_xdate()
    return figure

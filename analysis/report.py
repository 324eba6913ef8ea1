"""`flowkeeper report`: one self-contained HTML page about a run, for people without notebooks.

Everything comes from the views (`analysis.duckdb_views`), so the page shows the numbers a SQL
user gets. Figures are embedded PNGs and the style sheet is inline: the file can be mailed or
attached to a ticket and opens offline. Each table has an `id` and each headline number a
`data-key`, so tests (and scripts) can read the page back.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
from matplotlib.figure import Figure

from analysis import plots
from analysis.formatting import DASH, count, deadline_action, human_ms, percent, utc

Cell = Callable[[Any], str]


@dataclass(frozen=True)
class HtmlTable:
    """A table of formatted cells, from one query and one formatter per column."""

    id: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]]
    numeric: tuple[bool, ...]  # right-aligned columns

    @classmethod
    def query(cls, conn: duckdb.DuckDBPyConnection, id: str, sql: str,
              columns: Sequence[tuple[str, Cell]]) -> HtmlTable:
        rows = conn.sql(sql).fetchall()
        return cls(id, tuple(name for name, _ in columns),
                   [tuple(cell(value) for (_, cell), value in zip(columns, row, strict=True))
                    for row in rows],
                   tuple(cell in (count, percent, human_ms) for _, cell in columns))


@dataclass(frozen=True)
class Section:
    """A heading, a sentence on how to read it, a figure and tables."""

    title: str
    intro: str
    figure: Figure | None = None
    tables: list[HtmlTable] = field(default_factory=list)


def text(value: Any) -> str:
    return DASH if value is None else str(value)


def headline(conn: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, str]]:
    """The numbers at the top of the page: key -> (label, formatted value)."""
    row = conn.execute(
        """SELECT (SELECT count(*) FROM outcomes), (SELECT count(*) FROM open_instances),
                  (SELECT count(*) FROM stuck_instances), (SELECT count(*) FROM ledger),
                  (SELECT count(*) FROM dead_letters),
                  (SELECT count(*) FROM ledger WHERE disposition = 'late'),
                  (SELECT count(*) FROM corrections),
                  (SELECT coalesce(sum(deadlines_fired), 0) FROM sla_breaches_per_hour),
                  (SELECT sum(compensated) / nullif(sum(compensations), 0)
                   FROM compensation_success_rate),
                  (SELECT min(started_at) FROM outcomes), (SELECT max(ended_at) FROM outcomes)""",
    ).fetchall()[0]
    finished, open_now, stuck, records, dead, late, corrections, fired, comp, first, last = row
    return {
        "instances_finished": ("instances finished", count(finished)),
        "instances_open": ("still open", count(open_now)),
        "instances_stuck": ("stuck past every deadline", count(stuck)),
        "records": ("input records", count(records)),
        "dead_letters": ("dead letters", count(dead)),
        "late_events": ("late events", count(late)),
        "corrections": ("corrections", count(corrections)),
        "deadlines_fired": ("deadlines fired", count(fired)),
        "compensation_success": ("compensations that succeeded", percent(comp)),
        "event_time": ("event time", f"{utc(first)} to {utc(last)}"),
    }


def _deadlines_text(deadlines: list[dict[str, Any]] | None) -> str:
    """`15m SendPaymentReminder; 30m CancelOrder → timed_out`."""
    parts = []
    for d in sorted(deadlines or [], key=lambda d: (d["after_ms"] is None, d["after_ms"] or 0,
                                                   d["after"] or "")):
        since = f" from {d['from_event']}" if d["from_event"] else ""
        after = human_ms(d["after_ms"]) if d["after_ms"] is not None else d["after"]
        parts.append(f"{after}{since} {deadline_action(d['command'], d['goto'])}")
    return "; ".join(parts) or DASH


def sections(conn: duckdb.DuckDBPyConnection) -> list[Section]:
    """Every section of the report, in page order."""
    q = HtmlTable.query
    return [
        Section("Outcomes", "How the finished instances ended, by the minute they started.",
                plots.outcomes_over_time(conn),
                [q(conn, "outcomes", """WITH n AS (
                       SELECT workflow_type, outcome, count(*) AS instances
                       FROM outcomes GROUP BY ALL)
                   SELECT *, instances / sum(instances) OVER (PARTITION BY workflow_type) FROM n
                   ORDER BY workflow_type, instances DESC, outcome""",
                   [("workflow", text), ("outcome", text), ("instances", count),
                    ("share", percent)])]),
        Section("Step latency", "Time spent in each state, in event time; the lines are the "
                "state's deadlines (SLA).", plots.step_latency(conn),
                [q(conn, "step_latency", """SELECT p.workflow_type, p.step, p.exits, p.p50_ms,
                       p.p95_ms, p.p99_ms, p.max_ms, d.deadlines
                   FROM step_latency_percentiles p LEFT JOIN (
                       SELECT workflow_type, state AS step,
                              list({'after_ms': after_ms, 'after': after,
                                    'from_event': from_event, 'command': command,
                                    'goto': goto}) AS deadlines
                       FROM (SELECT DISTINCT workflow_type, state, after_ms, after, from_event,
                                    command, goto FROM step_deadlines WHERE kind = 'deadline')
                       GROUP BY ALL) d
                   USING (workflow_type, step) ORDER BY p.workflow_type, p.step""",
                   [("workflow", text), ("step", text), ("exits", count), ("p50", human_ms),
                    ("p95", human_ms), ("p99", human_ms), ("max", human_ms),
                    ("deadlines", _deadlines_text)])]),
        Section("SLA breaches", "Per step with deadlines: instances that entered it and that hit "
                "one of its deadlines.", None,
                [q(conn, "sla_breaches", """SELECT workflow_type, step, entered, breached,
                       breach_rate FROM sla_breach_rate_per_step s SEMI JOIN step_deadlines d
                        ON d.workflow_type = s.workflow_type AND d.state = s.step
                        AND d.kind = 'deadline'
                   ORDER BY breach_rate DESC, workflow_type, step""",
                   [("workflow", text), ("step", text), ("entered", count), ("breached", count),
                    ("rate", percent)])]),
        Section("Slowest instances", "The ten finished instances that took longest.", None,
                [q(conn, "slowest_instances", """SELECT workflow_type, instance_id, outcome,
                       duration_ms, timed_out_step, variant FROM slowest_instances LIMIT 10""",
                   [("workflow", text), ("instance", text), ("outcome", text),
                    ("duration", human_ms), ("timed out in", text), ("variant", text)])]),
        Section("Stuck instances", "Open although event time has passed every deadline of their "
                "state (at most 20 shown).", None,
                [q(conn, "stuck_instances", """SELECT workflow_type, instance_id, state, since,
                       epoch_ms(overdue_by) FROM stuck_instances LIMIT 20""",
                   [("workflow", text), ("instance", text), ("state", text), ("since", utc),
                    ("overdue by", human_ms)])]),
        Section("Compensations", "Instances that had to undo completed steps, and how many got "
                "every acknowledgement in time.", None,
                [q(conn, "compensation", """SELECT workflow_type, compensations, compensated,
                       compensation_failed, commands, success_rate
                   FROM compensation_success_rate""",
                   [("workflow", text), ("compensations", count), ("compensated", count),
                    ("failed", count), ("commands sent", count), ("success rate", percent)])]),
        Section("Dead letters", "Input that could not become an event, by reason.",
                plots.dead_letter_mix(conn),
                [q(conn, "dead_letters",
                   "SELECT * FROM dead_letters_by_reason ORDER BY records DESC, reason",
                   [("reason", text), ("records", count), ("example", text)])]),
        Section("Variants", "The five most frequent step sequences per workflow.", None,
                [q(conn, "variants", """SELECT workflow_type, variant, cases, share FROM variants
                   QUALIFY row_number() OVER (PARTITION BY workflow_type
                                              ORDER BY cases DESC, variant) <= 5
                   ORDER BY workflow_type, cases DESC, variant""",
                   [("workflow", text), ("variant", text), ("instances", count),
                    ("share", percent)])]),
        Section("Input", "Every input record by arrival time and by what became of it.",
                plots.throughput(conn),
                [q(conn, "input_accounting",
                   "SELECT * FROM input_accounting ORDER BY records DESC, disposition",
                   [("disposition", text), ("records", count)])]),
    ]


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { margin-bottom: 0; } .sub { color: #666; margin-top: .2em; }
.kpis { display: grid; grid-template-columns: repeat(5, 1fr); gap: .6em; margin: 1.5em 0; }
.kpi { background: #f4f6f8; border-radius: 6px; padding: .6em .8em; }
.kpi .v { font-size: 1.4em; font-weight: 600; } .kpi .l { color: #555; font-size: .85em; }
.kpi.wide { grid-column: span 2; } .kpi.wide .v { font-size: 1em; }
table { border-collapse: collapse; margin: .8em 0 1.6em; font-size: .9em; }
th, td { border-bottom: 1px solid #ddd; padding: .25em .7em; text-align: left; }
td { vertical-align: top; } td:nth-child(-n+2) { white-space: nowrap; }
th { background: #f4f6f8; }
.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
img { max-width: 100%; } .empty { color: #888; font-style: italic; }
"""


def _table_html(table: HtmlTable) -> str:
    if not table.rows:
        return f'<p class="empty" id="{table.id}">none</p>'
    align = [' class="n"' if numeric else "" for numeric in table.numeric]
    head = "".join(f"<th{a}>{html.escape(c)}</th>"
                   for a, c in zip(align, table.columns, strict=True))
    body = "".join(
        "<tr>" + "".join(f"<td{a}>{html.escape(v)}</td>" for a, v in zip(align, row, strict=True))
        + "</tr>" for row in table.rows)
    return f'<table id="{table.id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure_html(figure: Figure, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{plots.png_data_uri(figure)}">'


def render_report(conn: duckdb.DuckDBPyConnection, title: str) -> str:
    """The whole page as one HTML string."""
    kpis = "".join(
        f'<div class="kpi{" wide" if key == "event_time" else ""}"><div class="v" data-key="{key}">'
        f'{html.escape(value)}</div><div class="l">{html.escape(label)}</div></div>'
        for key, (label, value) in headline(conn).items())
    parts = [f"<h1>flowkeeper run report</h1><p class='sub'>{html.escape(title)}</p>",
             f'<div class="kpis">{kpis}</div>']
    for section in sections(conn):
        parts.append(f"<h2>{html.escape(section.title)}</h2><p>{html.escape(section.intro)}</p>")
        if section.figure is not None:
            parts.append(_figure_html(section.figure, section.title))
        parts += [_table_html(t) for t in section.tables]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>flowkeeper report: {html.escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body>{''.join(parts)}</body></html>")


def write_report(conn: duckdb.DuckDBPyConnection, title: str, target: Path) -> Path:
    """Render the page and write it to `target` (whole or not at all)."""
    page = render_report(conn, title)
    temp = target.with_name(f".{target.name}.tmp")
    temp.write_text(page, encoding="utf-8")
    temp.replace(target)
    return target

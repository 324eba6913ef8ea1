"""What each console page shows, as plain data read from the views: the HTML templates and the
JSON routes render the same dictionaries, so a test can hold one against the other and both
against SQL over the views.

Every value a user sends (filters, ids, sort column, page) reaches SQL as a bound parameter or
as one of a fixed set of column names; nothing from a request is spliced into a query.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.compute as pc
import pyarrow.dataset as ds

from analysis.outputs import Row, rows
from analysis.pending import PENDING_SQL, readable
from schemas.tables import ARCHIVE

PAGE_SIZE = 50

# Every instance, finished or open, one row each: the table the instance list pages through.
INSTANCES_SQL = """
    WITH finished AS (
        SELECT workflow_type, instance_id, final_state AS state, outcome, started_at,
               ended_at AS last_at, timed_out_step
        FROM outcomes),
    open AS (
        SELECT workflow_type, instance_id, arg_max(to_state, seq) AS state,
               CAST(NULL AS VARCHAR) AS outcome, min("at") AS started_at, max("at") AS last_at,
               CAST(NULL AS VARCHAR) AS timed_out_step
        FROM transitions ANTI JOIN outcomes USING (workflow_type, instance_id) GROUP BY ALL),
    corrected AS (
        SELECT workflow_type, instance_id, count(*) AS corrections
        FROM corrections GROUP BY ALL)
    SELECT i.*, coalesce(c.corrections, 0) AS corrections
    FROM (SELECT * FROM finished UNION ALL BY NAME SELECT * FROM open) i
    LEFT JOIN corrected c USING (workflow_type, instance_id)"""

# Instances one of whose deadlines fired on a step (as `sla_breach_rate_per_step` counts them).
BREACHED_SQL = """
    SELECT workflow_type, instance_id FROM commands WHERE reason = 'deadline' AND step = ?
    UNION
    SELECT workflow_type, instance_id FROM transitions
    WHERE trigger = 'deadline' AND from_state = ?"""

SORTABLE = ("started_at", "last_at", "workflow_type", "instance_id", "state", "outcome",
            "corrections")


def overview(conn: duckdb.DuckDBPyConnection) -> Row:
    """The one-pane numbers: input by disposition, outcomes, open instances by state, SLA
    breaches per step, dead letters by reason, corrections, each partition's watermark, and where
    partitions' event time jumped (or a record far ahead was refused)."""
    accounting = {r["disposition"]: r["records"] for r in rows(conn, "FROM input_accounting")}
    return {
        "input": {"records": sum(accounting.values()), "by_disposition": accounting},
        "outcomes": rows(conn, "SELECT outcome, count(*) AS instances FROM outcomes "
                         "GROUP BY ALL ORDER BY instances DESC, outcome"),
        "open_by_state": rows(conn, "SELECT workflow_type, state, count(*) AS instances "
                              "FROM open_instances GROUP BY ALL "
                              "ORDER BY instances DESC, workflow_type, state"),
        "sla_breaches": rows(conn, "FROM sla_breach_rate_per_step WHERE breached > 0 "
                             "ORDER BY breached DESC, workflow_type, step"),
        "dead_letters": rows(conn, "FROM dead_letters_by_reason"),
        "corrections": rows(conn, "SELECT workflow_type, instance_id, original_outcome, "
                            "corrected_outcome, late_event_type, detected_at FROM corrections "
                            "ORDER BY detected_at DESC, workflow_type, instance_id, row_id "
                            "LIMIT 20"),
        "corrections_total": rows(conn, "SELECT count(*) AS n FROM corrections")[0]["n"],
        "partitions": partitions(conn),
        "event_time_jumps": rows(conn, "FROM event_time_jumps_per_partition"),
    }


def partitions(conn: duckdb.DuckDBPyConnection) -> list[Row]:
    """Per input partition: records, the watermark (the largest event time read on it, as the
    pipeline keeps it), the newest arrival, and the lag of the watermark behind that arrival."""
    return rows(conn, """
        SELECT source, partition, count(*) AS records, max(event_time) AS watermark,
               max(arrived_at) AS newest_arrival,
               epoch_ms(max(arrived_at)) - epoch_ms(max(event_time)) AS lag_ms
        FROM ledger GROUP BY ALL ORDER BY source, partition""")


@dataclass(frozen=True)
class InstanceQuery:
    """The instance list's filters, sort and page, as a request gives them (all optional)."""

    workflow_type: str = ""
    state: str = ""
    outcome: str = ""  # an outcome, or "open" for instances with none yet
    started_from: datetime | None = None
    started_until: datetime | None = None
    breached_step: str = ""
    corrected: bool = False
    text: str = ""
    sort: str = "started_at"
    descending: bool = False
    page: int = 1

    def where(self) -> tuple[str, list[Any]]:
        """The WHERE clause of the filters that are set, and its parameters in order."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("workflow_type", self.workflow_type), ("state", self.state)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.outcome == "open":
            clauses.append("outcome IS NULL")
        elif self.outcome:
            clauses.append("outcome = ?")
            params.append(self.outcome)
        if self.started_from is not None:
            clauses.append("started_at >= ?")
            params.append(self.started_from)
        if self.started_until is not None:
            clauses.append("started_at < ?")
            params.append(self.started_until)
        if self.breached_step:
            clauses.append(f"(workflow_type, instance_id) IN ({BREACHED_SQL})")
            params += [self.breached_step, self.breached_step]
        if self.corrected:
            clauses.append("corrections > 0")
        if self.text:
            clauses.append("contains(lower(instance_id), lower(?))")
            params.append(self.text)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


@dataclass(frozen=True)
class Page:
    """One page of the instance list, the total that matched, and the values to filter by."""

    rows: list[Row]
    total: int
    page: int
    pages: int
    choices: dict[str, list[str]] = field(default_factory=dict)


def instances(conn: duckdb.DuckDBPyConnection, query: InstanceQuery) -> Page:
    """The page of instances `query` asks for, sorted and paged in DuckDB."""
    where, params = query.where()
    sort = query.sort if query.sort in SORTABLE else "started_at"
    direction = "DESC" if query.descending else "ASC"

    def page_of(number: int) -> list[Row]:
        """One query gives the page and, in `matched`, the total."""
        return rows(conn, f"SELECT *, count(*) OVER () AS matched FROM ({INSTANCES_SQL}){where} "
                    f"ORDER BY {sort} {direction} NULLS LAST, workflow_type, instance_id "
                    "LIMIT ? OFFSET ?", [*params, PAGE_SIZE, (number - 1) * PAGE_SIZE])

    page = max(query.page, 1)
    found = page_of(page)
    total = found[0]["matched"] if found else int(conn.execute(
        f"SELECT count(*) FROM ({INSTANCES_SQL}){where}", params).fetchall()[0][0])
    if not found and page > _pages(total):  # past the end: the last page
        page = _pages(total)
        found = page_of(page)
    for row in found:
        row.pop("matched")
    return Page(found, total, page, _pages(total), choices(conn))


def _pages(total: int) -> int:
    return max(1, -(-total // PAGE_SIZE))


def choices(conn: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """The values the filter menus offer, from the run itself."""
    def column(sql: str) -> list[str]:
        return [str(r[0]) for r in conn.execute(sql).fetchall() if r[0] is not None]

    return {
        "workflow_type": column("SELECT DISTINCT workflow_type FROM transitions ORDER BY 1"),
        "state": column("SELECT DISTINCT to_state FROM transitions ORDER BY 1"),
        "outcome": ["open", *column("SELECT DISTINCT outcome FROM outcomes ORDER BY 1")],
        "breached_step": column("SELECT DISTINCT step FROM commands WHERE reason = 'deadline' "
                                "UNION SELECT DISTINCT from_state FROM transitions "
                                "WHERE trigger = 'deadline' ORDER BY 1"),
    }


@dataclass(frozen=True)
class DueQuery:
    """The due-next page's filters and page: workflow, state, deadline name, and "due within"
    (ms of remaining time as of the partition's watermark; None: any)."""

    workflow_type: str = ""
    state: str = ""
    deadline: str = ""
    within_ms: int | None = None
    page: int = 1

    def where(self) -> tuple[str, list[Any]]:
        """The WHERE clause over pending deadlines, and its parameters in order."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("workflow_type", self.workflow_type), ("state", self.state),
                              ("deadline", self.deadline)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.within_ms is not None:
            clauses.append("remaining_ms <= ?")
            params.append(self.within_ms)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def due_next(conn: duckdb.DuckDBPyConnection, query: DueQuery) -> Page:
    """Open instances by their next pending deadline (of those the filters keep), soonest first,
    one page of them, ordered and paged in DuckDB."""
    if not readable(conn):
        return Page([], 0, 1, 1, {"workflow_type": [], "state": [], "deadline": []})
    where, params = query.where()
    # One evaluation of the pending deadlines for the page, its total and the filter menus.
    conn.execute(f"CREATE OR REPLACE TEMP TABLE pending_now AS {PENDING_SQL}")
    ranked = ("SELECT workflow_type, instance_id, arg_min(state, due_at) AS state, "
              "arg_min(deadline, due_at) AS deadline, min(due_at) AS due_at, "
              "arg_min(remaining_ms, due_at) AS remaining_ms, "
              "arg_min(watermark, due_at) AS watermark, count(*) AS pending "
              f"FROM pending_now{where} GROUP BY workflow_type, instance_id")

    def page_of(number: int) -> list[Row]:
        return rows(conn, f"SELECT *, count(*) OVER () AS matched FROM ({ranked}) "
                    "ORDER BY due_at, workflow_type, instance_id LIMIT ? OFFSET ?",
                    [*params, PAGE_SIZE, (number - 1) * PAGE_SIZE])

    page = max(query.page, 1)
    found = page_of(page)
    total = found[0]["matched"] if found else int(conn.execute(
        f"SELECT count(*) FROM ({ranked})", params).fetchall()[0][0])
    if not found and page > _pages(total):
        page = _pages(total)
        found = page_of(page)
    for row in found:
        row.pop("matched")
    menus = rows(conn, "SELECT list(DISTINCT workflow_type ORDER BY workflow_type) AS w, "
                 "list(DISTINCT state ORDER BY state) AS s, "
                 "list(DISTINCT deadline ORDER BY deadline) AS d FROM pending_now")[0]
    conn.execute("DROP TABLE pending_now")
    choices = {"workflow_type": menus["w"] or [], "state": menus["s"] or [],
               "deadline": menus["d"] or []}
    return Page(found, total, page, _pages(total), choices)


def dead_letters(conn: duckdb.DuckDBPyConnection, reason: str, page: int) -> Page:
    """One page of dead letters (of one reason, or all), newest first, raw bytes included."""
    where, params = (" WHERE reason = ?", [reason]) if reason else ("", [])
    total = int(conn.execute(f"SELECT count(*) FROM dead_letters{where}", params).fetchall()[0][0])
    pages = _pages(total)
    page = min(max(page, 1), pages)
    found = rows(conn, f"SELECT * FROM dead_letters{where} ORDER BY arrived_at DESC, row_id "
                 "LIMIT ? OFFSET ?", [*params, PAGE_SIZE, (page - 1) * PAGE_SIZE])
    reasons = [r["reason"] for r in rows(conn, "FROM dead_letters_by_reason")]
    return Page(found, total, page, pages, {"reason": reasons})


def archived_record(archive: Path, source: str, partition: int, offset: int) -> Row | None:
    """One input record exactly as it was read (the archive's row), or None when not archived."""
    files = [str(p) for p in archive.glob(f"date=*/partition={partition}/*.parquet")]
    if not files:
        return None
    dataset = ds.dataset(files, format="parquet", schema=ARCHIVE)
    found = dataset.to_table(filter=pc.field("row_id") == f"{source}/{partition}/{offset}")
    return found.slice(0, 1).to_pylist()[0] if found.num_rows else None


@dataclass(frozen=True)
class Shown:
    """Untrusted bytes made readable: text (invalid UTF-8 as `\\x..` escapes) and hex."""

    text: str
    valid_utf8: bool
    hex: str
    size: int


def shown(raw: bytes | None) -> Shown:
    """How the console prints raw keys, values and headers; the templates escape the text."""
    data = raw or b""
    try:
        text, valid = data.decode("utf-8"), True
    except UnicodeDecodeError:
        text, valid = data.decode("utf-8", errors="backslashreplace"), False
    return Shown(text, valid, data.hex(" ", 1), len(data))

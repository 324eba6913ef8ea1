"""`flowkeeper report`: the page renders on its own and shows the numbers DuckDB gives."""

from __future__ import annotations

import base64
import contextlib
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pytest

from analysis.formatting import count, human_ms, percent
from dataflows.cli import main
from tests.demo_kit import scalar


class Page(HTMLParser):
    """What a reader sees: headline numbers by key, table rows by table id, embedded images."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.numbers: dict[str, str] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self.links: list[str] = []
        self._key: str | None = None
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "data-key" in a:
            self._key = a["data-key"]
        if tag == "table":
            self._table = a["id"]
            self.tables[self._table or ""] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag == "td":
            self._cell = []
        elif tag == "img":
            self.images.append(a["src"] or "")
        elif tag in ("link", "script") or (tag == "a" and a.get("href")):
            self.links.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag == "td" and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._key is not None:
            self.numbers[self._key] = data
            self._key = None
        if self._cell is not None:
            self._cell.append(data)

    def rows(self, table: str) -> list[list[str]]:
        return [row for row in self.tables[table] if row]


def render(out: Path, target: Path, *extra: str) -> Page:
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(["report", "--out", str(out), "--output", str(target), *extra]) == 0
    assert str(target) in printed.getvalue()
    return Page(target.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def page(out: Path, tmp_path_factory: pytest.TempPathFactory) -> Page:
    return render(out, tmp_path_factory.mktemp("report") / "report.html")


def test_the_page_is_self_contained_with_four_figures(page: Page) -> None:
    """The page embeds its four figures as PNG data and loads nothing from anywhere else."""
    assert len(page.images) == 4 and page.links == []
    for src in page.images:
        prefix, data = src.split(",", 1)
        assert prefix == "data:image/png;base64"
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")


def test_headline_numbers_are_those_of_duckdb(page: Page, conn: duckdb.DuckDBPyConnection) -> None:
    """Finished, open and stuck instances, records, dead letters, late events, corrections,
    deadlines fired and the compensation success rate read as the tables say."""
    q = {
        "instances_finished": count(scalar(conn, "SELECT count(*) FROM outcomes")),
        "instances_open": "0", "instances_stuck": "0",
        "records": count(scalar(conn, "SELECT count(*) FROM ledger")),
        "dead_letters": count(scalar(conn, "SELECT count(*) FROM dead_letters")),
        "late_events": count(scalar(conn, "SELECT count(*) FROM ledger "
                                    "WHERE disposition = 'late'")),
        "corrections": count(scalar(conn, "SELECT count(*) FROM corrections")),
        "deadlines_fired": count(scalar(conn, """SELECT count(*) FROM (
            SELECT instance_id, step, due_at FROM commands WHERE reason = 'deadline'
            UNION SELECT instance_id, from_state, "at" FROM transitions
            WHERE trigger = 'deadline')""")),
        "compensation_success": percent(scalar(conn, """
            SELECT count(*) FILTER (WHERE outcome = 'compensated')
                   / count(*) FILTER (WHERE outcome LIKE 'compensat%') FROM outcomes""")),
    }
    assert {k: page.numbers[k] for k in q} == q
    assert int(page.numbers["corrections"]) > 0


def test_tables_show_the_numbers_of_the_tables(page: Page, conn: duckdb.DuckDBPyConnection) -> None:
    """Outcomes per workflow, dead letters per reason, step latency p95 and the slowest instance on
    the page equal what SQL over the raw tables gives."""
    outcomes = {(wf, o): count(n) for wf, o, n in conn.sql(
        "SELECT workflow_type, outcome, count(*) FROM outcomes GROUP BY ALL").fetchall()}
    assert {(r[0], r[1]): r[2] for r in page.rows("outcomes")} == outcomes
    dead = {reason: count(n) for reason, n in conn.sql(
        "SELECT reason, count(*) FROM dead_letters GROUP BY ALL").fetchall()}
    assert {r[0]: r[1] for r in page.rows("dead_letters")} == dead
    p95 = {(wf, step): human_ms(ms) for wf, step, ms in conn.sql(
        """SELECT workflow_type, from_state, quantile_cont(state_duration_ms, 0.95) FROM transitions
           WHERE from_state IS NOT NULL GROUP BY ALL""").fetchall()}
    assert {(r[0], r[1]): r[4] for r in page.rows("step_latency")} == p95
    ((slowest, duration),) = conn.sql("SELECT instance_id, duration_ms FROM outcomes "
                                      "ORDER BY duration_ms DESC LIMIT 1").fetchall()
    assert page.rows("slowest_instances")[0][1:4:2] == [slowest, human_ms(duration)]
    deadlines = " ".join(cell for row in page.rows("step_latency") for cell in row)
    assert re.search(r"15m SendPaymentReminder; 30m CancelOrder → timed_out", deadlines)


def test_the_parquet_source_renders_the_same_page(out: Path, page: Page, tmp_path: Path) -> None:
    """Read from the Parquet files instead of DuckDB, the page shows the same numbers and tables."""
    other = render(out, tmp_path / "from-parquet.html", "--source", "parquet")
    assert (other.numbers, other.tables) == (page.numbers, page.tables)

"""Pending deadlines and the console's "due next" page: each open instance's deadlines with name,
due time and time left as of its partition's watermark, in `inspect` and the console; the page
and its JSON route filtered, ordered and paged in SQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from starlette.testclient import TestClient

from console import queries
from console.queries import PAGE_SIZE
from dataflows.cli import main as cli_main
from tests.console_kit import client

REPO = Path(__file__).resolve().parents[1]
CLAIMS = REPO / "definitions" / "claims"


@pytest.fixture(scope="module")
def open_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A claims run in business time whose end fires nothing: some instances stay open."""
    out = tmp_path_factory.mktemp("due") / "out"
    assert cli_main(["run", "--definitions", str(CLAIMS), "--out", str(out), "--sim-instances",
                     "600", "--sim-seed", "4", "--sim-rate", "0.0005", "--no-drain-at-eof"]) == 0
    return out


@pytest.fixture(scope="module")
def web(open_run: Path) -> TestClient:
    return client(open_run, definitions=CLAIMS)


def sql(out: Path, query: str) -> list[tuple[Any, ...]]:
    """Rows of a query over the run's DuckDB file."""
    conn = duckdb.connect(str(out / "flowkeeper.duckdb"), read_only=True)
    try:
        conn.execute("SET TimeZone = 'UTC'")
        return conn.sql(query).fetchall()
    finally:
        conn.close()


def test_pending_deadlines_are_the_open_instances_unfired_deadlines(open_run: Path) -> None:
    """Every open instance waits on at least one deadline of its state (each state of the claims
    workflow has one); none of them has sent its command, and time left is due minus the
    partition's newest event time."""
    open_ids = {r[0] for r in sql(open_run, "SELECT instance_id FROM open_instances")}
    pending = sql(open_run, "SELECT instance_id, deadline, due_at, watermark, remaining_ms "
                  "FROM pending_deadlines")
    assert len(open_ids) >= 5 and {r[0] for r in pending} == open_ids
    for _, _, due, watermark, remaining in pending:
        assert remaining == (due - watermark).total_seconds() * 1000
    sent = sql(open_run, "SELECT count(*) FROM pending_deadlines p JOIN commands c ON "
               "c.instance_id = p.instance_id AND c.deadline = p.deadline AND "
               "c.due_at = p.due_at")
    assert sent == [(0,)]


def test_due_next_orders_by_the_next_deadline_and_filters(open_run: Path, web: TestClient
                                                          ) -> None:
    """The JSON route lists each open instance once, soonest next deadline first, as SQL over
    the view says; filters by state, deadline name and "due within" keep exactly the matching
    rows; the HTML page shows the same total."""
    expected = sql(open_run, """SELECT instance_id, min(due_at) FROM pending_deadlines
                                GROUP BY ALL ORDER BY 2, 1""")
    found = web.get("/api/due").json()
    assert found["total"] == len(expected)
    assert [r["instance_id"] for r in found["rows"]] == [r[0] for r in expected][:PAGE_SIZE]
    state, name = found["rows"][0]["state"], found["rows"][0]["deadline"]
    filtered = web.get("/api/due", params={"state": state, "deadline": name}).json()
    want = sql(open_run, f"SELECT count(DISTINCT instance_id) FROM pending_deadlines "
               f"WHERE state = '{state}' AND deadline = '{name}'")[0][0]
    assert filtered["total"] == want and all(
        (r["state"], r["deadline"]) == (state, name) for r in filtered["rows"])
    soon = web.get("/api/due", params={"within": "1d"}).json()
    want = sql(open_run, "SELECT count(DISTINCT instance_id) FROM pending_deadlines "
               "WHERE remaining_ms <= 86400000")[0][0]
    assert soon["total"] == want < found["total"]
    assert all(r["remaining_ms"] <= 86_400_000 for r in soon["rows"])
    page = web.get("/due", params={"within": "1d"})
    assert page.status_code == 200 and f'data-key="total">{want}<' in page.text
    assert web.get("/api/due", params={"within": "soon"}).status_code == 400


def test_due_next_pages_in_sql(open_run: Path, web: TestClient,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With pages of 4, the pages together are the whole ordered list, each instance once, and a
    page past the end shows the last one."""
    monkeypatch.setattr(queries, "PAGE_SIZE", 4)
    first = web.get("/api/due").json()
    assert first["pages"] == -(-first["total"] // 4) >= 3
    ids = [r["instance_id"] for n in range(1, first["pages"] + 1)
           for r in web.get("/api/due", params={"page": n}).json()["rows"]]
    expected = sql(open_run, """SELECT instance_id, min(due_at) FROM pending_deadlines
                                GROUP BY ALL ORDER BY 2, 1""")
    assert ids == [r[0] for r in expected]
    assert web.get("/api/due", params={"page": 999}).json()["page"] == first["pages"]


def test_instance_page_and_inspect_list_pending_deadlines(open_run: Path, web: TestClient,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    """The console's instance page, its JSON and `inspect` show each pending deadline of an open
    instance with its name, due time and time left."""
    instance, name, remaining = sql(open_run, "SELECT instance_id, deadline, remaining_ms FROM "
                                    "pending_deadlines ORDER BY due_at, instance_id LIMIT 1")[0]
    data = web.get(f"/api/instances/claims_handling/{instance}").json()
    assert data["pending_deadlines"][0]["deadline"] == name
    assert data["pending_deadlines"][0]["remaining_ms"] == remaining
    html = web.get(f"/instances/claims_handling/{instance}").text
    assert 'id="pending"' in html and f'data-key="deadline">{name}<' in html
    assert cli_main(["inspect", str(instance), "--out", str(open_run), "--definitions",
                     str(CLAIMS)]) == 0
    assert f"pending deadline {name}: due " in capsys.readouterr().out
    assert cli_main(["inspect", str(instance), "--out", str(open_run), "--definitions",
                     str(CLAIMS), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pending_deadlines"][0]["deadline"] == name

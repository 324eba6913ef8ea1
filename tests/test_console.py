"""`flowkeeper console` over HTTP: every route against the demo run, numbers equal to the views,
filters and paging done in SQL, the instance page equal to `inspect --json`, read-only, tokens,
and which copy it reads while a pipeline writes."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import pytest
from starlette.testclient import TestClient

from console.app import SECURITY_HEADERS, TOKEN_COOKIE
from console.queries import PAGE_SIZE
from dataflows.cli import main
from tests.console_kit import HOSTILE_ID, IMG, SCRIPT, client, hostile_run
from tests.demo_kit import paced_archive, pairs, rows, scalar


@pytest.fixture(scope="module")
def web(out: Path) -> TestClient:
    return client(out)


def numbers(page: str) -> dict[str, int]:
    """The page's `data-key` figures, as integers."""
    found = re.findall(r'data-key="([^"]+)">([^<]*)<', page)
    return {key: int(value.replace(",", "")) for key, value in found}


class Markup(HTMLParser):
    """The elements of a page, to find any that could run or load something."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.found: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name.startswith("on") or (name in ("src", "href") and value and (
                    value.lower().startswith("javascript:") or (tag == "img"
                    and not value.startswith("data:image/png;base64,")))):
                self.found.append(f"<{tag} {name}={value!r}>")
        if tag in ("script", "iframe", "object", "embed", "base"):
            self.found.append(f"<{tag}>")

    def dangerous(self) -> list[str]:
        """Script elements, event-handler attributes, script URLs, images not drawn here."""
        return self.found


def instance_path(workflow: str, instance: str) -> str:
    return f"/instances/{quote(workflow, safe='')}/{quote(instance, safe='')}"


def corrected_timeout(conn: duckdb.DuckDBPyConnection) -> tuple[str, str]:
    """An instance that timed out and was then corrected by a late event."""
    found = rows(conn, "SELECT workflow_type, instance_id FROM corrections "
                 "WHERE original_outcome = 'timed_out' ORDER BY instance_id LIMIT 1")
    assert found, "the demo run has a timeout corrected by a late event"
    return found[0][0], found[0][1]


def test_overview_numbers_are_the_views(web: TestClient, conn: duckdb.DuckDBPyConnection) -> None:
    """Every overview figure is what SQL over the views says; the page shows the same numbers."""
    data = web.get("/api/overview").json()
    assert data["source"] == "duckdb"
    assert data["input"]["by_disposition"] == pairs(conn, "FROM input_accounting")
    assert data["input"]["records"] == scalar(conn, "SELECT count(*) FROM ledger")
    assert {r["outcome"]: r["instances"] for r in data["outcomes"]} == pairs(
        conn, "SELECT outcome, count(*) FROM outcomes GROUP BY ALL")
    assert sum(r["instances"] for r in data["open_by_state"]) == scalar(
        conn, "SELECT count(*) FROM open_instances")
    assert {(r["workflow_type"], r["step"]): r["breached"] for r in data["sla_breaches"]} == {
        (w, s): b for w, s, b in rows(conn, "SELECT workflow_type, step, breached "
                                      "FROM sla_breach_rate_per_step WHERE breached > 0")}
    assert {r["reason"]: r["records"] for r in data["dead_letters"]} == pairs(
        conn, "SELECT reason, records FROM dead_letters_by_reason")
    assert data["corrections_total"] == scalar(conn, "SELECT count(*) FROM corrections") > 0
    partitions = {r["partition"]: (r["records"], r["watermark"]) for r in data["partitions"]}
    assert partitions == {p: (n, w.isoformat()) for p, n, w in rows(
        conn, "SELECT partition, count(*), max(event_time) FROM ledger GROUP BY ALL")}

    page = web.get("/")
    shown = numbers(page.text)
    assert shown["records"] == data["input"]["records"]
    assert shown["corrections"] == data["corrections_total"]
    for disposition, n in data["input"]["by_disposition"].items():
        assert shown[f"input:{disposition}"] == n
    assert '<meta http-equiv="refresh" content="5">' in page.text
    assert page.text.count('src="data:image/png;base64,') == 3


def test_instances_filter_sort_and_page_in_sql(web: TestClient,
                                               conn: duckdb.DuckDBPyConnection) -> None:
    """Each filter narrows to what SQL counts; pages hold PAGE_SIZE rows, sorted as asked."""
    def total(**params: str) -> int:
        found = web.get("/api/instances", params=params).json()
        html = web.get("/instances", params=params).text
        assert numbers(html)["total"] == found["total"]
        return int(found["total"])

    finished = scalar(conn, "SELECT count(*) FROM outcomes")
    open_now = scalar(conn, "SELECT count(*) FROM open_instances")
    assert total() == finished + open_now
    assert total(outcome="timed_out") == scalar(
        conn, "SELECT count(*) FROM outcomes WHERE outcome = 'timed_out'")
    assert total(outcome="open") == open_now
    assert total(workflow_type="order_fulfilment") == scalar(
        conn, "SELECT count(DISTINCT instance_id) FROM transitions "
        "WHERE workflow_type = 'order_fulfilment'")
    assert total(workflow_type="order_fulfilment", state="delivered") == scalar(
        conn, "SELECT count(*) FROM outcomes WHERE workflow_type = 'order_fulfilment' "
        "AND final_state = 'delivered'")
    assert total(corrected="1") == scalar(
        conn, "SELECT count(DISTINCT (workflow_type, instance_id)) FROM corrections")
    workflow, step, breached = rows(conn, "SELECT workflow_type, step, breached FROM "
                                    "sla_breach_rate_per_step ORDER BY breached DESC LIMIT 1")[0]
    assert total(workflow_type=workflow, breached_step=step) == breached
    start = scalar(conn, "SELECT min(started_at) + INTERVAL 10 MINUTE FROM outcomes")
    assert total(started_from=start.isoformat()) == scalar(
        conn, f"SELECT count(*) FROM outcomes WHERE started_at >= '{start.isoformat()}'")
    some = scalar(conn, "SELECT instance_id FROM outcomes ORDER BY instance_id LIMIT 1")
    assert total(q=some[-6:].upper()) == scalar(
        conn, f"SELECT count(*) FROM outcomes WHERE instance_id ILIKE '%{some[-6:]}%'")

    first = web.get("/api/instances", params={"sort": "started_at", "order": "desc"}).json()
    second = web.get("/api/instances",
                     params={"sort": "started_at", "order": "desc", "page": "2"}).json()
    assert len(first["rows"]) == len(second["rows"]) == PAGE_SIZE and first["pages"] > 2
    times = [r["started_at"] for r in first["rows"] + second["rows"]]
    assert times == sorted(times, reverse=True)
    assert times[0] == scalar(conn, "SELECT max(started_at) FROM outcomes").isoformat()
    assert web.get("/api/instances", params={"page": "999999"}).json()["page"] == first["pages"]


def test_the_instance_page_is_inspect_json(web: TestClient, out: Path,
                                           conn: duckdb.DuckDBPyConnection) -> None:
    """The page of a timed-out, then corrected, instance holds every entry of `inspect --json`,
    which its JSON twin equals; each event links to its raw record."""
    workflow, instance = corrected_timeout(conn)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(["inspect", instance, "--workflow", workflow, "--out", str(out),
                     "--json"]) == 0
    expected = json.loads(printed.getvalue())
    assert web.get("/api" + instance_path(workflow, instance)).json() == expected
    page = web.get(instance_path(workflow, instance)).text
    kinds = re.findall(r'data-kind="([a-z_]+)"', page)
    assert kinds == [e["kind"] for e in expected["timeline"]]
    assert {"deadline_fired", "outcome", "correction"} <= set(kinds)
    event = next(e for e in expected["timeline"] if e["kind"] == "event")
    raw = web.get("/records", params={"source": event["source"],
                                      "partition": str(event["partition"]),
                                      "offset": str(event["offset"])})
    assert raw.status_code == 200 and event["event_id"] in raw.text


def test_dead_letters_by_reason_with_raw_bytes(web: TestClient,
                                               conn: duckdb.DuckDBPyConnection) -> None:
    reason, records = rows(conn, "SELECT reason, records FROM dead_letters_by_reason LIMIT 1")[0]
    page = web.get("/dead-letters", params={"reason": reason}).text
    assert numbers(page)["total"] == records
    assert page.count("<summary>value: ") == min(records, PAGE_SIZE)
    assert numbers(web.get("/dead-letters").text)["total"] == scalar(
        conn, "SELECT count(*) FROM dead_letters")


@pytest.mark.parametrize(("path", "status"), [
    ("/instances/order_fulfilment/no-such-id", 404),
    ("/instances/bad%20workflow/x", 404),
    ("/instances/order_fulfilment/a%00b", 404),
    ("/records?source=simulator&partition=0&offset=999999999", 404),
    ("/records?source=simulator&partition=x&offset=1", 400),
    ("/instances?started_from=yesterday", 400),
    ("/instances?sort=instance_id%3B%20DROP%20TABLE%20outcomes", 200),
    ("/../../etc/passwd", 404),
    ("/static/../app.py", 404),
])
def test_bad_requests_are_refused_plainly(web: TestClient, path: str, status: int) -> None:
    """Unknown or malformed ids, dates and numbers get a 4xx page that says what to give; an
    unknown sort column falls back to the default (nothing from a request reaches SQL text)."""
    response = web.get(path)
    assert response.status_code == status
    assert response.headers["content-security-policy"] == SECURITY_HEADERS[
        "Content-Security-Policy"]


def test_read_only_and_guarded_on_every_route(web: TestClient, out: Path) -> None:
    """Only GET and HEAD are served, every response carries the protective headers, and the run's
    files are unchanged by a tour of every page."""
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    for path in ("/", "/api/overview", "/instances", "/api/instances", "/dead-letters"):
        response = web.get(path)
        assert response.status_code == 200
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value
        assert web.post(path).status_code == 405
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_a_token_guards_every_route(out: Path) -> None:
    """With a token, nothing is served without it; a bearer header, or `?token=` once (it becomes
    an HttpOnly cookie and leaves the address), lets the user in."""
    web = client(out, token="s3cret")
    assert web.get("/").status_code == 401
    assert web.get("/api/overview", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert web.get("/api/overview",
                   headers={"Authorization": "Bearer s3cret"}).status_code == 200
    entry = web.get("/instances", params={"token": "s3cret", "outcome": "failed"})
    assert entry.status_code == 303 and entry.headers["location"] == "/instances?outcome=failed"
    assert "httponly" in entry.headers["set-cookie"].lower()
    web.cookies.set(TOKEN_COOKIE, "s3cret")
    assert web.get("/instances", params={"outcome": "failed"}).status_code == 200


def test_another_host_needs_a_token(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["console", "--out", str(out), "--host", "0.0.0.0"]) == 2
    assert "--token" in capsys.readouterr().err


def test_parquet_gives_the_same_pages(web: TestClient, out: Path) -> None:
    """Read from the Parquet files (as while a run writes), the numbers are the DuckDB file's."""
    parquet = client(out, source="parquet")
    from_parquet: dict[str, Any] = parquet.get("/api/overview").json()
    from_duckdb: dict[str, Any] = web.get("/api/overview").json()
    assert from_parquet.pop("source") == "parquet" and from_duckdb.pop("source") == "duckdb"
    assert from_parquet == from_duckdb
    assert parquet.get("/api/instances").json() == web.get("/api/instances").json()


def test_hostile_input_is_shown_as_text(tmp_path: Path) -> None:
    """Markup and invalid UTF-8 in ids, payloads, headers and dead letters reach every page only
    escaped: no page carries a tag or attribute of them (the browser test runs the pages too)."""
    out = hostile_run(tmp_path)
    web = client(out, definitions=tmp_path / "defs")
    listed = web.get("/api/instances").json()["rows"]
    assert [r["instance_id"] for r in listed] == [HOSTILE_ID]
    pages = ["/", "/instances", "/dead-letters", instance_path("tickets", HOSTILE_ID),
             *(f"/records?source=hostile&partition=0&offset={n}" for n in range(4))]
    for path in pages:
        page = web.get(path)
        assert page.status_code == 200, path
        assert Markup(page.text).dangerous() == [], path
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in web.get(pages[3]).text
    assert "\\xff\\xfe&lt;script&gt;" in web.get(pages[-3]).text
    assert IMG not in web.get("/dead-letters").text and SCRIPT not in web.get(pages[4]).text


def test_while_a_run_writes_it_reads_parquet_and_never_holds_the_file(out: Path,
                                                                      tmp_path: Path) -> None:
    """A paced replay writes while the console serves: the console reads the committed Parquet
    files (the pipeline holds the DuckDB file), the run finishes cleanly, and then the console
    reads the finished DuckDB file, whose numbers are the Parquet files'."""
    archive = paced_archive(out, tmp_path / "input")
    live = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "dataflows.cli", "run", "--out", str(live),
                            "--source", "archive", "--archive-path", str(archive),
                            "--replay-speed", "1", "--flush-seconds", "0.2"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen: set[str] = set()
    try:
        while run.poll() is None:
            if any((live / "parquet" / "ledger").glob("**/*.parquet")):
                seen.add(client(live).get("/api/overview").json()["source"])
            time.sleep(0.1)
    finally:
        if run.poll() is None:
            run.kill()
        errors = run.communicate()[1]
    assert run.returncode == 0, errors
    assert "parquet" in seen
    final = client(live).get("/api/overview").json()
    assert final.pop("source") == "duckdb"
    from_parquet = client(live, source="parquet").get("/api/overview").json()
    from_parquet.pop("source")
    assert final == from_parquet and final["input"]["records"] == 200


def test_the_command_serves_until_stopped(out: Path) -> None:
    """`flowkeeper console --port 0` says where it listens, on 127.0.0.1, and serves there."""
    server = subprocess.Popen([sys.executable, "-m", "dataflows.cli", "console", "--out", str(out),
                               "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout is not None
        printed = server.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", printed)
        assert url, printed
        with urllib.request.urlopen(url[0] + "api/overview") as response:
            data = json.load(response)
        assert data["source"] == "duckdb" and data["input"]["records"] > 0
    finally:
        server.terminate()
        server.communicate()

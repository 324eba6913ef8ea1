"""Event logs (XES, gzipped XES, CSV) to archives of CloudEvents, and the definitions for them."""

from __future__ import annotations

import gzip
import json
from datetime import UTC
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pyarrow.parquet as pq
import pytest

from connectors.archive_format import records_of
from connectors.event_logs import EventLogError, read_log
from connectors.log_import import StepSla, import_events
from dataflows.cli import main as cli_main
from dataflows.settings import Settings
from schemas.decode import MAX_TIME_MS, decode
from schemas.event import DeadLetter, Event, RawRecord
from schemas.payloads.registry import PayloadRegistry
from state.catalog import load_catalog
from state.definition import CaseTracking
from tests.engine_kit import Harness, ce, write_catalog

XES = """<?xml version="1.0" encoding="UTF-8"?>
<log xes.version="1.0" xmlns="http://www.xes-standard.org/">
  <string key="concept:name" value="a log-level name, not a case"/>
  <trace>
    <event>
      <string key="concept:name" value="register"/>
      <string key="org:resource" value="Pete"/>
      <string key="lifecycle:transition" value="complete"/>
      <date key="time:timestamp" value="2010-12-30T14:32:00.000+01:00"/>
      <int key="cost" value="50"><string key="nested" value="left out"/></int>
    </event>
    <event>
      <string key="concept:name" value="decide"/>
      <date key="time:timestamp" value="2011-01-06T09:18:00"/>
    </event>
    <string key="concept:name" value="case-b"/>
  </trace>
  <trace>
    <string key="concept:name" value="case-a"/>
    <event>
      <string key="concept:name" value="register"/>
      <date key="time:timestamp" value="2010-12-31T08:00:00.000Z"/>
    </event>
  </trace>
</log>
"""

CSV = """Case ID;Activity;Complete Timestamp;Leucocytes;org:group
A;ER Registration;2014/10/22 11:15:41.000;;A
A;Leucocytes;2014/10/22 11:27:00.000;9.6;B
A;Leucocytes;2014/10/22 11:27:00.000;9.6;B
A;Leucocytes;2014/10/22 11:27:00.000;11.2;B
"""


def archived(out: Path) -> list[RawRecord]:
    """The archive's records in (partition, offset) order."""
    files = sorted((out / "archive").glob("date=*/partition=*/*.parquet"))
    return sorted((r for f in files for r in records_of(pq.read_table(f))),
                  key=lambda r: (r.partition, r.offset))


def envelope(record: RawRecord) -> dict[str, object]:
    value: dict[str, object] = json.loads(record.value)
    return value


@pytest.mark.parametrize("suffix", [".xes", ".xes.gz"])
def test_xes_cases_are_merged_by_time_with_their_attributes(tmp_path: Path, suffix: str) -> None:
    """Events of case-grouped XES come out in (timestamp, position) order as CloudEvents with the
    activity as type, the case as subject and key, the offset kept, naive stamps in the stated
    zone, and lifecycle, resource and flat attributes as data."""
    log = tmp_path / f"log{suffix}"
    log.write_bytes(gzip.compress(XES.encode()) if suffix.endswith(".gz") else XES.encode())
    summary = import_events(read_log(log, ZoneInfo("Europe/Amsterdam")), tmp_path / "out",
                            source="demo", partitions=1)
    assert (summary.events, summary.cases, summary.duplicates) == (3, 2, 0)
    records = archived(tmp_path / "out")
    events = [envelope(r) for r in records]
    assert [(e["subject"], e["type"]) for e in events] == [
        ("case-b", "register"), ("case-a", "register"), ("case-b", "decide")]
    assert [r.key for r in records] == [b"case-b", b"case-a", b"case-b"]
    assert [e["time"] for e in events] == ["2010-12-30T14:32:00.000+01:00",
                                           "2010-12-31T08:00:00.000+00:00",
                                           "2011-01-06T09:18:00.000+01:00"]
    assert [e["sequence"] for e in events] == ["0", "2", "1"]
    assert events[0]["data"] == {"lifecycle": "complete", "resource": "Pete",
                                 "attributes": {"cost": "50"}}
    assert [r.arrived_ms for r in records] == sorted(r.arrived_ms for r in records)
    assert records[0].arrived_ms == 1_293_715_920_000  # arrival = event time


def test_csv_exact_duplicates_share_id_and_bytes_but_lab_values_do_not(tmp_path: Path) -> None:
    """A repeated row gets the same id and bytes (a `duplicate` in the pipeline); a row with the
    same case, activity and time but another lab value is a different event."""
    log = tmp_path / "sepsis.csv"
    log.write_text(CSV)
    summary = import_events(read_log(log, UTC), tmp_path / "out", source="sepsis", partitions=1)
    assert (summary.events, summary.duplicates) == (4, 1)
    records = archived(tmp_path / "out")
    ids = [envelope(r)["id"] for r in records]
    assert ids[1] == ids[2] and records[1].value == records[2].value
    assert len(set(ids)) == 3
    assert envelope(records[0])["time"] == "2014-10-22T11:15:41.000+00:00"
    assert envelope(records[3])["data"] == {"attributes": {"Leucocytes": "11.2", "org:group": "B"}}


def test_unreadable_logs_are_errors_that_say_what_to_do(tmp_path: Path) -> None:
    """A CSV without a case column, a timestamp that is not ISO 8601, an unknown file type, a cut
    XES file and a gzip that is none each raise an error naming the file and what to do."""
    no_case = tmp_path / "a.csv"
    no_case.write_text("id,Activity,Timestamp\n1,x,2020-01-01T00:00:00Z\n")
    with pytest.raises(EventLogError, match=r"a\.csv: no .*'Case ID'.*--case-column"):
        list(read_log(no_case, UTC))
    bad_time = tmp_path / "b.csv"
    bad_time.write_text("case,activity,timestamp\nc1,x,01.02.2020 10:00\n")
    with pytest.raises(EventLogError, match=r"event #0 \(case 'c1'\).*--time-format"):
        list(read_log(bad_time, UTC))
    assert [e.time.month for e in read_log(bad_time, UTC, time_format="%d.%m.%Y %H:%M")] == [2]
    other = tmp_path / "c.json"
    other.write_text("{}")
    with pytest.raises(EventLogError, match=r"unknown log format"):
        read_log(other, UTC)
    cut, not_gzip = tmp_path / "d.xes", tmp_path / "e.xes.gz"
    cut.write_text(XES[:400])
    not_gzip.write_text(XES)
    with pytest.raises(EventLogError, match=r"d\.xes: not well-formed XES"):
        list(read_log(cut, UTC))
    with pytest.raises(EventLogError, match=r"e\.xes\.gz: cannot be read"):
        list(read_log(not_gzip, UTC))


def test_cli_writes_a_case_tracking_definition_with_the_sla(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`import-log --sla` writes a loadable case-tracking definition that accepts any activity,
    closes cases only after the whole log's span, and holds the rule; a second import into the
    same folder needs --overwrite; a malformed --sla exits 2 with the expected form."""
    log = tmp_path / "sepsis.csv"
    log.write_text(CSV)
    out = tmp_path / "imported"
    assert cli_main(["import-log", str(log), "--out", str(out), "--sla",
                     "ER Registration->Leucocytes<=1h", "--sla", "*->Leucocytes<=2d"]) == 0
    definition = load_catalog(out / "definition.yaml").latest("sepsis")
    assert isinstance(definition, CaseTracking)
    assert definition.events == "any" and definition.close_after_idle == "2d"
    assert [(r.from_event, r.to, r.within) for r in definition.rules] == [
        ("ER Registration", "Leucocytes", "1h"), (None, "Leucocytes", "2d")]
    assert "next: flowkeeper replay" in capsys.readouterr().out
    assert cli_main(["import-log", str(log), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli_main(["import-log", str(log), "--out", str(out), "--overwrite",
                     "--sla", "a->b"]) == 2
    assert "FROM->TO<=LIMIT" in capsys.readouterr().err


def test_step_sla_parses_the_documented_forms() -> None:
    """`FROM->TO<=LIMIT` with spaces in activity names; FROM `*` (or empty) is the case start."""
    assert StepSla.parse("ER Registration->IV Antibiotics<=1h") == StepSla(
        "ER Registration", ("IV Antibiotics",), "1h")
    assert StepSla.parse(" * -> Closed <= 168h") == StepSla(None, ("Closed",), "168h")
    assert StepSla.parse("->Closed<=1d") == StepSla(None, ("Closed",), "1d")
    assert StepSla.parse("Application->Accepted | Rejected|Withdrawn<=720h") == StepSla(
        "Application", ("Accepted", "Rejected", "Withdrawn"), "720h")
    with pytest.raises(ValueError, match="limit"):
        StepSla.parse("a->b<=soon")
    with pytest.raises(ValueError, match=r"TO 'B\|C\|D'"):
        StepSla.parse("a->b||c<=1h")


CASE_START_SLA = """
workflow: tickets
mode: case_tracking
version: 1
events: any
rules:
  - {within: 1h, to: Resolved}
"""


@pytest.mark.parametrize(("minutes", "breached"), [(30, False), (61, True), (0, False)])
def test_rule_without_from_is_measured_from_the_case_start(tmp_path: Path, minutes: int,
                                                           breached: bool) -> None:
    """A `within` rule with no `from` measures from the case's first event; a case whose first
    event is the `to` itself meets it (0 ms)."""
    events = [ce("r", "Resolved", minutes, subject="c1")]
    if minutes:
        events.insert(0, ce("o", "Opened", 0, subject="c1"))
    h = Harness(write_catalog(tmp_path, CASE_START_SLA)).feed(*events).drain()
    kinds = [a["kind"] for a in h.tables().get("anomalies", [])]
    assert ("sla_breached" in kinds) is breached
    assert ("sla_overdue" in kinds) is breached


def test_cli_writes_set_targets_and_case_rules_and_reports_activities_the_log_lacks(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--sla 'A->B|C<=LIMIT'` becomes a rule with a list of targets, `--complete-within` and
    `--stuck-after` become rules, and a rule naming an activity the log never has is reported
    by name with the log's activities (a typo would otherwise find 0 breaches silently)."""
    log = tmp_path / "sepsis.csv"
    log.write_text(CSV)
    out = tmp_path / "imported"
    assert cli_main(["import-log", str(log), "--out", str(out),
                     "--sla", "ER Registration->Leucocytes|IV Liquid<=1h",
                     "--sla", "ER Registration->Leucocytes<=2h",
                     "--complete-within", "5d", "--stuck-after", "2d"]) == 0
    printed = capsys.readouterr().out
    definition = load_catalog(out / "definition.yaml").latest("sepsis")
    assert isinstance(definition, CaseTracking)
    assert [(r.to, r.within, r.complete_within, r.stuck_after) for r in definition.rules] == [
        (["Leucocytes", "IV Liquid"], "1h", None, None), ("Leucocytes", "2h", None, None),
        (None, None, "5d", None), (None, None, None, "2d")]
    warnings = [line for line in printed.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "'IV Liquid' never occurs in the log" in warnings[0]
    assert "'ER Registration', 'Leucocytes'" in warnings[0]
    assert "(4 SLA rules)" in printed
    assert cli_main(["import-log", str(log), "--out", str(out), "--overwrite",
                     "--stuck-after", "soon"]) == 2
    assert "--stuck-after 'soon'" in capsys.readouterr().err


ANY_DECISION_SLA = """
workflow: tickets
mode: case_tracking
version: 1
events: any
rules:
  - {within: 1h, from: Opened, to: [Resolved, Rejected]}
"""


@pytest.mark.parametrize(("events", "breached"), [
    ([("Opened", 0), ("Rejected", 30), ("Resolved", 90)], False),  # the first target counts
    ([("Opened", 0), ("Resolved", 61)], True),
    ([("Opened", 0), ("Assigned", 10), ("Rejected", 59)], False),
])
def test_a_rule_with_several_targets_stops_at_the_first_of_them(
        tmp_path: Path, events: list[tuple[str, int]], breached: bool) -> None:
    """`to: [B, C]`: the span ends at the first B or C after `from`, whichever it is."""
    feed = [ce(f"e{i}", kind, minutes, subject="c1") for i, (kind, minutes) in enumerate(events)]
    h = Harness(write_catalog(tmp_path, ANY_DECISION_SLA)).feed(*feed).drain()
    kinds = [a["kind"] for a in h.tables().get("anomalies", [])]
    assert ("sla_breached" in kinds) is breached


OLD_CSV = """Case ID;Activity;Complete Timestamp
A;Registered;1948/03/01 10:00:00.000
A;Approved;1948/03/02 10:00:00.000
B;Registered;2014/10/22 11:15:41.000
B;Approved;2014/10/23 11:15:41.000
"""


def ledger_of(run: Path) -> list[tuple[str, str | None]]:
    """(disposition, dead-letter message) per record of a replay's Parquet output."""
    conn = duckdb.connect()
    ledger = f"read_parquet('{run}/parquet/ledger/**/*.parquet')"
    if not list((run / "parquet" / "dead_letters").glob("**/*.parquet")):
        return sorted(conn.execute(f"SELECT disposition, NULL FROM {ledger}").fetchall())
    return sorted(conn.execute(
        f"SELECT l.disposition, d.message FROM {ledger} l LEFT JOIN "
        f"read_parquet('{run}/parquet/dead_letters/**/*.parquet') d USING (row_id)").fetchall())


def test_a_log_older_than_2000_replays_whole_because_import_log_widens_accept_times(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Events stamped in 1948 lie outside the default range (2000 to 2200); `import-log` says so
    and writes `accept_times: {from: 1948-03-01}`, and the replay applies every event. The same
    archive replayed without it dead-letters the 1948 events with a message naming the fix."""
    log = tmp_path / "old.csv"
    log.write_text(OLD_CSV)
    out = tmp_path / "imported"
    assert cli_main(["import-log", str(log), "--out", str(out),
                     "--time-format", "%Y/%m/%d %H:%M:%S.%f"]) == 0
    assert ("2 events lie outside the default time range (2000-01-01 to 2200-01-01): "
            "definition.yaml accepts times from 1948-03-01") in capsys.readouterr().out
    definition = load_catalog(out / "definition.yaml").latest("old")
    assert definition.accept_times is not None
    assert (str(definition.accept_times.since), definition.accept_times.until) == (
        "1948-03-01", None)
    assert cli_main(["replay", str(out), "--out", str(tmp_path / "run"), "--no-duckdb"]) == 0
    assert ledger_of(tmp_path / "run") == [("applied", None)] * 4
    text = (out / "definition.yaml").read_text()
    (out / "definition.yaml").write_text(
        "\n".join(line for line in text.splitlines() if "accept_times" not in line
                  and "from: '1948" not in line))
    assert cli_main(["replay", str(out), "--out", str(tmp_path / "strict"), "--no-duckdb"]) == 0
    strict = ledger_of(tmp_path / "strict")
    assert [d for d, _ in strict] == ["applied", "applied", "dead_lettered", "dead_lettered"]
    assert all("outside the accepted range (2000-01-01 to 2200-01-01)" in (m or "")
               and "accept_times" in (m or "") for d, m in strict if d == "dead_lettered")


def test_the_run_and_a_definition_set_the_accepted_times(tmp_path: Path) -> None:
    """`--accept-times-from` widens the run's range; a definition's `accept_times` is its own
    range whatever the run's; outside, the dead letter names the range."""
    plain = write_catalog(tmp_path / "plain", CASE_START_SLA)
    own = write_catalog(tmp_path / "own", CASE_START_SLA.replace(
        "events: any", "events: any\naccept_times: {from: 1900-01-01, until: 1950-01-01}"))
    old = RawRecord("t", 0, 0, json.dumps({
        "specversion": "1.0", "id": "e1", "source": "s", "type": "Opened", "subject": "c1",
        "time": "1948-03-01T10:00:00Z"}).encode())
    new = RawRecord("t", 0, 1, old.value.replace(b"1948-", b"2014-"))
    run_range = Settings.from_flags(accept_times_from="1900-01-01").time.accept_times_ms
    assert run_range == (-2_208_988_800_000, MAX_TIME_MS)
    assert isinstance(decode(old, plain.decode_rules(PayloadRegistry(), accept_times=run_range)),
                      Event)
    strict = decode(old, plain.decode_rules(PayloadRegistry()))
    assert isinstance(strict, DeadLetter) and strict.reason == "time_out_of_range"
    assert "(2000-01-01 to 2200-01-01)" in strict.message
    assert isinstance(decode(old, own.decode_rules(PayloadRegistry())), Event)
    later = decode(new, own.decode_rules(PayloadRegistry(), accept_times=run_range))
    assert isinstance(later, DeadLetter) and "(1900-01-01 to 1950-01-01)" in later.message

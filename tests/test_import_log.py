"""Event logs (XES, gzipped XES, CSV) to archives of CloudEvents, and the definitions for them."""

from __future__ import annotations

import gzip
import json
from datetime import UTC
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow.parquet as pq
import pytest

from connectors.archive_format import records_of
from connectors.event_logs import EventLogError, read_log
from connectors.log_import import StepSla, import_events
from dataflows.cli import main as cli_main
from schemas.event import RawRecord
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
    assert StepSla.parse("ER Registration->IV Antibiotics<=1h") == StepSla("ER Registration",
                                                                            "IV Antibiotics", "1h")
    assert StepSla.parse(" * -> Closed <= 168h") == StepSla(None, "Closed", "168h")
    assert StepSla.parse("->Closed<=1d") == StepSla(None, "Closed", "1d")
    with pytest.raises(ValueError, match="limit"):
        StepSla.parse("a->b<=soon")


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

"""Deadlines in business time end to end: calendar files and their checks, the engine arming
business deadlines with names, and a simulator run in business time replayed identically."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest

from analysis.output_diff import compare_outputs
from dataflows.cli import main as cli_main
from schemas.errors import DefinitionError
from state.calendar_files import load_calendars
from state.catalog import load_catalog
from tests.engine_kit import Harness, ce

REPO = Path(__file__).resolve().parents[1]
CLAIMS = REPO / "definitions" / "claims"
BERLIN = ZoneInfo("Europe/Berlin")

OFFICE = """calendar: office
time_zone: Europe/Berlin
working_hours:
  mon: [08:00-12:00, 13:00-17:00]
  tue: [08:00-12:00, 13:00-17:00]
  wed: [08:00-12:00, 13:00-17:00]
  thu: [08:00-12:00, 13:00-17:00]
  fri: [08:00-12:00, 13:00-17:00]
holiday_files: [holidays.ics]
"""

ICS = """BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//test//EN\r
BEGIN:VEVENT\r
UID:1@test\r
DTSTAMP:20260101T000000Z\r
DTSTART;VALUE=DATE:20260303\r
DTEND;VALUE=DATE:20260305\r
SUMMARY:Two days off\r
END:VEVENT\r
END:VCALENDAR\r
"""

ORDER = """workflow: shop_order
version: 1
instance_id: {data_field: order_id}
calendar: office
start: [OrderPlaced]
initial: awaiting_payment
states:
  awaiting_payment:
    on: {PaymentAuthorized: paid}
    deadlines:
      - {after: 2 business hours, command: SendPaymentReminder, name: reminder}
      - {after: 1 business days, command: CancelOrder, goto: timed_out}
  paid: {outcome: completed}
  timed_out: {outcome: timed_out}
"""


def _folder(tmp_path: Path, calendars: dict[str, str], definition: str = ORDER) -> Path:
    """A definitions folder with one definition and the given calendar files."""
    folder = tmp_path / "defs"
    (folder / "calendars").mkdir(parents=True)
    (folder / "order.yaml").write_text(definition)
    for name, text in calendars.items():
        (folder / "calendars" / name).write_text(text)
    return folder


def _berlin_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp() * 1000)


def test_calendars_load_with_extends_and_ics_holidays(tmp_path: Path) -> None:
    """A calendar extending another inherits its zone, weekdays and holidays (the .ics file's
    all-day event covers its DTSTART up to, not including, DTEND) and overrides a weekday."""
    folder = _folder(tmp_path, {"office.yaml": OFFICE, "holidays.ics": ICS,
                                "short.yaml": "calendar: short\nextends: office\nworking_hours:\n"
                                "  fri: [08:00-12:00]\nholidays: [2026-12-24]\n"})
    calendars = load_calendars(folder / "calendars")
    office, short = calendars["office"], calendars["short"]
    assert sorted(office.holidays) == [date(2026, 3, d) for d in (3, 4)]
    assert short.zone == office.zone and short.hours[:4] == office.hours[:4]
    assert short.hours[4] == ((8 * 3_600_000, 12 * 3_600_000),)
    assert len(short.holidays) == 3


@pytest.mark.parametrize(("files", "expected"), [
    ({"office.yaml": OFFICE.replace("Europe/Berlin", "Europe/Atlantis"), "holidays.ics": ICS},
     ["office.yaml: at line 2:", "'Europe/Atlantis' is not an IANA time zone"]),
    ({"office.yaml": "calendar: office\ntime_zone: UTC\nworking_hours:\n  sat: []\n"},
     ["office.yaml: at line 3:", "has no working time"]),
    ({"office.yaml": OFFICE},
     ["office.yaml: at line 9:", "cannot read the holiday file", "holidays.ics"]),
    ({"office.yaml": OFFICE, "holidays.ics": "BEGIN:VCALENDAR\r\nthis is no ical\r\n"},
     ["office.yaml: at line 9:", "is not a readable iCalendar file"]),
    ({"office.yaml": OFFICE,
      "holidays.ics": ICS.replace("SUMMARY", "RRULE:FREQ=YEARLY\r\nSUMMARY")},
     ["office.yaml: at line 9:", "repeats (RRULE)"]),
    ({"office.yaml": OFFICE.replace("08:00-12:00, 13:00", "08:00-14:00, 13:00", 1),
      "holidays.ics": ICS}, ["office.yaml: at line 4:", "overlap"]),
    ({"office.yaml": OFFICE.replace("13:00-17:00]", "13:00-25:00]", 1), "holidays.ics": ICS},
     ["office.yaml: at line 4:", "end at most 24:00"]),
    ({"office.yaml": OFFICE + "extends: nowhere\n", "holidays.ics": ICS},
     ["office.yaml: at line 10:", "'extends: nowhere' names no calendar"]),
    ({"office.yaml": OFFICE + "open_on_sundays: true\n", "holidays.ics": ICS},
     ["office.yaml: at line 10:", "unknown key 'open_on_sundays'"]),
])
def test_a_broken_calendar_is_refused_naming_file_and_line(tmp_path: Path, files: dict[str, str],
                                                          expected: list[str]) -> None:
    """Unknown zones, no working time, unreadable or recurring .ics files, bad intervals, unknown
    `extends` and unknown keys are refused with the file, the line and what to write."""
    folder = _folder(tmp_path, files)
    with pytest.raises(DefinitionError) as caught:
        load_catalog(folder)
    for part in expected:
        assert part in str(caught.value)


def test_check_definitions_refuses_a_broken_calendar(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`check-definitions` exits 2 on a calendar without working time and lists good ones."""
    good = _folder(tmp_path / "good", {"office.yaml": OFFICE, "holidays.ics": ICS})
    assert cli_main(["check-definitions", str(good)]) == 0
    assert "calendar office: Europe/Berlin, 40h a week, 2 holidays" in capsys.readouterr().out
    bad = _folder(tmp_path / "bad", {"office.yaml": "calendar: office\ntime_zone: UTC\n"})
    assert cli_main(["check-definitions", str(bad)]) == 2
    assert "office.yaml: at line 1:" in capsys.readouterr().err


@pytest.mark.parametrize(("definition", "expected"), [
    (ORDER.replace("calendar: office", "calendar: offices"),
     "at calendar: no calendar 'offices' (calendars: office)"),
    (ORDER.replace("calendar: office\n", ""),
     "at states.awaiting_payment.deadlines.0.after: '2 business hours' is business time but no "
     "calendar applies"),
    (ORDER.replace("2 business hours", "2 working hours"), "is not a duration"),
])
def test_definitions_must_name_a_known_calendar_for_business_time(
        tmp_path: Path, definition: str, expected: str) -> None:
    """A definition naming an unknown calendar, or counting business time with none, is
    refused."""
    folder = _folder(tmp_path, {"office.yaml": OFFICE, "holidays.ics": ICS}, definition)
    with pytest.raises(DefinitionError, match=r"order\.yaml: ") as caught:
        load_catalog(folder)
    assert expected in str(caught.value)


def test_engine_arms_business_deadlines_with_names(tmp_path: Path) -> None:
    """An order placed Monday 16:30 Berlin: the 2-business-hour reminder is due Thursday 09:30
    (Tuesday and Wednesday are holidays of the .ics file), the 1-business-day cancellation at
    Thursday 16:30; both are in the transition, the commands carry the deadline's name."""
    catalog = load_catalog(_folder(tmp_path, {"office.yaml": OFFICE, "holidays.ics": ICS}))
    harness = Harness(catalog)
    # T0 is Monday 2026-03-02 10:00 Berlin; 390 minutes later is 16:30.
    harness.feed(ce("e1", "OrderPlaced", 390)).drain()
    tables = harness.tables()
    entered = tables["transitions"][0]
    reminder, cancel = _berlin_ms("2026-03-05T09:30"), _berlin_ms("2026-03-05T16:30")
    assert entered["deadlines"] == [{"name": "reminder", "due_at": reminder},
                                    {"name": "CancelOrder", "due_at": cancel}]
    assert [(c["command"], c["deadline"], c["due_at"]) for c in tables["commands"]] == [
        ("SendPaymentReminder", "reminder", reminder), ("CancelOrder", "CancelOrder", cancel)]
    assert harness.outcome()["ended_at"] == cancel


def test_what_if_with_another_calendar_folder(tmp_path: Path) -> None:
    """The same events judged with a calendar without the two holidays cancel a day earlier:
    `load_catalog(..., calendars=FOLDER)` swaps the calendars and nothing else."""
    folder = _folder(tmp_path, {"office.yaml": OFFICE, "holidays.ics": ICS})
    other = tmp_path / "no_holidays"
    other.mkdir()
    (other / "office.yaml").write_text(OFFICE.replace("holiday_files: [holidays.ics]\n", ""))
    harness = Harness(load_catalog(folder, calendars=other))
    harness.feed(ce("e1", "OrderPlaced", 390)).drain()
    assert harness.outcome()["ended_at"] == _berlin_ms("2026-03-03T16:30")


def test_simulated_claims_in_business_time_match_the_truth_and_replay_identical(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A simulator run of the claims workflow (business hours and days, holidays from an .ics
    file, instances spread over three weeks) matches its ground truth exactly, its commands fall
    due inside the claims team's working hours, the business step latency view counts every step
    left, and a 2-worker replay verifies identical."""
    live, replayed = tmp_path / "live", tmp_path / "replayed"
    sim = ["--sim-instances", "400", "--sim-seed", "11", "--sim-rate", "0.0005"]
    assert cli_main(["run", "--definitions", str(CLAIMS), "--out", str(live), *sim]) == 0
    summary = capsys.readouterr().out
    assert "accuracy vs ground truth: outcomes 400/400, commands 400/400  ✓" in summary
    conn = duckdb.connect(str(live / "flowkeeper.duckdb"), read_only=True)
    dues = [row[0] for row in conn.sql("SELECT due_at FROM commands WHERE deadline IN "
                                       "('RemindClaimsDesk', 'EscalateToTeamLead', "
                                       "'RemindAssessor', 'NotifyClaimantOfDelay')").fetchall()]
    latency = conn.sql("SELECT step, exits, business_p50_ms, business_max_ms, wall_p50_ms "
                       "FROM business_step_latency").fetchall()
    counted = conn.sql("SELECT from_state, count(*), max(business_duration_ms) FROM transitions "
                       "WHERE from_state IS NOT NULL GROUP BY ALL").fetchall()
    conn.close()
    assert {(r[0], r[1], r[3]) for r in latency} == set(counted)
    assert all(business <= wall for _, _, business, _, wall in latency)
    calendar = load_catalog(CLAIMS).calendars["claims_de"]
    assert len(dues) > 40
    for due in dues:  # a deadline falls due inside working time, at an opening or at a close
        ms = int(due.timestamp() * 1000)
        assert 60_000 in (calendar.working_ms_between(ms - 60_000, ms),
                          calendar.working_ms_between(ms, ms + 60_000)), due.astimezone(UTC)
    assert cli_main(["replay", str(live), "--definitions", str(CLAIMS), "--out", str(replayed),
                     "--workers", "2"]) == 0
    capsys.readouterr()
    assert cli_main(["verify", str(live), str(replayed)]) == 0
    assert "verdict: identical" in capsys.readouterr().out


def test_bundled_claims_calendar_reads_its_holidays() -> None:
    """The bundled claims calendar has the German public holidays of 2026 from its .ics file plus
    the team's own closing days, and a short Friday."""
    calendar = load_catalog(CLAIMS).calendars["claims_de"]
    assert date(2026, 12, 25) in calendar.holidays
    assert date(2026, 12, 24) in calendar.holidays
    assert calendar.hours[4][-1][1] == 15 * 3_600_000


def test_replay_with_another_calendar_folder_lists_the_changed_instances(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Replaying last month's claims with a calendar that closes the team on 2026-01-07 as well
    (`replay --calendars FOLDER`) changes exactly the instances one of whose deadlines fired
    and counted working time of that day (a new holiday only delays), and `verify` names them
    (exit 1); `--all-columns` also counts the instances whose armed due times or business
    durations moved without changing a verdict."""
    live, what_if = tmp_path / "live", tmp_path / "what_if"
    sim = ["--sim-instances", "200", "--sim-seed", "3", "--sim-rate", "0.001"]
    assert cli_main(["run", "--definitions", str(CLAIMS), "--out", str(live), *sim,
                     "--no-duckdb"]) == 0
    other = tmp_path / "calendars"
    shutil.copytree(CLAIMS / "calendars", other)
    claims_de = other / "claims_de.yaml"
    claims_de.write_text(claims_de.read_text().replace("[2026-12-24, 2026-12-31]",
                                                       "[2026-01-07, 2026-12-24, 2026-12-31]"))
    assert cli_main(["replay", str(live), "--definitions", str(CLAIMS), "--calendars", str(other),
                     "--out", str(what_if), "--no-duckdb"]) == 0
    capsys.readouterr()
    parquet = f"{live}/parquet"
    fired_and_shifted = {i for (i,) in duckdb.connect().execute(f"""
        WITH armed AS (
            SELECT instance_id, to_state AS state, "at" AS armed_at, unnest(deadlines) AS d
            FROM read_parquet('{parquet}/transitions/**/*.parquet', hive_partitioning = true)),
        fired AS (
            SELECT instance_id, deadline AS name, due_at FROM read_parquet(
                '{parquet}/commands/**/*.parquet', hive_partitioning = true)
            WHERE reason = 'deadline'
            UNION
            SELECT t.instance_id, a.d.name, t."at" FROM read_parquet(
                '{parquet}/transitions/**/*.parquet', hive_partitioning = true) t
            JOIN armed a ON a.instance_id = t.instance_id AND a.state = t.from_state
                 AND a.d.due_at = t."at"
            WHERE t.trigger = 'deadline')
        SELECT DISTINCT a.instance_id FROM armed a
        JOIN fired f ON f.instance_id = a.instance_id AND f.name = a.d.name
             AND f.due_at = a.d.due_at
        WHERE a.armed_at < TIMESTAMPTZ '2026-01-07 17:00:00+01'
          AND a.d.due_at >= TIMESTAMPTZ '2026-01-07 08:00:00+01'""").fetchall()}
    changed = {diff.instance.removeprefix("claims_handling/")
               for table in compare_outputs(live, what_if) if table.table != "metrics"
               for diff in table.differences}
    assert changed and changed == fired_and_shifted, changed ^ fired_and_shifted
    restated = {diff.instance.removeprefix("claims_handling/")
                for table in compare_outputs(live, what_if, all_columns=True)
                if table.table != "metrics" for diff in table.differences}
    assert restated > changed  # due times and business durations moved on more instances
    assert cli_main(["verify", str(live), str(what_if)]) == 1
    assert "DIFFERENT" in capsys.readouterr().out


CASES = """workflow: claims_cases
mode: case_tracking
version: 1
instance_id: {data_field: order_id}
calendar: office
events: [Filed, Answered]
end_on: [Answered]
rules:
  - {name: answer in 8 working hours, within: 8 business hours, from: Filed, to: Answered}
"""


@pytest.mark.parametrize(("answered", "breached"), [
    ("2026-03-09T15:00", False),  # Fri 16:00-17:00 + Mon 08:00-12:00, 13:00-15:00: 7 h
    ("2026-03-09T16:30", True),  # 8.5 h of business time (about 72 h of wall time either way)
])
def test_sla_rule_in_business_time(tmp_path: Path, answered: str, breached: bool) -> None:
    """A case-tracking rule 'within 8 business hours' judges the working time between Friday
    16:00 and Monday's answer, not the 71-72 wall hours; the breach says both."""
    folder = _folder(tmp_path, {"office.yaml": OFFICE, "holidays.ics": ICS}, CASES)
    harness = Harness(load_catalog(folder))
    start = _berlin_ms("2026-03-06T16:00")  # T0 is 2026-03-02 10:00 Berlin
    minutes = (start - _berlin_ms("2026-03-02T10:00")) / 60_000
    end = (_berlin_ms(answered) - _berlin_ms("2026-03-02T10:00")) / 60_000
    harness.feed(ce("e1", "Filed", minutes), ce("e2", "Answered", end)).drain()
    found = [a for a in harness.tables()["anomalies"] if a["kind"] == "sla_breached"]
    assert bool(found) == breached
    if breached:
        assert found[0]["detail"].endswith(f"({int(8.5 * 3_600_000)} ms of business time)")
    step = harness.tables()["transitions"][1]
    assert step["business_duration_ms"] == (8.5 if breached else 7) * 3_600_000


def test_business_durations_of_steps_and_instances(tmp_path: Path) -> None:
    """Paid on Thursday 09:00 after an order on Monday 16:30 with Tuesday and Wednesday holidays:
    64.5 wall hours in `awaiting_payment`, 1.5 business hours, in the transition and the
    outcome."""
    catalog = load_catalog(_folder(tmp_path, {"office.yaml": OFFICE, "holidays.ics": ICS}))
    harness = Harness(catalog)
    paid = (_berlin_ms("2026-03-05T09:00") - _berlin_ms("2026-03-02T10:00")) / 60_000
    harness.feed(ce("e1", "OrderPlaced", 390), ce("e2", "PaymentAuthorized", paid)).drain()
    left = harness.tables()["transitions"][1]
    assert left["state_duration_ms"] == 64.5 * 3_600_000
    assert left["business_duration_ms"] == 1.5 * 3_600_000
    outcome = harness.outcome()
    assert (outcome["duration_ms"], outcome["business_duration_ms"]) == (
        64.5 * 3_600_000, 1.5 * 3_600_000)
    assert harness.commands() == []  # the 2-business-hour reminder was not due yet


def test_import_log_rules_in_business_time(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`import-log --calendars FOLDER --calendar NAME --sla 'A->B<=8 business hours'` copies
    the calendars beside the definition it writes, and the replay judges working time: a case
    answered 7 business hours (71 wall hours) later keeps the rule, one at 8.5 breaches it."""
    calendars = _folder(tmp_path, {"office.yaml": OFFICE, "holidays.ics": ICS}) / "calendars"
    log = tmp_path / "tickets.csv"
    log.write_text("case;activity;timestamp\n"
                   "c1;Filed;2026-03-06T16:00:00+01:00\nc1;Answered;2026-03-09T15:00:00+01:00\n"
                   "c2;Filed;2026-03-06T16:00:00+01:00\nc2;Answered;2026-03-09T16:30:00+01:00\n")
    out, results = tmp_path / "imported", tmp_path / "results"
    assert cli_main(["import-log", str(log), "--out", str(out), "--calendars", str(calendars),
                     "--calendar", "office", "--sla", "Filed->Answered<=8 business hours"]) == 0
    assert (out / "calendars" / "holidays.ics").is_file()
    assert cli_main(["replay", str(out), "--out", str(results), "--no-duckdb"]) == 0
    capsys.readouterr()
    breached = duckdb.connect().execute(f"""SELECT instance_id, detail FROM read_parquet(
        '{results}/parquet/anomalies/**/*.parquet', hive_partitioning = true)
        WHERE kind = 'sla_breached'""").fetchall()
    assert [i for i, _ in breached] == ["c2"]
    assert "30600000 ms of business time" in breached[0][1]
    assert cli_main(["import-log", str(log), "--out", str(out), "--overwrite",
                     "--sla", "Filed->Answered<=8 business hours"]) == 2
    assert "a limit in business time needs a calendar" in capsys.readouterr().err
    assert cli_main(["import-log", str(log), "--out", str(out), "--overwrite", "--calendars",
                     str(calendars), "--calendar", "shop"]) == 2
    assert "--calendar 'shop' is not in" in capsys.readouterr().err


def test_older_outputs_get_the_new_columns(tmp_path: Path) -> None:
    """A DuckDB file whose step_deadlines table an older version made gets the name, after and
    calendar columns and the catalog's rows; Parquet files without transitions.deadlines read as
    NULL there and give no pending deadlines."""
    from analysis.parquet_relations import create_parquet_relations
    from analysis.pending import pending_of, readable
    from analysis.step_deadlines import create_step_deadlines

    conn = duckdb.connect(str(tmp_path / "old.duckdb"))
    conn.execute("CREATE TABLE step_deadlines (workflow_type VARCHAR, definition_version INTEGER, "
                 "state VARCHAR, kind VARCHAR, position INTEGER, after_ms BIGINT, "
                 "from_event VARCHAR, command VARCHAR, goto VARCHAR)")
    create_step_deadlines(conn, load_catalog(CLAIMS))
    found = conn.sql("SELECT name, after, calendar, after_ms FROM step_deadlines "
                     "WHERE state = 'assessing' ORDER BY position").fetchall()
    assert found == [("RemindAssessor", "3 business days", "claims_de", None),
                     ("NotifyClaimantOfDelay", "5 business days", "claims_de", None)]
    conn.close()
    root = tmp_path / "parquet"
    (root / "transitions" / "date=2026-01-01").mkdir(parents=True)
    duckdb.connect().execute(f"""COPY (
                   SELECT 'w/i/t1' AS row_id, 'w' AS workflow_type, 1 AS definition_version,
                   'i' AS instance_id, 1 AS seq, NULL AS from_state, 's' AS to_state,
                   'event' AS trigger, NULL AS event_type, NULL AS event_id,
                   TIMESTAMPTZ '2026-01-01 00:00:00+00' AS "at", NULL AS state_duration_ms,
                   NULL AS trace_id, '0/0' AS shard)
                   TO '{root}/transitions/date=2026-01-01/old.parquet' (FORMAT parquet)""")
    old = duckdb.connect()
    create_parquet_relations(old, root)
    assert old.sql("SELECT deadlines, business_duration_ms FROM transitions").fetchall() == [
        (None, None)]
    assert readable(old) and pending_of(old, "w", "i") == []


def test_business_time_verdicts_are_the_same_from_a_file_at_any_bucket_count(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The claims simulation's stream written as a JSON-lines file (arrival times in an
    attribute) and run with `--buckets 1` and `--buckets 64`, one and two workers, reaches the
    embedded run's outcomes, commands and transitions: due times in business time are computed
    from event time alone."""
    live = tmp_path / "live"
    sim = ["--sim-instances", "200", "--sim-seed", "5", "--sim-rate", "0.0005"]
    assert cli_main(["run", "--definitions", str(CLAIMS), "--out", str(live), *sim]) == 0
    archive = duckdb.sql(
        f"SELECT value, epoch_ms(arrived_at) AS arrived FROM read_parquet('{live}/parquet/archive"
        "/**/*.parquet', hive_partitioning = false) WHERE len(headers) = 0 "
        "ORDER BY arrived_at, partition, \"offset\"").fetchall()
    lines = []
    for value, arrived in archive:
        try:
            event = json.loads(value)
        except ValueError:
            continue
        if isinstance(event, dict):
            lines.append(json.dumps({**event, "arrivedat": arrived}).encode())
    path = tmp_path / "claims.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    for buckets, workers in (("1", "1"), ("64", "2")):
        out = tmp_path / f"file-{buckets}"
        assert cli_main(["run", "--definitions", str(CLAIMS), "--source", "file", str(path),
                         "--arrival-field", "arrivedat", "--buckets", buckets,
                         "--workers", workers, "--out", str(out)]) == 0
        capsys.readouterr()
        for table in ("outcomes", "commands", "transitions"):
            got, want = (_rows_without_shard(folder, table) for folder in (out, live))
            assert want and got == want, (buckets, table)


def _rows_without_shard(out: Path, table: str) -> list[tuple[object, ...]]:
    """A table's rows in row_id order, without the shard that ran them."""
    conn = duckdb.connect(str(out / "flowkeeper.duckdb"), read_only=True)
    try:
        return conn.sql(f"SELECT * EXCLUDE (shard) FROM {table} ORDER BY row_id").fetchall()
    finally:
        conn.close()

"""The analysis views against the simulator's ground truth, over DuckDB and over Parquet alike."""

from __future__ import annotations

import contextlib
import io
import shutil
import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from analysis.duckdb_views import VIEWS, create_views
from analysis.outputs import open_outputs
from dataflows.cli import main
from dataflows.settings import BUNDLED_DEFINITIONS, REPO_ROOT
from state.catalog import load_catalog
from state.definition import StateMachine
from state.durations import parse_duration_ms
from tests.demo_kit import Conn, pairs, rows, scalar, truth

CATALOG = load_catalog(BUNDLED_DEFINITIONS)
# (workflow, state, command) of every deadline that sends a command.
REMINDERS = {(d.workflow, name, deadline.command)
             for d in CATALOG.all() if isinstance(d, StateMachine)
             for name, state in d.states.items()
             for deadline in state.deadlines if deadline.command}


def truth_commands(conn: Conn, out: Path) -> list[tuple[str, str, str, int]]:
    """(workflow, step, command, due_ms) of every command the ground truth expects."""
    keys = rows(conn, f"SELECT unnest(expected_commands) FROM {truth(out, 'instances')}")
    parsed = [key.split("/") for (key,) in keys]
    return [(wf, step, command, int(due)) for wf, _, step, command, due in parsed]


def test_every_view_is_described_in_the_readme() -> None:
    """Each view has a row in the README's table of views, with its one-line description."""
    readme = (REPO_ROOT / "README.md").read_text()
    missing = [name for name, _, _ in VIEWS if f"| `{name}` |" not in readme]
    assert missing == []


def test_outcome_mix_adds_up_to_the_true_outcomes(conn: Conn, out: Path) -> None:
    """Summed over minutes, the outcome mix is the ground truth's outcome count, and each minute's
    shares add up to one per workflow."""
    got = pairs(conn, "SELECT outcome, sum(instances)::INT FROM outcome_mix_per_minute "
                "GROUP BY ALL")
    expected = pairs(conn, f"SELECT expected_outcome, count(*)::INT FROM {truth(out, 'instances')} "
                     "GROUP BY ALL")
    assert got == expected
    shares = rows(conn, "SELECT sum(share) FROM outcome_mix_per_minute "
                  "GROUP BY workflow_type, minute")
    assert all(abs(s - 1) < 0.01 for (s,) in shares)


def test_sla_breaches_per_hour_match_the_true_deadline_commands_and_timeouts(conn: Conn,
                                                                              out: Path) -> None:
    """Per step and hour, the deadline commands equal those the ground truth expects; the timeouts
    equal the instances the simulator let time out; the per-step breach rate view agrees."""
    expected = Counter((wf, step, datetime.fromtimestamp(due // 3_600_000 * 3600, UTC))
                       for wf, step, command, due in truth_commands(conn, out)
                       if (wf, step, command) in REMINDERS)
    got = {(wf, step, hour): n for wf, step, hour, n in rows(
        conn, "SELECT workflow_type, step, hour, commands FROM sla_breaches_per_hour "
        "WHERE commands > 0")}
    assert got == dict(expected) and got
    timed_out = scalar(conn, f"SELECT count(*) FROM {truth(out, 'instances')} "
                       "WHERE scenario IN ('timed_out', 'late_after_timeout')")
    assert scalar(conn, "SELECT sum(timeouts) FROM sla_breaches_per_hour") == timed_out > 0
    disagree = rows(conn, """
        SELECT workflow_type, step, breached FROM sla_breach_rate_per_step WHERE breached > 0
        EXCEPT SELECT workflow_type, step, count(DISTINCT instance_id) FROM (
            SELECT workflow_type, instance_id, step FROM commands WHERE reason = 'deadline'
            UNION SELECT workflow_type, instance_id, from_state FROM transitions
            WHERE trigger = 'deadline') GROUP BY ALL""")
    assert disagree == []


def test_step_latency_percentiles_are_those_of_the_transitions(conn: Conn) -> None:
    """p50, p95 and p99 per step equal linear-interpolation quantiles of the time spent in it."""
    durations: dict[tuple[str, str], list[int]] = {}
    for wf, step, ms in rows(conn, "SELECT workflow_type, from_state, state_duration_ms "
                             "FROM transitions WHERE from_state IS NOT NULL"):
        durations.setdefault((wf, step), []).append(ms)
    found = rows(conn, "SELECT workflow_type, step, exits, p50_ms, p95_ms, p99_ms, max_ms "
                 "FROM step_latency_percentiles")
    assert {(wf, step) for wf, step, *_ in found} == set(durations)
    for wf, step, exits, p50, p95, p99, longest in found:
        data = durations[(wf, step)]
        cuts = (statistics.quantiles(data, n=100, method="inclusive") if len(data) > 1
                else [data[0]] * 99)
        assert (exits, longest) == (len(data), max(data))
        assert [p50, p95, p99] == pytest.approx([cuts[49], cuts[94], cuts[98]])


def test_compensation_success_rate_matches_the_ground_truth(conn: Conn, out: Path) -> None:
    """Per workflow, compensated and failed compensations and the compensation commands sent are
    those the ground truth expects."""
    sent = Counter(wf for wf, step, command, _ in truth_commands(conn, out)
                   if (wf, step, command) not in REMINDERS)
    expected = {}
    for wf, ok, failed in rows(conn, f"""
            SELECT workflow_type, count(*) FILTER (WHERE expected_outcome = 'compensated'),
                   count(*) FILTER (WHERE expected_outcome = 'compensation_failed')
            FROM {truth(out, 'instances')} GROUP BY ALL"""):
        rate = round(ok / (ok + failed), 4) if ok + failed else None
        expected[wf] = (ok + failed, ok, failed, sent[wf], rate)
    got = {wf: tuple(rest) for wf, *rest in rows(conn, "SELECT * FROM compensation_success_rate")}
    assert got == expected


def test_dead_letters_by_reason_match_the_ground_truth(conn: Conn, out: Path) -> None:
    """Dead letters per reason are exactly the records the simulator broke, per reason."""
    got = pairs(conn, "SELECT reason, records FROM dead_letters_by_reason")
    expected = pairs(conn, f"SELECT expected_reason, count(*) FROM {truth(out, 'records')} "
                     "WHERE expected_disposition = 'dead_lettered' GROUP BY ALL")
    assert got == expected and len(got) >= 3


def test_throughput_per_minute_accounts_for_every_record(conn: Conn, out: Path) -> None:
    """Summed over minutes, each disposition column counts the records the ground truth gives it."""
    columns = {"applied": "applied", "ignored": "ignored", "anomalous": "anomalous",
               "duplicate": "duplicates", "late": "late", "dead_lettered": "dead_letters"}
    sums = ", ".join(f"sum({c})::INT" for c in ["records", *columns.values()])
    ((total, *per_column),) = rows(conn, f"SELECT {sums} FROM throughput_per_minute")
    expected = Counter(d for (d,) in rows(
        conn, f"SELECT expected_disposition FROM {truth(out, 'records')}"))
    assert total == sum(expected.values())
    assert dict(zip(columns, per_column, strict=True)) == {d: expected[d] for d in columns}


def test_variants_are_the_paths_of_the_transitions(conn: Conn) -> None:
    """Each variant counts the finished instances whose entered states, in order, spell it."""
    paths = Counter((wf, " > ".join(states)) for wf, states in rows(conn, """
        SELECT workflow_type, list(to_state ORDER BY seq) FROM transitions
        SEMI JOIN outcomes USING (workflow_type, instance_id)
        GROUP BY workflow_type, instance_id"""))
    got = {(wf, variant): cases for wf, variant, cases, *_ in rows(conn, "SELECT * FROM variants")}
    assert got == dict(paths)


def test_slowest_instances_start_with_the_longest(conn: Conn) -> None:
    """The slowest instance is the one with the largest duration."""
    first = scalar(conn, "SELECT duration_ms FROM slowest_instances LIMIT 1")
    assert first == scalar(conn, "SELECT max(duration_ms) FROM outcomes")


def test_no_instance_is_stuck_after_a_drained_run(conn: Conn) -> None:
    """A bounded run that fires every pending deadline at its end leaves nothing stuck."""
    assert scalar(conn, "SELECT count(*) FROM stuck_instances") == 0


@pytest.fixture(scope="module")
def undrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose pending deadlines stay pending at the end of the input."""
    out = tmp_path_factory.mktemp("undrained") / "out"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", "--out", str(out), "--sim-instances", "300", "--sim-seed", "3",
                     "--no-drain-at-eof", "--no-archive"]) == 0
    return out


def expected_stuck(conn: Conn) -> set[str]:
    """Open instances past every deadline of their state, worked out from the definitions."""
    now = scalar(conn, "SELECT max(event_time) FROM ledger")
    stuck = set()
    for wf, instance, version, state, since, seen in rows(conn, """
            SELECT workflow_type, instance_id, arg_max(definition_version, seq),
                   arg_max(to_state, seq), max("at"), list((event_type, "at") ORDER BY seq)
            FROM transitions ANTI JOIN outcomes USING (workflow_type, instance_id)
            GROUP BY ALL"""):
        definition = CATALOG.get(wf, version)
        assert isinstance(definition, StateMachine)
        first_seen: dict[str, datetime] = {}
        for event_type, at in seen:
            first_seen.setdefault(event_type, at)
        spec = definition.states[state]
        dues = [(first_seen.get(d.from_event, since) if d.from_event else since)
                + timedelta(milliseconds=d.after_ms) for d in spec.deadlines]
        if spec.is_terminal and spec.compensates:
            timeout = parse_duration_ms(definition.compensation_timeout)
            dues.append(since + timedelta(milliseconds=timeout))
        if dues and max(dues) < now:
            stuck.add(instance)
    return stuck


def test_stuck_instances_are_open_past_every_deadline(undrained: Path) -> None:
    """Without the end-of-input drain, the stuck instances are exactly the open ones whose every
    deadline lies behind the newest event time, as worked out from the definitions."""
    conn = open_outputs(undrained)
    got = {i for (i,) in rows(conn, "SELECT instance_id FROM stuck_instances")}
    assert got == expected_stuck(conn) and got
    late = "SELECT count(*) FROM stuck_instances WHERE overdue_by <= INTERVAL 0 SECOND"
    assert scalar(conn, late) == 0


def test_views_over_parquet_equal_views_over_duckdb(conn: Conn, out: Path) -> None:
    """Every view gives the same rows whether it reads the DuckDB tables or the Parquet files."""
    parquet = open_outputs(out, "parquet", CATALOG)
    for name, _, _ in VIEWS:
        query = f'SELECT * FROM "{name}"'
        found = [sorted(map(repr, rows(c, query))) for c in (parquet, conn)]
        assert found[0] == found[1], name


def test_parquet_relations_keep_one_row_per_row_id(conn: Conn, out: Path, tmp_path: Path) -> None:
    """A Parquet file written twice (an at-least-once rewrite) does not double any row."""
    copy = tmp_path / "parquet"
    shutil.copytree(out / "parquet", copy, ignore=shutil.ignore_patterns("archive"))
    first = next((copy / "outcomes").glob("date=*/*.parquet"))
    shutil.copy(first, first.with_name("part-w999-999999.parquet"))
    twice = duckdb.connect()
    create_views(twice, source="parquet", root=copy, catalog=CATALOG)
    for query in ("SELECT count(*) FROM outcomes", "SELECT * FROM input_accounting ORDER BY 1"):
        assert rows(twice, query) == rows(conn, query)

"""The whole dataflow on the embedded simulator, checked exactly against its ground truth."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bytewax.testing import TestingSink, cluster_main, run_main

from connectors.archive_format import archive_table
from connectors.arrow_rows import rows_to_table
from connectors.simulator import SimulatorSource, simulate
from connectors.simulator.truth import Simulation
from dataflows.cli import main as cli_main
from dataflows.pipeline import build_flow
from dataflows.settings import Settings
from dataflows.sources import simulator_config
from schemas.tables import TABLES
from state.catalog import load_catalog
from state.table_rows import TableRows

Rows = list[tuple[str, dict[str, Any]]]
SETTINGS = Settings.from_flags(sim_instances=600, sim_seed=11, out=Path("unused"))


@pytest.fixture(scope="module")
def simulation() -> Simulation:
    return simulate(simulator_config(SETTINGS), load_catalog(SETTINGS.definitions))


def run_flow(simulation: Simulation, settings: Settings = SETTINGS, workers: int = 1) -> Rows:
    rows: Rows = []
    flow = build_flow(settings, source=SimulatorSource(simulation.partitions),
                      sink=TestingSink(rows))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return rows


@pytest.fixture(scope="module")
def rows(simulation: Simulation) -> Rows:
    return run_flow(simulation)


def table(rows: Rows, name: str) -> list[dict[str, Any]]:
    return [row for t, row in rows if t == name]


def test_every_instance_gets_the_true_outcome_and_commands(simulation: Simulation,
                                                           rows: Rows) -> None:
    """100 % of simulated instances end with exactly the outcome, final state and command
    idempotency keys the simulator's oracle expects."""
    outcomes = {(o["workflow_type"], o["instance_id"]): o for o in table(rows, "outcomes")}
    commands: dict[tuple[str, str], list[str]] = {}
    for c in table(rows, "commands"):
        commands.setdefault((c["workflow_type"], c["instance_id"]), []).append(c["idempotency_key"])
    wrong = []
    for truth in simulation.truth_instances:
        key = (truth.workflow_type, truth.instance_id)
        got = outcomes.get(key, {})
        want = (truth.expected_outcome, truth.expected_final_state,
                sorted(truth.expected_commands))
        if (got.get("outcome"), got.get("final_state"), sorted(commands.get(key, []))) != want:
            wrong.append((truth.scenario, key))
    assert wrong == []
    assert len(outcomes) == len(simulation.truth_instances)
    scenarios = Counter(t.scenario for t in simulation.truth_instances)
    assert len(scenarios) >= 5, scenarios


def test_corrections_exactly_where_late_events_would_change_a_verdict(simulation: Simulation,
                                                                     rows: Rows) -> None:
    """Late events that would have changed a verdict, and only those, produce corrections."""
    expected = {(t.workflow_type, t.instance_id) for t in simulation.truth_instances
                if t.expects_correction}
    got = {(c["workflow_type"], c["instance_id"]) for c in table(rows, "corrections")}
    assert expected and got == expected


def test_every_record_has_its_true_disposition(simulation: Simulation, rows: Rows) -> None:
    """Each input record has exactly one ledger row, with the disposition (and dead-letter
    reason) the ground truth predicts: the input accounting adds up."""
    ledger = table(rows, "ledger")
    assert len(ledger) == len({r["row_id"] for r in ledger}) == len(simulation.truth_records)
    by_coordinates = {(r["partition"], r["offset"]): r["disposition"] for r in ledger}
    reasons = {(d["partition"], d["offset"]): d["reason"] for d in table(rows, "dead_letters")}
    mismatches = [
        t for t in simulation.truth_records
        if by_coordinates[(t.partition, t.offset)] != t.expected_disposition
        or reasons.get((t.partition, t.offset)) != t.expected_reason
    ]
    assert mismatches == []
    counts = Counter(by_coordinates.values())
    assert {"applied", "ignored", "duplicate", "late", "dead_lettered", "anomalous"} <= set(counts)


def test_dead_letters_keep_raw_bytes_and_coordinates(simulation: Simulation, rows: Rows) -> None:
    """A dead letter holds the exact bytes and key of the record it rejects."""
    records = {(r.partition, r.offset): r for r in simulation.records()}
    dead = table(rows, "dead_letters")
    assert dead
    for row in dead:
        record = records[(row["partition"], row["offset"])]
        assert ((row["raw_value"], row["raw_key"], row["source"])
                == (record.value, record.key, record.source))
        assert row["message"]


def test_outcome_counts_add_up(rows: Rows) -> None:
    """On every outcome row, applied + duplicates + late + ignored + anomalies = events."""
    for o in table(rows, "outcomes"):
        counted = o["applied"] + o["duplicates"] + o["late"] + o["ignored"] + o["anomalies"]
        assert counted == o["events"]


def test_metrics_windows_account_for_every_event(rows: Rows) -> None:
    """Summed over windows, the metrics count every ledger event and every outcome, and no
    window is emitted twice."""
    metrics = table(rows, "metrics")
    ledger = table(rows, "ledger")
    dead = sum(1 for r in ledger if r["disposition"] == "dead_lettered")
    assert sum(m["events_in"] for m in metrics) == len(ledger) - dead
    assert sum(m["dead_letters"] for m in metrics) == dead
    outcome_mix = Counter(o["outcome"] for o in table(rows, "outcomes"))
    for outcome, n in outcome_mix.items():
        assert sum(m[outcome] for m in metrics) == n
    assert all(m["latency_p50_ms"] <= m["latency_p99_ms"] for m in metrics if m["latency_count"])
    assert len({m["row_id"] for m in metrics}) == len(metrics)


def test_two_workers_give_exactly_the_same_rows(simulation: Simulation, rows: Rows) -> None:
    """The same input partitions give the same output rows with 2 workers as with 1."""
    two = run_flow(simulation, workers=2)
    assert sorted(map(repr, two)) == sorted(map(repr, rows))


def test_quiet_instances_time_out_from_other_traffic_without_a_drain(
        simulation: Simulation) -> None:
    """With no end-of-input drain, instances still time out because other traffic in their shard
    moves event time past their deadlines; every verdict reached agrees with the ground truth."""
    settings = SETTINGS.with_flags(drain_at_eof=False)
    rows = run_flow(simulation, settings)
    truth = {(t.workflow_type, t.instance_id): t.expected_outcome
             for t in simulation.truth_instances}
    outcomes = table(rows, "outcomes")
    timed_out = [o for o in outcomes if o["outcome"] == "timed_out"]
    assert len(timed_out) >= 10
    assert all(truth[(o["workflow_type"], o["instance_id"])] == o["outcome"] for o in outcomes)
    assert len(outcomes) < len(truth)  # the tail stays open: nothing was forced


def test_cli_run_writes_parquet_and_duckdb_that_agree(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`flowkeeper run` writes every table to Parquet and DuckDB with the same rows, the views
    answer, and the summary reports full accuracy against the ground truth."""
    out = tmp_path / "out"
    code = cli_main(["run", "--out", str(out), "--sim-instances", "300", "--sim-seed", "5",
                     "--workers", "2"])
    assert code == 0
    summary = capsys.readouterr().out
    assert "accuracy vs ground truth: outcomes 300/300, commands 300/300  ✓" in summary
    conn = duckdb.connect(str(out / "flowkeeper.duckdb"), read_only=True)
    for name in ("outcomes", "transitions", "commands", "anomalies", "dead_letters", "ledger",
                 "metrics"):
        in_db = conn.sql(f"SELECT row_id FROM {name} ORDER BY row_id").fetchall()
        in_parquet = conn.sql(
            f"SELECT row_id FROM read_parquet('{out}/parquet/{name}/**/*.parquet', "
            "hive_partitioning=true) "
            "ORDER BY row_id").fetchall()
        assert in_db == in_parquet and in_db, name
    accounting = dict(conn.sql("SELECT * FROM input_accounting").fetchall())
    assert sum(accounting.values()) == conn.sql("SELECT count(*) FROM ledger").fetchall()[0][0]
    for view in ("outcomes_per_hour", "sla_breach_rate_per_step", "step_latency_percentiles",
                 "open_instances", "dead_letters_by_reason", "metrics_per_minute"):
        conn.sql(f"SELECT * FROM {view}").fetchall()
    (open_now,) = conn.sql("SELECT count(*) FROM open_instances").fetchall()[0]
    assert open_now == 0


def test_a_run_process_ends_with_its_summary_and_no_exit_noise(tmp_path: Path) -> None:
    """`flowkeeper run` as its own process: the summary, then a clean exit. The collector tuning
    freezes DuckDB's module objects; unfrozen at exit, nanobind reports no "leaked instance"."""
    done = subprocess.run([sys.executable, "-m", "dataflows.cli", "run", "--out", str(tmp_path),
                           "--sim-instances", "50"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "accuracy vs ground truth: outcomes 50/50, commands 50/50" in done.stdout
    assert "leaked" not in done.stderr, done.stderr[-2000:]


def test_parquet_gets_the_rows_column_built_without_a_dict_per_row(
        simulation: Simulation, rows: Rows, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The Parquet path converts no row to a dict (the conversions the dict sinks use are made to
    fail), and its files hold exactly the rows a dict sink gets from the same records."""

    def refused(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a dict per row on the Parquet path")

    monkeypatch.setattr(TableRows, "dict_rows", refused)
    monkeypatch.setattr(TableRows, "rows_of", refused)
    settings = Settings.from_flags(sim_instances=600, sim_seed=11, out=tmp_path, archive=True)
    run_main(build_flow(settings, source=SimulatorSource(simulation.partitions)))
    monkeypatch.undo()

    for name in TABLES:
        files = sorted((tmp_path / "parquet" / name).glob("**/*.parquet"))
        written = pa.concat_tables([TABLES[name].empty_table(),
                                    *(pq.read_table(f) for f in files)]).sort_by("row_id")
        if name == "archive":
            expected = archive_table([r for p in simulation.partitions for r in p])
        else:
            expected = rows_to_table(name, table(rows, name))
        assert written.equals(expected.sort_by("row_id")), name
        assert written.num_rows > 0 or name == "event_time_jumps", name

"""Archive every input record, replay it through the same dataflow, and verify the outputs match:
with 1 and 2 workers, in 1 and 2 processes, and as a what-if run with a changed deadline."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from analysis.output_diff import compare_outputs
from connectors.archive_format import find_archive, records_of
from connectors.simulator import simulate
from dataflows.cli import main as cli_main
from dataflows.settings import Settings
from dataflows.sources import simulator_config
from schemas.tables import TABLES
from state.catalog import load_catalog

REPO = Path(__file__).resolve().parents[1]
SIM = ["--sim-instances", "300", "--sim-seed", "5"]
MIN = 60_000


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run one `flowkeeper` command in this process; its exit status and printed output."""
    code = cli_main(list(argv))
    return code, capsys.readouterr().out


def free_ports(count: int) -> list[int]:
    """Loopback ports nobody listens on right now."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_two_processes(env: dict[str, str]) -> None:
    """`python -m bytewax.run` as a 2-process cluster, settings from `FLOWKEEPER_*` variables."""
    addresses = ";".join(f"127.0.0.1:{port}" for port in free_ports(2))  # one -a, `;`-separated
    command = [sys.executable, "-m", "bytewax.run", "dataflows.pipeline:build_flow()",
               "-a", addresses]
    full_env = {**os.environ, **env, "FLOWKEEPER_SINKS__DUCKDB": "false"}  # DuckDB: one writer
    procs = [subprocess.Popen([*command, "-i", str(i)], cwd=REPO, env=full_env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    try:
        outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, output in zip(procs, outputs, strict=True):
        assert p.returncode == 0, output[-3000:]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulator run (1 process, 1 worker) that archives its input."""
    out = tmp_path_factory.mktemp("live") / "out"
    assert cli_main(["run", "--out", str(out), *SIM]) == 0
    return out


def test_archive_holds_every_record_exactly_as_the_source_read_it(live: Path) -> None:
    """The archive has one row per input record with the same bytes, key, headers, coordinates
    and arrival time, under `archive/date=.../partition=N/`."""
    settings = Settings.from_flags(sim_instances=300, sim_seed=5)
    simulation = simulate(simulator_config(settings), load_catalog(settings.definitions))
    expected = sorted((r for part in simulation.partitions for r in part),
                      key=lambda r: (r.partition, r.offset))
    files = sorted(find_archive(live).glob("date=*/partition=*/*.parquet"))
    archived = [r for f in files for r in records_of(pq.read_table(f))]
    assert sorted(archived, key=lambda r: (r.partition, r.offset)) == expected
    for f in files:
        assert set(pq.read_table(f, columns=["partition"])["partition"].to_pylist()) == {
            int(f.parent.name.removeprefix("partition="))}


def test_archive_stays_out_of_duckdb(live: Path) -> None:
    """The raw archive is Parquet only: the DuckDB database has no `archive` table."""
    conn = duckdb.connect(str(live / "flowkeeper.duckdb"), read_only=True)
    tables = {name for (name,) in conn.sql("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert "archive" not in tables and "ledger" in tables


@pytest.mark.parametrize("workers", ["1", "2"])
def test_replay_reproduces_the_live_run(live: Path, tmp_path: Path, workers: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Replaying the archive with 1 or 2 workers gives outputs `verify` calls identical (exit 0)."""
    replayed = tmp_path / "replayed"
    code, summary = run(capsys, "replay", str(live), "--out", str(replayed), "--workers", workers)
    assert code == 0 and "input accounting:" in summary
    assert not (replayed / "parquet" / "archive").exists(), "a replay archives nothing by default"
    code, report = run(capsys, "verify", str(live), str(replayed))
    assert code == 0, report
    assert "verdict: identical (7 tables" in report


def test_replay_in_two_processes_reproduces_the_live_run(
        live: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 2-process Bytewax cluster replaying the archive writes the recorded outputs exactly."""
    replayed = tmp_path / "replayed"
    run_two_processes({"FLOWKEEPER_SOURCE__KIND": "archive",
                       "FLOWKEEPER_SOURCE__ARCHIVE_PATH": str(live),
                       "FLOWKEEPER_OUT": str(replayed), "FLOWKEEPER_SINKS__ARCHIVE": "false"})
    code, report = run(capsys, "verify", str(live), str(replayed))
    assert code == 0, report


def test_two_process_live_run_archives_a_replayable_input(
        live: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A live run in 2 processes archives its input; replayed by 1 worker it gives the same
    outputs as that run (and as the 1-process live run)."""
    recorded, replayed = tmp_path / "recorded", tmp_path / "replayed"
    run_two_processes({"FLOWKEEPER_OUT": str(recorded), "FLOWKEEPER_SOURCE__SIM_INSTANCES": "300",
                       "FLOWKEEPER_SOURCE__SIM_SEED": "5"})
    assert run(capsys, "replay", str(recorded), "--out", str(replayed), "--no-duckdb")[0] == 0
    assert run(capsys, "verify", str(recorded), str(replayed))[0] == 0
    assert run(capsys, "verify", str(live), str(recorded))[0] == 0


def test_what_if_tighter_deadline_changes_exactly_the_slow_payers(
        live: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Cancelling unpaid orders after 20 instead of 30 minutes changes exactly the orders that
    waited more than 20 minutes for payment, and `verify` exits 1 naming them."""
    definitions = tmp_path / "definitions"
    shutil.copytree(REPO / "definitions", definitions)
    order = definitions / "order_fulfilment.yaml"
    text = order.read_text()
    assert text.count("{after: 30m, command: CancelOrder") == 1
    order.write_text(text.replace("{after: 30m, command: CancelOrder",
                                  "{after: 20m, command: CancelOrder"))
    what_if = tmp_path / "what_if"
    code, _ = run(capsys, "replay", str(live), "--out", str(what_if), "--definitions",
                  str(definitions), "--no-duckdb")
    assert code == 0

    slow = {f"{w}/{i}" for w, i in duckdb.sql(f"""
        SELECT workflow_type, instance_id
        FROM read_parquet('{live}/parquet/transitions/**/*.parquet', hive_partitioning = true)
        WHERE workflow_type = 'order_fulfilment' AND from_state = 'awaiting_payment'
          AND state_duration_ms > {20 * MIN}""").fetchall()}
    diffs = {d.table: d for d in compare_outputs(live, what_if)}
    changed = {i for name, d in diffs.items() if name != "metrics" for i in d.instances}
    assert slow and changed == slow
    assert set(diffs["outcomes"].instances) == slow
    code, report = run(capsys, "verify", str(live), str(what_if))
    assert code == 1
    assert "outcomes      DIFFERENT" in report and "changed (outcome" in report


def test_verify_reports_missing_rows_and_usage_errors(live: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A copy with one outcomes file removed differs in exactly those rows (exit 1); a folder
    with no outputs is a usage error (exit 2) that says what to pass."""
    copy = tmp_path / "copy"
    shutil.copytree(live / "parquet", copy / "parquet")
    victim = sorted((copy / "parquet" / "outcomes").rglob("*.parquet"))[0]
    lost = pq.read_table(victim).num_rows
    victim.unlink()
    code, report = run(capsys, "verify", str(live), str(copy), "--tables", "outcomes,commands")
    assert code == 1
    assert f"{lost:,} missing, 0 extra, 0 changed" in report
    assert "commands      identical" in report
    assert cli_main(["verify", str(live), str(tmp_path / "nothing")]) == 2
    assert "no Parquet output there" in capsys.readouterr().err


def test_the_v3_fixture_replays_to_the_same_row_in_every_table_and_column(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Every table the fixture recorded (written from dict rows by the engine of its time),
    archive and dead letters included and the derived columns too, equals row for row and column
    for column what today's column-built rows give on a replay that archives again."""
    fixture = REPO / "tests" / "fixtures" / "run_v3"
    code, _ = run(capsys, "replay", str(fixture), "--out", str(tmp_path / "replayed"),
                  "--archive", "--no-duckdb")
    assert code == 0
    diffs = compare_outputs(fixture, tmp_path / "replayed", tuple(TABLES), all_columns=True)
    assert [(d.table, d.differences) for d in diffs if not d.identical] == []
    rows = {d.table: d.recorded for d in diffs}
    assert rows == {"outcomes": 250, "transitions": 975, "commands": 107, "anomalies": 17,
                    "corrections": 30, "dead_letters": 8, "ledger": 1209, "metrics": 1066,
                    "event_time_jumps": 0, "archive": 1209}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_archive_made_before_the_fast_path_replays_identical(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, workers: str) -> None:
    """The outputs and archive of a run made with the engine as it was before the per-event rewrite
    (snapshot v3; `tests/fixtures/run_v3`: 250 instances of all four workflows, seed 5) replay
    through today's engine to the same rows, `row_id`s and contents, table by table. `outcomes`
    and `metrics` were recorded again when event time moved from the shard to the partition
    (`state.admission`): it changes `out_of_order` counts and metric stamps by design; and
    `corrections` when it gained the commands a late event would have changed (its other
    columns equal the first recording), and again when corrections came to be followed to the
    verdict (the 11 rows of before are unchanged; 19 follow-ups are new). The other four tables
    are still the ones recorded before the rewrite."""
    fixture = REPO / "tests" / "fixtures" / "run_v3"
    code, _ = run(capsys, "replay", str(fixture), "--out", str(tmp_path / "replayed"),
                  "--workers", workers, "--no-duckdb")
    assert code == 0
    code, output = run(capsys, "verify", str(fixture), str(tmp_path / "replayed"))
    assert code == 0, output
    assert "verdict: identical (7 tables, 3,654 rows)" in output

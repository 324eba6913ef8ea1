"""Crash safety with real processes: kill -9 at random moments and at chosen crash points, resume
from the recovery folder, and get exactly the outputs of an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from connectors.duckdb_loader import LOADED_FILES
from runtime.fatal import EX_IOERR
from tests.crash_kit import parquet_files, parquet_rows, wait_for_progress

pytestmark = pytest.mark.slow

TABLES = ("outcomes", "transitions", "commands", "anomalies", "corrections", "dead_letters",
          "ledger", "metrics", "archive")
RUN = ["--sim-instances", "2000", "--sim-seed", "23", "--snapshot-interval", "0.2",
       "--flush-seconds", "0.05", "--parquet-batch-rows", "500", "--workers", "2"]


def flowkeeper(out: Path, recovery: Path | None,
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `flowkeeper run` as its own process (so SIGKILL hits nothing else)."""
    args = [sys.executable, "-m", "dataflows.cli", "run", "--out", str(out), *RUN]
    if recovery is not None:
        args += ["--recovery-dir", str(recovery)]
    return subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def finish(out: Path, recovery: Path, attempts: int = 6) -> str:
    """Resume until a run completes; returns its output."""
    for _ in range(attempts):
        proc = flowkeeper(out, recovery)
        output, _ = proc.communicate(timeout=300)
        if proc.returncode == 0:
            return output.decode()
    raise AssertionError(f"no run completed in {attempts} attempts: {output.decode()[-2000:]}")


def duckdb_rows(out: Path, table: str) -> list[tuple[object, ...]]:
    conn = duckdb.connect(str(out / "flowkeeper.duckdb"), read_only=True)
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY row_id").fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run with recovery on: the outputs every crashed run must equal."""
    out = tmp_path_factory.mktemp("reference")
    output, _ = flowkeeper(out, out / "recovery").communicate(timeout=300)
    assert "outcomes 2,000/2,000, commands 2,000/2,000  ✓" in output.decode(), output.decode()
    return out


def assert_same_outputs(got: Path, want: Path) -> None:
    """Every table equals the reference run's, in Parquet and DuckDB, and DuckDB equals the run's
    own Parquet files, each loaded exactly once (`assert_each_file_loaded_once`)."""
    for table in TABLES:
        rows = parquet_rows(got, table)
        ids = [r[0] for r in rows]
        assert len(ids) == len(set(ids)), f"duplicate rows in Parquet {table}"
        assert rows == parquet_rows(want, table), f"Parquet {table} differs"
        if table != "archive":
            assert duckdb_rows(got, table) == rows, f"DuckDB {table} is not the Parquet files"
            assert duckdb_rows(got, table) == duckdb_rows(want, table), f"DuckDB {table} differs"
    assert_each_file_loaded_once(got)


def assert_each_file_loaded_once(out: Path) -> None:
    """The loader recorded every Parquet file of the DuckDB tables once, with the rows it holds
    now: no file was loaded twice, none loaded was deleted or rewritten by the resume."""
    conn = duckdb.connect(str(out / "flowkeeper.duckdb"), read_only=True)
    try:
        recorded = conn.execute(f'SELECT file, "rows" FROM {LOADED_FILES}').fetchall()
    finally:
        conn.close()
    parquet = out / "parquet"
    files = {path.relative_to(parquet).as_posix(): pq.read_metadata(path).num_rows
             for path in parquet_files(out) if path.relative_to(parquet).parts[0] != "archive"}
    assert len(recorded) == len(files) and dict(recorded) == files


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_mid_run_then_resume_gives_identical_outputs(
        reference: Path, tmp_path: Path, seed: int) -> None:
    """SIGKILL mid-run, after the first snapshot and a random share (20-60 %, seeded by the test
    id) of the reference run's files, then a restart with the same recovery folder: every table
    equals the uninterrupted run's, with no duplicate rows."""
    rng = random.Random(seed)
    out, recovery = tmp_path / "out", tmp_path / "recovery"
    target = round(len(parquet_files(reference)) * rng.uniform(0.2, 0.6))
    proc = flowkeeper(out, recovery)
    wait_for_progress(proc, out, recovery, target)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"
    finish(out, recovery)
    assert_same_outputs(out, reference)


# The loader's crash points are at its first load: the only one every run reaches whatever the
# machine's speed (a fast run may end before a third load; the first comes mid-run or at the end).
@pytest.mark.parametrize("crash_at", ["parquet_after_rename:25", "duckdb_load_in_transaction:1",
                                      "duckdb_after_commit:1", "shard_snapshot:40"])
def test_crash_points_then_resume_give_identical_outputs(reference: Path, tmp_path: Path,
                                                         crash_at: str) -> None:
    """A kill right after a Parquet rename, inside a DuckDB load's transaction (rows and file
    records inserted, not committed), right after a load's commit, or inside a state snapshot
    (windows random kills almost never hit) is followed by an exact resume: DuckDB equals the
    Parquet files, no row twice, each file loaded once. The loader runs in a process of its own:
    killed there, it ends the run with one line, and the next run resumes."""
    out, recovery = tmp_path / "out", tmp_path / "recovery"
    proc = flowkeeper(out, recovery, {"FLOWKEEPER_CRASH_AFTER": crash_at})
    first = proc.communicate(timeout=300)[0].decode()
    if crash_at.startswith("duckdb_"):
        assert proc.returncode in (EX_IOERR, 2), first[-2000:]  # during the run, or at its end
        assert "the DuckDB loader beside the run was killed by signal 9" in first
    else:
        assert proc.returncode == -signal.SIGKILL, f"the crash point {crash_at} was never reached"
    output = finish(out, recovery)
    assert "resuming from recovery folder" in output
    assert_same_outputs(out, reference)  # so deadlines pending at the kill fired once, on time


def test_full_disk_fails_clearly_then_resumes_cleanly(reference: Path, tmp_path: Path) -> None:
    """A full output disk stops the run with a message naming the file and the fix, leaves no
    unreadable Parquet file, and once space is back the resumed run completes exactly."""
    out, recovery = tmp_path / "out", tmp_path / "recovery"
    out.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(out)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        proc = flowkeeper(out, recovery, {"FLOWKEEPER_SINKS__DUCKDB": "false"})
        output = proc.communicate(timeout=300)[0].decode()
        assert proc.returncode != 0
        assert "No space left on device" in output
        assert "free space or point --out elsewhere" in output
        assert str(out) in output
        import pyarrow.parquet as pq

        for path in out.glob("**/*.parquet"):
            pq.read_metadata(path)  # every visible file is whole
        subprocess.run(["mount", "-o", "remount,size=200m", str(out)], check=True)
        proc = flowkeeper(out, recovery, {"FLOWKEEPER_SINKS__DUCKDB": "false"})
        output = proc.communicate(timeout=300)[0].decode()
        assert proc.returncode == 0, output
        for table in TABLES:
            assert parquet_rows(out, table) == parquet_rows(reference, table), table
    finally:
        subprocess.run(["umount", "-l", str(out)], capture_output=True)


def replay(out: Path, archive: Path, recovery: Path,
           env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `flowkeeper replay` of `archive` with a recovery folder as its own process."""
    args = [sys.executable, "-m", "dataflows.cli", "replay", str(archive), "--out", str(out),
            "--recovery-dir", str(recovery), "--snapshot-interval", "0.2", "--flush-seconds",
            "0.05", "--parquet-batch-rows", "500", "--workers", "2"]
    return subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def test_a_killed_replay_resumes_from_its_recovery_folder(reference: Path,
                                                          tmp_path: Path) -> None:
    """`replay --recovery-dir`, killed right after a Parquet rename, resumes where it stopped:
    every table equals the live run it replays, with no row twice and each file loaded once."""
    out, recovery = tmp_path / "out", tmp_path / "recovery"
    proc = replay(out, reference, recovery, {"FLOWKEEPER_CRASH_AFTER": "parquet_after_rename:25"})
    first = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == -signal.SIGKILL, f"the crash point was never reached: {first[-2000:]}"
    assert (recovery / "part-0.sqlite3").exists()
    proc = replay(out, reference, recovery)
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, output[-2000:]
    assert "resuming from recovery folder" in output
    for table in TABLES:
        if table == "archive":
            continue
        rows = parquet_rows(out, table)
        assert len({r[0] for r in rows}) == len(rows), f"duplicate rows in Parquet {table}"
        assert rows == parquet_rows(reference, table), f"Parquet {table} differs"
        assert duckdb_rows(out, table) == rows, f"DuckDB {table} is not the Parquet files"
    assert_each_file_loaded_once(out)

"""Helpers of the crash tests: read a run's Parquet output, and wait for a run's progress so a
kill lands mid-run on a machine of any speed (never after a fixed sleep)."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import duckdb


def parquet_rows(out: Path, table: str) -> list[tuple[object, ...]]:
    """Every row of one Parquet dataset, sorted, as plain tuples."""
    if not list((out / "parquet" / table).glob("**/*.parquet")):
        return []
    conn = duckdb.connect()
    return conn.execute(
        f"SELECT * EXCLUDE (date) FROM read_parquet('{out}/parquet/{table}/**/*.parquet', "
        "hive_partitioning=true, union_by_name=true) ORDER BY row_id").fetchall()


def parquet_files(out: Path) -> list[Path]:
    """The committed Parquet files of a run (temp files are named otherwise)."""
    return list((out / "parquet").glob("**/*.parquet"))


def snapshots_written(recovery: Path) -> int:
    """Shard snapshots a restart would resume from: those older than the epoch every worker of the
    latest execution has passed (Bytewax's resume epoch). 0 while there are none, or Bytewax holds
    a lock. A snapshot row alone is not enough: a kill before the workers' frontiers move past it
    resumes from the start."""
    path = recovery / "part-0.sqlite3"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.1)
        try:
            latest = conn.execute("SELECT ex_num, worker_count FROM exs "
                                  "ORDER BY ex_num DESC LIMIT 1").fetchone()
            if latest is None:
                return 0
            fronts = [row[0] for row in conn.execute(
                "SELECT worker_frontier FROM fronts WHERE ex_num = ?", (latest[0],))]
            if len(fronts) < latest[1]:
                return 0
            return int(conn.execute("SELECT count(*) FROM snaps WHERE snap_epoch < ? AND "
                                    "step_id LIKE '%workflow_state'", (min(fronts),)).fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def wait_for_progress(proc: subprocess.Popen[bytes], out: Path, recovery: Path, files: int,
                      timeout_s: float = 300.0, *, snapshot: bool = True) -> None:
    """Return once the run has a snapshot to resume from (unless `snapshot` is False) and has
    written `files` Parquet files: a kill chosen by progress, not by time, so it lands mid-run on
    a machine of any speed."""
    deadline = time.monotonic() + timeout_s
    while not ((snapshots_written(recovery) or not snapshot)
               and len(parquet_files(out)) >= files):
        if proc.poll() is not None:
            output = proc.communicate()[0].decode()
            raise AssertionError(f"the run ended before writing {files} files: {output[-2000:]}")
        assert time.monotonic() < deadline, f"no progress to {files} files in {timeout_s} s"
        time.sleep(0.005)

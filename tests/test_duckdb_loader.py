"""The DuckDB loader: which Parquet files count as committed, and `flowkeeper load-duckdb`
following a live run from a process of its own until DuckDB equals the Parquet files."""

from __future__ import annotations

import os
import pickle
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest
from bytewax.recovery import init_db_dir

from connectors.parquet_commits import committed_files, mark_recovery
from dataflows.load_duckdb import loading_beside
from dataflows.settings import Settings
from schemas.tables import DUCKDB_TABLES
from tests.crash_kit import parquet_rows
from tests.demo_kit import paced_archive

STEP = "flowkeeper.parquet"
EX = "INSERT INTO exs (ex_num, worker_count, resume_epoch) VALUES (?, ?, ?)"
FRONT = "INSERT INTO fronts (ex_num, worker_index, worker_frontier) VALUES (?, ?, ?)"
SNAP = "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) VALUES (?, ?, ?, ?)"


def _touch_files(parquet: Path, names: list[str]) -> None:
    """Empty files named like the sink's (the rule reads names, never contents)."""
    folder = parquet / "outcomes" / "date=2026-11-02"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def _write(part: Path, sql: str, *params: object) -> None:
    conn = sqlite3.connect(part)
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def _committed(parquet: Path, everything: bool = False) -> list[str]:
    files = committed_files(parquet, DUCKDB_TABLES, everything=everything)
    assert files is not None
    return [f.path.name for f in files]


def test_committed_files_are_those_below_the_resume_snapshot(tmp_path: Path) -> None:
    """With recovery, a writer's file is committed when numbered below the sequence in the
    snapshot Bytewax would resume from (latest one older than the smallest worker frontier of
    the latest execution, over every partition); without recovery, or once the run has ended,
    every file is."""
    parquet, recovery = tmp_path / "parquet", tmp_path / "recovery"
    names = [f"part-p{w:03d}-{s:06d}.parquet" for w in (0, 1) for s in range(6)]
    _touch_files(parquet, [*names, ".part-p000-000006.parquet.tmp"])
    assert _committed(parquet) == sorted(names)  # no recovery: every final file

    recovery.mkdir()
    init_db_dir(recovery, 2)
    mark_recovery(parquet, recovery)
    assert _committed(parquet) == []  # no execution yet: a resume starts from nothing
    part0, part1 = recovery / "part-0.sqlite3", recovery / "part-1.sqlite3"
    _write(part0, EX, 0, 2, 1)
    _write(part0, FRONT, 0, 0, 5)
    _write(part1, FRONT, 0, 1, 3)  # resume epoch 3
    for part, key, epoch, seq in ((part0, "000", 1, 2), (part1, "000", 2, 4), (part0, "000", 3, 6),
                                  (part1, "001", 2, 1)):
        _write(part, SNAP, STEP, key, epoch, pickle.dumps(seq))
    assert _committed(parquet) == [*names[:4], names[6]]  # writer 0 below 4, writer 1 below 1
    # worker 1 passes epoch 3: its snapshot now counts
    _write(part1, FRONT + " ON CONFLICT DO UPDATE SET worker_frontier = 4", 0, 1, 4)
    assert _committed(parquet) == [*names[:6], names[6]]
    _write(part1, EX, 1, 1, 4)  # resumed with 1 worker, no frontier yet: at its resume epoch
    assert _committed(parquet) == [*names[:6], names[6]]
    assert _committed(parquet, everything=True) == sorted(names)


def test_a_snapshot_that_is_not_an_int_is_refused(tmp_path: Path) -> None:
    """The writer snapshot is unpickled without any class: a crafted one cannot run code."""
    parquet, recovery = tmp_path / "parquet", tmp_path / "recovery"
    _touch_files(parquet, ["part-p000-000000.parquet"])
    recovery.mkdir()
    init_db_dir(recovery, 1)
    mark_recovery(parquet, recovery)
    part = recovery / "part-0.sqlite3"
    _write(part, EX, 0, 1, 5)
    _write(part, SNAP, STEP, "000", 1,
           pickle.dumps(Path("/etc")))
    with pytest.raises(pickle.UnpicklingError, match="must be an int"):
        committed_files(parquet, DUCKDB_TABLES, everything=False)


def _lines(stream: object, into: queue.Queue[tuple[float, str]]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put((time.monotonic(), line))


def test_load_duckdb_follows_a_paced_run_until_duckdb_equals_parquet(out: Path,
                                                                     tmp_path: Path) -> None:
    """Beside a paced run writing Parquet only (with recovery), `load-duckdb --follow` loads
    committed files while the run still runs, stops on SIGTERM, and with `load-duckdb` after the
    run DuckDB holds exactly the Parquet rows of every table."""
    archive = paced_archive(out, tmp_path / "input", records=300)
    live = tmp_path / "live"
    cli = [sys.executable, "-m", "dataflows.cli"]
    run = subprocess.Popen([*cli, "run", "--out", str(live), "--source", "archive",
                            "--archive-path", str(archive), "--replay-speed", "1",
                            "--flush-seconds", "0.2", "--no-duckdb", "--recovery-dir",
                            str(tmp_path / "recovery"), "--snapshot-interval", "0.5"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (live / "parquet").is_dir():
        assert run.poll() is None, "the run ended before writing anything"
        time.sleep(0.01)
    follower = subprocess.Popen([*cli, "load-duckdb", "--out", str(live), "--follow",
                                 "--flush-seconds", "0.2"], stdout=subprocess.PIPE, text=True)
    printed: queue.Queue[tuple[float, str]] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(follower.stdout, printed), daemon=True)
    reader.start()
    try:
        loaded_during_run = False
        while run.poll() is None:
            try:
                _, line = printed.get(timeout=0.1)
            except queue.Empty:
                continue
            loaded_during_run |= line.startswith("loaded") and run.poll() is None
        assert run.wait() == 0
        assert loaded_during_run, "the follower loaded nothing while the run ran"
    finally:
        for proc in (run, follower):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
    assert follower.wait(timeout=60) == 0
    reader.join()
    assert follower.stdout is not None
    follower.stdout.close()
    final = subprocess.run([*cli, "load-duckdb", "--out", str(live)], capture_output=True,
                           text=True, check=True)
    assert final.stdout.startswith("loaded ")
    conn = duckdb.connect(str(live / "flowkeeper.duckdb"), read_only=True)
    try:
        for table in DUCKDB_TABLES:
            got = conn.execute(f'SELECT * FROM "{table}" ORDER BY row_id').fetchall()
            assert got == parquet_rows(live, table), table
        assert conn.execute("SELECT records FROM input_accounting "
                            "WHERE disposition = 'applied'").fetchone() is not None
    finally:
        conn.close()


def test_load_duckdb_has_help() -> None:
    """`flowkeeper load-duckdb --help` describes the command and its --follow flag."""
    shown = subprocess.run([sys.executable, "-m", "dataflows.cli", "load-duckdb", "--help"],
                           capture_output=True, text=True, check=True,
                           env={**os.environ, "COLUMNS": "100"}).stdout
    assert "--follow" in shown and "committed" in shown and "--parent-pid" not in shown


def test_a_run_shorter_than_the_loaders_start_still_ends_with_every_file(out: Path,
                                                                         tmp_path: Path) -> None:
    """Around a run that ends before its loader process follows (or after: the timing decides),
    `loading_beside` returns only once DuckDB holds exactly the rows of every Parquet file."""
    settings = Settings.from_flags(out=tmp_path / "out")
    settings.parquet_dir.mkdir(parents=True)
    with loading_beside(settings):
        shutil.copytree(out / "parquet", settings.parquet_dir, dirs_exist_ok=True)
    conn = duckdb.connect(str(settings.duckdb_path), read_only=True)
    try:
        for table in DUCKDB_TABLES:
            got = conn.execute(f'SELECT * FROM "{table}" ORDER BY row_id').fetchall()
            assert got == parquet_rows(settings.out, table), table
    finally:
        conn.close()

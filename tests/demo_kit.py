"""One small simulator run, shared by the analysis tests (views, report, inspect, notebooks).

Made once per test session through the command line, like `make demo`, into a temporary folder:
every test reads it, none writes to it.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import duckdb

from dataflows.cli import main

INSTANCES, SEED = 400, 7


def run_command(out: Path, *args: str) -> str:
    """`flowkeeper run --out OUT --overwrite ARGS` in this process; returns what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["run", "--out", str(out), "--overwrite", *args])
    assert code == 0, printed.getvalue()
    return printed.getvalue()


@cache
def demo_run() -> Path:
    """The `--out` folder of a finished 400-instance simulator run, with its truth and archive."""
    folder = Path(tempfile.mkdtemp(prefix="flowkeeper-demo-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    out = folder / "out"
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["run", "--out", str(out), "--sim-instances", str(INSTANCES),
                     "--sim-seed", str(SEED)])
    assert code == 0
    return out


def truth(out: Path, table: str) -> str:
    """`read_parquet(...)` of a ground-truth file, for SQL."""
    return f"read_parquet('{out / 'ground_truth' / f'{table}.parquet'}')"


Conn = duckdb.DuckDBPyConnection


def rows(conn: Conn, sql: str) -> list[tuple[Any, ...]]:
    """Every row a query returns."""
    return conn.sql(sql).fetchall()


def pairs(conn: Conn, sql: str) -> dict[Any, Any]:
    """A two-column query as a dict."""
    return dict(rows(conn, sql))


def scalar(conn: Conn, sql: str) -> Any:
    """The one value a query returns."""
    return rows(conn, sql)[0][0]

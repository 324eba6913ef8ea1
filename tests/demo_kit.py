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
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

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
def paced_archive(out: Path, folder: Path, records: int = 200, gap_ms: int = 20) -> Path:
    """The demo run's first archived records, re-stamped to arrive `gap_ms` apart: replayed at
    `--replay-speed 1` the run lasts records * gap_ms of wall time however fast the machine."""
    table = pq.read_table(sorted((out / "parquet" / "archive").glob("date=*/partition=0/*"))[0])
    table = table.slice(0, records)
    first = table.column("arrived_at")[0].as_py()
    arrivals = pa.array([first + timedelta(milliseconds=gap_ms * i) for i in range(len(table))],
                        table.schema.field("arrived_at").type)
    table = table.set_column(table.schema.get_field_index("arrived_at"), "arrived_at", arrivals)
    target = folder / f"date={first.date().isoformat()}" / "partition=0"
    target.mkdir(parents=True)
    pq.write_table(table, target / "part-0.parquet")
    return folder

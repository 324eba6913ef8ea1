"""Where a run's outputs are, and a read-only DuckDB connection to them with every view.

The DuckDB file is the source of truth; a run written with `--no-duckdb` (or a copy of only the
Parquet folder) is read through the same views over its Parquet datasets instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb

from analysis.duckdb_views import create_views
from schemas.errors import ConfigError
from state.catalog import Catalog

Source = Literal["duckdb", "parquet"]
Row = dict[str, Any]


@dataclass(frozen=True)
class RunOutputs:
    """The files `flowkeeper run --out OUT` writes."""

    out: Path

    @property
    def duckdb_path(self) -> Path:
        return self.out / "flowkeeper.duckdb"

    @property
    def parquet_dir(self) -> Path:
        return self.out / "parquet"

    @property
    def archive_dir(self) -> Path:
        return self.parquet_dir / "archive"

    @property
    def truth_dir(self) -> Path:
        return self.out / "ground_truth"


def open_outputs(out: Path, source: Source = "duckdb",
                 catalog: Catalog | None = None) -> duckdb.DuckDBPyConnection:
    """A connection that reads the run in `out`; times come back in UTC whatever the machine's zone.

    `source="parquet"` needs `catalog` (the run's definitions) for the views that read deadlines.
    """
    run = RunOutputs(out)
    if source == "duckdb":
        if not run.duckdb_path.is_file():
            msg = (f"{run.duckdb_path} does not exist: point --out at a run's output folder, or "
                   "read its Parquet files with --source parquet")
            raise ConfigError(msg)
        conn = duckdb.connect(str(run.duckdb_path), read_only=True)
    else:
        if not run.parquet_dir.is_dir():
            msg = f"{run.parquet_dir} does not exist: point --out at a run's output folder"
            raise ConfigError(msg)
        conn = duckdb.connect()
        create_views(conn, source="parquet", root=run.parquet_dir, catalog=catalog)
    conn.execute("SET TimeZone = 'UTC'")
    return conn


def rows(conn: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[Row]:
    """Every row of a query as a dict by column name."""
    cursor = conn.execute(sql, params or [])
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

"""Compare two output sets table by table: is a replay identical to the recorded run, and if not,
which rows and instances differ and in which columns.

Reads each set's Parquet dataset (`{out}/parquet/<table>/**/*.parquet`, Hive-partitioned) with
DuckDB. Rows are matched by `row_id` and compared on every column but the `date` partition
column; a row stored twice (an at-least-once rewrite) counts once. Columns that restate the
definitions rather than a verdict (`DERIVED`: the due times of the deadlines armed, durations in
business time) are compared only on request: a what-if with another deadline or calendar changes
them on every instance it touches, while it asks which verdicts and commands change. A column
that one side's files lack (written by an older version) is not compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from schemas.errors import ConfigError
from schemas.tables import TABLES

COMPARED = ("outcomes", "commands", "transitions", "anomalies", "corrections", "metrics", "ledger")
DERIVED = {"transitions": ("deadlines", "business_duration_ms"),
           "outcomes": ("business_duration_ms",)}


@dataclass(frozen=True)
class RowDifference:
    """One row present on one side only (`missing`: recorded only; `extra`: replayed only), or
    present on both with different `columns`."""

    row_id: str
    instance: str  # workflow_type/instance_id, or the row_id for rows of no instance
    kind: str
    columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableDiff:
    """The comparison of one table."""

    table: str
    recorded: int
    replayed: int
    differences: tuple[RowDifference, ...]

    @property
    def identical(self) -> bool:
        return not self.differences

    def count(self, kind: str) -> int:
        return sum(1 for d in self.differences if d.kind == kind)

    @property
    def instances(self) -> list[str]:
        """The differing instances, each once, in row order."""
        return list(dict.fromkeys(d.instance for d in self.differences))


def parquet_root(out: Path) -> Path:
    """The Parquet folder of an output set: `out/parquet`, or `out` itself if it is one."""
    for candidate in (out / "parquet", out):
        if candidate.is_dir() and any(candidate.glob("*/date=*")):
            return candidate
    msg = (f"{out}: no Parquet output there (expected <table>/date=YYYY-MM-DD/*.parquet in it or "
           "in its parquet/ folder); pass the --out folder of a run or replay")
    raise ConfigError(msg)


def compare_outputs(recorded: Path, replayed: Path, tables: tuple[str, ...] = COMPARED,
                    all_columns: bool = False) -> list[TableDiff]:
    """Compare the tables of two output folders (see `parquet_root`); `all_columns` compares
    the `DERIVED` columns too."""
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise ConfigError(f"unknown tables {unknown}; choose from {', '.join(TABLES)}")
    roots = parquet_root(recorded), parquet_root(replayed)
    conn = duckdb.connect()
    try:
        return [_compare_table(conn, table, *roots, all_columns) for table in tables]
    finally:
        conn.close()


def _load(conn: duckdb.DuckDBPyConnection, name: str, root: Path, table: str) -> set[str]:
    """A temp table `name` with the table's distinct rows (an empty one when it has no files);
    returns the columns its files have."""
    files = sorted(str(p) for p in (root / table).glob("date=*/**/*.parquet"))
    if files:
        conn.execute(f"CREATE TEMP TABLE {name} AS SELECT DISTINCT * EXCLUDE (date) FROM "
                     "read_parquet(?, hive_partitioning = true, union_by_name = true)", [files])
    else:
        conn.register("empty_table", TABLES[table].empty_table())
        conn.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM empty_table")
        conn.unregister("empty_table")
    return {row[0] for row in conn.execute(f"DESCRIBE {name}").fetchall()}


def _compare_table(conn: duckdb.DuckDBPyConnection, table: str, recorded: Path,
                   replayed: Path, all_columns: bool) -> TableDiff:
    present = [_load(conn, name, root, table) for name, root in (("a", recorded), ("b", replayed))]
    counts = [int(conn.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0]) for name in "ab"]
    skipped = () if all_columns else DERIVED.get(table, ())
    columns = [c for c in TABLES[table].names if c != "row_id" and c not in skipped
               and c in present[0] and c in present[1]]
    changed = ", ".join(f"CASE WHEN a.\"{c}\" IS DISTINCT FROM b.\"{c}\" THEN '{c}' END"
                        for c in columns)
    instance = "coalesce(a.row_id, b.row_id)"
    if {"workflow_type", "instance_id"} <= set(columns):
        instance = (f"coalesce(coalesce(a.workflow_type, b.workflow_type) || '/' || "
                    f"coalesce(a.instance_id, b.instance_id), {instance})")
    rows = conn.execute(f"""
        SELECT row_id, instance, kind, changed FROM (
            SELECT coalesce(a.row_id, b.row_id) AS row_id, {instance} AS instance,
                   CASE WHEN b.row_id IS NULL THEN 'missing' WHEN a.row_id IS NULL THEN 'extra'
                        ELSE 'changed' END AS kind,
                   list_filter([{changed}], lambda c: c IS NOT NULL) AS changed
            FROM a FULL OUTER JOIN b ON a.row_id = b.row_id)
        WHERE kind <> 'changed' OR len(changed) > 0
        ORDER BY row_id""").fetchall()
    conn.execute("DROP TABLE a")
    conn.execute("DROP TABLE b")
    differences = tuple(RowDifference(row_id, inst, kind, tuple(cols) if kind == "changed" else ())
                        for row_id, inst, kind, cols in rows)
    return TableDiff(table, counts[0], counts[1], differences)

"""DuckDB sink: output rows inserted into one DuckDB database file, one table per output table.

DuckDB allows one writing connection per database file, so the sink has exactly one partition:
every row goes to the worker that owns it, whatever its key. Tables are created from the same
Arrow schemas the Parquet files use (`schemas.tables.duckdb_ddl`).

Delivery guarantee: at-least-once from Bytewax, made idempotent here. `write_batch` commits its
rows in one transaction before it returns, so everything Bytewax counts as written is durable; rows
delivered again (a replay after a resume, a second run over the same input) are skipped by their
`row_id` primary key (`INSERT OR IGNORE`): the first version of a row wins.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from connectors.arrow_rows import Row, rows_to_table
from connectors.duckdb_views import create_views
from operators.crash_points import crash_point
from schemas.errors import FlowkeeperError
from schemas.tables import DUCKDB_TABLES, duckdb_ddl
from state.catalog import Catalog

Item = tuple[str, Row]
"""The value the sink takes under each key: `(table_name, row)`."""

_PARTITION = "duckdb"
_VIEW = "arrow_view"


class DuckDBSink(FixedPartitionedSink[Item, None]):
    """One partition, one connection: all `(key, (table, row))` items go to the same worker."""

    def __init__(self, db_path: Path, catalog: Catalog | None = None,
                 on_write_error: Callable[[FlowkeeperError], None] | None = None) -> None:
        self._db_path = db_path
        self._catalog = catalog
        self._on_write_error = on_write_error

    def list_parts(self) -> list[str]:
        """The single partition; Bytewax gives it to one worker."""
        return [_PARTITION]

    def part_fn(self, item_key: str) -> int:
        """Route every key to the single partition."""
        return 0

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> StatefulSinkPartition[Item, None]:
        """Open the database; there is no position to resume, re-delivery is ignored by row_id."""
        return _DuckDBPartition(open_database(self._db_path, self._catalog), self._db_path,
                                self._on_write_error)


class _DuckDBPartition(StatefulSinkPartition[Item, None]):
    """Inserts each batch in one transaction."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, db_path: Path,
                 on_write_error: Callable[[FlowkeeperError], None] | None) -> None:
        self._conn = conn
        self._db_path = db_path
        self._on_write_error = on_write_error

    def write_batch(self, values: list[Item]) -> None:
        """Insert the batch, one statement per table, committed before returning."""
        by_table: defaultdict[str, list[Row]] = defaultdict(list)
        for table, row in values:
            by_table[table].append(row)
        try:
            insert_rows(self._conn, by_table)
        except (duckdb.IOException, OSError) as error:
            failure = FlowkeeperError(f"cannot write {self._db_path}: {error}; free space or point "
                                      "--out elsewhere, then run again (recovery resumes cleanly)")
            if self._on_write_error is not None:
                self._on_write_error(failure)
            raise failure from error

    def snapshot(self) -> None:
        """Nothing to resume from: the database itself says which rows are in."""

    def close(self) -> None:
        """Release the database file for other writers."""
        self._conn.close()


def open_database(db_path: Path, catalog: Catalog | None = None) -> duckdb.DuckDBPyConnection:
    """Open (or create) the database for writing, with every DuckDB output table present (all
    but the raw input archive, which stays in Parquet) and the views; `catalog` gives the
    `step_deadlines` the views read (the run's definitions)."""
    conn = duckdb.connect(str(db_path))
    for table in DUCKDB_TABLES:
        conn.execute(duckdb_ddl(table))
    create_views(conn, catalog=catalog)
    return conn


def connect_readonly(db_path: Path) -> duckdb.DuckDBPyConnection:
    """A connection for readers (notebooks, tests); fails while a writer holds the file."""
    return duckdb.connect(str(db_path), read_only=True)


def insert_rows(conn: duckdb.DuckDBPyConnection, rows_by_table: dict[str, list[Row]]) -> None:
    """Insert rows of several tables in one transaction, skipping row_ids already present."""
    conn.begin()
    try:
        for table, rows in rows_by_table.items():
            _insert_table(conn, table, rows_to_table(table, rows))
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    crash_point("duckdb_after_commit")


def load_rows(db_path: Path, table: str, rows: list[Row]) -> None:
    """Insert rows of one table into a database file outside a dataflow (tests, backfills)."""
    conn = open_database(db_path)
    try:
        insert_rows(conn, {table: rows})
    finally:
        conn.close()


def _insert_table(conn: duckdb.DuckDBPyConnection, table: str, data: pa.Table) -> None:
    """One set-based statement for the whole Arrow table, never row by row."""
    conn.register(_VIEW, data)
    try:
        conn.execute(f'INSERT OR IGNORE INTO "{table}" SELECT * FROM {_VIEW}')
    finally:
        conn.unregister(_VIEW)

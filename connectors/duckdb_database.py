"""The DuckDB database file: opened for writing with every output table, rows inserted by row_id.

DuckDB allows one writing connection per database file. The dataflow does not write it: the
loader (`connectors.duckdb_loader`) fills it from the committed Parquet files, beside the run or
after it. Tables are created from the same Arrow schemas the Parquet files use
(`schemas.tables.duckdb_ddl`); rows already present (same `row_id` primary key) are skipped
(`INSERT OR IGNORE`), so loading a row twice changes nothing. Tests and the real-log checks insert
rows directly with `insert_rows` / `load_rows`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa

from connectors.arrow_rows import Row, rows_to_table
from schemas.errors import FlowkeeperError
from schemas.tables import DUCKDB_TABLES, TABLES, duckdb_ddl, duckdb_type

Prepare = Callable[[duckdb.DuckDBPyConnection], None]
"""What to create in a freshly opened database besides the tables (the views)."""

_VIEW = "arrow_view"


def open_database(db_path: Path, prepare: Prepare | None = None) -> duckdb.DuckDBPyConnection:
    """Open (or create) the database for writing, with every DuckDB output table present (all
    but the raw input archive, which stays in Parquet); then `prepare` adds what readers query
    on top (the pipeline passes `analysis.duckdb_views.create_views`)."""
    conn = _connect_waiting_for_readers(db_path)
    for table in DUCKDB_TABLES:
        conn.execute(duckdb_ddl(table))
        _add_new_columns(conn, table)
    if prepare is not None:
        prepare(conn)
    return conn


READER_WAIT_SECONDS = 10.0


def _connect_waiting_for_readers(db_path: Path, wait_seconds: float = READER_WAIT_SECONDS,
                                 clock: Callable[[], float] = time.monotonic
                                 ) -> duckdb.DuckDBPyConnection:
    """Open for writing; while a reader's lock refuses (`flowkeeper console` or a notebook opens
    the file for one short query at a time), try again for up to `wait_seconds`."""
    deadline = clock() + wait_seconds
    while True:
        try:
            return duckdb.connect(str(db_path))
        except duckdb.IOException as error:
            if "lock" not in str(error) or clock() >= deadline:
                msg = (f"cannot open {db_path} for writing: {error}; close the program that holds "
                       "it (a notebook, another run) or point --out elsewhere")
                raise FlowkeeperError(msg) from error
            time.sleep(0.05)


def connect_readonly(db_path: Path) -> duckdb.DuckDBPyConnection:
    """A connection for readers (notebooks, tests); fails while a writer holds the file."""
    return duckdb.connect(str(db_path), read_only=True)


def insert_rows(conn: duckdb.DuckDBPyConnection, rows_by_table: dict[str, list[Row]]) -> None:
    """Insert rows of several tables in one transaction, skipping row_ids already present."""
    insert_tables(conn, {table: rows_to_table(table, rows)
                         for table, rows in rows_by_table.items()})


def insert_tables(conn: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table]) -> None:
    """Insert Arrow tables in one transaction, skipping row_ids already present."""
    conn.begin()
    try:
        for table, data in tables.items():
            _insert_table(conn, table, data)
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def load_rows(db_path: Path, table: str, rows: list[Row]) -> None:
    """Insert rows of one table into a database file outside a dataflow (tests, backfills)."""
    conn = open_database(db_path)
    try:
        insert_rows(conn, {table: rows})
    finally:
        conn.close()


def _add_new_columns(conn: duckdb.DuckDBPyConnection, table: str) -> None:
    """Columns a newer schema added, on a database file an older version created (so a resumed
    or continued run can write to it; the older rows hold NULL there)."""
    present = {row[0] for row in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
    ).fetchall()}
    for field in TABLES[table]:
        if field.name not in present:
            conn.execute(f'ALTER TABLE "{table}" ADD COLUMN "{field.name}" '
                         f"{duckdb_type(field.type)}")


def _insert_table(conn: duckdb.DuckDBPyConnection, table: str, data: pa.Table) -> None:
    """One set-based statement for the whole Arrow table, never row by row; by column name, so
    a table with columns added later (`_add_new_columns`) takes the rows as well."""
    conn.register(_VIEW, data)
    try:
        conn.execute(f'INSERT OR IGNORE INTO "{table}" BY NAME SELECT * FROM {_VIEW}')
    finally:
        conn.unregister(_VIEW)

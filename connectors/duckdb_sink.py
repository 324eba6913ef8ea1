"""DuckDB sink: output rows inserted into one DuckDB database file, one table per output table.

DuckDB allows one writing connection per database file, so the sink has exactly one partition:
every row goes to the worker that owns it, whatever its key. Tables are created from the same
Arrow schemas the Parquet files use (`schemas.tables.duckdb_ddl`).

Delivery guarantee: at-least-once from Bytewax, made idempotent here. Rows are buffered and
inserted in one transaction when `batch_rows` are waiting, when the oldest waited `flush_seconds`,
and always in `snapshot` (called at the end of every epoch that wrote rows, before Bytewax records
the epoch): everything Bytewax counts as written is durable. A commit costs tens of milliseconds
on disk whatever its size, so committing each small Bytewax batch made DuckDB the slowest stage.
Rows delivered again (a replay after a resume, a second run over the same input) are skipped by
their `row_id` primary key (`INSERT OR IGNORE`): the first version of a row wins.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from connectors.arrow_rows import Row, RowBatch, rows_to_table
from runtime.crash_points import crash_point
from schemas.errors import FlowkeeperError
from schemas.tables import DUCKDB_TABLES, TABLES, duckdb_ddl, duckdb_type

Item = RowBatch
"""The value the sink takes under each key: `(table_name, Arrow table of its rows)`."""

Prepare = Callable[[duckdb.DuckDBPyConnection], None]
"""What to create in a freshly opened database besides the tables (the views)."""

_PARTITION = "duckdb"
_VIEW = "arrow_view"


class DuckDBSink(FixedPartitionedSink[Item, None]):
    """One partition, one connection: all `(key, (table, rows))` items go to the same worker."""

    def __init__(self, db_path: Path, prepare: Prepare | None = None,
                 on_write_error: Callable[[FlowkeeperError], None] | None = None,
                 batch_rows: int = 50_000, flush_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._db_path = db_path
        self._prepare = prepare
        self._on_write_error = on_write_error
        self._batch_rows, self._flush_seconds, self._clock = batch_rows, flush_seconds, clock

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
        return _DuckDBPartition(open_database(self._db_path, self._prepare), self._db_path,
                                self._on_write_error, self._batch_rows, self._flush_seconds,
                                self._clock)


class _DuckDBPartition(StatefulSinkPartition[Item, None]):
    """Buffers rows by table; inserts them in one transaction (see the module docstring)."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, db_path: Path,
                 on_write_error: Callable[[FlowkeeperError], None] | None,
                 batch_rows: int, flush_seconds: float, clock: Callable[[], float]) -> None:
        self._conn = conn
        self._db_path = db_path
        self._on_write_error = on_write_error
        self._batch_rows, self._flush_seconds, self._clock = batch_rows, flush_seconds, clock
        self._buffer: defaultdict[str, list[pa.Table]] = defaultdict(list)
        self._buffered = 0
        self._since = 0.0

    def write_batch(self, values: list[Item]) -> None:
        """Buffer the rows; insert them when enough are waiting or the oldest waited long enough."""
        if not self._buffered:
            self._since = self._clock()
        for table, rows in values:
            self._buffer[table].append(rows)
            self._buffered += rows.num_rows
        if self._buffered >= self._batch_rows or self._clock() - self._since >= self._flush_seconds:
            self._flush()

    def snapshot(self) -> None:
        """Insert everything buffered: the database itself then says which rows are in."""
        self._flush()

    def close(self) -> None:
        """Insert what is buffered, then release the database file for other writers."""
        self._flush()
        self._conn.close()

    def _flush(self) -> None:
        if not self._buffered:
            return
        try:
            insert_tables(self._conn, {table: pa.concat_tables(parts)
                                       for table, parts in self._buffer.items()})
        except (duckdb.IOException, OSError) as error:
            failure = FlowkeeperError(f"cannot write {self._db_path}: {error}; free space or point "
                                      "--out elsewhere, then run again (recovery resumes cleanly)")
            if self._on_write_error is not None:
                self._on_write_error(failure)
            raise failure from error
        self._buffer = defaultdict(list)
        self._buffered = 0


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
    crash_point("duckdb_after_commit")


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

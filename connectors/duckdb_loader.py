"""The DuckDB loader: committed Parquet files into the DuckDB tables, in bulk, exactly once.

The dataflow writes Parquet only. The loader takes the files `connectors.parquet_commits` calls
committed, one set-based `INSERT OR IGNORE ... SELECT * FROM read_parquet([...])` per table (by
column name, so files written before a column was added load too), and records every file it took
in `loaded_parquet_files` in the same transaction: a crash before the commit loads nothing, one
after it has recorded the files, so a file is loaded once however often the loader dies
(`duckdb_load_in_transaction` and `duckdb_after_commit` are the crash points around the commit).
Rows keep the `row_id` primary key: a row already present (a second run over the same input into
the same folder) is skipped, the first version wins.

A file is known by its path under the Parquet folder, its size and its modification time. A path
loaded before that comes back different was rewritten (only running a finished run's recovery
folder again does that: the last epoch is replayed); it is loaded again, and its rows must equal
the rows of the same `row_id` already loaded, else the load fails naming the file (DuckDB would
no longer equal Parquet).

`follow` runs passes every flush interval beside a live run, so DuckDB lags the committed files by
at most one interval plus a load; `flowkeeper run` ends with a pass over every file. It runs in a
process of its own (`flowkeeper load-duckdb --follow`), never in the dataflow's: reading Bytewax's
live SQLite recovery store from the process that writes it, through a second SQLite library,
releases Bytewax's POSIX locks and corrupts the store (seen as "database disk image is
malformed" and bus errors).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from connectors.duckdb_database import Prepare, open_database
from connectors.parquet_commits import PartFile, committed_files
from runtime.crash_points import crash_point
from schemas.errors import FlowkeeperError
from schemas.tables import DUCKDB_TABLES, TABLES

LOADED_FILES = "loaded_parquet_files"
_LOADED_DDL = f"""CREATE TABLE IF NOT EXISTS {LOADED_FILES} (
    file VARCHAR NOT NULL, bytes BIGINT NOT NULL, modified_ns BIGINT NOT NULL,
    "table" VARCHAR NOT NULL, "rows" BIGINT NOT NULL,
    loaded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (file, bytes, modified_ns))"""
_RECORDS = "loaded_records"
_RECORD_SCHEMA = pa.schema([("file", pa.string()), ("bytes", pa.int64()),
                            ("modified_ns", pa.int64()), ("table", pa.string()),
                            ("rows", pa.int64())])

Identity = tuple[int, int]
"""A file as written: (size in bytes, modification time in ns)."""


class LoadError(FlowkeeperError):
    """A load failed (disk, a file rewritten with other rows); the message names the file."""


@dataclass(frozen=True)
class Loaded:
    """What one pass took: files, rows in them, and rows new to DuckDB."""

    files: int = 0
    rows: int = 0
    inserted: int = 0


@dataclass(frozen=True)
class _Candidate:
    part: PartFile
    name: str
    identity: Identity
    rewritten: bool


class DuckDBLoader:
    """Holds the database file open for writing (the run's lock) and loads passes into it."""

    def __init__(self, db_path: Path, parquet_dir: Path, prepare: Prepare | None = None) -> None:
        self.db_path, self.parquet_dir = db_path, parquet_dir
        self._conn = open_database(db_path, prepare)
        self._conn.execute(_LOADED_DDL)
        self._loaded: defaultdict[str, set[Identity]] = defaultdict(set)
        for name, size, modified in self._conn.execute(
                f"SELECT file, bytes, modified_ns FROM {LOADED_FILES}").fetchall():
            self._loaded[name].add((size, modified))

    def close(self) -> None:
        """Release the database file for readers."""
        self._conn.close()

    def load(self, *, everything: bool) -> Loaded:
        """Load the committed files not loaded yet (`everything`: every final file; the run has
        ended) in one transaction; Loaded() when there were none, or the recovery folder was
        busy (the next pass takes them)."""
        files = committed_files(self.parquet_dir, DUCKDB_TABLES, everything=everything)
        candidates = self._candidates(files or [])
        if not candidates:
            return Loaded()
        try:
            return self._load(candidates)
        except (duckdb.IOException, OSError) as error:
            msg = (f"cannot load into {self.db_path}: {error}; free space or point --out "
                   "elsewhere, then run `flowkeeper load-duckdb` (loaded files are not loaded "
                   "twice)")
            raise LoadError(msg) from error

    def _candidates(self, files: list[PartFile]) -> list[_Candidate]:
        found = []
        for part in files:
            name = part.path.relative_to(self.parquet_dir).as_posix()
            try:
                stat = part.path.stat()
            except FileNotFoundError:  # an uncommitted file replaced since the listing
                continue
            identity = (stat.st_size, stat.st_mtime_ns)
            known = self._loaded.get(name)
            if known is None or identity not in known:
                found.append(_Candidate(part, name, identity, rewritten=known is not None))
        return found

    def _load(self, candidates: list[_Candidate]) -> Loaded:
        by_table: defaultdict[str, list[_Candidate]] = defaultdict(list)
        for candidate in candidates:
            by_table[candidate.part.table].append(candidate)
        records: list[tuple[str, int, int, str, int]] = []
        inserted = 0
        conn = self._conn
        conn.begin()
        try:
            for table, group in by_table.items():
                rewritten = [c for c in group if c.rewritten]
                if rewritten:
                    self._check_same_rows(table, rewritten)
                (count,) = conn.execute(
                    f'INSERT OR IGNORE INTO "{table}" BY NAME SELECT * FROM '
                    f"{_read_parquet([c.part.path for c in group])}").fetchone() or (0,)
                inserted += count
                records += [(c.name, *c.identity, table, pq.read_metadata(c.part.path).num_rows)
                            for c in group]
            conn.register(_RECORDS, pa.Table.from_pylist(
                [dict(zip(_RECORD_SCHEMA.names, r, strict=True)) for r in records],
                schema=_RECORD_SCHEMA))
            try:
                conn.execute(f"INSERT INTO {LOADED_FILES} BY NAME SELECT * FROM {_RECORDS}")
            finally:
                conn.unregister(_RECORDS)
            crash_point("duckdb_load_in_transaction")
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
        crash_point("duckdb_after_commit")
        for name, size, modified, *_ in records:
            self._loaded[name].add((size, modified))
        return Loaded(len(records), sum(r[4] for r in records), inserted)

    def _check_same_rows(self, table: str, rewritten: list[_Candidate]) -> None:
        """Rows of rewritten files whose row_id is loaded must be the loaded rows."""
        names = TABLES[table].names
        new = ", ".join(f'n."{c}"' for c in names)
        old = ", ".join(f'o."{c}"' for c in names)
        for candidate in rewritten:
            (differ,) = self._conn.execute(
                f"SELECT count(*) FROM {_read_parquet([candidate.part.path])} n "
                f'JOIN "{table}" o USING (row_id) WHERE row({new}) IS DISTINCT FROM row({old})'
            ).fetchone() or (0,)
            if differ:
                msg = (f"{candidate.part.path} was rewritten (its run's recovery folder was run "
                       f"again) with {differ} rows that differ from the rows of the same row_id "
                       f"already loaded into {table}: DuckDB cannot equal Parquet; load into a "
                       "new database (delete flowkeeper.duckdb and run `flowkeeper load-duckdb`)")
                raise LoadError(msg)


def _read_parquet(paths: list[Path]) -> str:
    quoted = ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths)
    return f"read_parquet([{quoted}], hive_partitioning = false, union_by_name = true)"


def follow(loader: DuckDBLoader, stop: threading.Event, interval_s: float,
           on_pass: Callable[[Loaded], None] | None = None,
           keep_going: Callable[[], bool] = lambda: True) -> None:
    """Load the committed files every `interval_s` until `stop` is set or `keep_going` says no."""
    while not stop.wait(interval_s) and keep_going():
        loaded = loader.load(everything=False)
        if on_pass is not None and loaded.files:
            on_pass(loaded)

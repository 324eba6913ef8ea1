"""Parquet sink: output rows into Hive-partitioned, zstd-compressed Parquet files.

Layout: `{out_dir}/{table}/date=YYYY-MM-DD/part-w{worker:03d}-{seq:06d}.parquet`. The `date` is
the UTC day of the table's `TIME_COLUMN` and lives only in the directory name, so
`read_parquet('{out_dir}/{table}/**/*.parquet', hive_partitioning=true)` gives it back as a column.
Tables with `schemas.tables.PARTITION_COLUMNS` get one more directory level per column after the
date (`archive/date=.../partition=3/part-...`); those columns stay in the files too.
Each worker numbers its files on from the highest `seq` it already has in `out_dir`, so a second run
into the same directory adds files and never replaces the first run's.

A file appears under its final name only once complete (temp file, fsync, `os.replace`, fsync of
the directory): a reader never sees half a file, even after a crash.

Delivery guarantee: at-least-once, as Bytewax gives a `DynamicSink` when recovery is enabled; a
resumed run replays input since the last snapshot and may write the same rows again into new files.
Every row carries a deterministic `row_id`, so readers deduplicate on it. Rows are buffered (up to
`batch_rows` or `flush_seconds`) and Bytewax does not know about the buffer: rows still in it when
the process dies without `close()` are lost if their epoch was already snapshotted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.arrow_rows import Row, hive_dirs, rows_to_table
from schemas.errors import ConfigError, FlowkeeperError

Item = tuple[str, Row]
"""What the sink takes: `(table_name, row)`."""

_PART_NAME = re.compile(r"part-w(\d+)-(\d+)\.parquet")


class SinkWriteError(FlowkeeperError):
    """An output file could not be written; the message names the file, the cause and the fix."""


class ParquetSink(DynamicSink[Item]):
    """Every worker writes its own files; rows are buffered per (table, date) to make big files."""

    def __init__(
        self,
        out_dir: Path,
        batch_rows: int = 50_000,
        flush_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if batch_rows < 1 or flush_seconds < 0:
            msg = f"need batch_rows >= 1 and flush_seconds >= 0; got {batch_rows}, {flush_seconds}"
            raise ConfigError(msg)
        self._out_dir = out_dir
        self._batch_rows = batch_rows
        self._flush_seconds = flush_seconds
        self._clock = clock

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[Item]:
        """One writer per worker; its file numbers continue after the worker's existing files."""
        return _ParquetPartition(
            _FileNamer(self._out_dir, worker_index),
            self._batch_rows,
            self._flush_seconds,
            self._clock,
        )


class _FileNamer:
    """Hands out the final paths of one worker's files, never one that already exists."""

    def __init__(self, out_dir: Path, worker_index: int) -> None:
        self._out_dir = out_dir
        self._worker = worker_index
        self._seq = _last_seq(out_dir, worker_index) + 1

    def next_path(self, table: str, dirs: tuple[str, ...]) -> Path:
        """The path of the worker's next file in the table's Hive directories (`date=...`, ...)."""
        name = f"part-w{self._worker:03d}-{self._seq:06d}.parquet"
        self._seq += 1
        return self._out_dir.joinpath(table, *dirs, name)


def _last_seq(out_dir: Path, worker_index: int) -> int:
    """The highest file number this worker has under `out_dir` (any table or date), or -1."""
    seqs = [
        int(match[2])
        for path in out_dir.glob("*/date=*/**/part-w*.parquet")
        if (match := _PART_NAME.fullmatch(path.name)) and int(match[1]) == worker_index
    ]
    return max(seqs, default=-1)


@dataclass
class _Buffer:
    """Rows waiting for one file, and when the oldest of them arrived (by the sink's clock)."""

    since: float
    rows: list[Row] = field(default_factory=list)


class _ParquetPartition(StatelessSinkPartition[Item]):
    """Buffers rows per (table, Hive directories); writes a file when a buffer is full or old, and
    on close."""

    def __init__(
        self,
        names: _FileNamer,
        batch_rows: int,
        flush_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self._names = names
        self._batch_rows = batch_rows
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._buffers: dict[tuple[str, tuple[str, ...]], _Buffer] = {}

    def write_batch(self, items: list[Item]) -> None:
        """Buffer the rows; write full buffers, then those whose oldest row waited long enough."""
        now = self._clock()
        for table, row in items:
            key = (table, hive_dirs(table, row))
            buffer = self._buffers.get(key)
            if buffer is None:
                buffer = self._buffers[key] = _Buffer(now)
            buffer.rows.append(row)
            if len(buffer.rows) >= self._batch_rows:
                self._flush(key)
        for key in [k for k, b in self._buffers.items() if now - b.since >= self._flush_seconds]:
            self._flush(key)

    def close(self) -> None:
        """Write whatever is still buffered (Bytewax calls this only when the input ends)."""
        for key in list(self._buffers):
            self._flush(key)

    def _flush(self, key: tuple[str, tuple[str, ...]]) -> None:
        """Write one buffer as one file."""
        table, dirs = key
        rows = self._buffers.pop(key).rows
        write_atomically(rows_to_table(table, rows), self._names.next_path(table, dirs))


def write_atomically(table: pa.Table, path: Path) -> None:
    """Write a zstd Parquet file so that `path` holds either nothing or the whole, synced file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        msg = (
            f"cannot write {path}: {_errno_text(exc)}; "
            "free space or point --out elsewhere, then run again"
        )
        raise SinkWriteError(msg) from exc


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _errno_text(exc: OSError) -> str:
    """`ENOSPC (No space left on device)`, also for an OSError built from a bare errno number."""
    code = exc.errno if exc.errno is not None else next(iter(exc.args), None)
    if isinstance(code, int) and code in errno.errorcode:
        return f"{errno.errorcode[code]} ({os.strerror(code)})"
    return str(exc)

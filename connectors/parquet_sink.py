"""Parquet sink: output rows into Hive-partitioned, zstd-compressed Parquet files, exactly once.

Layout: `{out_dir}/{table}/date=YYYY-MM-DD/part-p{part:03d}-{seq:06d}.parquet`. The `date` is
the UTC day of the table's `TIME_COLUMN` and lives only in the directory name, so
`read_parquet('{out_dir}/{table}/**/*.parquet', hive_partitioning=true)` gives it back as a column.
Tables with `schemas.tables.PARTITION_COLUMNS` get one more directory level per column after the
date (`archive/date=.../partition=3/part-...`); those columns stay in the files too.

A file appears under its final name only once complete (temp file, fsync, `os.replace`, fsync of
the directory): a reader never sees half a file, even after a crash.

Delivery guarantee: exactly once with Bytewax recovery. The sink has a fixed set of partitions
(rows are routed by their key, the shard, through `writer_of`); each numbers its files with its
own sequence and snapshots the next number together with the dataflow's state. On resume, a
partition deletes its files numbered at or after the snapshot's: their rows come out of the
resumed epoch again and are rewritten, so no row is lost or doubled (with `recovery=True`, a start
without a snapshot resumes from 0). A writer flushes at every snapshot, so a snapshot never covers
rows still in memory. Without recovery, a second run into the same folder continues the numbering
and never replaces earlier files. Every row also carries a deterministic
`row_id`, so readers can always deduplicate.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from connectors.arrow_rows import RowBatch, hive_groups
from connectors.durable_files import sync_files
from operators.locality import worker_of_thread
from runtime.crash_points import crash_point
from schemas.errors import ConfigError, FlowkeeperError

Item = RowBatch
"""What the sink takes under each key: `(table_name, Arrow table of its rows)`."""

_PART_NAME = re.compile(r"\.?part-p(\d+)-(\d+)\.parquet(\.tmp)?")


class SinkWriteError(FlowkeeperError):
    """An output file could not be written; the message names the file, the cause and the fix."""


class ParquetSink(FixedPartitionedSink[Item, int]):
    """`partitions` writers, keyed by writer name: `writer_of(key, local_writers())` gives the one
    a key (the shard) goes to from this worker, so rows are grouped into batches per writer on
    the worker that made them."""

    def __init__(
        self,
        out_dir: Path,
        batch_rows: int = 50_000,
        flush_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        partitions: int = 2,  # the `--parquet-writers` default
        recovery: bool = False,
        on_write_error: Callable[[SinkWriteError], None] | None = None,
    ) -> None:
        if batch_rows < 1 or flush_seconds < 0 or partitions < 1:
            msg = ("need batch_rows >= 1, flush_seconds >= 0 and partitions >= 1; got "
                   f"{batch_rows}, {flush_seconds}, {partitions}")
            raise ConfigError(msg)
        self._out_dir = out_dir
        self._batch_rows = batch_rows
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._partitions = partitions
        self._recovery = recovery
        self._on_write_error = on_write_error
        self._writers: dict[tuple[str, int, str], str] = {}

    def list_parts(self) -> list[str]:
        """The writers this worker hosts (`local_writers`): Bytewax makes a worker the primary
        of the parts it lists, so each worker writes the rows it made and no batch crosses to
        another worker or process to be written."""
        return self.local_writers()

    def local_writers(self) -> list[str]:
        """Writer `i` lives on worker `i % workers` when there are at least as many writers as
        workers; otherwise, and outside a dataflow, every writer is listed everywhere (Bytewax
        then spreads them). Where a part is written never changes what is written: rows only
        cross workers when this placement does not hold."""
        worker = worker_of_thread()
        if worker is None or worker[1] > self._partitions:
            return [f"{i:03d}" for i in range(self._partitions)]
        index, count = worker
        return [f"{i:03d}" for i in range(index, self._partitions, count)]

    def writer_of(self, key: str, writers: list[str]) -> str:
        """The writer of a key (the shard) among `writers` (`local_writers` of the calling
        worker): stable across processes (crc32, not Python's salted hash)."""
        slot = (key, len(writers), writers[0])
        writer = self._writers.get(slot)
        if writer is None:
            writer = self._writers[slot] = writers[zlib.crc32(key.encode()) % len(writers)]
        return writer

    def part_fn(self, item_key: str) -> int:
        """Items are keyed by writer name (`writer_of`)."""
        return int(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> ParquetWriter:
        """Open one partition's writer; on resume, first remove what the resumed epoch rewrites.

        With recovery on and no snapshot yet, the whole input is processed again: the files of an
        earlier attempt that crashed before its first snapshot are removed too (resume from 0).
        """
        if resume_state is None and self._recovery:
            resume_state = 0
        files = _FileSequence(self._out_dir, int(for_part), resume_state)
        return ParquetWriter(files, self._batch_rows, self._flush_seconds, self._clock,
                             self._on_write_error)


_WRITERS_FILE = ".writers"


def check_writer_count(out_dir: Path, writers: int) -> None:
    """With recovery, the writer count of an output folder is fixed at its first run: a resumed
    writer deletes only its own files written after the snapshot, so files of writers that no
    longer exist would survive a resume and double their rows."""
    marker = out_dir / _WRITERS_FILE
    if not marker.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{writers}\n")
        return
    before = int(marker.read_text())
    if before != writers:
        msg = (f"{out_dir} was written by {before} Parquet writers and this run has {writers}; "
               f"run with --parquet-writers {before}, or start a new --out and --recovery-dir")
        raise ConfigError(msg)


class _FileSequence:
    """Hands out one partition's file paths, numbered on from its snapshot or its last file."""

    def __init__(self, out_dir: Path, part: int, resume_seq: int | None) -> None:
        self._out_dir, self._part = out_dir, part
        mine = [(path, int(match[2])) for path in out_dir.glob("**/*part-p*.parquet*")
                if (match := _PART_NAME.fullmatch(path.name)) and int(match[1]) == part]
        for path, seq in mine:
            if path.name.endswith(".tmp") or (resume_seq is not None and seq >= resume_seq):
                path.unlink()  # half-written, or written after the snapshot we resume from
        done = [seq for path, seq in mine if path.exists()]
        self.next_seq = resume_seq if resume_seq is not None else max(done, default=-1) + 1

    def next_path(self, table: str, dirs: tuple[str, ...]) -> Path:
        """The path of the partition's next file in the table's Hive directories."""
        name = f"part-p{self._part:03d}-{self.next_seq:06d}.parquet"
        self.next_seq += 1
        return self._out_dir.joinpath(table, *dirs, name)


@dataclass
class _Buffer:
    """Rows waiting for one file, and when the oldest of them arrived (by the sink's clock)."""

    since: float
    tables: list[pa.Table] = field(default_factory=list)
    rows: int = 0


class ParquetWriter(StatefulSinkPartition[Item, int]):
    """Buffers rows per (table, Hive directories); writes a file when a buffer is full or old, at
    every snapshot and on close. Usable on its own (the log importer writes archives with it)."""

    def __init__(
        self,
        files: _FileSequence,
        batch_rows: int,
        flush_seconds: float,
        clock: Callable[[], float],
        on_write_error: Callable[[SinkWriteError], None] | None = None,
    ) -> None:
        self._files = files
        self._on_write_error = on_write_error
        self._batch_rows = batch_rows
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._buffers: dict[tuple[str, tuple[str, ...]], _Buffer] = {}

    @classmethod
    def standalone(cls, out_dir: Path, batch_rows: int) -> ParquetWriter:
        """A writer outside any dataflow, numbering after the files already in `out_dir`."""
        return cls(_FileSequence(out_dir, 0, None), batch_rows, float("inf"), time.monotonic)

    def write_batch(self, values: list[Item]) -> None:
        """Buffer the rows; write full buffers, then those whose oldest row waited long enough."""
        now = self._clock()
        for table, data in values:
            for dirs, rows in hive_groups(table, data):
                key = (table, dirs)
                buffer = self._buffers.get(key)
                if buffer is None:
                    buffer = self._buffers[key] = _Buffer(now)
                buffer.tables.append(rows)
                buffer.rows += rows.num_rows
        self._flush([key for key, buffer in self._buffers.items() if buffer.rows >= self._batch_rows
                     or now - buffer.since >= self._flush_seconds])

    def snapshot(self) -> int:
        """Write everything buffered, then name the next file number: the resume point."""
        self.close()
        return self._files.next_seq

    def close(self) -> None:
        """Write whatever is still buffered."""
        self._flush(list(self._buffers))

    def _flush(self, keys: list[tuple[str, tuple[str, ...]]]) -> None:
        """Write these buffers as files of at most `batch_rows` rows, committed together."""
        if not keys:
            return
        files: list[tuple[pa.Table, Path]] = []
        for key in keys:
            table, dirs = key
            rows = pa.concat_tables(self._buffers.pop(key).tables)
            files += [(rows.slice(start, self._batch_rows), self._files.next_path(table, dirs))
                      for start in range(0, rows.num_rows, self._batch_rows)]
        try:
            write_atomically(files, after_rename=lambda: crash_point("parquet_after_rename"))
        except SinkWriteError as error:
            if self._on_write_error is not None:
                self._on_write_error(error)
            raise


def write_atomically(files: list[tuple[pa.Table, Path]],
                     after_rename: Callable[[], None] = lambda: None) -> None:
    """Write zstd Parquet files so that each path holds either nothing or the whole, synced file.

    One group commit: every file is written under a temp name, then one barrier makes them all
    durable, then each is renamed to its path, then one more barrier makes the names durable.
    Two barriers per flush instead of two `fsync`s per file: a snapshot writes a file per table
    and day, and measured, their fsyncs were three quarters of the sink's time.
    """
    written: list[tuple[Path, Path]] = []
    path = files[0][1] if files else None
    try:
        for table, path in files:
            tmp = path.with_name(f".{path.name}.tmp")
            path.parent.mkdir(parents=True, exist_ok=True)
            written.append((tmp, path))
            with tmp.open("wb") as f:
                pq.write_table(table, f, compression="zstd")
        sync_files([tmp for tmp, _ in written])
        for tmp, path in written:
            os.replace(tmp, path)
            after_rename()
        sync_files(list(dict.fromkeys(path.parent for _, path in written)))
    except OSError as exc:
        for tmp, _ in written:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        msg = (
            f"cannot write {path}: {_errno_text(exc)}; "
            "free space or point --out elsewhere, then run again"
        )
        raise SinkWriteError(msg) from exc


def _errno_text(exc: OSError) -> str:
    """`ENOSPC (No space left on device)`, also for an OSError built from a bare errno number."""
    code = exc.errno if exc.errno is not None else next(iter(exc.args), None)
    if isinstance(code, int) and code in errno.errorcode:
        return f"{errno.errorcode[code]} ({os.strerror(code)})"
    return str(exc)

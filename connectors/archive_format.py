"""The input archive on disk: raw records as `archive` table rows, and where an archive's files are.

Layout (written by the Parquet sink, or by `flowkeeper import-log`):
`{archive}/date=YYYY-MM-DD/partition=N/part-p{part}-{seq}.parquet`, schema
`schemas.tables.ARCHIVE`.
A row is a `RawRecord` exactly as a source read it, so replaying it gives the same `row_id`s in
every output table. Rows written twice (a run resumed after a crash) share their `row_id`; readers
keep one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from connectors.arrow_rows import columns_to_table
from schemas.errors import ConfigError
from schemas.event import RawRecord

_PARTITION_DIR = re.compile(r"partition=(\d+)")
_DATE_DIR = re.compile(r"date=(\d{4}-\d{2}-\d{2})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def archive_table(records: Sequence[RawRecord]) -> pa.Table:
    """The `archive` table of records: their bytes, headers and coordinates, unchanged. Built
    column by column from the records' attributes (no dict per record)."""
    return columns_to_table("archive", [
        [f"{r.source}/{r.partition}/{r.offset}" for r in records],
        [r.source for r in records],
        [r.partition for r in records],
        [r.offset for r in records],
        [r.key for r in records],
        [r.value for r in records],
        [[{"key": k, "value": v} for k, v in r.headers] for r in records],
        [r.arrived_ms for r in records],
        [r.error for r in records],
    ])


def records_of(table: pa.Table) -> list[RawRecord]:
    """Archive rows back into `RawRecord`s equal to the ones that were archived.

    Column by column (not `to_pylist` of rows): a replay converts millions of rows.
    """
    arrived = pc.cast(table.column("arrived_at"), pa.int64()).to_pylist()
    headers = [tuple((h["key"], h["value"]) for h in hs) if hs else ()
               for hs in table.column("headers").to_pylist()]
    columns = zip(table.column("source").to_pylist(), table.column("partition").to_pylist(),
                  table.column("offset").to_pylist(), table.column("value").to_pylist(),
                  table.column("key").to_pylist(), headers, arrived,
                  table.column("error").to_pylist(), strict=True)
    return [RawRecord(source, partition, offset, value if value is not None else b"", key,
                      header, arrived_ms or 0, error)
            for source, partition, offset, value, key, header, arrived_ms, error in columns]


def find_archive(path: Path) -> Path:
    """The archive folder at `path`: the folder itself, or `archive/` or `parquet/archive/` in it
    (so a run's `--out` folder and an `import-log --out` folder both work)."""
    for candidate in (path, path / "archive", path / "parquet" / "archive"):
        if candidate.is_dir() and any(candidate.glob("date=*/partition=*")):
            return candidate
    msg = (f"{path}: no input archive there (expected date=YYYY-MM-DD/partition=N/*.parquet in it, "
           "or in its archive/ or parquet/archive/ folder); archive a run with --archive, or "
           "convert a log with `flowkeeper import-log`")
    raise ConfigError(msg)


@dataclass(frozen=True, order=True)
class ArchiveFile:
    """One archive file's share of one archived input partition, from the file footer only."""

    first_offset: int
    last_offset: int
    path: Path
    source: str
    partition: int
    first_arrival_ms: int  # of the whole file: where a paced replay's clock starts
    shared: bool = False  # the file holds rows of other sources too


def partition_files(archive: Path, first_date: str | None = None,
                    last_date: str | None = None) -> list[ArchiveFile]:
    """Every (file, source) of the archive whose date lies in the range, by first offset."""
    found: list[ArchiveFile] = []
    for path in sorted(archive.glob("date=*/partition=*/*.parquet")):
        date = _DATE_DIR.fullmatch(path.parent.parent.name)
        partition = _PARTITION_DIR.fullmatch(path.parent.name)
        if date is None or partition is None:
            continue
        if (first_date and date[1] < first_date) or (last_date and date[1] > last_date):
            continue
        found += _file_entries(path, int(partition[1]))
    return sorted(found)


def _file_entries(path: Path, partition: int) -> list[ArchiveFile]:
    """The sources in one file with their offset ranges; the footer answers when one source."""
    try:
        meta = pq.ParquetFile(path).metadata
    except (OSError, pa.ArrowInvalid) as e:
        msg = f"{path}: not a readable Parquet file ({e}); remove it or restore it from a copy"
        raise ConfigError(msg) from e
    if meta.num_rows == 0:
        return []
    source_lo, source_hi = column_stats(meta, "source")
    offset_lo, offset_hi = column_stats(meta, "offset")
    arrived_lo = column_stats(meta, "arrived_at")[0]
    first_arrival = (arrived_lo - _EPOCH) // _MS if arrived_lo is not None else 0
    if source_lo is not None and source_lo == source_hi and offset_lo is not None:
        return [ArchiveFile(offset_lo, offset_hi, path, source_lo, partition, first_arrival)]
    table = pq.read_table(path, columns=["source", "offset"])
    grouped = table.group_by("source").aggregate([("offset", "min"), ("offset", "max")])
    columns = (grouped[c].to_pylist() for c in ("source", "offset_min", "offset_max"))
    return [ArchiveFile(lo, hi, path, source, partition, first_arrival, shared=True)
            for source, lo, hi in zip(*columns, strict=True)]


def column_stats(meta: pq.FileMetaData, column: str) -> tuple[Any, Any]:
    """Min and max of a top-level column over every row group, or (None, None) without stats."""
    leaf = next(i for i in range(meta.num_columns) if meta.schema.column(i).path == column)
    lows, highs = [], []
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(leaf).statistics
        if stats is None or not stats.has_min_max:
            return None, None
        lows.append(stats.min)
        highs.append(stats.max)
    return min(lows), max(highs)

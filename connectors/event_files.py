"""A user's own event files (an export, a test fixture, a data-lake dump), read a row at a time in
bounded memory.

Formats, told by the file name:
- `.jsonl` / `.ndjson`: one structured-mode CloudEvent per line, kept byte for byte as the record's
  value. Blank lines are not events and are skipped; a line longer than the largest accepted event
  keeps only its first bytes (the decoder dead-letters it as too large).
- `.parquet`: one column per CloudEvents attribute, `data` as a JSON string or a struct column.
- `.csv`: the same with a header line; every cell is text and empty cells are left out.
- `.avro`: an Avro object container file of a service's own records (its schema inside), each
  record read as a JSON object by a `--format` mapping; Avro timestamps become RFC 3339 text.
- JSON lines and CSV may be compressed: `.gz`, `.zst` / `.zstd` or `.bz2` after the format.
A Parquet or CSV row becomes the structured-mode JSON of its event (attributes and `data`), so the
archive and the dead letters hold what the row said.

Rows are numbered from 1 in each file: the line for JSON lines, the data row for CSV and Parquet.
That number is the record's offset and `file:<name>` its source, the coordinates in the ledger and
the dead letters. Files are read in the order of their names (what a shell's `*.jsonl` gives),
whatever order they were named in: a replay of the archive can only know the names.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic_core import from_json

from schemas.errors import ConfigError

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv",
           ".avro": "avro"}
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_PARQUET_BATCH_ROWS = 4_096


@dataclass(frozen=True)
class EventFile:
    """One input file: where it is, what its records' source is called, how to read it."""

    path: Path
    format: str  # jsonl, parquet or csv
    compression: str | None  # pyarrow's codec name

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def source(self) -> str:
        """The records' `source` coordinate."""
        return f"file:{self.name}"


@dataclass(slots=True)
class FileEvent:
    """One row of a file: its number, the parsed event (None: not a JSON object), the bytes it
    was read as (None: a columnar row, encoded on demand), and what the file could not read."""

    number: int
    envelope: dict[str, Any] | None
    raw: bytes | None = None
    arrival: Any = None  # columnar files: the value of the arrival column, left out of the event
    error: str | None = None  # the file is unreadable from this row on

    def value(self) -> bytes:
        """The record's value: the line as read, or the row's event as compact JSON."""
        if self.raw is not None:
            return self.raw
        return _dumps(self.envelope or {}).encode()


def event_files(paths: Sequence[Path]) -> list[EventFile]:
    """The files to read, in name order; a missing path, an unknown format, two files of one name
    or a file that cannot be opened is a `ConfigError` naming the file and what to do."""
    if not paths:
        raise ConfigError("source 'file' needs at least one file: flowkeeper run --source file "
                          "events.jsonl (JSON lines, CSV or Parquet of CloudEvents)")
    files = sorted((_event_file(Path(p)) for p in paths), key=lambda f: f.name)
    for first, second in pairwise(files):
        if first.name == second.name:
            raise ConfigError(f"{first.path} and {second.path} have the same name; records are "
                              "named by their file's name (file:<name>/<row>): rename one")
    for file in files:
        _probe(file)
    return files


def _event_file(path: Path) -> EventFile:
    suffixes = [s.lower() for s in path.suffixes]
    compression = COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    kind = suffixes[-2] if compression and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(f"{path}: {what}; name event files (.jsonl, .ndjson, .csv, .parquet)")
    if kind not in FORMATS or (compression and FORMATS[kind] in ("parquet", "avro")):
        raise ConfigError(
            f"{path}: unknown event file format; name it .jsonl or .ndjson (CloudEvents JSON, one "
            "a line), .csv or .parquet (a column per attribute), the text ones optionally ending "
            f"in {', '.join(COMPRESSIONS)}, or .avro (Avro container files, read by --format)")
    return EventFile(path, FORMATS[kind], compression)


def _probe(file: EventFile) -> None:
    """Open the file and read its start, so a wrong format fails before the run, not in it."""
    try:
        if file.format == "parquet":
            pq.ParquetFile(file.path).schema_arrow  # noqa: B018 (reads the footer)
        elif file.format == "avro":
            with file.path.open("rb") as stream:
                fastavro.reader(stream)  # reads the header and its schema
        else:
            with _open(file) as stream:
                stream.read(65_536)
    except (OSError, pa.ArrowException, ValueError) as e:
        kind = f"a {file.compression} file of {file.format}" if file.compression else file.format
        raise ConfigError(f"{file.path}: not readable as {kind} ({e}); check the file and "
                          "its name's format and compression") from e


def _open(file: EventFile) -> io.BufferedReader:
    return io.BufferedReader(pa.input_stream(str(file.path), compression=file.compression))


def read_events(file: EventFile, *, max_bytes: int, first: int = 1,
                arrival_field: str | None = None) -> Iterator[FileEvent]:
    """The file's rows from row `first` on. A read failure part-way (a truncated gzip file) ends
    the file with one `FileEvent` carrying the error, so it is dead-lettered, not lost."""
    rows = {"jsonl": _json_lines, "csv": _csv_rows, "parquet": _parquet_rows,
            "avro": _avro_rows}[file.format]
    number = first - 1
    try:
        for event in rows(file, first, max_bytes, arrival_field):
            number = event.number
            yield event
    except (OSError, pa.ArrowException, csv.Error, UnicodeError, ValueError, EOFError) as e:
        yield FileEvent(number + 1, None, b"", error=f"{file.name}: unreadable from row "
                        f"{number + 1} on: {e}")


def _json_lines(file: EventFile, first: int, max_bytes: int,
                arrival_field: str | None) -> Iterator[FileEvent]:
    limit = max_bytes + 2  # one byte more than accepted, and the newline
    with _open(file) as stream:
        number = 0
        while line := stream.readline(limit):
            number += 1
            if len(line) == limit and not line.endswith(b"\n"):
                rest = line
                while rest and not rest.endswith(b"\n"):  # skip the rest, in bounded pieces
                    rest = stream.readline(limit)
            value = line.rstrip(b"\r\n")
            if number < first or not value.strip():
                continue
            try:
                parsed = from_json(value)
            except ValueError:
                parsed = None
            yield FileEvent(number, parsed if isinstance(parsed, dict) else None, value)


def _csv_rows(file: EventFile, first: int, max_bytes: int,
              arrival_field: str | None) -> Iterator[FileEvent]:
    csv.field_size_limit(max(csv.field_size_limit(), max_bytes + 1))
    with _open(file) as stream:
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
        for number, row in enumerate(csv.DictReader(text), start=1):
            if number >= first:
                yield columnar_event(number, {k: v for k, v in row.items() if k and v},
                                     arrival_field)


def _parquet_rows(file: EventFile, first: int, max_bytes: int,
                  arrival_field: str | None) -> Iterator[FileEvent]:
    number = 0
    for batch in pq.ParquetFile(file.path).iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        if number + batch.num_rows < first:
            number += batch.num_rows
            continue
        for row in batch.to_pylist():
            number += 1
            if number >= first:
                yield columnar_event(number, {k: v for k, v in row.items() if v is not None},
                                     arrival_field)


def _avro_rows(file: EventFile, first: int, max_bytes: int,
               arrival_field: str | None) -> Iterator[FileEvent]:
    with file.path.open("rb") as stream:
        for number, row in enumerate(fastavro.reader(stream), start=1):
            if number < first:
                continue
            # Kept whole, as a JSON line is: the arrival field is read from it by name.
            yield FileEvent(number, dict(row) if isinstance(row, dict) else {"value": row})


def columnar_event(number: int, row: dict[str, Any], arrival_field: str | None) -> FileEvent:
    """A row with a column per attribute as its event. `data` given as JSON text is parsed; text
    that is not JSON is kept as written, making the value invalid JSON (a dead letter). Null
    members of a struct `data` are left out: a struct column holds every member of every type."""
    arrival = row.pop(arrival_field, None) if arrival_field else None
    data = row.get("data")
    if isinstance(data, str):
        try:
            row["data"] = from_json(data)
        except ValueError:
            attributes = _dumps({k: v for k, v in row.items() if k != "data"})
            raw = f'{attributes[:-1]}{"," if len(attributes) > 2 else ""}"data":{data}}}'
            return FileEvent(number, row, raw.encode(), arrival)
    if isinstance(data, dict):  # a struct column: a null member is one this row does not have
        row["data"] = {k: v for k, v in data.items() if v is not None}
    return FileEvent(number, row, None, arrival)


def _dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=_json_value)


def _json_value(value: Any) -> Any:
    """Columns JSON has no type for: times as RFC 3339 (UTC when the column has no zone), the
    rest (decimals, bytes) as text."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def time_ms(value: Any) -> int | None:
    """Milliseconds since the epoch of an arrival or event time: a datetime (UTC when it has no
    zone), a number of epoch milliseconds, or RFC 3339 / ISO 8601 text; None when it is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return (moment - _EPOCH) // _MS
    return None


"""The Parquet sink and the DuckDB loader: exact round trips of every table, idempotence,
atomicity, flushing, each file loaded once."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from bytewax.dataflow import Dataflow
from bytewax.outputs import Sink
from bytewax.testing import TestingSource, run_main

from connectors.arrow_rows import Row, RowBatch, row_batches, rows_to_table
from connectors.duckdb_database import (
    READER_WAIT_SECONDS,
    connect_readonly,
    load_rows,
    open_database,
)
from connectors.duckdb_loader import LOADED_FILES, DuckDBLoader, Loaded, LoadError
from connectors.durable_files import sync_files
from connectors.parquet_sink import ParquetSink, SinkWriteError, check_writer_count
from schemas.errors import ConfigError
from schemas.tables import DUCKDB_TABLES, TABLES, TIME_COLUMN, TS, duckdb_type
from state.output import Out
from state.table_rows import TableRows

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_MS = 86_400_000


def _ms(dt: datetime) -> int:
    """Int milliseconds since the epoch, exactly (no float rounding)."""
    return (dt - _EPOCH) // timedelta(milliseconds=1)


T0 = _ms(datetime(2024, 3, 30, 23, 59, 59, 999_000, tzinfo=UTC))  # last ms of a day
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"

_BASE: dict[str, Row] = {
    "outcomes": {
        "row_id": "",
        "workflow_type": "order_fulfilment",
        "definition_version": 3,
        "instance_id": "ord-1001",
        "outcome": "completed",
        "final_state": "delivered",
        "started_at": T0 - 3_600_000,
        "ended_at": T0,
        "duration_ms": 3_600_000,
        "step_durations": [
            {"step": "payment", "duration_ms": 1_200},
            {"step": "gift_wrap", "duration_ms": None},
        ],
        "timed_out_step": None,
        "events": 7,
        "applied": 6,
        "duplicates": 1,
        "late": 0,
        "out_of_order": 0,
        "ignored": 0,
        "anomalies": 0,
        "variant": "B",
        "trace_id": TRACE,
        "shard": "eu-1",
        "business_duration_ms": 1_800_000,
    },
    "transitions": {
        "row_id": "",
        "workflow_type": "order_fulfilment",
        "definition_version": 3,
        "instance_id": "ord-1001",
        "seq": 4,
        "from_state": "paid",
        "to_state": "packed",
        "trigger": "event",
        "event_type": "com.shop.order.packed",
        "event_id": "evt-9f1c",
        "at": T0,
        "state_duration_ms": 90_000,
        "trace_id": TRACE,
        "shard": "eu-1",
        "deadlines": [{"name": "ShipReminder", "due_at": T0 + 3_600_000}],
        "business_duration_ms": 45_000,
    },
    "commands": {
        "row_id": "",
        "idempotency_key": "cmd:ord-1001:shipping:timeout",
        "workflow_type": "order_fulfilment",
        "instance_id": "ord-1001",
        "command": "escalate",
        "step": "shipping",
        "reason": "step timed out after 48h",
        "due_at": T0,
        "trace_id": TRACE,
        "shard": "eu-1",
        "deadline": "ShipTimeout",
    },
    "anomalies": {
        "row_id": "",
        "workflow_type": "order_fulfilment",
        "instance_id": "ord-1001",
        "kind": "illegal_transition",
        "state": "cancelled",
        "event_id": "evt-77aa",
        "event_type": "com.shop.order.shipped",
        "event_time": T0 - 5_000,
        "detected_at": T0,
        "detail": "event 'shipped' is not allowed in state 'cancelled'",
        "trace_id": TRACE,
        "shard": "eu-1",
    },
    "corrections": {
        "row_id": "",
        "workflow_type": "order_fulfilment",
        "instance_id": "ord-1001",
        "corrects_row_id": "outcomes:a",
        "original_outcome": "timed_out",
        "corrected_outcome": "completed",
        "corrected_state": "delivered",
        "late_event_id": "evt-late-01",
        "late_event_type": "com.shop.order.delivered",
        "late_event_time": T0 - 60_000,
        "detected_at": T0,
        "trace_id": TRACE,
        "shard": "eu-1",
        "would_have_sent": ["order_fulfilment/ord-1001/shipping/NotifyCustomer/1"],
        "would_not_have_sent": ["order_fulfilment/ord-1001/awaiting_payment/CancelOrder/2"],
    },
    "dead_letters": {
        "row_id": "",
        "source": "kafka:orders",
        "partition": 2,
        "offset": 184_467,
        "reason": "invalid_json",
        "message": "Expecting value: line 1 column 1 (char 0)",
        "event_id": None,
        "event_type": None,
        "raw_key": b"\x00ord-1001",
        "raw_value": b"\x00\xff\xfe{not json",
        "headers": [
            {"key": "ce_type", "value": b"com.shop.order.created"},
            {"key": "bin", "value": b"\x00\x01\x00"},
            {"key": "traceparent", "value": None},
        ],
        "arrived_at": T0,
        "shard": "2/7",
    },
    "ledger": {
        "row_id": "",
        "source": "kafka:orders",
        "partition": 2,
        "offset": 184_468,
        "event_id": "evt-9f1c",
        "workflow_type": "order_fulfilment",
        "instance_id": "ord-1001",
        "disposition": "applied",
        "event_time": T0 - 1_500,
        "arrived_at": T0,
        "shard": "2/7",
    },
    "metrics": {
        "row_id": "",
        "workflow_type": "order_fulfilment",
        "shard": "eu-1",
        "window_start": T0 - 59_999,
        "window_end": T0 + 1,
        "events_in": 1_204,
        "started": 120,
        "completed": 97,
        "failed": 3,
        "cancelled": 5,
        "timed_out": 2,
        "compensated": 1,
        "compensation_failed": 0,
        "duplicates": 14,
        "late": 6,
        "anomalies": 2,
        "dead_letters": 1,
        "open_at_end": 412,
        "latency_count": 97,
        "latency_p50_ms": 1_234.5,
        "latency_p95_ms": 98_765.25,
        "latency_p99_ms": 3_600_000.0,
    },
    "event_time_jumps": {
        "row_id": "",
        "source": "file:claims.jsonl",
        "partition": 2,
        "offset": 5_012,
        "event_id": "evt-42",
        "event_type": "ClaimFiled",
        "workflow_type": "claims",
        "instance_id": "clm-77",
        "kind": "refused",
        "from_time": T0,
        "to_time": T0 + 3_912_000_000_000,
        "ahead_ms": 3_912_000_000_000,
        "votes_with": 0,
        "votes_against": 4,
        "shard": "2/5",
    },
    "archive": {
        "row_id": "",
        "source": "kafka:orders",
        "partition": 2,
        "offset": 184_469,
        "key": b"\x00ord-1001",
        "value": b"\x00\xff\xfe{not json",
        "headers": [
            {"key": "ce_type", "value": b"com.shop.order.created"},
            {"key": "traceparent", "value": None},
        ],
        "arrived_at": T0,
        "error": None,
    },
}


def _rows(table: str) -> list[Row]:
    """Three rows: realistic (day 1); next day with non-ASCII text and empty lists; mostly None."""
    schema = TABLES[table]
    time_column = TIME_COLUMN[table]
    a = {**_BASE[table], "row_id": f"{table}:a"}
    b = {name: _next_day_non_ascii(schema.field(name).type, v) for name, v in a.items()}
    b["row_id"] = f"{table}:b-ü"
    c: Row = dict.fromkeys(schema.names)
    c.update({"row_id": f"{table}:c", time_column: T0 + 1})  # first ms of the next day
    return [a, b, c]


def _next_day_non_ascii(dtype: pa.DataType, value: Any) -> Any:
    """Shift times by a day, make text non-ASCII, empty the lists: a second, different row."""
    if value is None:
        return None
    if dtype == TS:
        return value + _DAY_MS
    if dtype == pa.string():
        return f"{value} · Zürich/東京 🚚"
    if pa.types.is_list(dtype):
        return []
    return value


def _plain(data: pa.Table, table: str) -> list[Row]:
    """Rows as the sinks took them: schema column types, timestamps as int ms, sorted by row_id."""
    schema = TABLES[table]
    data = data.select(schema.names).cast(schema)
    for i, f in enumerate(schema):
        plain = _int_times(f.type)
        if plain != f.type:
            data = data.set_column(i, f.name, data[f.name].cast(plain))
    return sorted(data.to_pylist(), key=lambda row: row["row_id"])


def _int_times(dtype: pa.DataType) -> pa.DataType:
    """The type with every timestamp (also inside lists and structs) as int64 ms."""
    if dtype == TS:
        return pa.int64()
    if pa.types.is_list(dtype):
        return pa.list_(_int_times(dtype.value_type))
    if pa.types.is_struct(dtype):
        return pa.struct([(f.name, _int_times(f.type)) for f in dtype])
    return dtype


def _date(table: str, row: Row) -> str:
    """The UTC day of a row's event time: its expected `date=` directory."""
    return (_EPOCH + timedelta(milliseconds=row[TIME_COLUMN[table]])).date().isoformat()


def _run(items: list[Any], sink: Sink[Any]) -> None:
    """Run a one-step flow from a list into the sink, keyed for writer 0."""
    flow = Dataflow("sink_test")
    stream = op.input("rows", flow, TestingSource(items, batch_size=len(items)))
    op.output("out", op.key_on("key", stream, lambda _item: "000"), sink)
    run_main(flow)


def _batch(table: str, *rows: Row) -> RowBatch:
    """A sink item: rows of one table as Arrow."""
    return (table, rows_to_table(table, list(rows)))


def _items(table: str) -> list[RowBatch]:
    """The rows of one table, one item each."""
    return [_batch(table, row) for row in _rows(table)]


def _all_items(tables: tuple[str, ...] = tuple(TABLES)) -> list[RowBatch]:
    """The items of every table (or of `tables`)."""
    return [item for table in tables for item in _items(table)]


def _load(items: list[Any], tmp_path: Path) -> Loaded:
    """Write the items with the Parquet sink, then load every file into `tmp_path/out.duckdb`."""
    parquet = tmp_path / "parquet"
    _run(items, ParquetSink(parquet, partitions=1))
    loader = DuckDBLoader(tmp_path / "out.duckdb", parquet)
    try:
        return loader.load(everything=True)
    finally:
        loader.close()


def _read_parquet(out_dir: Path, table: str) -> pa.Table:
    """Read one table back the way readers do: a Hive-partitioned dataset."""
    return ds.dataset(out_dir / table, format="parquet", partitioning="hive").to_table()


def _files(out_dir: Path) -> Iterator[Path]:
    """Every file under out_dir, hidden ones included."""
    return (p for p in out_dir.rglob("*") if p.is_file())


def _duckdb_rows(db_path: Path, table: str) -> list[Row]:
    """The rows of one DuckDB table, in the shape the sink was given."""
    conn = connect_readonly(db_path)
    try:
        return _plain(conn.sql(f'SELECT * FROM "{table}"').to_arrow_table(), table)
    finally:
        conn.close()


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("table", list(TABLES))
def test_parquet_round_trip_is_exact(tmp_path: Path, table: str) -> None:
    """Rows of every table come back from the Parquet files exactly, partitioned by UTC date."""
    _run(_items(table), ParquetSink(tmp_path, partitions=1))

    data = _read_parquet(tmp_path, table)
    assert _plain(data, table) == sorted(_rows(table), key=lambda row: row["row_id"])
    dates = {row["row_id"]: str(row["date"]) for row in data.select(["row_id", "date"]).to_pylist()}
    assert dates == {row["row_id"]: _date(table, row) for row in _rows(table)}
    assert set(dates.values()) == {"2024-03-30", "2024-03-31"}


@pytest.mark.parametrize("table", list(TABLES))
def test_parquet_files_are_zstd_hive_files_without_date_column(tmp_path: Path, table: str) -> None:
    """Each file sits under `{table}/date=...`, is zstd-compressed and stores exactly the schema."""
    _run(_items(table), ParquetSink(tmp_path, partitions=1))

    files = sorted(_files(tmp_path))
    assert sorted({p.relative_to(tmp_path).parts[:2] for p in files}) == [
        (table, "date=2024-03-30"),
        (table, "date=2024-03-31"),
    ]
    for path in files:
        assert path.name.startswith("part-p000-") and path.suffix == ".parquet"
        assert pq.read_schema(path).equals(TABLES[table], check_metadata=False)
        meta = pq.ParquetFile(path).metadata
        compressions = {
            meta.row_group(g).column(c).compression
            for g in range(meta.num_row_groups)
            for c in range(meta.num_columns)
        }
        assert compressions == {"ZSTD"}


def test_duckdb_reads_parquet_output_with_hive_dates(tmp_path: Path) -> None:
    """DuckDB's `read_parquet(..., hive_partitioning=true)` sees every row with its `date`."""
    _run(_all_items(), ParquetSink(tmp_path, partitions=1))

    conn = duckdb.connect()
    try:
        for table in TABLES:
            glob = f"{tmp_path / table}/**/*.parquet"
            query = "SELECT row_id, CAST(date AS VARCHAR) FROM read_parquet(?, hive_partitioning=1)"
            got = dict(conn.execute(query, [glob]).fetchall())
            assert got == {row["row_id"]: _date(table, row) for row in _rows(table)}
    finally:
        conn.close()


@pytest.mark.parametrize("table", DUCKDB_TABLES)
def test_duckdb_round_trip_is_exact(tmp_path: Path, table: str) -> None:
    """Rows of every table come back exactly from DuckDB loaded from the Parquet files."""
    _load(_items(table), tmp_path)

    got = _duckdb_rows(tmp_path / "out.duckdb", table)
    assert got == sorted(_rows(table), key=lambda row: row["row_id"])


def test_a_duckdb_file_of_an_older_schema_gets_the_new_columns(tmp_path: Path) -> None:
    """A database whose `corrections` table predates `would_have_sent`/`would_not_have_sent`
    (a run made before they existed, continued or resumed now) gets them added; its old rows
    hold NULL there, and new rows are loaded whole."""
    db_path = tmp_path / "out.duckdb"
    conn = duckdb.connect(str(db_path))
    old = [f for f in TABLES["corrections"] if not f.name.startswith("would_")]
    conn.execute('CREATE TABLE "corrections" (' + ", ".join(
        f'"{f.name}" {duckdb_type(f.type)}' + (" PRIMARY KEY" if f.name == "row_id" else "")
        for f in old) + ")")
    conn.execute("INSERT INTO corrections (row_id) VALUES ('older')")
    conn.close()
    _load(_items("corrections"), tmp_path)
    rows = {row["row_id"]: row for row in _duckdb_rows(db_path, "corrections")}
    assert rows.pop("older")["would_have_sent"] is None
    assert list(rows.values()) == _rows("corrections")


def test_the_writer_waits_while_a_reader_holds_the_file(tmp_path: Path) -> None:
    """A reader in another process (the console, a notebook) holding the file read-only makes a
    starting run wait, not fail: it opens the file once the reader lets go."""
    db_path = tmp_path / "out.duckdb"
    duckdb.connect(str(db_path)).close()
    reader = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1], read_only=True)"
         "; print('holding', flush=True); sys.stdin.readline(); c.close()", str(db_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert reader.stdout is not None and reader.stdout.readline() == "holding\n"
    opened: list[duckdb.DuckDBPyConnection] = []
    writer = threading.Thread(target=lambda: opened.append(open_database(db_path)))
    writer.start()
    assert not opened  # it cannot have the file while the reader holds it
    reader.communicate("done\n")
    writer.join(timeout=READER_WAIT_SECONDS)
    assert opened and opened[0].execute("SELECT count(*) FROM outcomes").fetchall() == [(0,)]
    opened[0].close()


def test_duckdb_ignores_redelivered_rows(tmp_path: Path) -> None:
    """Rows twice in the Parquet files (in one file and in a later one) are stored once."""
    items = _all_items(DUCKDB_TABLES)
    first = _load(items + items, tmp_path)
    second = _load(items, tmp_path)  # a second run into the folder: new files, the same rows

    assert (first.inserted, second.inserted) == (len(items), 0)
    for table in DUCKDB_TABLES:
        got = _duckdb_rows(tmp_path / "out.duckdb", table)
        assert got == sorted(_rows(table), key=lambda row: row["row_id"])


def test_each_file_is_loaded_once_and_recorded(tmp_path: Path) -> None:
    """A pass loads only files not loaded before, and records each with its rows in the same
    database; a fresh loader on the same file finds them recorded and loads nothing."""
    parquet, db_path = tmp_path / "parquet", tmp_path / "out.duckdb"
    _run(_items("outcomes"), ParquetSink(parquet, partitions=1))
    loader = DuckDBLoader(db_path, parquet)
    assert loader.load(everything=True) == Loaded(files=2, rows=3, inserted=3)
    assert loader.load(everything=True) == Loaded()
    _run(_items("ledger"), ParquetSink(parquet, partitions=1))
    assert loader.load(everything=True) == Loaded(files=2, rows=3, inserted=3)
    loader.close()
    again = DuckDBLoader(db_path, parquet)
    assert again.load(everything=True) == Loaded()
    recorded = again._conn.execute(f'SELECT file, "table", "rows" FROM {LOADED_FILES} '
                                   "ORDER BY file").fetchall()
    again.close()
    files = sorted(p.relative_to(parquet).as_posix() for p in parquet.glob("**/part-*.parquet"))
    assert [r[0] for r in recorded] == files
    assert sum(r[2] for r in recorded) == 6 and {r[1] for r in recorded} == {"outcomes", "ledger"}


def test_a_rewritten_file_is_loaded_again_only_with_the_same_rows(tmp_path: Path) -> None:
    """A loaded file replaced under its name (a finished run's recovery folder run again) is
    loaded again: with the same rows of the same row_ids plus new ones it adds the new ones; with
    a row that differs from the loaded one the load fails naming the file and loads nothing."""
    parquet, db_path = tmp_path / "parquet", tmp_path / "out.duckdb"
    rows = _rows("outcomes")
    _run([_batch("outcomes", rows[0])], ParquetSink(parquet, partitions=1))
    (path,) = parquet.glob("**/part-*.parquet")
    loader = DuckDBLoader(db_path, parquet)
    loader.load(everything=True)
    same_day = {**rows[0], "row_id": "outcomes:a2"}
    pq.write_table(rows_to_table("outcomes", [rows[0], same_day]), path, compression="zstd")
    assert loader.load(everything=True) == Loaded(files=1, rows=2, inserted=1)
    changed = {**rows[0], "outcome": "failed"}
    pq.write_table(rows_to_table("outcomes", [changed]), path, compression="zstd")
    with pytest.raises(LoadError, match=f"{path}.*1 rows that differ"):
        loader.load(everything=True)
    loader.close()
    assert sorted(r["row_id"] for r in _duckdb_rows(db_path, "outcomes")) == [
        "outcomes:a", "outcomes:a2"]


def test_writer_count_is_fixed_for_an_output_folder(tmp_path: Path) -> None:
    """The first run records its writer count; a resumed run with another count is refused with
    the flag to use, before anything is written."""
    check_writer_count(tmp_path / "parquet", 2)
    check_writer_count(tmp_path / "parquet", 2)
    with pytest.raises(ConfigError, match="--parquet-writers 2"):
        check_writer_count(tmp_path / "parquet", 8)


def test_load_rows_is_idempotent(tmp_path: Path) -> None:
    """`load_rows` outside a flow inserts once and skips the same rows the second time."""
    db_path = tmp_path / "out.duckdb"
    load_rows(db_path, "outcomes", _rows("outcomes"))
    load_rows(db_path, "outcomes", _rows("outcomes"))

    assert _duckdb_rows(db_path, "outcomes") == sorted(_rows("outcomes"), key=lambda r: r["row_id"])


@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOSPC), OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))],
    ids=["bare_errno", "errno_and_text"],
)
def test_failed_write_leaves_no_partial_or_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError
) -> None:
    """A disk-full error mid-file leaves only complete files and raises SinkWriteError naming it."""
    part = ParquetSink(tmp_path, batch_rows=1).build_part("out", "000", None)
    first = _rows("ledger")[0]
    part.write_batch([_batch("ledger", first)])

    failed = tmp_path / "ledger" / "date=2024-03-30" / "part-p000-000001.parquet"
    written_to: list[Path] = []

    def write_half_then_fail(table: pa.Table, where: Any, **kwargs: Any) -> None:
        written_to.append(Path(where.name))
        assert not failed.exists()
        where.write(b"PAR1\x00\x00half a file")
        raise error

    monkeypatch.setattr(pq, "write_table", write_half_then_fail)
    with pytest.raises(SinkWriteError) as caught:
        part.write_batch([_batch("ledger", {**first, "row_id": "ledger:second"})])
    monkeypatch.undo()

    [temp] = written_to
    assert temp.parent == failed.parent
    assert temp.name.startswith(".")
    assert temp.suffix == ".tmp"
    assert str(failed) in str(caught.value)
    assert "ENOSPC (No space left on device)" in str(caught.value)
    files = list(_files(tmp_path))
    assert [p.name for p in files] == ["part-p000-000000.parquet"]
    assert pq.read_table(files[0]).column("row_id").to_pylist() == ["ledger:a"]


def test_rows_are_written_once_flush_interval_passes(tmp_path: Path) -> None:
    """Buffered rows stay in memory until the injected clock reaches flush_seconds, then go out."""
    clock = FakeClock()
    part = ParquetSink(tmp_path, flush_seconds=5.0, clock=clock).build_part("out", "000", None)
    a, b, _ = _rows("transitions")
    part.write_batch([_batch("transitions", a)])
    clock.now = 4.999
    part.write_batch([_batch("transitions", {**a, "row_id": "transitions:a2"})])
    assert list(_files(tmp_path)) == []

    clock.now = 5.0
    part.write_batch([_batch("transitions", b)])
    assert len(_read_parquet(tmp_path, "transitions")) == 2  # day 1 is due; b's buffer is new

    part.close()
    assert len(_read_parquet(tmp_path, "transitions")) == 3


def test_full_buffer_is_written_at_batch_rows(tmp_path: Path) -> None:
    """A (table, date) buffer is written as soon as it holds batch_rows rows."""
    part = ParquetSink(tmp_path, batch_rows=2).build_part("out", "000", None)
    a = _rows("commands")[0]
    part.write_batch([_batch("commands", a)])
    assert list(_files(tmp_path)) == []

    part.write_batch([_batch("commands", {**a, "row_id": "commands:a2"})])
    assert len(_read_parquet(tmp_path, "commands")) == 2


def test_second_run_adds_files_without_overwriting(tmp_path: Path) -> None:
    """A second flow into the same out_dir numbers its files on and leaves the first's untouched."""
    _run(_all_items(), ParquetSink(tmp_path, partitions=1))
    first = {p: p.read_bytes() for p in _files(tmp_path)}
    _run(_all_items(), ParquetSink(tmp_path, partitions=1))

    after = set(_files(tmp_path))
    assert len(after) == 2 * len(first)
    assert {p: p.read_bytes() for p in first} == first
    for table in TABLES:
        assert len(_read_parquet(tmp_path, table)) == 2 * len(_rows(table))


def test_rows_with_wrong_keys_are_refused() -> None:
    """A misspelt column is an error, not a silently null column."""
    row = {**_rows("ledger")[0]}
    row["offest"] = row.pop("offset")
    expected = r"missing columns \['offset'\], unexpected keys \['offest'\]"
    with pytest.raises(ValueError, match=expected):
        rows_to_table("ledger", [row])
    with pytest.raises(ValueError, match=expected):  # as the engine hands its rows on
        Out("0/0").row("ledger", row)
    del row["offest"]
    with pytest.raises(ValueError, match=r"missing columns \['offset'\], unexpected keys \[\]"):
        TableRows("0/0").add("ledger", row)
    with pytest.raises(ValueError, match="'ledger' row of 10 values; the table has 11 columns"):
        TableRows("0/0").add_values("ledger", tuple(row.values()))


def test_value_rows_become_the_same_arrow_table_as_dict_rows() -> None:
    """Every table's rows, added as dicts or as tuples, convert column by column to exactly the
    table `from_pylist` makes of the dicts (types, nulls, nested lists, non-ASCII text)."""
    for table, schema in TABLES.items():
        rows = _rows(table)
        as_tuples = TableRows("0/0")
        for row in rows:
            as_tuples.add_values(table, tuple(row[name] for name in schema.names))
        expected = pa.Table.from_pylist(rows, schema=schema)
        assert rows_to_table(table, rows).equals(expected)
        [(_, (_, converted))] = row_batches([as_tuples], lambda key: "000")
        assert converted.equals(expected)
        assert as_tuples.rows_of(table) == rows


def test_parquet_resume_removes_files_written_after_the_snapshot(tmp_path: Path) -> None:
    """A writer resumed from snapshot N deletes its own files numbered N and later (their rows
    will be written again) and leftover temp files, and keeps other partitions' files."""
    first = ParquetSink(tmp_path, batch_rows=1).build_part("out", "000", None)
    first.write_batch(_items("commands")[:1])
    resume_at = first.snapshot()
    first.write_batch(_items("commands")[1:])  # written after the snapshot, then a crash
    other = ParquetSink(tmp_path, batch_rows=1).build_part("out", "001", None)
    other.write_batch(_items("outcomes")[:1])
    (tmp_path / "commands" / ".part-p000-000009.parquet.tmp").write_bytes(b"half")
    assert len(_read_parquet(tmp_path, "commands")) == len(_rows("commands"))
    resumed = ParquetSink(tmp_path, batch_rows=1).build_part("out", "000", resume_at)
    assert len(_read_parquet(tmp_path, "commands")) == 1
    assert not list(tmp_path.glob("**/*.tmp"))
    assert len(_read_parquet(tmp_path, "outcomes")) == 1
    resumed.write_batch(_items("commands")[1:])
    assert sorted(_read_parquet(tmp_path, "commands")["row_id"].to_pylist()) == sorted(
        r["row_id"] for r in _rows("commands"))


def test_parquet_snapshot_flushes_buffers(tmp_path: Path) -> None:
    """A snapshot writes every buffered row before naming the resume point."""
    part = ParquetSink(tmp_path, batch_rows=1000, flush_seconds=3600).build_part("out", "000", None)
    part.write_batch(_items("ledger"))
    assert not list(tmp_path.glob("**/*.parquet"))
    assert part.snapshot() == 2  # two dates: two files, numbered 0 and 1
    assert len(_read_parquet(tmp_path, "ledger")) == len(_rows("ledger"))


def test_row_batches_convert_rows_once_per_key_and_table_in_row_order() -> None:
    """The dataflow's batching step: one Arrow table per (writer, table), rows in arrival order."""
    ledger, transitions = _rows("ledger"), _rows("transitions")
    first, second, third = TableRows("0/0"), TableRows("1/0"), TableRows("0/1")
    first.add("ledger", ledger[0])
    first.add("transitions", transitions[0])
    second.add("ledger", ledger[1])
    third.add("ledger", ledger[2])
    writers = {"0/0": "000", "1/0": "001", "0/1": "000"}
    batches = row_batches([first, second, third], writers.__getitem__)

    got = [(key, table, data.column("row_id").to_pylist()) for key, (table, data) in batches]
    assert got == [("000", "ledger", ["ledger:a", "ledger:c"]),
                   ("000", "transitions", ["transitions:a"]),
                   ("001", "ledger", ["ledger:b-ü"])]
    assert all(data.schema == TABLES[table] for _, (table, data) in batches)


def test_one_batch_is_split_by_hive_directory(tmp_path: Path) -> None:
    """A batch spanning two days and two input partitions (one of them null) is written as one
    file per directory, each holding exactly its rows."""
    part = ParquetSink(tmp_path).build_part("out", "000", None)
    part.write_batch([_batch("archive", *_rows("archive"))])
    part.close()

    files = {p.relative_to(tmp_path / "archive").parent.as_posix():
             pq.read_table(p).column("row_id").to_pylist()
             for p in _files(tmp_path) if p.suffix == ".parquet"}
    assert files == {"date=2024-03-30/partition=2": ["archive:a"],
                     "date=2024-03-31/partition=2": ["archive:b-ü"],
                     "date=2024-03-31/partition=__HIVE_DEFAULT_PARTITION__": ["archive:c"]}


def test_files_hold_at_most_batch_rows(tmp_path: Path) -> None:
    """A batch larger than batch_rows is cut into files of batch_rows rows; the rest waits."""
    part = ParquetSink(tmp_path, batch_rows=2).build_part("out", "000", None)
    first = _rows("commands")[0]
    rows = [{**first, "row_id": f"commands:{i}"} for i in range(5)]
    part.write_batch([_batch("commands", *rows)])
    part.close()

    sizes = sorted(pq.read_table(p).num_rows for p in _files(tmp_path) if p.suffix == ".parquet")
    assert sizes == [1, 2, 2]
    written = sorted(_read_parquet(tmp_path, "commands")["row_id"].to_pylist())
    assert written == [row["row_id"] for row in rows]


def test_rows_without_event_time_are_refused_by_name(tmp_path: Path) -> None:
    """A row that cannot be placed in a `date=` directory is an error naming it."""
    row = {**_rows("ledger")[0], "row_id": "ledger:no-time", "arrived_at": None}
    part = ParquetSink(tmp_path).build_part("out", "000", None)
    with pytest.raises(ValueError, match="'ledger' row 'ledger:no-time' has no 'arrived_at'"):
        part.write_batch([_batch("ledger", _rows("ledger")[0], row)])


def test_a_flush_commits_its_files_with_two_barriers(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """All files of one flush are written under temp names, made durable by one barrier, renamed,
    and their names made durable by a second: never a final name on data not yet synced."""
    barriers: list[tuple[list[str], list[str]]] = []

    def barrier(paths: list[Path]) -> None:
        names = sorted(p.name for p in tmp_path.glob("**/*part-p*"))
        barriers.append(([p.name for p in paths], names))
        sync_files(paths)

    monkeypatch.setattr("connectors.parquet_sink.sync_files", barrier)
    part = ParquetSink(tmp_path, batch_rows=1000, flush_seconds=3600).build_part("out", "000", None)
    part.write_batch([_batch(table, *_rows(table)) for table in ("ledger", "commands")])
    part.close()

    [(synced, before), (dirs, after)] = barriers
    assert len(synced) == len(before) == 4  # two tables, two days each: four temp files
    assert all(name.startswith(".") and name.endswith(".tmp") for name in synced + before)
    assert after == [f"part-p000-00000{i}.parquet" for i in range(4)]
    assert sorted(dirs) == ["date=2024-03-30"] * 2 + ["date=2024-03-31"] * 2  # once each


def test_without_syncfs_every_path_is_fsynced(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the C library has no `syncfs`, each file and directory gets its own fsync."""
    files = [tmp_path / "a", tmp_path / "b"]
    for path in files:
        path.write_bytes(b"x")
    synced: list[int] = []
    monkeypatch.setattr("connectors.durable_files._syncfs", lambda: None)
    monkeypatch.setattr(os, "fsync", synced.append)
    sync_files([*files, tmp_path])
    assert len(synced) == 3


def test_one_or_two_paths_get_their_own_fsync(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A barrier waits for everything dirty on the file system: a path or two is fsynced instead,
    and more paths on one file system share a single barrier."""
    files = [tmp_path / name for name in "abc"]
    for path in files:
        path.write_bytes(b"x")
    fsynced: list[int] = []
    barriers: list[int] = []

    def barrier(fd: int) -> int:
        barriers.append(fd)
        return 0

    monkeypatch.setattr("connectors.durable_files._syncfs", lambda: barrier)
    monkeypatch.setattr(os, "fsync", fsynced.append)
    sync_files(files[:2])
    assert (len(fsynced), len(barriers)) == (2, 0)
    sync_files(files)
    assert (len(fsynced), len(barriers)) == (2, 1)

"""Output rows (plain dicts) to Arrow tables with the explicit schemas of `schemas.tables`.

The dataflow converts each batch of rows here once (`row_batches`) and hands the same Arrow tables
to both sinks, so Parquet files and DuckDB tables get the same column types whatever the rows
hold: a schema is never inferred from data. Times in rows are int milliseconds since the
epoch (UTC), which Arrow takes as-is for `timestamp('ms', tz='UTC')`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from schemas.tables import PARTITION_COLUMNS, TABLES, TIME_COLUMN

Row = dict[str, Any]
RowBatch = tuple[str, pa.Table]
"""What both sinks take: `(table_name, rows of that table)`, converted by `row_batches`."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_MS = 86_400_000


def schema_of(table: str) -> pa.Schema:
    """The Arrow schema of an output table; a clear error for a name that is not one."""
    try:
        return TABLES[table]
    except KeyError:
        msg = f"unknown output table {table!r}; expected one of {sorted(TABLES)}"
        raise ValueError(msg) from None


def rows_to_table(table: str, rows: list[Row]) -> pa.Table:
    """Build an Arrow table of `rows` with the table's explicit schema.

    Keys are checked first: `from_pylist` would silently drop a misspelt key and write a null.
    """
    schema = schema_of(table)
    columns = set(schema.names)
    for row in rows:
        if row.keys() != columns:
            raise _shape_error(table, columns, row)
    return pa.Table.from_pylist(rows, schema=schema)


def row_batches(rows: Iterable[tuple[str, Row]],
                key_of: Callable[[tuple[str, Row]], str]) -> list[tuple[str, RowBatch]]:
    """`(table, row)` items as one `(key, (table, Arrow table))` item per key and table, in row
    order: each row is converted once for both sinks, and an item crossing Bytewax workers (and,
    between processes, pickled on its own) costs microseconds, so rows travel in batches."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for item in rows:
        slot = (key_of(item), item[0])
        group = groups.get(slot)
        if group is None:
            groups[slot] = [item[1]]
        else:
            group.append(item[1])
    return [(key, (table, rows_to_table(table, group))) for (key, table), group in groups.items()]


def hive_groups(table: str, data: pa.Table) -> list[tuple[tuple[str, ...], pa.Table]]:
    """The rows split by their Hive directories, in row order: `date=YYYY-MM-DD` (the UTC day of
    the table's event-time column), then one `name=value` per `PARTITION_COLUMNS`. A batch
    usually holds one day and one partition: then it is returned whole."""
    column = TIME_COLUMN[table]
    times = data.column(column)
    if times.null_count:
        row_id = data.filter(pc.is_null(times)).column("row_id")[0].as_py()
        msg = f"{table!r} row {row_id!r} has no {column!r}; it cannot be partitioned"
        raise ValueError(msg)
    names = PARTITION_COLUMNS.get(table, ())
    keys = pa.table({"day": pc.divide(times.cast(pa.int64()), _DAY_MS),
                     **{name: data.column(name) for name in names}})
    combos = keys.group_by(list(keys.column_names), use_threads=False).aggregate([]).to_pylist()
    if len(combos) == 1:
        return [(_dirs(combos[0], names), data)]
    return [(_dirs(combo, names), data.filter(_matching(keys, combo))) for combo in combos]


def _dirs(combo: dict[str, Any], names: tuple[str, ...]) -> tuple[str, ...]:
    extra = (f"{name}={_hive_value(combo[name])}" for name in names)
    return (f"date={_day_text(combo['day'])}", *extra)


def _matching(keys: pa.Table, combo: dict[str, Any]) -> pa.ChunkedArray:
    """The mask of the rows whose key columns equal `combo` (a null matches a null)."""
    masks = [pc.is_null(keys.column(name)) if value is None else pc.equal(keys.column(name), value)
             for name, value in combo.items()]
    mask = masks[0]
    for other in masks[1:]:
        mask = pc.and_(mask, other)
    return mask


@cache
def _day_text(day: int) -> str:
    """`YYYY-MM-DD` of a day number since the epoch: computed once per day, not once per row."""
    return (_EPOCH + timedelta(days=day)).date().isoformat()


def _hive_value(value: Any) -> str:
    """Hive's spelling of a partition value; a null gets Hive's default partition name."""
    return "__HIVE_DEFAULT_PARTITION__" if value is None else str(value)


def _shape_error(table: str, columns: set[str], row: Row) -> ValueError:
    """Name the missing and unexpected keys of a row that does not fit its table."""
    missing = sorted(columns - row.keys())
    extra = sorted(row.keys() - columns)
    msg = f"{table!r} row {row.get('row_id')!r}: missing columns {missing}, unexpected keys {extra}"
    return ValueError(msg)

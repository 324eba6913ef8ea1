"""Output rows (plain dicts) to Arrow tables with the explicit schemas of `schemas.tables`.

Both sinks go through here, so Parquet files and DuckDB tables get the same column types whatever
the rows hold: a schema is never inferred from data. Times in rows are int milliseconds since the
epoch (UTC), which Arrow takes as-is for `timestamp('ms', tz='UTC')`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pyarrow as pa

from schemas.tables import PARTITION_COLUMNS, TABLES, TIME_COLUMN

Row = dict[str, Any]

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


def partition_date(table: str, row: Row) -> str:
    """The UTC day (`YYYY-MM-DD`) of the row's event-time column: its Hive `date=` partition."""
    schema_of(table)
    column = TIME_COLUMN[table]
    millis = row[column]
    if millis is None:
        msg = f"{table!r} row {row.get('row_id')!r} has no {column!r}; it cannot be partitioned"
        raise ValueError(msg)
    return _day_text(millis // _DAY_MS)


@cache
def _day_text(day: int) -> str:
    """`YYYY-MM-DD` of a day number since the epoch: computed once per day, not once per row."""
    return (_EPOCH + timedelta(days=day)).date().isoformat()


def hive_dirs(table: str, row: Row) -> tuple[str, ...]:
    """The row's Hive directories: `date=YYYY-MM-DD`, then one `name=value` per `PARTITION_COLUMNS`."""
    extra = tuple(f"{name}={_hive_value(row[name])}" for name in PARTITION_COLUMNS.get(table, ()))
    return (f"date={partition_date(table, row)}", *extra)


def _hive_value(value: Any) -> str:
    """Hive's spelling of a partition value; a null gets Hive's default partition name."""
    return "__HIVE_DEFAULT_PARTITION__" if value is None else str(value)


def _shape_error(table: str, columns: set[str], row: Row) -> ValueError:
    """Name the missing and unexpected keys of a row that does not fit its table."""
    missing = sorted(columns - row.keys())
    extra = sorted(row.keys() - columns)
    msg = f"{table!r} row {row.get('row_id')!r}: missing columns {missing}, unexpected keys {extra}"
    return ValueError(msg)

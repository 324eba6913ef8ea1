"""Output rows to Arrow tables with the explicit schemas of `schemas.tables`, column by column.

The dataflow converts each batch of rows here once (`row_batches`), from the engine's per-table
value tuples (`state.table_rows.TableRows`): one `zip(*rows)` turns a table's rows into columns and
each column becomes one Arrow array of its schema type, so a schema is never inferred from data
and no dict is built per row. Times in rows are int milliseconds since the epoch (UTC), which Arrow
takes as-is for `timestamp('ms', tz='UTC')`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from schemas.tables import PARTITION_COLUMNS, TABLES, TIME_COLUMN
from state.table_rows import TableRows, Values, row_values

Row = dict[str, Any]
RowBatch = tuple[str, pa.Table]
"""What the sink takes: `(table_name, rows of that table)`, converted by `row_batches`."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_MS = 86_400_000


def schema_of(table: str) -> pa.Schema:
    """The Arrow schema of an output table; a clear error for a name that is not one."""
    try:
        return TABLES[table]
    except KeyError:
        msg = f"unknown output table {table!r}; expected one of {sorted(TABLES)}"
        raise ValueError(msg) from None


def columns_to_table(table: str, columns: Sequence[Sequence[Any]]) -> pa.Table:
    """An Arrow table of the table's columns, given in its schema's order: one array per column."""
    schema = schema_of(table)
    return pa.Table.from_arrays(
        [pa.array(column, type=field.type) for column, field in zip(columns, schema, strict=True)],
        schema=schema)


def values_to_table(table: str, rows: list[Values]) -> pa.Table:
    """An Arrow table of rows given as value tuples in the table's column order."""
    if not rows:
        return schema_of(table).empty_table()
    return columns_to_table(table, list(zip(*rows, strict=True)))


def rows_to_table(table: str, rows: list[Row]) -> pa.Table:
    """An Arrow table of dict rows; each row must have exactly the table's columns (a misspelt key
    is an error, not a silent null; so is an unknown table)."""
    return values_to_table(table, [row_values(table, row) for row in rows])


def row_batches(chunks: Iterable[TableRows],
                writer_of: Callable[[str], str]) -> list[tuple[str, RowBatch]]:
    """Engine outputs as one `(writer, (table, Arrow table))` item per writer and table, each
    table's rows in order: the rows of a `TableRows` go to the writer of its key, each row is
    converted once, and an item crossing Bytewax workers (and, between processes, pickled on its
    own) costs microseconds, so rows travel in batches."""
    groups: dict[tuple[str, str], list[Values]] = {}
    for chunk in chunks:
        writer = writer_of(chunk.key)
        for table, rows in chunk.tables.items():
            slot = (writer, table)
            group = groups.get(slot)
            if group is None:
                groups[slot] = list(rows)
            else:
                group.extend(rows)
    return [(writer, (table, values_to_table(table, group)))
            for (writer, table), group in groups.items() if group]


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
    single = _single_key(keys)
    if single is not None:  # the usual batch: no grouping needed
        return [(_dirs(single, names), data)]
    combos = keys.group_by(list(keys.column_names), use_threads=False).aggregate([]).to_pylist()
    if len(combos) == 1:
        return [(_dirs(combos[0], names), data)]
    return [(_dirs(combo, names), data.filter(_matching(keys, combo))) for combo in combos]


def _single_key(keys: pa.Table) -> dict[str, Any] | None:
    """The one value of every key column, when each holds a single value and no null."""
    combo: dict[str, Any] = {}
    for name in keys.column_names:
        column = keys.column(name)
        if column.null_count:
            return None
        bounds = pc.min_max(column)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if low != high:
            return None
        combo[name] = low
    return combo


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

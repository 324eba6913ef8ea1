"""Output rows held per table as value tuples in the Arrow schema's order, not as dicts.

`schemas.tables` stays the one definition of the columns: a dict row is read out in that order
with one `itemgetter` call (and checked for its shape on the way: a misspelt or missing column is
an error, never a silent null), and the hottest row, the ledger's, is built as a tuple at once.
The sink side turns a table's tuples into columns with one `zip(*rows)` and one Arrow array per
column (`connectors.arrow_rows`), so the way to Parquet builds no dict per row and does no
per-value Python work. Paths that want dicts (Kafka topics, test sinks, log lines) convert with
`dict_rows`.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any

from schemas.tables import TABLES

Values = tuple[Any, ...]
"""One row's values in its table's column order."""


class _Shape:
    """A table's column names and the getter that reads a dict row out in that order."""

    __slots__ = ("getter", "names", "width")

    def __init__(self, names: list[str]) -> None:
        self.names = tuple(names)
        self.width = len(names)
        self.getter: Callable[[dict[str, Any]], Values] = itemgetter(*names)


SHAPES: dict[str, _Shape] = {table: _Shape(schema.names) for table, schema in TABLES.items()}


def shape_of(table: str) -> _Shape:
    """The shape of an output table; a clear error for a name that is not one."""
    try:
        return SHAPES[table]
    except KeyError:
        msg = f"unknown output table {table!r}; expected one of {sorted(SHAPES)}"
        raise ValueError(msg) from None


def row_values(table: str, row: dict[str, Any]) -> Values:
    """A dict row's values in its table's column order. Exactly the table's columns, or an error
    naming the missing and unexpected keys (a misspelt key would otherwise become a null)."""
    shape = shape_of(table)
    if len(row) == shape.width:
        try:
            return shape.getter(row)
        except KeyError:
            pass
    raise shape_error(table, shape.names, row)


def shape_error(table: str, names: tuple[str, ...], row: dict[str, Any]) -> ValueError:
    """Name the missing and unexpected keys of a row that does not fit its table."""
    missing = sorted(set(names) - row.keys())
    extra = sorted(row.keys() - set(names))
    msg = f"{table!r} row {row.get('row_id')!r}: missing columns {missing}, unexpected keys {extra}"
    return ValueError(msg)


class TableRows:
    """Rows of any tables, each table's in the order they were added. `key` routes them all to
    one Parquet writer (the shard that made them)."""

    __slots__ = ("key", "tables")

    def __init__(self, key: str) -> None:
        self.key = key
        self.tables: dict[str, list[Values]] = {}

    def add(self, table: str, row: dict[str, Any]) -> None:
        """Append a dict row, shape-checked."""
        values = row_values(table, row)
        rows = self.tables.get(table)
        if rows is None:
            self.tables[table] = [values]
        else:
            rows.append(values)

    def add_values(self, table: str, values: Values) -> None:
        """Append a row built as a tuple in the table's column order (checked for its width)."""
        shape = shape_of(table)
        if len(values) != shape.width:
            msg = f"{table!r} row of {len(values)} values; the table has {shape.width} columns"
            raise ValueError(msg)
        rows = self.tables.get(table)
        if rows is None:
            self.tables[table] = [values]
        else:
            rows.append(values)

    def count(self, table: str) -> int:
        """Rows of one table."""
        return len(self.tables.get(table, ()))

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.tables.values())

    def column(self, table: str, name: str) -> list[Any]:
        """One column of one table."""
        index = shape_of(table).names.index(name)
        return [values[index] for values in self.tables.get(table, ())]

    def dict_rows(self, tables: frozenset[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
        """The rows as `(table, dict)`, table after table (all tables, or those in `tables`)."""
        return [(table, dict(zip(SHAPES[table].names, values, strict=True)))
                for table, rows in self.tables.items() if tables is None or table in tables
                for values in rows]

    def rows_of(self, table: str) -> list[dict[str, Any]]:
        """The dict rows of one table."""
        names = SHAPES[table].names
        return [dict(zip(names, values, strict=True)) for values in self.tables.get(table, ())]

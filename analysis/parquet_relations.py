"""The Parquet datasets as DuckDB relations named like the DuckDB tables: one view SQL serves both.

The DuckDB tables are the source of truth (their `row_id` primary key keeps exactly one version of
each row); the Parquet files hold the same rows, possibly more than once after a resumed run. Each
relation here reads `{root}/{table}/**/*.parquet` with Hive partitioning, keeps the table's own
columns (not the `date=` directory column) and one row per `row_id`, the earliest file's, as the
DuckDB loader's `INSERT OR IGNORE` does. A table with no files yet is an empty relation of the same
columns, so every view still binds.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from schemas.tables import DUCKDB_TABLES, TABLES, duckdb_type


def create_parquet_relations(conn: duckdb.DuckDBPyConnection, root: Path) -> None:
    """One view per output table over `root`'s Parquet files; `conn` must not hold those tables."""
    existing = {name for (name,) in conn.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = current_schema()").fetchall()}
    clash = sorted(existing & set(DUCKDB_TABLES))
    if clash:
        msg = (f"this connection already has the tables {clash}; open an in-memory connection "
               "(duckdb.connect()) for views over Parquet")
        raise ValueError(msg)
    for table in DUCKDB_TABLES:
        conn.execute(f'CREATE OR REPLACE VIEW "{table}" AS '
                     f"{_relation_sql(conn, table, root / table)}")


def _relation_sql(conn: duckdb.DuckDBPyConnection, table: str, folder: Path) -> str:
    """The table's rows, one per `row_id`; a column that files of an older version lack (all of
    them) reads as NULL of its type."""
    schema = TABLES[table]
    if not any(folder.glob("**/*.parquet")):
        return f"SELECT {_typed_nulls(schema)} WHERE false"
    glob = str(folder / "**" / "*.parquet").replace("'", "''")
    source = (f"read_parquet('{glob}', hive_partitioning = true, union_by_name = true, "
              "filename = true)")
    present = {row[0] for row in conn.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    columns = ", ".join(f'"{f.name}"' if f.name in present
                        else f'CAST(NULL AS {duckdb_type(f.type)}) AS "{f.name}"' for f in schema)
    return f"SELECT DISTINCT ON (row_id) {columns} FROM {source} ORDER BY row_id, filename"


def _typed_nulls(schema: pa.Schema) -> str:
    return ", ".join(f'CAST(NULL AS {duckdb_type(f.type)}) AS "{f.name}"' for f in schema)

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
        conn.execute(f'CREATE OR REPLACE VIEW "{table}" AS {_relation_sql(table, root / table)}')


def _relation_sql(table: str, folder: Path) -> str:
    schema = TABLES[table]
    columns = ", ".join(f'"{name}"' for name in schema.names)
    if not any(folder.glob("**/*.parquet")):
        return f"SELECT {_typed_nulls(schema)} WHERE false"
    glob = str(folder / "**" / "*.parquet").replace("'", "''")
    return (f"SELECT DISTINCT ON (row_id) {columns} FROM read_parquet('{glob}', "
            "hive_partitioning = true, union_by_name = true, filename = true) "
            "ORDER BY row_id, filename")


def _typed_nulls(schema: pa.Schema) -> str:
    return ", ".join(f'CAST(NULL AS {duckdb_type(f.type)}) AS "{f.name}"' for f in schema)

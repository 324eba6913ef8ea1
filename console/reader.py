"""Which copy of a run the console reads, opened afresh for each request and closed after it.

Beside a running pipeline its DuckDB loader holds the DuckDB file as its one writer, so the
console must never hold it then: `auto` tries the file read-only and, when a writer's lock
refuses it, reads the committed Parquet datasets through the same views instead. A finished run
is read from its DuckDB file, the source of truth. Nothing is cached between requests, so every
page shows what is written now.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb

from analysis.outputs import RunOutputs, open_outputs
from schemas.errors import ConfigError
from state.catalog import Catalog

Choice = Literal["auto", "duckdb", "parquet"]


@dataclass(frozen=True)
class Opened:
    """A connection with every view, and which copy it reads (shown in the page footer)."""

    conn: duckdb.DuckDBPyConnection
    source: Literal["duckdb", "parquet"]


@dataclass(frozen=True)
class RunReader:
    """Opens `out` for one request; `catalog` is the run's definitions (Parquet needs them)."""

    out: Path
    catalog: Catalog
    choice: Choice = "auto"

    @property
    def outputs(self) -> RunOutputs:
        return RunOutputs(self.out)

    def check(self) -> None:
        """Fail at start, with what to do, when there is nothing to read."""
        if not self.outputs.duckdb_path.is_file() and not self.outputs.parquet_dir.is_dir():
            msg = (f"{self.out} holds no run outputs (no flowkeeper.duckdb, no parquet/): point "
                   "--out at the folder `flowkeeper run --out` writes")
            raise ConfigError(msg)

    @contextmanager
    def open(self) -> Iterator[Opened]:
        """A read-only connection for the length of a `with` block."""
        opened = self._connect()
        try:
            yield opened
        finally:
            opened.conn.close()

    def _connect(self) -> Opened:
        if self.choice == "parquet" or (
                self.choice == "auto" and not self.outputs.duckdb_path.is_file()):
            return Opened(open_outputs(self.out, "parquet", self.catalog), "parquet")
        try:
            return Opened(open_outputs(self.out, "duckdb"), "duckdb")
        except duckdb.IOException as error:
            if self.choice == "duckdb" or "lock" not in str(error):
                raise ConfigError(f"cannot read {self.outputs.duckdb_path}: {error}") from error
            return Opened(open_outputs(self.out, "parquet", self.catalog), "parquet")

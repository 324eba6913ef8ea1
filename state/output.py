"""Where the engine puts what it decides: output rows per table, and metric facts.

Rows go into per-table buffers of value tuples in the column order of `schemas.tables`
(`state.table_rows.TableRows`; times as UTC milliseconds): call sites hand a dict, checked for its
shape, or the ledger's tuple; no dict travels on to the Parquet sink. Metric facts
(an event came in, an instance started, a step took 3 s, ...) feed the windowed metrics step. They
are tallied here per workflow type and minute of a per-shard monotonic event-time clock (`stamp`),
so one engine call hands the metrics step a few tallies instead of one item per fact: every item
crossing Bytewax operators costs microseconds, and there are about three facts per event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from state.table_rows import TableRows, Values

Row = tuple[str, dict[str, Any]]
FACT_TABLE = "_fact"  # the pseudo-table of tallies; never written to a sink
FACT_WINDOW_MS = 60_000  # the metrics window: tallies never straddle one
Chunk = tuple[TableRows, list[Row]]
"""What one engine call hands on: its table rows, and its `_fact` rows for the metrics step."""


@dataclass(slots=True)
class FactTally:
    """The facts of one workflow type within one metrics window, from one engine call."""

    stamp: int = 0  # the latest fact's clock value: places the tally in its window
    counts: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # step durations in ms
    open_at_end: int | None = None  # the last open-instances gauge, if one changed


@dataclass
class Out:
    """Collects the rows and fact tallies of one engine call; `shard` is stamped on every row."""

    shard: str
    tables: TableRows = field(init=False)
    fact_clock: int = 0
    tallies: dict[tuple[str, int], FactTally] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tables = TableRows(self.shard)

    def row(self, table: str, row: dict[str, Any]) -> None:
        """A row as a dict with every column but `shard`."""
        row["shard"] = self.shard
        self.tables.add(table, row)

    def values(self, table: str, values: Values) -> None:
        """A row as a tuple in the table's column order, `shard` included (the hot rows)."""
        self.tables.add_values(table, values)

    @property
    def rows(self) -> list[Row]:
        """The rows as `(table, dict)`, table after table (tests, what-if tools)."""
        return self.tables.dict_rows()

    def fact(self, workflow_type: str, at_ms: int, kind: str, value: float = 1.0) -> None:
        """A metric fact; stamped no earlier than the previous one of this shard."""
        clock = self.fact_clock
        if at_ms > clock:
            clock = self.fact_clock = at_ms
        key = (workflow_type, clock // FACT_WINDOW_MS)
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = FactTally()
        tally.stamp = clock
        if kind == "step_latency":
            tally.latencies.append(value)
        elif kind == "open":
            tally.open_at_end = int(value)
        else:
            tally.counts[kind] = tally.counts.get(kind, 0) + 1

    def with_facts(self, origin: str) -> Chunk:
        """The rows, and one `_fact` row per tally. `origin` names this call (a record's
        coordinates, `eof`, an idle tick): a late tally's metrics row is told apart by it."""
        return self.tables, [(FACT_TABLE, {"workflow_type": workflow_type, "shard": self.shard,
                                           "stamp": tally.stamp, "origin": origin, "tally": tally})
                             for (workflow_type, _), tally in self.tallies.items()]


class Discard(Out):
    """An `Out` that keeps nothing: for what-if recomputation of an instance."""

    def row(self, table: str, row: dict[str, Any]) -> None:
        pass

    def values(self, table: str, values: Values) -> None:
        pass

    def fact(self, workflow_type: str, at_ms: int, kind: str, value: float = 1.0) -> None:
        pass


@dataclass
class CommandKeys(Discard):
    """Keeps only the idempotency keys of the commands sent: what a what-if would have sent."""

    keys: set[str] = field(default_factory=set)

    def row(self, table: str, row: dict[str, Any]) -> None:
        if table == "commands":
            self.keys.add(row["idempotency_key"])

"""Where the engine puts what it decides: output rows per table, and metric facts.

Rows go into per-table buffers of value tuples in the column order of `schemas.tables`
(`state.table_rows.TableRows`; times as UTC milliseconds): call sites hand a dict, checked for its
shape, or the ledger's tuple; no dict travels on to the Parquet sink. Metric facts (an event came
in, an instance started, a step took 3 s, ...) are tallied here per workflow type and minute of
the shard's monotonic fact clock; the shard folds a call's tallies into its open metrics windows
(`state.metric_windows`), so no fact ever leaves the shard: there are about three facts per
event, and every item crossing Bytewax operators costs microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from state.table_rows import TableRows, Values

Row = tuple[str, dict[str, Any]]
FACT_WINDOW_MS = 60_000  # the metrics window: tallies never straddle one


@dataclass(slots=True)
class FactTally:
    """The facts of one workflow type within one metrics window, from one engine call."""

    counts: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # step durations in ms
    open_at_end: int | None = None  # the last open-instances gauge, if one changed


@dataclass
class Out:
    """Collects the rows and fact tallies of one engine call; `shard` is stamped on every row.
    Tallies are keyed by (workflow type, window number); once the shard has folded them into its
    metrics windows they move to `folded` (what the live counters read)."""

    shard: str
    tables: TableRows = field(init=False)
    fact_clock: int = 0
    tallies: dict[tuple[str, int], FactTally] = field(default_factory=dict)
    folded: list[tuple[tuple[str, int], FactTally]] = field(default_factory=list)

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
        if kind == "step_latency":
            tally.latencies.append(value)
        elif kind == "open":
            tally.open_at_end = int(value)
        else:
            tally.counts[kind] = tally.counts.get(kind, 0) + 1


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

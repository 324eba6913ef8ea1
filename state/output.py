"""Where the engine puts what it decides: output rows per table, and metric facts.

Rows are plain dicts in the shape of `schemas.tables` (times as UTC milliseconds). Metric facts
feed the windowed metrics step; they carry a per-shard monotonic timestamp (`stamp`) so windows
see them in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Row = tuple[str, dict[str, Any]]


@dataclass
class Out:
    """Collects the rows of one engine call; `shard` is stamped on every row."""

    shard: str
    rows: list[Row] = field(default_factory=list)
    fact_clock: int = 0

    def row(self, table: str, row: dict[str, Any]) -> None:
        row["shard"] = self.shard
        self.rows.append((table, row))

    def fact(self, workflow_type: str, at_ms: int, kind: str, value: float = 1.0) -> None:
        """A metric fact; stamped no earlier than the previous one of this shard."""
        self.fact_clock = max(self.fact_clock, at_ms)
        self.rows.append(("_fact", {"workflow_type": workflow_type, "shard": self.shard,
                                    "stamp": self.fact_clock, "kind": kind, "value": value}))


class Discard(Out):
    """An `Out` that keeps nothing: for what-if recomputation of an instance."""

    def row(self, table: str, row: dict[str, Any]) -> None:
        pass

    def fact(self, workflow_type: str, at_ms: int, kind: str, value: float = 1.0) -> None:
        pass

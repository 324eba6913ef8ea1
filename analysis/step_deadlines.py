"""The `step_deadlines` reference table: every deadline of the loaded definitions, as rows.

Deadlines live in the definitions, not in any output table, yet some views need them: an instance
is *stuck* when event time has passed every deadline of its state, and latency plots draw a
state's deadlines as SLA lines. The DuckDB loader writes this table from the run's catalog when
it opens the database; a Parquet-backed connection builds it from the catalog it is given.

Rows: one per deadline of a state-machine state (`kind` 'deadline', `position` its index in the
escalation chain, `name` its name), and one per terminal state that compensates (`kind`
'compensation', `after_ms` the workflow's `compensation_timeout`). A deadline in business time has
no fixed length: its `after_ms` is NULL, `after` says it as written and `calendar` names the
calendar (its due times are in `transitions.deadlines`). Case-tracking definitions have no states:
their SLA rules report through `anomalies` instead.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa

from schemas.tables import duckdb_type
from state.catalog import Catalog
from state.definition import StateMachine
from state.durations import parse_duration_ms
from state.machine import COMPENSATION_TIMEOUT

TABLE = "step_deadlines"

STEP_DEADLINES = pa.schema(
    [
        ("workflow_type", pa.string()),
        ("definition_version", pa.int32()),
        ("state", pa.string()),
        ("kind", pa.string()),
        ("position", pa.int32()),
        ("after_ms", pa.int64()),
        ("from_event", pa.string()),
        ("command", pa.string()),
        ("goto", pa.string()),
        ("name", pa.string()),
        ("after", pa.string()),
        ("calendar", pa.string()),
    ]
)

_STAGING = "step_deadlines_arrow"


def deadline_rows(catalog: Catalog) -> list[dict[str, Any]]:
    """Every deadline (and compensation timeout) of every state-machine definition."""
    rows: list[dict[str, Any]] = []
    for definition in catalog.all():
        if not isinstance(definition, StateMachine):
            continue
        base = {"workflow_type": definition.workflow, "definition_version": definition.version}
        for name, state in definition.states.items():
            for position, deadline in enumerate(state.deadlines):
                business = deadline.business is not None
                rows.append({**base, "state": name, "kind": "deadline", "position": position,
                             "after_ms": None if business else deadline.after_ms,
                             "from_event": deadline.from_event, "command": deadline.command,
                             "goto": deadline.goto, "name": deadline.label,
                             "after": deadline.after,
                             "calendar": definition.calendar_of(name, deadline) if business
                             else None})
            if state.is_terminal and state.compensates:
                rows.append({**base, "state": name, "kind": "compensation", "position": 0,
                             "after_ms": parse_duration_ms(definition.compensation_timeout),
                             "from_event": None, "command": None, "goto": None,
                             "name": COMPENSATION_TIMEOUT,
                             "after": definition.compensation_timeout, "calendar": None})
    return rows


def create_step_deadlines(conn: duckdb.DuckDBPyConnection, catalog: Catalog | None) -> None:
    """Create the table if missing (and add the columns a newer version has to an older file's);
    with a catalog, replace its rows with the catalog's."""
    columns = ", ".join(f'"{f.name}" {duckdb_type(f.type)}' for f in STEP_DEADLINES)
    conn.execute(f'CREATE TABLE IF NOT EXISTS "{TABLE}" ({columns})')
    for f in STEP_DEADLINES:
        conn.execute(f'ALTER TABLE "{TABLE}" ADD COLUMN IF NOT EXISTS "{f.name}" '
                     f"{duckdb_type(f.type)}")
    if catalog is None:
        return
    conn.register(_STAGING, pa.Table.from_pylist(deadline_rows(catalog), schema=STEP_DEADLINES))
    names = ", ".join(f'"{f.name}"' for f in STEP_DEADLINES)
    try:
        conn.execute(f'DELETE FROM "{TABLE}"')
        conn.execute(f'INSERT INTO "{TABLE}" ({names}) SELECT {names} FROM {_STAGING}')
    finally:
        conn.unregister(_STAGING)

"""Explicit Arrow schemas of every output table, and the DuckDB DDL generated from them.

One schema source: sinks build Arrow tables with these schemas (never inferred from rows) and the
DuckDB tables are created from the same definitions. Every table has a deterministic `row_id`
primary key, so a row written twice (after a crash or a replay) is recognised as the same row.
Times are UTC milliseconds. `date` is the Hive partition column, derived from `TIME_COLUMN`.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("ms", tz="UTC")

_STEP_DURATION = pa.struct([("step", pa.string()), ("duration_ms", pa.int64())])
# A deadline armed on entering a state: its name and absolute due time (business time included).
_ARMED = pa.struct([("name", pa.string()), ("due_at", TS)])
_HEADER = pa.struct([("key", pa.string()), ("value", pa.binary())])

OUTCOMES = pa.schema(
    [
        ("row_id", pa.string()),
        ("workflow_type", pa.string()),
        ("definition_version", pa.int32()),
        ("instance_id", pa.string()),
        ("outcome", pa.string()),
        ("final_state", pa.string()),
        ("started_at", TS),
        ("ended_at", TS),
        ("duration_ms", pa.int64()),
        ("step_durations", pa.list_(_STEP_DURATION)),
        ("timed_out_step", pa.string()),
        ("events", pa.int32()),
        ("applied", pa.int32()),
        ("duplicates", pa.int32()),
        ("late", pa.int32()),
        ("out_of_order", pa.int32()),
        ("ignored", pa.int32()),
        ("anomalies", pa.int32()),
        ("variant", pa.string()),
        ("trace_id", pa.string()),
        ("shard", pa.string()),
        # `duration_ms` in the business time of the definition's calendar (None: no calendar)
        ("business_duration_ms", pa.int64()),
    ]
)

TRANSITIONS = pa.schema(
    [
        ("row_id", pa.string()),
        ("workflow_type", pa.string()),
        ("definition_version", pa.int32()),
        ("instance_id", pa.string()),
        ("seq", pa.int32()),
        ("from_state", pa.string()),
        ("to_state", pa.string()),
        ("trigger", pa.string()),
        ("event_type", pa.string()),
        ("event_id", pa.string()),
        ("at", TS),
        ("state_duration_ms", pa.int64()),
        ("trace_id", pa.string()),
        ("shard", pa.string()),
        ("deadlines", pa.list_(_ARMED)),  # armed on entering `to_state` (None: case tracking)
        # `state_duration_ms` in the business time of the state's calendar (None: no calendar)
        ("business_duration_ms", pa.int64()),
    ]
)

COMMANDS = pa.schema(
    [
        ("row_id", pa.string()),
        ("idempotency_key", pa.string()),
        ("workflow_type", pa.string()),
        ("instance_id", pa.string()),
        ("command", pa.string()),
        ("step", pa.string()),
        ("reason", pa.string()),
        ("due_at", TS),
        ("trace_id", pa.string()),
        ("shard", pa.string()),
        ("deadline", pa.string()),  # the name of the deadline that sent it (None: compensation)
    ]
)

ANOMALIES = pa.schema(
    [
        ("row_id", pa.string()),
        ("workflow_type", pa.string()),
        ("instance_id", pa.string()),
        ("kind", pa.string()),
        ("state", pa.string()),
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("event_time", TS),
        ("detected_at", TS),
        ("detail", pa.string()),
        ("trace_id", pa.string()),
        ("shard", pa.string()),
    ]
)

CORRECTIONS = pa.schema(
    [
        ("row_id", pa.string()),
        ("workflow_type", pa.string()),
        ("instance_id", pa.string()),
        ("corrects_row_id", pa.string()),
        ("original_outcome", pa.string()),
        ("corrected_outcome", pa.string()),
        ("corrected_state", pa.string()),
        ("late_event_id", pa.string()),
        ("late_event_type", pa.string()),
        ("late_event_time", TS),
        ("detected_at", TS),
        ("trace_id", pa.string()),
        ("shard", pa.string()),
        # idempotency keys of the commands the in-time run sends and this run did not, and the
        # other way round (last: a DuckDB file of an older version gets them added at the end)
        ("would_have_sent", pa.list_(pa.string())),
        ("would_not_have_sent", pa.list_(pa.string())),
    ]
)

DEAD_LETTERS = pa.schema(
    [
        ("row_id", pa.string()),
        ("source", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("reason", pa.string()),
        ("message", pa.string()),
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("raw_key", pa.binary()),
        ("raw_value", pa.binary()),
        ("headers", pa.list_(_HEADER)),
        ("arrived_at", TS),
        ("shard", pa.string()),
    ]
)

LEDGER = pa.schema(
    [
        ("row_id", pa.string()),
        ("source", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("event_id", pa.string()),
        ("workflow_type", pa.string()),
        ("instance_id", pa.string()),
        ("disposition", pa.string()),
        ("event_time", TS),
        ("arrived_at", TS),
        ("shard", pa.string()),
    ]
)

METRICS = pa.schema(
    [
        ("row_id", pa.string()),
        ("workflow_type", pa.string()),
        ("shard", pa.string()),
        ("window_start", TS),
        ("window_end", TS),
        ("events_in", pa.int64()),
        ("started", pa.int64()),
        ("completed", pa.int64()),
        ("failed", pa.int64()),
        ("cancelled", pa.int64()),
        ("timed_out", pa.int64()),
        ("compensated", pa.int64()),
        ("compensation_failed", pa.int64()),
        ("duplicates", pa.int64()),
        ("late", pa.int64()),
        ("anomalies", pa.int64()),
        ("dead_letters", pa.int64()),
        ("open_at_end", pa.int64()),
        ("latency_count", pa.int64()),
        ("latency_p50_ms", pa.float64()),
        ("latency_p95_ms", pa.float64()),
        ("latency_p99_ms", pa.float64()),
    ]
)

# A record stamped more than --max-future-skew ahead of its partition's event time
# (`state.admission`): `jumped` when the partition's later traffic corroborated it and the clock
# moved there, `refused` when it did not and the record became a `time_out_of_range` dead letter.
EVENT_TIME_JUMPS = pa.schema(
    [
        ("row_id", pa.string()),
        ("source", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("workflow_type", pa.string()),
        ("instance_id", pa.string()),
        ("kind", pa.string()),
        ("from_time", TS),
        ("to_time", TS),
        ("ahead_ms", pa.int64()),
        ("votes_with", pa.int32()),
        ("votes_against", pa.int32()),
        ("shard", pa.string()),
    ]
)

# Every record a source read, exactly as received, for replay (`flowkeeper replay`). `error` is set
# only when the source reported a read error instead of a record (replayed as `source_error`).
ARCHIVE = pa.schema(
    [
        ("row_id", pa.string()),
        ("source", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("key", pa.binary()),
        ("value", pa.binary()),
        ("headers", pa.list_(_HEADER)),
        ("arrived_at", TS),
        ("error", pa.string()),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "outcomes": OUTCOMES,
    "transitions": TRANSITIONS,
    "commands": COMMANDS,
    "anomalies": ANOMALIES,
    "corrections": CORRECTIONS,
    "dead_letters": DEAD_LETTERS,
    "ledger": LEDGER,
    "metrics": METRICS,
    "event_time_jumps": EVENT_TIME_JUMPS,
    "archive": ARCHIVE,
}

# Tables loaded into DuckDB: all but the raw input archive, which stays in Parquet (raw bytes would
# make the database as large as the input, and replay reads the files).
DUCKDB_TABLES: tuple[str, ...] = tuple(t for t in TABLES if t != "archive")

# The event-time column each table is partitioned by (Hive `date=YYYY-MM-DD`).
TIME_COLUMN: dict[str, str] = {
    "outcomes": "ended_at",
    "transitions": "at",
    "commands": "due_at",
    "anomalies": "detected_at",
    "corrections": "detected_at",
    "dead_letters": "arrived_at",
    "ledger": "arrived_at",
    "metrics": "window_start",
    "event_time_jumps": "from_time",
    "archive": "arrived_at",
}

# Hive partition columns after `date`, per table: `archive/date=YYYY-MM-DD/partition=N/`, so a
# replay reads each input partition's files without opening the others. They stay in the files too.
PARTITION_COLUMNS: dict[str, tuple[str, ...]] = {"archive": ("partition",)}

_DUCKDB_TYPES: dict[pa.DataType, str] = {
    pa.string(): "VARCHAR",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.binary(): "BLOB",
    TS: "TIMESTAMPTZ",
}


def duckdb_type(dtype: pa.DataType) -> str:
    """Map an Arrow type of our schemas to its DuckDB spelling."""
    if dtype in _DUCKDB_TYPES:
        return _DUCKDB_TYPES[dtype]
    if pa.types.is_list(dtype):
        return f"{duckdb_type(dtype.value_type)}[]"
    if pa.types.is_struct(dtype):
        fields = ", ".join(f'"{f.name}" {duckdb_type(f.type)}' for f in dtype)
        return f"STRUCT({fields})"
    msg = f"no DuckDB type for Arrow type {dtype!r}; add it to schemas.tables._DUCKDB_TYPES"
    raise TypeError(msg)


def duckdb_ddl(table: str) -> str:
    """`CREATE TABLE IF NOT EXISTS` for one output table, `row_id` as primary key."""
    schema = TABLES[table]
    cols = ",\n  ".join(
        f'"{f.name}" {duckdb_type(f.type)}' + (" PRIMARY KEY" if f.name == "row_id" else "")
        for f in schema
    )
    return f'CREATE TABLE IF NOT EXISTS "{table}" (\n  {cols}\n)'

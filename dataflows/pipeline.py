"""The main dataflow: source → decode/validate → per-shard workflow state → sinks.

    records ──key by shard──▶ workflow_state (decode, dedupe, reorder, engine, deadlines,
                                   │ 1-minute event-time metrics windows folded per shard)
                                   │ rows: outcomes, transitions, commands, anomalies,
                                   │       corrections, dead_letters, ledger, metrics
    all rows ──▶ Arrow batches (per writer, table) ──▶ Parquet (every worker)
    commands, outcomes, corrections, dead letters ──▶ Kafka topics, as CloudEvents (optional)
    records ──▶ archive rows (as received) ──▶ Arrow batches ──▶ Parquet only (`flowkeeper replay`)

Run it with `flowkeeper run`, or the Bytewax way:
`python -m bytewax.run "dataflows.bytewax_main:flow()"` (settings then come from `FLOWKEEPER_*`
environment variables). DuckDB is not written here: its loader takes the committed Parquet files
beside the run (`connectors.duckdb_loader`; `flowkeeper run` starts it, and under bytewax.run it is
`flowkeeper load-duckdb --follow`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from itertools import chain

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from connectors.archive_format import archive_row
from connectors.arrow_rows import RowBatch, row_batches
from connectors.parquet_commits import (
    FLOW_ID,
    PARQUET_STEP,
    RECOVERY_MARKER,
    mark_recovery,
)
from connectors.parquet_sink import ParquetSink, check_writer_count
from dataflows.bytewax_run import bytewax_run_flags, reconcile
from dataflows.formats import with_format
from dataflows.kafka_wiring import kafka_outputs, output_topics
from dataflows.recovery import saved_keys
from dataflows.settings import Settings
from dataflows.sources import make_source
from operators.admission_step import admit
from operators.shard_step import ShardStepConfig, run_shards
from operators.telemetry import Telemetry, start_telemetry
from operators.timeutil import to_ms as moment_ms
from runtime.fatal import exit_with_message
from runtime.gc_tuning import tune_gc
from schemas.event import RawRecord
from schemas.payloads.bundled import bundled_registry
from state.catalog import load_catalog
from state.clock import Clock, utc_now
from state.durations import to_ms
from state.output import Row
from state.shard import ShardConfig


def parquet_key(item: Row) -> str:
    """Route a row to a Parquet writer: by its shard, or by input partition for archive rows."""
    row = item[1]
    return row.get("shard") or f"input/{row['partition']}"


def sink_batches(rows: Iterable[Row], parquet: ParquetSink) -> list[tuple[str, RowBatch]]:
    """Rows as the Parquet sink takes them: one Arrow table per writer (by `parquet_key`) and
    table, converted on the worker that made the rows, so few items cross to the writers."""
    return row_batches(rows, lambda item: parquet.writer_of(parquet_key(item)))


def archive_batches(records: Iterable[RawRecord],
                    parquet: ParquetSink) -> list[tuple[str, RowBatch]]:
    """Input records as received, as `archive` rows batched like `sink_batches`."""
    return sink_batches((("archive", archive_row(record)) for record in records), parquet)


def wall_vouch(clock: Clock, idle_grace: timedelta | None) -> Callable[[], int] | None:
    """On a live stream (`--idle-grace`), the event time the wall clock vouches for: now minus
    the grace, as the idle shards' watermark follows it. None on bounded inputs: never wall time."""
    if idle_grace is None:
        return None
    return lambda: moment_ms(clock() - idle_grace)


def build_flow(
    settings: Settings | None = None,
    *,
    source: Source[RawRecord] | None = None,
    sink: Sink[Row] | None = None,
    clock: Clock = utc_now,
    telemetry: Telemetry | None = None,
) -> Dataflow:
    """Build the dataflow; `source`, `sink`, `clock` and `telemetry` are injectable for tests.
    Without `telemetry`, `settings.telemetry.metrics_port` starts the process's metrics endpoint.
    Tunes the process's garbage collector for the engine (`runtime.gc_tuning`). Under `python -m
    bytewax.run`, its recovery and scaling flags are the ones that count
    (`dataflows.bytewax_run`); a `ConfigError` names every setting that disagrees with them.
    A library function: it raises, the commands print the error and exit."""
    settings = settings or Settings()
    flags = bytewax_run_flags() if source is None else None
    if flags is not None:
        settings = reconcile(settings, flags)
    tune_gc()
    if telemetry is None and settings.telemetry.metrics_port:
        telemetry = start_telemetry(settings.telemetry.metrics_port)
    catalog = load_catalog(settings.definitions, settings.calendars)
    rules = with_format(
        catalog.decode_rules(bundled_registry(), settings.source.max_event_bytes,
                             settings.time.max_future_skew_ms, settings.time.accept_times_ms),
        settings, catalog)
    config = ShardStepConfig(
        catalog=catalog,
        rules=rules,
        shard=ShardConfig(allowed_lateness_ms=to_ms(settings.time.allowed_lateness)),
        buckets=settings.buckets,
        drain_at_eof=settings.time.drain_at_eof,
        idle_grace=settings.time.idle_grace,
        clock=clock,
        telemetry=telemetry,
    )
    flow = Dataflow(FLOW_ID)
    records = op.input("input", flow,
                       source if source is not None else make_source(settings, catalog))
    saved_partitions, saved_shards = saved_keys(settings.recovery.dir,
                                                f"{flow.flow_id}.admission",
                                                f"{flow.flow_id}.workflow_state")
    slices = admit("admission", records, config.rules, config.buckets, saved_partitions,
                   saved_shards, wall_vouch(clock, settings.time.idle_grace),
                   config.shard.allowed_lateness_ms)
    # Rows travel in lists (one per engine call) up to the sinks: each item costs a Python call
    # in every step it crosses.
    table_chunks = run_shards("workflow_state", slices, config)
    if output_topics(settings) or sink is not None:
        table_rows = op.flat_map("rows", table_chunks, lambda rows: rows)
        kafka_outputs(table_rows, settings)
        if sink is not None:
            op.output("output", table_rows, sink)
            return flow
    settings.parquet_dir.mkdir(parents=True, exist_ok=True)
    if settings.recovery.dir is not None:
        check_writer_count(settings.parquet_dir, settings.sinks.parquet_writers)
        mark_recovery(settings.parquet_dir, settings.recovery.dir)  # for the DuckDB loader
    else:  # no resume will delete a file from now on: the loader may take every one
        (settings.parquet_dir / RECOVERY_MARKER).unlink(missing_ok=True)
    parquet = ParquetSink(settings.parquet_dir, settings.sinks.parquet_batch_rows,
                          settings.sinks.flush_interval.total_seconds(),
                          partitions=settings.sinks.parquet_writers,
                          recovery=settings.recovery.dir is not None,
                          on_write_error=exit_with_message)
    batches = op.flat_map_batch("row_batches", table_chunks,
                                lambda lists: sink_batches(chain.from_iterable(lists), parquet))
    parquet_batches = batches
    if settings.sinks.archive:  # every input record as received, for replay: Parquet, not DuckDB
        archived = op.flat_map_batch("archive_batches", records,
                                     lambda batch: archive_batches(batch, parquet))
        parquet_batches = op.merge("tables_and_archive", batches, archived)
    op.output(PARQUET_STEP, parquet_batches, parquet)
    return flow

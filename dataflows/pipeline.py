"""The main dataflow: source → decode/validate → per-shard workflow state → sinks.

    records ──key by shard──▶ workflow_state (decode, dedupe, reorder, engine, deadlines,
                                   │ 1-minute event-time metrics windows folded per shard)
                                   │ rows: outcomes, transitions, commands, anomalies,
                                   │       corrections, dead_letters, ledger, metrics
    all rows (value tuples per table) ──▶ Arrow batches, column by column (per writer, table)
        ──▶ Parquet (every worker)
    commands, outcomes, corrections, dead letters ──▶ Kafka topics, as CloudEvents (optional)
    records ──▶ archive columns (as received) ──▶ Arrow batches ──▶ Parquet only (`flowkeeper
    replay`)

Run it with `flowkeeper run`, or the Bytewax way:
`python -m bytewax.run "dataflows.bytewax_main:flow()"` (settings then come from `FLOWKEEPER_*`
environment variables). DuckDB is not written here: its loader takes the committed Parquet files
beside the run (`connectors.duckdb_loader`; `flowkeeper run` starts it, and under bytewax.run it is
`flowkeeper load-duckdb --follow`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from connectors.archive_format import archive_table
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
from state.table_rows import TableRows


def sink_batches(chunks: Iterable[TableRows],
                 parquet: ParquetSink) -> list[tuple[str, RowBatch]]:
    """Rows as the Parquet sink takes them: one Arrow table per writer (by the shard that made
    the rows) and table, converted on the worker that made the rows, so few items cross to the
    writers."""
    here = parquet.local_writers()  # the writers on this worker: the rows stay on it
    return row_batches(chunks, lambda key: parquet.writer_of(key, here))


def archive_batches(records: Iterable[RawRecord],
                    parquet: ParquetSink) -> list[tuple[str, RowBatch]]:
    """Input records as received, as one `archive` table per writer (by input partition)."""
    here = parquet.local_writers()
    groups: dict[str, list[RawRecord]] = {}
    for record in records:
        groups.setdefault(parquet.writer_of(f"input/{record.partition}", here), []).append(record)
    return [(writer, ("archive", archive_table(group))) for writer, group in groups.items()]


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
    table_sink: Sink[TableRows] | None = None,
    clock: Clock = utc_now,
    telemetry: Telemetry | None = None,
) -> Dataflow:
    """Build the dataflow; `source`, `sink`, `clock` and `telemetry` are injectable for tests.
    A `sink` takes `(table, dict)` rows; a `table_sink` takes the rows as they travel (`TableRows`,
    no dicts: the benchmark's null sink).
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
    # Rows travel in chunks (one per engine call, per-table value tuples) up to the sinks: each
    # item costs a Python call in every step it crosses.
    table_chunks = run_shards("workflow_state", slices, config)
    if table_sink is not None:
        op.output("output", table_chunks, table_sink)
        return flow
    if output_topics(settings) or sink is not None:  # dicts only for these; never for Parquet
        table_rows = op.flat_map("rows", table_chunks, TableRows.dict_rows)
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
                                lambda chunks: sink_batches(chunks, parquet))
    parquet_batches = batches
    if settings.sinks.archive:  # every input record as received, for replay: Parquet, not DuckDB
        archived = op.flat_map_batch("archive_batches", records,
                                     lambda batch: archive_batches(batch, parquet))
        parquet_batches = op.merge("tables_and_archive", batches, archived)
    op.output(PARQUET_STEP, parquet_batches, parquet)
    return flow

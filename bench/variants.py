"""The measured variants: one function per way of running the same records, each timed alone.

Every variant gets the workload already in memory and returns how many records it processed in how
many seconds (loading is never timed). `baseline*` run exactly the per-shard code the dataflow runs
(`AdmissionLogic` and `ShardLogic.on_batch`, the same grouping by partition and shard, the same
end-of-input drain) in a plain loop, without Bytewax; `pipeline*` run the real dataflow.
"""

from __future__ import annotations

import json
import re
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import cluster_main, run_main

from bench.twin import TwinConsumer
from bench.workload import Partitions
from connectors.format_writer import FormatWriter, avro_value, confluent_avro
from connectors.parquet_sink import ParquetSink
from connectors.simulator import SimulatorSource
from dataflows.kafka_wiring import kafka_input
from dataflows.load_duckdb import loading_beside
from dataflows.pipeline import archive_batches, build_flow, sink_batches
from dataflows.recovery import prepare_recovery
from dataflows.settings import Settings
from operators.admission_step import AdmissionLogic, group_by_partition
from operators.shard_step import ShardLogic, ShardStepConfig
from runtime.gc_tuning import tune_gc
from schemas.avro_wire import AvroDecoder
from schemas.decode import DecodeRules, decode
from schemas.event import RawRecord
from schemas.mapping import FormatSpec, MappingReader
from schemas.payloads.bundled import bundled_registry
from state.catalog import load_catalog
from state.definition import StateMachine
from state.durations import to_ms
from state.shard import ShardConfig
from state.table_rows import TableRows

BATCH = 1000  # records per source batch, as `SimulatorSource` emits them
SNAPSHOT_EVERY_S = 10.0


@dataclass(frozen=True)
class Measured:
    """One timed run: records in, wall seconds, output rows."""

    records: int
    seconds: float
    rows: int


class NullSink(DynamicSink[TableRows]):
    """Counts and drops the rows as they travel (`build_flow(table_sink=...)`): the dataflow
    without any output cost."""

    def build(self, step_id: str, worker_index: int,
              worker_count: int) -> StatelessSinkPartition[TableRows]:
        return _Counter()


class _Counter(StatelessSinkPartition[TableRows]):
    rows = 0

    def write_batch(self, items: list[TableRows]) -> None:
        _Counter.rows += sum(len(item) for item in items)


def bench_settings(out: Path, **overrides: Any) -> Settings:
    """The pipeline settings of every variant: defaults, 1 worker, output under `out`."""
    return Settings.from_flags(out=out, sim_partitions=4, **overrides)


def _batches(partitions: Partitions) -> Iterator[list[RawRecord]]:
    """Source batches in the order a single worker polls the partitions (round robin)."""
    cursors = [0] * len(partitions)
    while any(c < len(p) for c, p in zip(cursors, partitions, strict=True)):
        for i, records in enumerate(partitions):
            if cursors[i] < len(records):
                yield list(records[cursors[i]:cursors[i] + BATCH])
                cursors[i] += BATCH


def _engine(partitions: Partitions, settings: Settings,
            write: Callable[[list[TableRows], list[RawRecord]], None]) -> int:
    """The dataflow's stateful step as a loop: group each batch by shard, run that shard's logic,
    hand every output row (`metrics` rows included: the shards fold them) to `write`."""
    tune_gc()  # as `build_flow` does for the dataflow
    catalog = load_catalog(settings.definitions)
    config = ShardStepConfig(
        catalog=catalog,
        rules=catalog.decode_rules(bundled_registry(), settings.source.max_event_bytes,
                                   settings.time.max_future_skew_ms),
        shard=ShardConfig(allowed_lateness_ms=to_ms(settings.time.allowed_lateness)),
        buckets=settings.buckets,
    )
    admissions: dict[str, AdmissionLogic] = {}
    logics: dict[str, ShardLogic] = {}
    rows = 0
    for batch in _batches(partitions):
        out: list[TableRows] = []
        for partition, records in group_by_partition(batch):
            admission = admissions.get(partition) or admissions.setdefault(
                partition, AdmissionLogic(config.rules, config.buckets, None, None,
                                          config.shard.allowed_lateness_ms))
            for key, items in next(iter(admission.on_batch([(partition, records)])[0])):
                logic = logics.get(key) or logics.setdefault(key, ShardLogic(config, None))
                for chunk in logic.on_batch([(key, items)])[0]:
                    out.append(chunk)
        rows += sum(len(chunk) for chunk in out)
        write(out, batch)
    out = []
    for admission in admissions.values():  # records still held for far-ahead stamps
        for slices in admission.on_eof()[0]:
            for key, items in slices:
                logic = logics.get(key) or logics.setdefault(key, ShardLogic(config, None))
                out += logic.on_batch([(key, items)])[0]
    out += [chunk for logic in logics.values() for chunk in logic.on_eof()[0]]
    write(out, [])
    return rows + sum(len(chunk) for chunk in out)


def _discard(rows: list[TableRows], records: list[RawRecord]) -> None:
    """Rows go nowhere (the plain baseline)."""


def decode_only(partitions: Partitions, scratch: Path) -> Measured:
    """Decoding and validation alone (`schemas.decode`), no engine: the ceiling of any pipeline
    that validates every event this way on this machine."""
    return _timed_decode(partitions, partitions, _decode_rules(scratch))


def decode_mapped(partitions: Partitions, scratch: Path) -> Measured:
    """`decode_only` on the same events as plain JSON read through a declarative mapping (every
    attribute a path, epoch-ms times, a table of type names; `schemas.mapping`). Converting is
    not timed."""
    rules = _decode_rules(scratch)
    spec = bench_format(rules.routes)
    writer = FormatWriter(spec, rules)
    converted = [[writer.write(record) for record in records] for records in partitions]
    return _timed_decode(partitions, converted,
                         replace(rules, reader=MappingReader("bench", spec)))


def decode_avro(partitions: Partitions, scratch: Path) -> Measured:
    """`decode_mapped` on the same events in Confluent's Avro wire format (fastavro, the schema
    cached by id after the first record). Converting is not timed."""
    rules = _decode_rules(scratch)
    spec = bench_format(rules.routes)
    writer = FormatWriter(spec, rules)
    converted = [[_avro_record(record, writer) for record in records] for records in partitions]
    avro = spec.model_copy(update={"encoding": "avro"})
    return _timed_decode(partitions, converted, replace(
        rules, reader=MappingReader("bench", avro, AvroDecoder({1: AVRO_SCHEMA}.get))))


def _decode_rules(scratch: Path) -> DecodeRules:
    settings = bench_settings(scratch)
    return load_catalog(settings.definitions).decode_rules(
        bundled_registry(), settings.source.max_event_bytes, settings.time.max_future_skew_ms)


def _timed_decode(partitions: Partitions, records: Sequence[Sequence[RawRecord]],
                  rules: DecodeRules) -> Measured:
    """`decode` of every record, timed (the workload's `partitions` give the count)."""
    tune_gc()
    started = time.perf_counter()
    for batch in records:
        for record in batch:
            decode(record, rules)
    return Measured(_count(partitions), time.perf_counter() - started, 0)


AVRO_SCHEMA: dict[str, Any] = {
    "type": "record", "name": "BenchEvent",
    "fields": [
        {"name": "eventId", "type": "string"},
        {"name": "eventType", "type": "string"},
        {"name": "occurredAt", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "instance", "type": "string"},
        {"name": "seq", "type": ["null", "long"], "default": None},
        {"name": "trace", "type": ["null", "string"], "default": None},
        {"name": "schemaVersion", "type": ["null", "string"], "default": None},
        {"name": "payload", "type": "string"},
    ],
}


def _avro_record(record: RawRecord, writer: FormatWriter) -> RawRecord:
    """The record as `bench_format` JSON, then as Avro (bad input stays as it was)."""
    written = writer.write(record)
    if written is record:
        return record
    value = avro_value(json.loads(written.value), AVRO_SCHEMA)
    return replace(written, value=confluent_avro(value, AVRO_SCHEMA, 1))


def bench_format(types: Iterable[str]) -> FormatSpec:
    """A service's own JSON: `order.placed`-style names, epoch ms, the payload nested."""
    names = {re.sub(r"(?<!^)([A-Z])", r".\1", t).lower(): t for t in sorted(types)}
    return FormatSpec.model_validate({
        "id": "eventId", "type": {"path": "eventType", "names": names},
        "time": {"path": "occurredAt", "format": "epoch_ms"}, "instance_id": "instance",
        "sequence": "seq", "trace_id": "trace", "data_version": "schemaVersion",
        "payload": "payload"})


def twin(partitions: Partitions, scratch: Path) -> Measured:
    """The hand-written consumer a user would write instead (`bench.twin`): the peer of every
    ratio, run on the same records in the same order."""
    definition = load_catalog(bench_settings(scratch).definitions).latest("order_fulfilment")
    assert isinstance(definition, StateMachine)
    consumer = TwinConsumer(definition)
    tune_gc()
    started = time.perf_counter()
    for batch in _batches(partitions):
        for record in batch:
            consumer.consume(record)
    return Measured(_count(partitions), time.perf_counter() - started, 0)


def baseline(partitions: Partitions, scratch: Path) -> Measured:
    """Decode, validate and the engine in a plain Python loop: the limit for this logic."""
    started = time.perf_counter()
    rows = _engine(partitions, bench_settings(scratch), _discard)
    return Measured(_count(partitions), time.perf_counter() - started, rows)


def baseline_sinks(partitions: Partitions, scratch: Path) -> Measured:
    """The baseline plus writing the same rows with the pipeline's Parquet and DuckDB writers."""
    settings = bench_settings(scratch)
    settings.parquet_dir.mkdir(parents=True, exist_ok=True)
    parquet = ParquetSink(settings.parquet_dir, settings.sinks.parquet_batch_rows,
                          settings.sinks.flush_interval.total_seconds(),
                          partitions=settings.sinks.parquet_writers)
    writers = [parquet.build_part("parquet", part, None) for part in parquet.list_parts()]
    started = time.perf_counter()

    def write(rows: list[TableRows], records: list[RawRecord]) -> None:
        """As the dataflow does: each batch converted once, tables and archive to Parquet."""
        for writer, batch in [*sink_batches(rows, parquet), *archive_batches(records, parquet)]:
            writers[parquet.part_fn(writer)].write_batch([batch])

    with loading_beside(settings):  # DuckDB loaded from the files, as `flowkeeper run` does
        rows = _engine(partitions, settings, write)
        for writer in writers:
            writer.close()
    return Measured(_count(partitions), time.perf_counter() - started, rows)


def pipeline(partitions: Partitions, scratch: Path) -> Measured:
    """The real dataflow, 1 worker, embedded source, output to a sink that only counts."""
    flow = build_flow(bench_settings(scratch), source=SimulatorSource(partitions),
                      table_sink=NullSink())
    return _timed(partitions, lambda: run_main(flow))


def pipeline_sinks(partitions: Partitions, scratch: Path) -> Measured:
    """The real dataflow with every output: Parquet (tables and archive), DuckDB loaded beside."""
    settings = bench_settings(scratch)
    flow = build_flow(settings, source=SimulatorSource(partitions))
    return _timed(partitions, lambda: _beside(settings, lambda: run_main(flow)))


def pipeline_recovery(partitions: Partitions, scratch: Path) -> Measured:
    """`pipeline_sinks` with recovery on, a snapshot every 10 s."""
    settings = bench_settings(scratch, recovery_dir=scratch / "recovery")
    assert settings.recovery.dir is not None
    config, _ = prepare_recovery(settings.recovery.dir, 1, 0.0)
    flow = build_flow(settings, source=SimulatorSource(partitions))
    every = timedelta(seconds=SNAPSHOT_EVERY_S)
    return _timed(partitions, lambda: _beside(
        settings, lambda: run_main(flow, epoch_interval=every, recovery_config=config)))


def pipeline_2proc(partitions: Partitions, scratch: Path, process: int,
                   addresses: list[str]) -> Measured:
    """This process's half of `pipeline_sinks` run as a cluster of processes (`-i`/`-a`)."""
    settings = bench_settings(scratch)
    flow = build_flow(settings, source=SimulatorSource(partitions))
    if process:  # process 0 loads DuckDB beside the cluster (files of every process)
        return _timed(partitions, lambda: cluster_main(flow, addresses, process))
    return _timed(partitions, lambda: _beside(settings, lambda: cluster_main(flow, addresses, 0)))


def kafka(partitions: Partitions, scratch: Path) -> Measured:
    """`pipeline` reading the workload from the topic in FLOWKEEPER_KAFKA__TOPIC to its end."""
    settings = bench_settings(scratch, source="kafka", kafka_tail=False, commands_topic="")
    flow = build_flow(settings, source=kafka_input(settings), table_sink=NullSink())
    return _timed(partitions, lambda: run_main(flow))


def kafka_sinks(partitions: Partitions, scratch: Path) -> Measured:
    """`pipeline_sinks` reading the workload from the topic in FLOWKEEPER_KAFKA__TOPIC."""
    settings = bench_settings(scratch, source="kafka", kafka_tail=False, commands_topic="")
    flow = build_flow(settings, source=kafka_input(settings))
    return _timed(partitions, lambda: _beside(settings, lambda: run_main(flow)))


LATENCY_FILE = "latency.f64"


class LatencySink(DynamicSink[Any]):
    """Appends, per ledger row, milliseconds from its record's producer timestamp to now."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def build(self, step_id: str, worker_index: int,
              worker_count: int) -> StatelessSinkPartition[Any]:
        return _LatencyFile(self.path)


class _LatencyFile(StatelessSinkPartition[Any]):
    def __init__(self, path: Path) -> None:
        self.file = path.open("ab")

    def write_batch(self, items: list[Any]) -> None:
        now_ms = time.time() * 1000
        lags = [now_ms - row["arrived_at"] for table, row in items if table == "ledger"]
        if lags:
            self.file.write(array("d", lags).tobytes())
            self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_latencies(path: Path) -> list[float]:
    """What `LatencySink` wrote (an empty list when it wrote nothing)."""
    values = array("d")
    if path.exists():
        values.frombytes(path.read_bytes())
    return values.tolist()


def kafka_latency(partitions: Partitions, scratch: Path) -> Measured:
    """Tail FLOWKEEPER_KAFKA__TOPIC live (idle grace 1 s) into `LatencySink` until terminated."""
    settings = bench_settings(scratch, source="kafka", kafka_start="earliest", idle_grace="1s",
                              commands_topic="")
    flow = build_flow(settings, source=kafka_input(settings),
                      sink=LatencySink(scratch / LATENCY_FILE))
    return _timed(partitions, lambda: run_main(flow))


def _beside(settings: Settings, run: Callable[[], None]) -> None:
    """`run` with the DuckDB loader beside it; returns once DuckDB holds every file."""
    with loading_beside(settings):
        run()


def _timed(partitions: Partitions, run: Callable[[], None]) -> Measured:
    _Counter.rows = 0
    started = time.perf_counter()
    run()
    return Measured(_count(partitions), time.perf_counter() - started, _Counter.rows)


def _count(partitions: Partitions) -> int:
    return sum(len(p) for p in partitions)


VARIANTS: dict[str, Callable[[Partitions, Path], Measured]] = {
    "twin": twin,
    "decode_only": decode_only,
    "decode_mapped": decode_mapped,
    "decode_avro": decode_avro,
    "baseline": baseline,
    "baseline_sinks": baseline_sinks,
    "pipeline": pipeline,
    "pipeline_sinks": pipeline_sinks,
    "pipeline_recovery": pipeline_recovery,
    "kafka": kafka,
    "kafka_sinks": kafka_sinks,
    "kafka_latency": kafka_latency,
}

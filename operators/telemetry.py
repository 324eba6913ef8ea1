"""Live view of the workflow step: Prometheus metrics, and log lines for what went wrong.

Counters are updated once per batch from the rows the shard step emitted: one pass over the rows
into local tallies, then one `inc` per label, so no lock is taken per event. Gauges that sum over
shards (open instances, watermark lag) are computed by a collector at scrape time from plain
per-shard values that each batch overwrites (a dict assignment: atomic, no lock).

Metrics, all prefixed `flowkeeper_`:
- `events_in_total`: input records taken by the workflow step (rate() gives events/s in);
- `rows_out_total{table}`: rows it emitted per output table (events/s out);
- `dead_letters_total{reason}`, `deadlines_fired_total{workflow_type}`,
  `late_events_total{workflow_type}`;
- `open_instances{workflow_type}`: instances started and not ended, summed over shards;
- `watermark_lag_seconds{partition}`: wall clock minus the partition's watermark (the largest of
  its shards'); large in a replay of old input, about the allowed lateness on a live stream, 0
  once a bounded input has ended;
- `snapshot_duration_seconds`: time spent in the shard logic's `snapshot()` (a histogram).

`start_telemetry(port)` serves the process-wide default registry, which Bytewax's own Dataflow API
(`BYTEWAX_DATAFLOW_API_ENABLED=true`) also appends to its engine metrics. Tests give a `Telemetry`
its own registry instead.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from functools import cache

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas.errors import ConfigError
from state.admission import NEVER
from state.output import Out
from state.shard import END_OF_TIME, Shard
from state.table_rows import TableRows

LOG = logging.getLogger("flowkeeper.workflow")

ShardView = tuple[int, dict[str, int]]  # (watermark ms, open instances per workflow type)


class _ShardGauges(Collector):
    """Open instances and watermark lag, aggregated over shards when scraped."""

    def __init__(self, shards: dict[str, ShardView], clock: Callable[[], float]) -> None:
        self._shards = shards
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        views = list(self._shards.items())
        open_now = GaugeMetricFamily("flowkeeper_open_instances", "instances started and not ended",
                                     labels=["workflow_type"])
        totals: Tally[str] = Tally()
        watermarks: dict[str, int] = {}
        for name, (watermark, open_by_workflow) in views:
            totals.update(open_by_workflow)
            partition = name.split("/", 1)[0]
            watermarks[partition] = max(watermarks.get(partition, NEVER), watermark)
        for workflow_type, n in sorted(totals.items()):
            open_now.add_metric([workflow_type], n)
        yield open_now
        lag = GaugeMetricFamily("flowkeeper_watermark_lag_seconds",
                                "wall clock minus the partition's event-time watermark",
                                labels=["partition"])
        now = self._clock()
        for partition, watermark in sorted(watermarks.items()):
            if watermark >= END_OF_TIME:  # a bounded input ended: nothing is behind any more
                lag.add_metric([partition], 0.0)
            elif watermark > NEVER:
                lag.add_metric([partition], now - watermark / 1000)
        yield lag


class Telemetry:
    """The metrics of this process's workflow steps, in one registry."""

    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float] = time.time) -> None:
        self.events_in = Counter("flowkeeper_events_in", "input records taken by the workflow step",
                                 registry=registry)
        self.rows_out = Counter("flowkeeper_rows_out", "rows the workflow step emitted, per table",
                                ["table"], registry=registry)
        self.dead_letters = Counter("flowkeeper_dead_letters", "input records rejected, per reason",
                                    ["reason"], registry=registry)
        self.deadlines_fired = Counter("flowkeeper_deadlines_fired", "state deadlines that fired",
                                       ["workflow_type"], registry=registry)
        self.late_events = Counter("flowkeeper_late_events", "events behind the watermark",
                                   ["workflow_type"], registry=registry)
        self.time_jumps = Counter("flowkeeper_event_time_jumps",
                                  "records stamped more than --max-future-skew ahead of their "
                                  "partition's event time, per partition and kind (jumped: "
                                  "corroborated and admitted; refused: dead-lettered)",
                                  ["partition", "kind"], registry=registry)
        self.last_jump = Gauge("flowkeeper_event_time_last_jump_seconds",
                               "how far the partition's event time last jumped at once, or would "
                               "have (kind refused), in seconds", ["partition", "kind"],
                               registry=registry)
        self.snapshot_seconds = Histogram("flowkeeper_snapshot_duration_seconds",
                                          "time spent snapshotting one shard", registry=registry)
        self._shards: dict[str, ShardView] = {}
        registry.register(_ShardGauges(self._shards, clock))

    def observe(self, shard: Shard, records: int, out: Out) -> None:
        """Count one batch's input, output rows and the metric facts the shard folded."""
        rows = out.tables
        tables: Tally[str] = Tally({table: len(values) for table, values in rows.tables.items()})
        reasons: Tally[str] = Tally(rows.column("dead_letters", "reason"))
        fired: Tally[str] = Tally()
        late: Tally[str] = Tally()
        for (workflow_type, _), fact_tally in out.folded:
            counts = fact_tally.counts
            for tally, kind in ((fired, "deadline_fired"), (late, "late")):
                if kind in counts:
                    tally[workflow_type] += counts[kind]
        for row in rows.rows_of("event_time_jumps"):
            labels = (str(row["partition"]), row["kind"])
            self.time_jumps.labels(*labels).inc()
            self.last_jump.labels(*labels).set(row["ahead_ms"] / 1000)
        if records:
            self.events_in.inc(records)
        for counter, tally in ((self.rows_out, tables), (self.dead_letters, reasons),
                               (self.deadlines_fired, fired), (self.late_events, late)):
            for label, n in tally.items():
                counter.labels(label).inc(n)
        self._shards[shard.name] = (shard.clock.watermark, dict(shard.keys.open_by_workflow))

    def timing_snapshot(self) -> AbstractContextManager[object]:
        """Time one `snapshot()` call."""
        return self.snapshot_seconds.time()


def observe_batch(telemetry: Telemetry | None, shard: Shard, records: int, out: Out) -> None:
    """Metrics and log lines of one batch; nothing at all when both are off."""
    if telemetry is not None:
        telemetry.observe(shard, records, out)
    if LOG.isEnabledFor(logging.INFO):
        log_rows(out.tables)


def timing_snapshot(telemetry: Telemetry | None) -> AbstractContextManager[object]:
    """`Telemetry.timing_snapshot`, or nothing without telemetry."""
    return telemetry.timing_snapshot() if telemetry is not None else nullcontext()


_LOGGED = {
    "dead_letters": ("dead letter", ("reason", "message", "source", "partition", "offset",
                                     "event_id", "event_type")),
    "anomalies": ("anomaly", ("kind", "workflow_type", "instance_id", "state", "event_id",
                              "event_type", "detail", "trace_id")),
    "corrections": ("correction", ("workflow_type", "instance_id", "original_outcome",
                                   "corrected_outcome", "late_event_id", "late_event_type",
                                   "trace_id")),
}

_LOGGED_TABLES = frozenset(_LOGGED)
_RENAMED = {"message": "error"}  # `message` is the log record's own


def log_rows(rows: TableRows) -> None:
    """An INFO line per dead letter, anomaly and correction, with the trace id if there is one."""
    for table, row in rows.dict_rows(_LOGGED_TABLES):
        logged = _LOGGED.get(table)
        if logged is not None:
            message, keys = logged
            LOG.info(message, extra={"shard": row.get("shard"),
                                     **{_RENAMED.get(k, k): row.get(k) for k in keys}})


@cache
def process_telemetry() -> Telemetry:
    """The one `Telemetry` on the process-wide registry (a metric name registers only once)."""
    return Telemetry(REGISTRY)


@cache
def _serve(port: int) -> None:
    start_http_server(port, registry=REGISTRY)


def start_telemetry(port: int) -> Telemetry:
    """The process telemetry, served on `port` (once per port and process); a `ConfigError`
    when the port is taken."""
    telemetry = process_telemetry()
    try:
        _serve(port)
    except OSError as e:
        raise ConfigError(f"cannot serve metrics on port {port}: {e.strerror}; choose another "
                          "--metrics-port") from e
    return telemetry

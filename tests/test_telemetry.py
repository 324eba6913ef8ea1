"""Live metrics and JSON logs: the endpoint serves counters equal to what the run wrote."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from bytewax.testing import TestingSink, run_main
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from connectors.simulator import SimulatorSource, simulate
from dataflows.cli import main
from dataflows.jsonlog import configure_logging
from dataflows.pipeline import build_flow
from dataflows.settings import Settings
from dataflows.sources import simulator_config
from operators.telemetry import Telemetry
from schemas.payloads.registry import PayloadRegistry
from state.catalog import load_catalog
from state.output import Out
from state.shard import Shard, ShardConfig
from tests.demo_kit import scalar

Rows = list[tuple[str, dict[str, Any]]]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
NOW = 1_800_000_000.0  # the collector's wall clock, in seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> Samples:
    """Every sample the endpoint serves, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def by_label(samples: Samples, name: str) -> dict[str, float]:
    return {labels[0][1]: v for (n, labels), v in samples.items() if n == name and labels}


@pytest.fixture(scope="module")
def observed() -> Iterator[tuple[Rows, Samples, str]]:
    """A 300-instance run with its own metrics registry served on a free port and INFO logs
    captured: the rows it wrote, what the endpoint served afterwards, and the log lines."""
    settings = Settings.from_flags(sim_instances=300, sim_seed=13, out=Path("unused"))
    simulation = simulate(simulator_config(settings), load_catalog(settings.definitions))
    registry = CollectorRegistry()
    telemetry = Telemetry(registry, clock=lambda: NOW)
    server, thread = start_http_server(free_port(), addr="127.0.0.1", registry=registry)
    logs = io.StringIO()
    configure_logging("info", logs)
    rows: Rows = []
    try:
        run_main(build_flow(settings, source=SimulatorSource(simulation.partitions),
                            sink=TestingSink(rows), telemetry=telemetry))
        yield rows, scrape(server.server_port), logs.getvalue()
    finally:
        configure_logging("warning")
        server.shutdown()
        server.server_close()
        thread.join()


def table(rows: Rows, name: str) -> list[dict[str, Any]]:
    return [row for t, row in rows if t == name]


def test_counters_equal_what_the_run_wrote(observed: tuple[Rows, Samples, str]) -> None:
    """Events in equal the ledger rows; rows out per table, dead letters per reason, late events
    and deadlines fired equal the rows of the run; nothing is left open."""
    rows, samples, _ = observed
    ledger = table(rows, "ledger")
    assert samples[("flowkeeper_events_in_total", ())] == len(ledger)
    emitted = Counter(t for t, _ in rows)  # `metrics` rows too: the shards fold them
    assert by_label(samples, "flowkeeper_rows_out_total") == dict(emitted)
    assert by_label(samples, "flowkeeper_dead_letters_total") == dict(
        Counter(d["reason"] for d in table(rows, "dead_letters")))
    late = Counter(r["workflow_type"] for r in ledger if r["disposition"] == "late")
    assert by_label(samples, "flowkeeper_late_events_total") == dict(late) and late
    firings = {(c["instance_id"], c["step"], c["due_at"]) for c in table(rows, "commands")
               if c["reason"] == "deadline"}
    firings |= {(t["instance_id"], t["from_state"], t["at"]) for t in table(rows, "transitions")
                if t["trigger"] == "deadline"}
    assert sum(by_label(samples, "flowkeeper_deadlines_fired_total").values()) == len(firings) > 0
    assert set(by_label(samples, "flowkeeper_open_instances").values()) == {0}


def test_gauges_cover_every_partition_and_snapshots_are_timed(
        observed: tuple[Rows, Samples, str]) -> None:
    """Each input partition has a watermark lag (0 once the bounded input ended) and every shard's
    snapshot was timed."""
    rows, samples, _ = observed
    partitions = {r["partition"] for r in table(rows, "ledger")}
    lag = by_label(samples, "flowkeeper_watermark_lag_seconds")
    assert lag == {str(p): 0.0 for p in partitions}
    shards = {r["shard"] for r in table(rows, "ledger")}
    assert samples[("flowkeeper_snapshot_duration_seconds_count", ())] >= len(shards)


def test_watermark_lag_is_the_wall_clock_minus_the_partition_watermark() -> None:
    """A partition's lag is the collector's clock minus the largest watermark of its shards."""
    registry = CollectorRegistry()
    telemetry = Telemetry(registry, clock=lambda: NOW)
    catalog = load_catalog(Settings().definitions)
    for name, watermark_s in (("3/0", NOW - 90), ("3/1", NOW - 30), ("4/0", NOW - 5)):
        shard = Shard(name, catalog, catalog.decode_rules(PayloadRegistry()), ShardConfig())
        shard.clock.watermark = int(watermark_s * 1000)
        telemetry.observe(shard, 0, Out(name))
    lag = {s.labels["partition"]: s.value for s in registry.collect() for s in s.samples
           if s.name == "flowkeeper_watermark_lag_seconds"}
    assert lag == pytest.approx({"3": 30.0, "4": 5.0})


def test_json_logs_carry_the_trace_id_of_each_anomaly(observed: tuple[Rows, Samples, str]) -> None:
    """At INFO, every dead letter, anomaly and correction is one JSON line, anomalies and
    corrections with the trace id of their instance."""
    rows, _, logs = observed
    lines = [json.loads(line) for line in logs.splitlines()]
    assert Counter(line["message"] for line in lines) == Counter(
        {"dead letter": len(table(rows, "dead_letters")), "anomaly": len(table(rows, "anomalies")),
         "correction": len(table(rows, "corrections"))})
    anomalies = {(a["instance_id"], a["event_id"]): a["trace_id"] for a in table(rows, "anomalies")}
    logged = {(line["instance_id"], line["event_id"]): line["trace_id"]
              for line in lines if line["message"] == "anomaly"}
    assert logged == anomalies and all(logged.values())
    assert {(line["level"], line["logger"]) for line in lines} == {("info", "flowkeeper.workflow")}


def test_run_with_metrics_port_serves_the_process_metrics(tmp_path: Path) -> None:
    """`flowkeeper run --metrics-port N` serves the process-wide counters; this run added exactly
    its records and dead letters to them."""
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = (value("flowkeeper_events_in_total"),
              value("flowkeeper_rows_out_total", table="dead_letters"))
    port = free_port()
    out = tmp_path / "out"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", "--out", str(out), "--sim-instances", "100",
                     "--metrics-port", str(port), "--no-archive"]) == 0
    samples = scrape(port)
    conn = duckdb.connect(str(out / "flowkeeper.duckdb"), read_only=True)
    records = scalar(conn, "SELECT count(*) FROM ledger")
    assert samples[("flowkeeper_events_in_total", ())] - before[0] == records
    dead = samples[("flowkeeper_rows_out_total", (("table", "dead_letters"),))] - before[1]
    assert dead == scalar(conn, "SELECT count(*) FROM dead_letters")

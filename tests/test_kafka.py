"""Kafka in and out against a real broker (Tansu): consuming keyed topics reproduces the embedded
run exactly, outputs go to topics as CloudEvents, poison becomes dead letters; plus the mapping
units (connection, records, errors, CloudEvents) without a broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, cluster_main, run_main
from confluent_kafka import KafkaError as ConfluentError
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from pydantic import SecretStr

from analysis.output_diff import compare_outputs
from connectors import kafka_source
from connectors.cloudevents_binary import to_binary_mode
from connectors.kafka_admin import consumer, producer
from connectors.kafka_connection import KafkaConnection, serves_offset, topic_partitions
from connectors.kafka_produce import Outgoing, produce, replayed
from connectors.kafka_sink import row_event, to_message
from connectors.kafka_source import _KafkaPartition
from connectors.simulator import SimulatorSource, simulate
from connectors.simulator.truth import Simulation
from dataflows.cli import main as cli_main
from dataflows.pipeline import build_flow
from dataflows.settings import Settings
from dataflows.sources import simulator_config
from schemas.envelope import CloudEventEnvelope, envelope_from_headers
from schemas.errors import ConfigError
from schemas.event import RawRecord
from state.catalog import load_catalog
from tests.kafka_broker import Broker, free_port

Rows = list[tuple[str, dict[str, Any]]]
SETTINGS = Settings.from_flags(sim_instances=400, sim_seed=11, out=Path("unused"),
                               commands_topic="")
OUTPUT_TABLES = ("commands", "outcomes", "corrections", "dead_letters")
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class KafkaRun:
    """One dataflow run on a topic: its rows, and the topics it wrote to (table → topic)."""

    topic: str
    rows: Rows
    outputs: dict[str, str]


def table(rows: Rows, name: str) -> list[dict[str, Any]]:
    return [row for t, row in rows if t == name]


def by_table(rows: Rows, source: str) -> dict[str, list[str]]:
    """Every row as text per table, the input `source` written as "simulator" (only ledger and
    dead-letter coordinates name it)."""
    tables: dict[str, list[str]] = {}
    for name, row in rows:
        plain = {k: v.replace(source, "simulator") if isinstance(v, str) else v
                 for k, v in row.items()}
        tables.setdefault(name, []).append(repr(sorted(plain.items())))
    return {name: sorted(found) for name, found in tables.items()}


def window_events(rows: Rows) -> Counter[str]:
    """Events counted per metrics window, over all rows of the window."""
    counts: Counter[str] = Counter()
    for row in table(rows, "metrics"):
        counts[row["row_id"]] += row["events_in"]
    return counts


def kafka_settings(broker: Broker, topic: str, **changes: Any) -> Settings:
    return SETTINGS.with_flags(source="kafka", kafka_brokers=broker.address, kafka_topic=topic,
                               kafka_tail=False, **changes)


def run_kafka(settings: Settings, workers: int = 1) -> Rows:
    rows: Rows = []
    flow = build_flow(settings, sink=TestingSink(rows))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return rows


def produce_simulation(broker: Broker, simulation: Simulation, binary: bool = False) -> str:
    """A new topic with the simulation's records at their partitions, offsets and arrival times."""
    topic = broker.topic("sim", partitions=simulation.config.partitions)
    messages = replayed(simulation.records())
    writer = producer(broker.connection)
    try:
        produce(writer, topic, (m.binary() for m in messages) if binary else messages)
    finally:
        writer.close()
    return topic


def read_topic(broker: Broker, topic: str) -> list[ConsumerRecord]:
    """Everything on a topic (until a second passes without a record)."""
    reader = consumer(broker.connection, idle_timeout_s=1.0)
    parts = [TopicPartition(topic, p) for p in topic_partitions(broker.connection, topic)]
    try:
        reader.assign(parts)
        reader.seek_to_beginning(*parts)
        return list(reader)
    finally:
        reader.close()


@pytest.fixture(scope="module")
def simulation() -> Simulation:
    return simulate(simulator_config(SETTINGS), load_catalog(SETTINGS.definitions))


@pytest.fixture(scope="module")
def embedded(simulation: Simulation) -> Rows:
    rows: Rows = []
    source = SimulatorSource(simulation.partitions)
    run_main(build_flow(SETTINGS, source=source, sink=TestingSink(rows)))
    return rows


@pytest.fixture(scope="module")
def structured(broker: Broker, simulation: Simulation) -> KafkaRun:
    """The simulation in structured mode on a 4-partition topic, consumed by 2 workers, every
    output table that can go to Kafka sent to a topic of its own."""
    topic = produce_simulation(broker, simulation)
    outputs = {name: broker.topic(f"out-{name}", partitions=2) for name in OUTPUT_TABLES}
    settings = kafka_settings(broker, topic, **{f"{name}_topic": t for name, t in outputs.items()})
    return KafkaRun(topic, run_kafka(settings, workers=2), outputs)


@pytest.mark.broker
def test_two_workers_on_kafka_reach_the_ground_truth_and_the_embedded_rows(
        simulation: Simulation, embedded: Rows, structured: KafkaRun) -> None:
    """Consumed from a 4-partition topic by 2 workers, every instance gets the true outcome and
    commands, every record its true disposition, and every table equals the embedded run's."""
    verdicts: dict[tuple[str, str], tuple[str | None, list[str]]] = {
        (t.workflow_type, t.instance_id): (None, []) for t in simulation.truth_instances}
    for o in table(structured.rows, "outcomes"):
        verdicts[(o["workflow_type"], o["instance_id"])] = (o["outcome"], [])
    for c in sorted(table(structured.rows, "commands"), key=lambda c: c["idempotency_key"]):
        verdicts[(c["workflow_type"], c["instance_id"])][1].append(c["idempotency_key"])
    assert verdicts == {(t.workflow_type, t.instance_id): (t.expected_outcome,
                                                           sorted(t.expected_commands))
                        for t in simulation.truth_instances}
    ledger = {(r["partition"], r["offset"]): r["disposition"]
              for r in table(structured.rows, "ledger")}
    assert ledger == {(t.partition, t.offset): t.expected_disposition
                      for t in simulation.truth_records}
    assert by_table(structured.rows, f"kafka:{structured.topic}") == by_table(embedded, "simulator")


@pytest.mark.broker
def test_output_topics_hold_cloudevents_keyed_by_instance(broker: Broker,
                                                          structured: KafkaRun) -> None:
    """Commands, outcomes, corrections and dead letters read back from their topics as valid
    CloudEvents, keyed by instance id, one per row, with the row id (for a command: its
    idempotency key) as the CloudEvent id."""
    for name, topic in structured.outputs.items():
        rows = {row["row_id"]: row for row in table(structured.rows, name)}
        messages = read_topic(broker, topic)
        assert rows and len(messages) == len(rows), name
        for message in messages:
            event = CloudEventEnvelope.model_validate_json(message.value)
            row = rows[event.id]
            assert event.specversion == "1.0" and event.source == "flowkeeper"
            assert event.data is not None and event.data["row_id"] == row["row_id"]
            if name == "dead_letters":
                assert message.key == row["raw_key"]
                continue
            assert message.key == row["instance_id"].encode()
            assert event.subject == row["instance_id"]
            if name == "commands":
                assert event.id == row["idempotency_key"]
                assert event.type == f"flowkeeper.command.{row['command']}"


@pytest.mark.broker
def test_binary_mode_gives_the_same_results_as_structured_mode(
        broker: Broker, simulation: Simulation, structured: KafkaRun) -> None:
    """The same events in binary mode (ce_* headers, data as value) give the same rows in every
    table but the dead letters, which keep the bytes as received (same records, same reasons)."""
    topic = produce_simulation(broker, simulation, binary=True)
    binary = by_table(run_kafka(kafka_settings(broker, topic)), f"kafka:{topic}")
    structured_rows = by_table(structured.rows, f"kafka:{structured.topic}")
    dead = structured_rows.pop("dead_letters")
    assert len(binary.pop("dead_letters")) == len(dead)
    assert binary == structured_rows


@pytest.mark.broker
def test_two_processes_give_the_same_outputs(broker: Broker, simulation: Simulation,
                                             structured: KafkaRun, tmp_path: Path) -> None:
    """Two Bytewax processes (`-i 0/1 -a ...`) sharing the topic's partitions write the same
    output tables as the embedded run."""
    embedded_out = tmp_path / "embedded"
    run_main(build_flow(SETTINGS.with_flags(out=embedded_out, duckdb=False),
                        source=SimulatorSource(simulation.partitions)))
    kafka_out = tmp_path / "kafka"
    env = {**os.environ, "FLOWKEEPER_SOURCE__KIND": "kafka",
           "FLOWKEEPER_KAFKA__BROKERS": broker.address, "FLOWKEEPER_KAFKA__TOPIC": structured.topic,
           "FLOWKEEPER_KAFKA__TAIL": "false", "FLOWKEEPER_OUT": str(kafka_out),
           "FLOWKEEPER_SINKS__DUCKDB": "false",
           "FLOWKEEPER_SOURCE__SIM_INSTANCES": str(SETTINGS.source.sim_instances),
           "FLOWKEEPER_KAFKA__COMMANDS_TOPIC": ""}
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "bytewax.run", "dataflows.pipeline:build_flow()",
               "-a", addresses]
    processes = [subprocess.Popen([*command, "-i", str(i)], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                 for i in (0, 1)]
    logs = [p.communicate(timeout=120)[0].decode() for p in processes]
    assert [p.returncode for p in processes] == [0, 0], logs
    tables = ("outcomes", "commands", "transitions", "anomalies", "corrections", "metrics")
    diffs = compare_outputs(embedded_out, kafka_out, tables)
    assert [d.table for d in diffs if not d.identical] == []
    assert all(d.recorded for d in diffs if d.table != "corrections")


@pytest.mark.broker
def test_a_recovered_run_resumes_at_its_snapshotted_offsets(broker: Broker, simulation: Simulation,
                                                            tmp_path: Path) -> None:
    """Offsets are part of Bytewax's recovery state: a second run on the same recovery folder reads
    only what was produced since, and the two runs give the rows of one uninterrupted run."""
    topic = broker.topic("resume", partitions=simulation.config.partitions)
    settings = kafka_settings(broker, topic, drain_at_eof=False)
    init_db_dir(tmp_path, 1)
    rows: Rows = []
    for part in (slice(0, 250), slice(250, None)):
        writer = producer(broker.connection)
        try:
            produce(writer, topic, replayed(r for p in simulation.partitions for r in p[part]))
        finally:
            writer.close()
        run_main(build_flow(settings, sink=TestingSink(rows)), epoch_interval=timedelta(seconds=1),
                 recovery_config=RecoveryConfig(str(tmp_path)))
    uninterrupted: Rows = []
    run_main(build_flow(settings, source=SimulatorSource(simulation.partitions),
                        sink=TestingSink(uninterrupted)))
    got, want = by_table(rows, f"kafka:{topic}"), by_table(uninterrupted, "simulator")
    # The shards emit the metrics windows still open when a bounded run ends, so a minute that
    # spans the two runs has a row from each; their counts add up to the uninterrupted run's.
    assert window_events(rows) == window_events(uninterrupted)
    got.pop("metrics"), want.pop("metrics")
    assert got == want


@pytest.mark.broker
def test_an_offset_counts_as_served_up_to_the_true_end(broker: Broker,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`serves_offset` fetches instead of trusting the reported end, which Tansu under-reports
    after a batch of several records: the resume check accepts the true end, not one beyond."""
    def refuse(error: Exception) -> None:
        raise error

    monkeypatch.setattr(kafka_source, "exit_with_message", refuse)
    topic = broker.topic("served")
    writer = producer(broker.connection)
    try:
        produce(writer, topic, [Outgoing(value=b"one", partition=0)])
        produce(writer, topic, [Outgoing(value=b"batch", partition=0)] * 15)
    finally:
        writer.close()
    assert serves_offset(broker.connection, topic, 0, 15)
    assert not serves_offset(broker.connection, topic, 0, 16)
    kafka_source.check_resume_offset(broker.connection, topic, 0, 16)
    with pytest.raises(ConfigError, match="re-created or truncated"):
        kafka_source.check_resume_offset(broker.connection, topic, 0, 17)


def order_event(event_id: str, event_type: str, data: dict[str, Any],
                version: str) -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id, "source": "shop", "type": event_type,
            "time": "2026-01-01T00:00:00Z", "dataversion": version, "data": data}


@pytest.mark.broker
def test_poison_messages_become_dead_letters_and_the_flow_keeps_going(broker: Broker) -> None:
    """Non-JSON, a JSON object that is no CloudEvent, a missing attribute, a 2 MB value and
    binary garbage in a ce_* header each end as a dead letter with its raw key, value, headers
    and coordinates (also on the dead-letter topic), and the event after them is applied."""
    topic, dlq = broker.topic("poison"), broker.topic("dlq")
    placed = order_event("p-1", "OrderPlaced", {
        "order_id": "p-o1", "customer_id": "c-1", "total_cents": 1999, "currency": "EUR",
        "items": [{"sku": "SKU-1", "quantity": 1}]}, "2")
    paid = order_event("p-2", "PaymentAuthorized", {"order_id": "p-o1", "payment_id": "pay-1",
                       "amount_cents": 1999, "currency": "EUR", "method": "card"}, "1")
    no_time = {k: v for k, v in paid.items() if k != "time"}
    garbage = (("ce_specversion", b"1.0"), ("ce_id", b"p-3"), ("ce_type", b"\xff\xfe\x00\x81"))
    sent = [
        (Outgoing(json.dumps(placed).encode(), b"p-o1"), None),
        (Outgoing(b"\x00\x01 this is not JSON {", b"p-o1"), "malformed_json"),
        (Outgoing(b'{"hello": "world"}', b"p-o1"), "not_cloudevent"),
        (Outgoing(json.dumps(no_time).encode(), b"p-o1"), "missing_attribute"),
        (Outgoing(b'{"pad": "' + b"x" * 2_000_000 + b'"}', b"p-o1"), "too_large"),
        (Outgoing(b'{"order_id": "p-o1"}', b"p-o1", garbage), "invalid_attribute"),
        (Outgoing(json.dumps(paid).encode(), b"p-o1").binary(), None),
    ]
    writer = producer(broker.connection)
    try:
        produce(writer, topic, (message for message, _ in sent))
    finally:
        writer.close()
    rows = run_kafka(kafka_settings(broker, topic, dead_letters_topic=dlq))
    ledger = {r["offset"]: r["disposition"] for r in table(rows, "ledger")}
    assert ledger == {0: "applied", 1: "dead_lettered", 2: "dead_lettered", 3: "dead_lettered",
                      4: "dead_lettered", 5: "dead_lettered", 6: "applied"}
    dead = {d["offset"]: d for d in table(rows, "dead_letters")}
    for offset, (message, reason) in enumerate(sent):
        if reason is None:
            continue
        row = dead[offset]
        assert (row["reason"], row["source"], row["partition"]) == (reason, f"kafka:{topic}", 0)
        assert (row["raw_key"], row["raw_value"]) == (message.key, message.value)
        assert [(h["key"], h["value"]) for h in row["headers"]] == list(message.headers)
    assert any(t["to_state"] == "reserving_inventory" for t in table(rows, "transitions"))
    on_topic = {json.loads(m.value)["id"]: json.loads(m.value) for m in read_topic(broker, dlq)}
    assert set(on_topic) == {d["row_id"] for d in dead.values()}
    too_large = on_topic[dead[4]["row_id"]]["data"]
    assert too_large["raw_value"] is None and "left out" in too_large["message"]


@pytest.mark.broker
def test_cli_creates_produces_runs_and_tails(broker: Broker, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`topics create`, `produce` (simulator, ground truth into --out), `run --source kafka`
    (full accuracy against that truth, commands to their topic), `produce --archive` (the run's
    input archive, every record again) and `tail` work end to end."""
    topic, commands, again = (f"cli-{name}-{free_port()}" for name in ("in", "commands", "again"))
    kafka = ["--kafka-brokers", broker.address]
    assert cli_main(["topics", "create", topic, "--partitions", "3",
                     "--config", "retention.ms=-1", *kafka]) == 0
    assert cli_main(["topics", "create", commands, "--partitions", "1", *kafka]) == 0
    assert cli_main(["topics", "describe", topic, *kafka]) == 0
    assert "3 partitions, replication 1" in capsys.readouterr().out
    out = tmp_path / "out"
    assert cli_main(["produce", "--topic", topic, "--sim-instances", "150", "--sim-partitions", "3",
                     "--out", str(out), "--binary-mode", *kafka]) == 0
    produced = capsys.readouterr().out
    assert cli_main(["run", "--source", "kafka", "--kafka-topic", topic, "--no-kafka-tail",
                     "--commands-topic", commands, "--out", str(out), *kafka]) == 0
    summary = capsys.readouterr().out
    assert "accuracy vs ground truth: outcomes 150/150, commands 150/150  ✓" in summary
    assert cli_main(["topics", "create", again, "--partitions", "3", *kafka]) == 0
    assert cli_main(["produce", "--topic", again, "--archive", str(out), *kafka]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == produced.strip().replace(topic, again)
    tail = ["tail", commands, "--from-beginning", "--max", "2", "--timeout", "5"]
    assert cli_main([*tail, *kafka]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert len(shown) == 4 and shown[0].startswith("p0@0  ") and "flowkeeper.command." in shown[0]


@pytest.mark.broker
def test_a_missing_topic_is_named(broker: Broker, capsys: pytest.CaptureFixture[str],
                                  tmp_path: Path) -> None:
    """Running on a topic that does not exist fails at once, naming it (and does not create it)."""
    code = cli_main(["run", "--source", "kafka", "--kafka-brokers", broker.address,
                     "--kafka-topic", "no-such-topic", "--out", str(tmp_path)])
    assert code == 2
    assert "Kafka topic 'no-such-topic' does not exist" in capsys.readouterr().err
    with pytest.raises(Exception, match="does not exist"):
        topic_partitions(broker.connection, "no-such-topic")


def test_an_unreachable_cluster_fails_in_seconds_naming_it(capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    """With nothing listening at --kafka-brokers, `run` exits 2 within the timeout, naming the
    servers and what to check, and never printing the password."""
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    code = cli_main(["run", "--source", "kafka", "--kafka-brokers", address, "--kafka-topic", "t",
                     "--kafka-timeout", "1", "--kafka-sasl-password", "hunter2",
                     "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - started < 10
    assert f"cannot reach Kafka at {address}" in err and "--kafka-brokers" in err
    assert "hunter2" not in err


def test_one_connection_mapping_for_both_clients_hides_the_password() -> None:
    """The same settings map to librdkafka properties and kafka-python arguments; the password
    reaches the clients but no repr or description."""
    connection = KafkaConnection.parse(" k1:9092, k2:9092 ", security_protocol="SASL_SSL",
                                       sasl_mechanism="SCRAM-SHA-512", sasl_username="svc",
                                       sasl_password=SecretStr("hunter2"), ssl_ca=Path("/ca.pem"))
    assert connection.librdkafka() == {
        "bootstrap.servers": "k1:9092,k2:9092", "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "svc", "sasl.password": "hunter2",
        "ssl.ca.location": "/ca.pem"}
    python = connection.kafka_python()
    assert python["bootstrap_servers"] == ["k1:9092", "k2:9092"]
    assert (python["sasl_plain_username"], python["sasl_plain_password"], python["ssl_cafile"]) == (
        "svc", "hunter2", "/ca.pem")
    assert "hunter2" not in repr(connection) + connection.describe()


class _Fixed:
    """A Bytewax Kafka partition stand-in that returns one prepared batch."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def next_batch(self) -> list[Any]:
        items, self.items = self.items, []
        return items

    def close(self) -> None:
        pass


def test_messages_and_errors_become_records_with_their_coordinates() -> None:
    """A message keeps its bytes, headers, coordinates and timestamp; a Kafka error becomes one
    record to dead-letter (repeats folded), and the resume offset stays the next message's."""
    message = KafkaSourceMessage(b"o-1", b"{}", topic="in", headers=[("ce_id", b"1")], offset=41,
                                 partition=2, timestamp=(1, 1_767_225_600_000))
    lost = KafkaSourceMessage(None, None, topic="in", partition=2, offset=-1001)
    error = KafkaError(ConfluentError(ConfluentError._TRANSPORT), lost)
    partition = _KafkaPartition(_Fixed([message, error, error]), "in", 2, -2,  # type: ignore[arg-type]
                                clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    first, failed = partition.next_batch()
    assert first == RawRecord("kafka:in", 2, 41, b"{}", b"o-1", (("ce_id", b"1"),),
                              1_767_225_600_000)
    assert failed.error is not None and "_TRANSPORT" in failed.error and failed.offset < 0
    assert failed.source == "kafka:in" and failed.partition == 2
    assert partition.snapshot() == 42


def test_rows_become_cloudevents_and_oversized_dead_letters_shrink() -> None:
    """A command row is a CloudEvent with its idempotency key as id and times in RFC 3339; a dead
    letter too large for Kafka is sent without its raw value."""
    command = {"row_id": "w/i-1/s/Remind/60000", "idempotency_key": "w/i-1/s/Remind/60000",
               "workflow_type": "w", "instance_id": "i-1", "command": "Remind", "step": "s",
               "reason": "deadline", "due_at": 60_000, "trace_id": None, "shard": "0/1"}
    event = row_event("commands", command)
    assert (event["id"], event["type"], event["subject"], event["time"]) == (
        "w/i-1/s/Remind/60000", "flowkeeper.command.Remind", "i-1", "1970-01-01T00:01:00.000Z")
    CloudEventEnvelope.model_validate(event)
    dead = {"row_id": "kafka:in/0/7", "source": "kafka:in", "partition": 0, "offset": 7,
            "reason": "too_large", "message": "value is big", "event_id": None, "event_type": None,
            "raw_key": b"\xff", "raw_value": b"x" * 2_000, "headers": [{"key": "h", "value": b"v"}],
            "arrived_at": 5, "shard": "0/0"}
    small = json.loads(to_message("dead_letters", dead, "dlq", max_message_bytes=1_000).value)
    assert small["data"]["raw_value"] is None and "left out" in small["data"]["message"]
    assert "subject" not in small  # a raw key that is no text names no instance
    whole = json.loads(to_message("dead_letters", dead, "dlq").value)
    assert whole["data"]["headers"] == [{"key": "h", "value": "dg=="}]


def test_binary_mode_round_trips_through_the_decoder_view() -> None:
    """Structured → binary mode gives the ce_* headers and data the decoder reads back as the
    same attributes; a value that is no JSON object is left as it is."""
    envelope = {"specversion": "1.0", "id": "e-1", "source": "s", "type": "T",
                "time": "2026-01-01T00:00:00Z", "datacontenttype": "application/json",
                "sequence": "3", "data": {"a": [1, 2]}}
    converted = to_binary_mode(json.dumps(envelope).encode())
    assert converted is not None
    headers, value = converted
    assert envelope_from_headers(tuple(headers), value) == envelope
    assert to_binary_mode(b"not json") is None and to_binary_mode(b"[1]") is None

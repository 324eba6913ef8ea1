"""Avro input: Confluent's wire format with schemas from a registry (a small server the test
starts, answering the REST routes the client calls) or local .avsc files, and Avro container
files; the same verdicts as the CloudEvents form, bad records as dead letters."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fastavro
import pytest
import yaml

from connectors.format_writer import FormatWriter, confluent_avro
from connectors.schema_registry import SchemaRegistry
from connectors.simulator.truth import Simulation
from dataflows.cli import main
from schemas.avro_wire import AvroDecoder, EpochMs, local_schemas
from schemas.decode import decode
from schemas.errors import ConfigError
from schemas.event import DeadLetter, Event, RawRecord
from schemas.mapping import FormatSpec, MappingReader, Source
from tests.kafka_broker import free_port
from tests.test_formats import (
    RULES,
    SETTINGS,
    cloudevent,
    formats_yaml,
    ledger,
    run_flow,
    same_event,
    simulation,  # noqa: F401 (the module's fixture, shared)
    spec_of,
    verdicts,
)

SCHEMA_ID = 7
SCHEMA = {
    "type": "record", "name": "ShopEvent", "namespace": "com.example",
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


@dataclass
class Registry:
    """What the test registry serves and saw."""

    schemas: dict[int, dict[str, Any]]
    user: str | None = None
    password: str | None = None
    fail_next: int = 0  # answer this many schema requests with 503 first
    paths: list[str] = field(default_factory=list)
    url: str = ""


@contextlib.contextmanager
def registry_server(registry: Registry, tls: tuple[Path, Path] | None = None,
                    ) -> Iterator[Registry]:
    """A schema registry on localhost serving `GET /subjects` and `GET /schemas/ids/{id}` as
    Confluent's does; over https with `tls` (certificate, key)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            registry.paths.append(self.path)
            if registry.user is not None:
                token = base64.b64encode(f"{registry.user}:{registry.password}".encode())
                if self.headers.get("Authorization") != f"Basic {token.decode()}":
                    return self._answer(401, {"error_code": 401, "message": "Unauthorized"})
            if self.path == "/subjects":
                return self._answer(200, ["shop-value"])
            if self.path.startswith("/schemas/ids/"):
                if registry.fail_next > 0:
                    registry.fail_next -= 1
                    return self._answer(503, {"error_code": 50003, "message": "busy"})
                found = registry.schemas.get(int(self.path.rsplit("/", 1)[1]))
                if found is None:
                    return self._answer(404, {"error_code": 40403, "message": "not found"})
                return self._answer(200, {"schema": json.dumps(found)})
            return self._answer(404, {"error_code": 404, "message": "no route"})

        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    scheme = "https" if tls is not None else "http"
    registry.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()


def avro_spec() -> FormatSpec:
    """The `shop` mapping over Avro: the time is an Avro timestamp, the payload JSON text."""
    shop = dict(formats_yaml()["formats"]["shop"])
    shop["time"] = "occurredAt"
    return FormatSpec.model_validate({**shop, "encoding": "avro"})


def to_avro(record: RawRecord, writer: FormatWriter, schema_id: int = SCHEMA_ID) -> RawRecord:
    """A record rewritten as `shop` JSON, then as Avro (bad input stays as it was)."""
    rewritten = writer.write(record)
    if rewritten is record:
        return record
    value = json.loads(rewritten.value)
    value["payload"] = json.dumps(value["payload"])
    if value.get("seq") is not None:
        value["seq"] = int(value["seq"])
    return replace(rewritten, value=confluent_avro(value, SCHEMA, schema_id))


def avro_writer() -> FormatWriter:
    """The `shop` JSON writer: its epoch milliseconds are what a timestamp-millis field holds."""
    return FormatWriter(spec_of("shop"), RULES)


def test_an_avro_record_reads_as_its_cloudevent() -> None:
    """Confluent-framed Avro with its schema from local .avsc files decodes to the same `Event`
    as the CloudEvents form."""
    record = cloudevent(sequence="3")
    avro = to_avro(record, avro_writer())
    assert avro.value[:5] == b"\x00\x00\x00\x00\x07"
    rules = replace(RULES, reader=MappingReader("shop", avro_spec(),
                                                AvroDecoder({SCHEMA_ID: SCHEMA}.get)))
    same_event(decode(avro, rules), decode(record, RULES))


@pytest.mark.parametrize("stamp", [
    {"type": "long", "logicalType": "timestamp-micros"},
    ["null", {"type": "long", "logicalType": "timestamp-millis"}],
    "long",
])
def test_the_time_reads_the_same_instant_from_each_avro_timestamp(stamp: Any) -> None:
    """The event time as timestamp-micros, a nullable timestamp-millis or a plain long (read
    `epoch_ms`) decodes to the `Event` of the CloudEvents form; a timestamp field the time does
    not read stays a datetime in the value."""
    schema = json.loads(json.dumps(SCHEMA))
    schema["fields"][2]["type"] = stamp
    schema["fields"].append({"name": "shippedAt", "default": 0,
                             "type": {"type": "long", "logicalType": "timestamp-millis"}})
    record = cloudevent(sequence="3")
    value = json.loads(avro_writer().write(record).value)
    value["payload"] = json.dumps(value["payload"])
    value["seq"], value["shippedAt"] = int(value["seq"]), 1_767_261_600_000
    micros = isinstance(stamp, dict) and stamp["logicalType"] == "timestamp-micros"
    value["occurredAt"] *= 1000 if micros else 1
    spec = avro_spec()
    if stamp == "long":
        spec = spec.model_copy(update={"time": Source(path="occurredAt", format="epoch_ms")})
    decoder = AvroDecoder({SCHEMA_ID: schema}.get)
    raw = confluent_avro(value, schema, SCHEMA_ID)
    rules = replace(RULES, reader=MappingReader("shop", spec, decoder))
    same_event(decode(replace(record, value=raw), rules), decode(record, RULES))
    read = decoder.value(raw, frozenset({"occurredAt"}))
    assert type(read["occurredAt"]) is (int if stamp == "long" else EpochMs)
    assert read["shippedAt"] == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert decoder.value(raw)["occurredAt"] == (
        value["occurredAt"] if stamp == "long" else datetime(2026, 1, 1, 10, tzinfo=UTC))


@pytest.mark.parametrize(("change", "reason", "message"), [
    (lambda raw: raw[:1] + (99).to_bytes(4, "big") + raw[5:], "unknown_schema",
     "schema id 99 is unknown"),
    (lambda raw: raw[:-7], "mapping_failed", "cannot be read"),
    (lambda raw: raw + b"\x00", "mapping_failed", "ends 1 bytes before"),
    (lambda raw: b'{"eventId": "e-1"}', "mapping_failed", "expected magic byte 00"),
])
def test_bad_avro_is_one_dead_letter_with_its_reason(change: Any, reason: str,
                                                     message: str) -> None:
    """An unknown schema id, truncated bytes, trailing bytes, a value that is not framed Avro:
    one dead letter each, with the raw bytes."""
    avro = to_avro(cloudevent(), avro_writer())
    bad = replace(avro, value=change(avro.value))
    with registry_server(Registry({SCHEMA_ID: SCHEMA})) as registry:
        client = SchemaRegistry(registry.url)
        rules = replace(RULES, reader=MappingReader("shop", avro_spec(),
                                                    AvroDecoder(client.schema)))
        letter = decode(bad, rules)
    assert isinstance(letter, DeadLetter)
    assert (letter.reason, letter.record.value) == (reason, bad.value)
    assert message in letter.message


def test_the_registry_client_caches_retries_and_authenticates() -> None:
    """One request per schema id however many records; a busy registry (503) is retried with
    backoff, never dropped; wrong credentials stop at the start with one line."""
    sleeps: list[float] = []
    with registry_server(Registry({SCHEMA_ID: SCHEMA}, "fk", "s3cret", fail_next=2)) as registry:
        client = SchemaRegistry(registry.url, "fk", "s3cret", sleep=sleeps.append)
        client.check()
        assert client.schema(SCHEMA_ID) == SCHEMA
        assert client.schema(SCHEMA_ID) == SCHEMA
        assert client.schema(12) is None
        assert sleeps == [0.1, 0.2]
        assert registry.paths == ["/subjects", *["/schemas/ids/7"] * 3, "/schemas/ids/12"]
        with pytest.raises(ConfigError, match="HTTP 401"):
            SchemaRegistry(registry.url, "fk", "wrong").check()


def test_the_registry_client_trusts_the_ca_it_is_given(tmp_path: Path) -> None:
    """Over https, the registry's certificate is verified against `--schema-registry-ca`: with it
    the schema comes back, without it the start check stops with one line."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    with registry_server(Registry({SCHEMA_ID: SCHEMA}), tls=(cert, key)) as registry:
        trusting = SchemaRegistry(registry.url, ca_file=cert)
        trusting.check()
        assert trusting.schema(SCHEMA_ID) == SCHEMA
        with pytest.raises(ConfigError, match="CERTIFICATE_VERIFY_FAILED"):
            SchemaRegistry(registry.url).check()


def test_an_unreachable_registry_stops_the_run_with_one_line(tmp_path: Path) -> None:
    """`run --format` of an Avro format with a registry nobody answers at: one line naming it,
    exit 2."""
    formats = tmp_path / "formats.yaml"
    formats.write_text(yaml.safe_dump({"formats": {"shop_avro": avro_spec().model_dump(
        exclude_defaults=True)}}))
    url = f"http://127.0.0.1:{free_port()}"
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed), contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", "--out", str(tmp_path / "out"), "--formats", str(formats),
                     "--format", "shop_avro", "--schema-registry-url", url,
                     "--sim-instances", "10"]) == 2
    lines = printed.getvalue().strip().splitlines()
    assert len(lines) == 1 and f"schema registry at {url} cannot be used" in lines[0], lines


@pytest.mark.parametrize("workers", [1, 2])
def test_the_workload_as_avro_reaches_the_cloudevents_verdicts(
        simulation: Simulation, tmp_path: Path, workers: int) -> None:  # noqa: F811
    """The simulated stream as Confluent-framed Avro, schemas from the test registry, on 1 and 2
    workers: the outcomes, commands and dispositions of its CloudEvents form."""
    want = verdicts(run_flow(SETTINGS, simulation.partitions, 1))
    writer = avro_writer()
    partitions = [[to_avro(r, writer) for r in part] for part in simulation.partitions]
    formats = tmp_path / "formats.yaml"
    formats.write_text(yaml.safe_dump({"formats": {"shop_avro": avro_spec().model_dump(
        exclude_defaults=True)}}))
    with registry_server(Registry({SCHEMA_ID: SCHEMA})) as registry:
        settings = SETTINGS.with_flags(format="shop_avro", formats=formats,
                                       schema_registry_url=registry.url, out=tmp_path / "out")
        got = verdicts(run_flow(settings, partitions, workers))
    assert registry.paths.count(f"/schemas/ids/{SCHEMA_ID}") <= 2  # cached per id (per reader)
    assert json.loads((tmp_path / "out" / "avro_schemas" / f"{SCHEMA_ID}.avsc").read_text()
                      ) == SCHEMA  # kept for a replay without the registry
    for table in ("outcomes", "commands", "ledger"):
        assert got[table] == want[table], table


def test_an_avro_container_file_runs_like_its_cloudevents_lines(
        simulation: Simulation, tmp_path: Path) -> None:  # noqa: F811
    """An Avro object container file of the service's own records, read by `run --source file
    --format`, reaches the verdicts of the same events as CloudEvents lines; and a local
    .avsc folder serves Confluent-framed records without a registry."""
    writer = avro_writer()
    records = [r for r in sorted(simulation.records(), key=lambda r: (r.arrived_ms, r.offset))
               if not r.headers and b"\n" not in r.value]
    good = [(r, writer.write(r)) for r in records]
    good = [(r, w) for r, w in good if w is not r]
    rows = []
    for _, rewritten in good:
        value = json.loads(rewritten.value)
        value["payload"] = json.dumps(value["payload"])
        value["seq"] = None if value.get("seq") is None else int(value["seq"])
        rows.append(value)
    container = tmp_path / "shop.avro"
    with container.open("wb") as stream:
        fastavro.writer(stream, fastavro.parse_schema(SCHEMA), rows)
    lines = tmp_path / "cloud.jsonl"
    lines.write_bytes(b"".join(r.value + b"\n" for r, _ in good))
    formats = tmp_path / "formats.yaml"
    json_spec = avro_spec().model_dump(exclude_defaults=True)
    json_spec.pop("encoding")
    formats.write_text(yaml.safe_dump({"formats": {"shop_file": json_spec}}))
    want, got = tmp_path / "want", tmp_path / "got"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["run", "--out", str(want), "--source", "file", str(lines),
                     "--file-partitions", "2"]) == 0
        assert main(["run", "--out", str(got), "--source", "file", str(container),
                     "--file-partitions", "2", "--format", "shop_file", "--formats",
                     str(formats), "--arrival-field", "occurredAt"]) == 0
    assert ledger(got) == ledger(want)
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / f"{SCHEMA_ID}.avsc").write_text(json.dumps(SCHEMA))
    rules = replace(RULES, reader=MappingReader("shop", avro_spec(),
                                                AvroDecoder(local_schemas(schemas))))
    record, _ = good[0]
    assert isinstance(decode(to_avro(record, writer), rules), Event)

"""Events as services already emit them: a declarative mapping of plain JSON, and the Debezium
outbox, read into the same events, verdicts and dead letters as their CloudEvents form."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from bytewax.testing import TestingSink, cluster_main, run_main

from analysis.output_diff import compare_outputs
from connectors.format_writer import FormatWriter
from connectors.simulator import SimulatorSource, simulate
from connectors.simulator.truth import Simulation
from dataflows.cli import main
from dataflows.formats import loaded_formats
from dataflows.pipeline import build_flow
from dataflows.settings import BUNDLED_DEFINITIONS, Settings
from dataflows.sources import simulator_config
from schemas.decode import DecodeRules, decode
from schemas.event import DeadLetter, Event, RawRecord
from schemas.mapping import FormatSpec, MappingReader, Source
from schemas.payloads.bundled import bundled_registry
from state.catalog import load_catalog

Rows = list[tuple[str, dict[str, Any]]]
SETTINGS = Settings.from_flags(sim_instances=400, sim_seed=11, out=Path("unused"),
                               commands_topic="")
CATALOG = load_catalog(BUNDLED_DEFINITIONS)
RULES = CATALOG.decode_rules(bundled_registry())
ORDER = {"order_id": "o-1", "customer_id": "c-1", "total_cents": 1200, "currency": "EUR",
         "items": [{"sku": "SKU-1", "quantity": 1}]}
ORDER_V1 = {"order_id": "o-1", "customer_id": "c-1", "total": 12.0, "items": ["SKU-1"]}


def dotted(event_type: str) -> str:
    """`OrderPlaced` as a service might name it: `order.placed`."""
    return re.sub(r"(?<!^)([A-Z])", r".\1", event_type).lower()


def formats_yaml() -> dict[str, Any]:
    """The formats the tests read: plain JSON with every attribute somewhere else, and the outbox
    with the time (placed as Debezium's `table.fields.additional.placement` does), version,
    sequence and trace context in headers."""
    names = {dotted(t): t for t in sorted(RULES.routes)}
    return {"formats": {
        "shop": {"id": "eventId", "type": {"path": "eventType", "names": names},
                 "time": {"path": "occurredAt", "format": "epoch_ms"},
                 "instance_id": "instance", "sequence": "seq",
                 "trace_id": "trace", "data_version": "schemaVersion",
                 "payload": "payload"},
        "outbox": {"base": "debezium-outbox", "data_version": {"header": "dataversion"},
                   "time": {"header": "occurredAt", "format": "epoch_ms"},
                   "sequence": {"header": "sequence"}, "trace_id": {"header": "traceparent"}},
    }}


@pytest.fixture(scope="module")
def formats_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("formats") / "formats.yaml"
    path.write_text(yaml.safe_dump(formats_yaml()))
    return path


def rules_for(name: str, spec: FormatSpec) -> DecodeRules:
    return replace(RULES, reader=MappingReader(name, spec))


def spec_of(name: str) -> FormatSpec:
    return FormatSpec.model_validate(formats_yaml()["formats"][name])


def cloudevent(**changes: Any) -> RawRecord:
    envelope = {"specversion": "1.0", "id": "e-1", "source": "/shop", "type": "OrderPlaced",
                "time": "2026-01-01T10:00:00.000Z", "dataversion": "2", "data": ORDER,
                "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                **changes}
    return RawRecord("t", 0, 5, json.dumps(envelope).encode(), b"o-1", (), 1_767_261_600_000)


def same_event(got: Event | DeadLetter, want: Event | DeadLetter) -> None:
    """Equal in everything but the bytes' checksum (the bytes differ by format)."""
    assert isinstance(got, Event), got
    assert isinstance(want, Event), want
    assert replace(got, body_crc=0) == replace(want, body_crc=0)


@pytest.mark.parametrize("name", ["shop", "outbox"])
def test_a_written_event_reads_back_as_its_cloudevent(name: str) -> None:
    """An event rewritten in a format decodes to the same `Event` as its CloudEvents form,
    version, sequence and trace id included."""
    record = cloudevent(sequence="3")
    rewritten = FormatWriter(spec_of(name), RULES).write(record)
    assert rewritten.value != record.value
    same_event(decode(rewritten, rules_for(name, spec_of(name))), decode(record, RULES))


def test_the_readme_mapping_reads_flat_json() -> None:
    """The README's five-line mapping: the type through the table, epoch milliseconds, the
    payload is the rest of the object."""
    spec = FormatSpec.model_validate(yaml.safe_load(README_FORMAT)["formats"]["shop"])
    value = {"eventId": "e-1", "eventType": "order.placed", "occurredAt": 1767261600000,
             "order_id": "o-1", "customer_id": "c-1", "total": 12.0, "items": ["SKU-1"]}
    event = decode(RawRecord("t", 0, 5, json.dumps(value).encode()), rules_for("shop", spec))
    assert isinstance(event, Event), event
    assert (event.event_id, event.type, event.time_ms, event.instance_id) == (
        "e-1", "OrderPlaced", 1_767_261_600_000, "o-1")


README_FORMAT = """
formats:
  shop:
    id: eventId
    type: {path: eventType, names: {order.placed: OrderPlaced, order.paid: PaymentAuthorized}}
    time: {path: occurredAt, format: epoch_ms}
"""


@pytest.mark.parametrize(("fmt", "zone", "stamp"), [
    ("rfc3339", None, "2026-01-01T11:00:00+01:00"), ("epoch_s", None, 1767261600),
    ("epoch_s", None, "1767261600.0"), ("epoch_ms", None, 1767261600000),
    ("epoch_us", None, 1767261600000000), ("%d/%m/%Y %H:%M:%S", "Europe/Berlin",
                                           "01/01/2026 11:00:00"),
    ("%Y-%m-%d %H:%M:%S%z", None, "2026-01-01 05:00:00-0500")])
def test_every_time_format_reads_the_same_instant(fmt: str, zone: str | None, stamp: Any) -> None:
    """RFC 3339, epoch seconds, milliseconds and microseconds, and strptime patterns with a zone
    or an offset all give the same event time."""
    spec = FormatSpec.model_validate({"id": "id", "type": {"constant": "OrderPlaced"},
                                      "time": {"path": "at", "format": fmt, "zone": zone},
                                      "data_version": {"constant": 2}, "payload": "order"})
    value = {"id": "e-1", "at": stamp, "order": ORDER}
    event = decode(RawRecord("t", 0, 0, json.dumps(value).encode()), rules_for("x", spec))
    assert isinstance(event, Event), event
    assert event.time_ms == 1_767_261_600_000


def shop_value(**changes: Any) -> bytes:
    value = {"eventId": "e-1", "eventType": "order.placed", "occurredAt": 1767261600000,
             "instance": "o-1", "schemaVersion": "2", "payload": ORDER, **changes}
    return json.dumps({k: v for k, v in value.items() if v is not None}).encode()


BAD_SHOP = [
    (shop_value(occurredAt=None), "mapping_failed", "time (path 'occurredAt'): nothing there"),
    (shop_value(occurredAt="2026-01-01T10:00:00Z"), "mapping_failed",
     "time (path 'occurredAt'): '2026-01-01T10:00:00Z' is not a number of ms"),
    (shop_value(eventType="order.lost"), "unknown_type", "type 'order.lost'"),
    (shop_value(eventId=None), "mapping_failed", "id (path 'eventId'): nothing there"),
    (b'{"eventId": ', "mapping_failed", "the value is not JSON"),
    (shop_value(payload={**ORDER, "currency": "euro"}), "payload_invalid", "data.currency"),
    (shop_value(occurredAt=1), "time_out_of_range", "outside the accepted range"),
]


@pytest.mark.parametrize(("value", "reason", "message"), BAD_SHOP)
def test_bad_input_in_a_mapped_format_is_one_dead_letter(value: bytes, reason: str,
                                                         message: str) -> None:
    """A missing field, a wrong time format, a type not in the table, bad JSON, an invalid payload,
    a time out of range: a dead letter with its reason, the path at fault and the raw bytes."""
    record = RawRecord("t", 0, 0, value, b"o-1", (("trace", b"x"),))
    letter = decode(record, rules_for("shop", spec_of("shop")))
    assert isinstance(letter, DeadLetter)
    assert (letter.reason, letter.record) == (reason, record)
    assert message in letter.message
    assert letter.to_row()["headers"] == [{"key": "trace", "value": b"x"}]


OUTBOX_HEADERS = (("id", b"e-1"), ("eventType", b"OrderPlaced"))


@pytest.mark.parametrize(("value", "key", "headers", "reason", "message"), [
    (json.dumps(json.dumps(ORDER)).encode(), b"o-1", (("eventType", b"OrderPlaced"),),
     "mapping_failed", "id (header 'id'): nothing there"),
    (b'"not {json"', b"o-1", OUTBOX_HEADERS, "mapping_failed", "a string but not JSON"),
    (json.dumps(ORDER).encode(), b"o-1", (("id", b"e-1"),), "mapping_failed",
     "type (header 'eventType')"),
    (json.dumps(ORDER).encode(), b"o-1", (("id", b"\xff"), ("eventType", b"OrderPlaced")),
     "mapping_failed", "not UTF-8"),
])
def test_bad_outbox_messages_are_one_dead_letter_each(value: bytes, key: bytes,
                                                      headers: tuple[tuple[str, bytes], ...],
                                                      reason: str, message: str) -> None:
    """An outbox message without its id or type header, with a payload string that is no JSON:
    a dead letter naming the header or the problem."""
    rules = rules_for("debezium-outbox", FormatSpec(base="debezium-outbox"))
    letter = decode(RawRecord("t", 0, 0, value, key, headers, 1_767_261_600_000), rules)
    assert isinstance(letter, DeadLetter)
    assert letter.reason == reason
    assert message in letter.message


@pytest.mark.parametrize("value", [
    json.dumps(ORDER_V1).encode(),
    json.dumps(json.dumps(ORDER_V1)).encode(),
    json.dumps({"schema": {"type": "string", "optional": True},
                "payload": json.dumps(ORDER_V1)}).encode(),
])
@pytest.mark.parametrize("key", [b"o-1", b'"o-1"',
                                 b'{"schema": {"type": "string"}, "payload": "o-1"}'])
def test_the_builtin_outbox_reads_what_the_event_router_writes(value: bytes, key: bytes) -> None:
    """Debezium's defaults: the key is the aggregate id (plain, a JSON string or Connect-wrapped),
    header `id` the event id, the payload an object or a JSON string, the time the message
    timestamp."""
    rules = rules_for("debezium-outbox", FormatSpec(base="debezium-outbox"))
    event = decode(RawRecord("t", 0, 0, value, key, OUTBOX_HEADERS, 1_767_261_600_123), rules)
    assert isinstance(event, Event), event
    assert (event.event_id, event.type, event.instance_id, event.time_ms) == (
        "e-1", "OrderPlaced", "o-1", 1_767_261_600_123)


@pytest.mark.parametrize(("change", "named"), [
    ({"type": {"path": "t", "names": {"order.placed": "OrderPlacd"}}}, "type 'OrderPlacd'"),
    ({"fields": {"ordr_id": "orderId"}}, "fields.ordr_id"),
    ({"time": {"path": "at", "format": "%d/%m/%Y"}}, "has no %z"),
])
def test_a_format_that_cannot_work_stops_check_definitions_and_the_run(
        tmp_path: Path, change: dict[str, Any], named: str) -> None:
    """A type no definition knows, a field of no payload model, a pattern without a zone: one line
    naming it from `check-definitions` and from `run`, exit 2."""
    spec = {"id": "id", "type": "t", "time": "at", **change}
    formats = tmp_path / "formats.yaml"
    formats.write_text(yaml.safe_dump({"formats": {"mine": spec}}))
    for argv in (["check-definitions", str(BUNDLED_DEFINITIONS), "--formats", str(formats)],
                 ["run", "--out", str(tmp_path / "out"), "--formats", str(formats),
                  "--format", "mine", "--sim-instances", "10"]):
        printed = io.StringIO()
        with contextlib.redirect_stderr(printed), contextlib.redirect_stdout(io.StringIO()):
            assert main(argv) == 2
        lines = printed.getvalue().strip().splitlines()
        assert len(lines) == 1 and named in lines[0], lines


def test_check_definitions_lists_the_formats_beside_them(tmp_path: Path,
                                                         formats_file: Path) -> None:
    """A `formats.yaml` in the definitions folder is not a definition; `check-definitions` checks
    and lists its formats, and an unknown `--format` names the ones there are."""
    folder = tmp_path / "definitions"
    folder.mkdir()
    for file in BUNDLED_DEFINITIONS.glob("*.yaml"):
        (folder / file.name).write_bytes(file.read_bytes())
    (folder / "formats.yaml").write_bytes(formats_file.read_bytes())
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["check-definitions", str(folder)]) == 0
    assert "ok  format outbox" in printed.getvalue()
    assert set(loaded_formats(folder, None)) == {"shop", "outbox"}
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        assert main(["run", "--definitions", str(folder), "--format", "shoop",
                     "--out", str(tmp_path / "out")]) == 2
    assert "choose from cloudevents, debezium-outbox, outbox, shop" in errors.getvalue()


# The simulated workload (duplicates, reordering, late events, bad input) in each format.

@pytest.fixture(scope="module")
def simulation() -> Simulation:
    return simulate(simulator_config(SETTINGS), CATALOG)


def run_flow(settings: Settings, partitions: list[list[RawRecord]] | None, workers: int) -> Rows:
    """The dataflow on these partitions (None: the source the settings name), rows collected."""
    rows: Rows = []
    source = SimulatorSource(partitions) if partitions is not None else None
    flow = build_flow(settings, source=source, sink=TestingSink(rows))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return rows


def verdicts(rows: Rows) -> dict[str, list[str]]:
    """Outcomes and commands row by row, and every record's disposition by its coordinates."""
    found: dict[str, list[str]] = {"outcomes": [], "commands": [], "ledger": []}
    for table, row in rows:
        if table in ("outcomes", "commands"):
            found[table].append(repr(sorted(row.items())))
        elif table == "ledger":
            found[table].append(repr((row["partition"], row["offset"], row["disposition"])))
    return {name: sorted(values) for name, values in found.items()}


@pytest.fixture(scope="module")
def cloudevents_verdicts(simulation: Simulation) -> dict[str, list[str]]:
    return verdicts(run_flow(SETTINGS, simulation.partitions, 1))


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("name", ["shop", "outbox"])
def test_the_workload_in_each_format_reaches_the_cloudevents_verdicts(
        simulation: Simulation, cloudevents_verdicts: dict[str, list[str]], formats_file: Path,
        name: str, workers: int) -> None:
    """The simulated stream rewritten as plain JSON or as outbox messages (key, headers, payload
    as a JSON string), on 1 and 2 workers: the same outcomes, commands and dispositions as its
    CloudEvents form."""
    writer = FormatWriter(spec_of(name), RULES)
    partitions = [[writer.write(r) for r in part] for part in simulation.partitions]
    rows = run_flow(SETTINGS.with_flags(format=name, formats=formats_file), partitions, workers)
    got = verdicts(rows)
    assert len(got["outcomes"]) > 300
    for table in ("outcomes", "commands", "ledger"):
        assert got[table] == cloudevents_verdicts[table], table


def cli_run(out: Path, *args: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["run", "--out", str(out), "--overwrite", *args]) == 0


def write_jsonl(path: Path, records: list[RawRecord], rewrite: Callable[[RawRecord], RawRecord],
                ) -> Path:
    path.write_bytes(b"".join(rewrite(r).value + b"\n" for r in records))
    return path


def ledger(out: Path) -> list[tuple[Any, ...]]:
    conn = duckdb.connect(str(out / "flowkeeper.duckdb"), read_only=True)
    try:
        return conn.execute('SELECT "offset", disposition FROM ledger ORDER BY "offset"').fetchall()
    finally:
        conn.close()


def test_a_mapped_file_run_and_its_replay_match_the_cloudevents_file(
        simulation: Simulation, formats_file: Path, tmp_path: Path) -> None:
    """The workload as JSON lines in the `shop` format, read by `run --source file --format
    shop` (arrival from the event time, as the CloudEvents lines' default): the verdicts and
    dispositions of the CloudEvents lines; its archive replays identical (the run recorded its
    format) and `inspect --format` reads it."""
    records = [r for r in sorted(simulation.records(), key=lambda r: (r.arrived_ms, r.offset))
               if not r.headers and b"\n" not in r.value]
    writer = FormatWriter(spec_of("shop"), RULES)
    cloud = write_jsonl(tmp_path / "cloud.jsonl", records, lambda r: r)
    shop = write_jsonl(tmp_path / "shop.jsonl", records, writer.write)
    want, got, replayed = tmp_path / "want", tmp_path / "got", tmp_path / "replayed"
    cli_run(want, "--source", "file", str(cloud), "--file-partitions", "3")
    cli_run(got, "--source", "file", str(shop), "--file-partitions", "3", "--format", "shop",
            "--formats", str(formats_file), "--arrival-field", "occurredAt", "--workers", "2")
    tables = ("outcomes", "commands", "transitions", "anomalies", "corrections")
    for diff in compare_outputs(want, got, tables):
        assert diff.identical or diff.recorded == diff.replayed == 0, (diff.table,
                                                                       diff.differences[:3])
    assert ledger(got) == ledger(want)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["replay", str(got), "--out", str(replayed)]) == 0
    for diff in compare_outputs(got, replayed, (*tables, "ledger", "dead_letters")):
        assert diff.identical, (diff.table, diff.differences[:3])
    instance = json.loads(writer.write(records[0]).value)["instance"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["inspect", instance, "--out", str(got), "--json", "--format", "shop",
                     "--formats", str(formats_file)]) == 0
    kinds = {entry["kind"] for entry in json.loads(printed.getvalue())["timeline"]}
    assert {"event", "transition"} <= kinds


def test_the_readme_format_runs_as_pasted(tmp_path: Path) -> None:
    """The README's five-line mapping and its two-event file, pasted into an empty folder, run:
    both events applied, the order paid before it times out."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Your own event format", 1)[1]
    mapping = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    script = section.split("```sh\n", 1)[1].split("```", 1)[0]
    assert len(mapping.strip().splitlines()) == 5
    (tmp_path / "formats.yaml").write_text(mapping)
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out" / "shop"
    conn = duckdb.connect(str(out / "flowkeeper.duckdb"), read_only=True)
    try:
        assert conn.execute("SELECT event_id, disposition FROM ledger ORDER BY 1").fetchall() == [
            ("e1", "applied"), ("e2", "applied")]
        assert conn.execute("SELECT timed_out_step FROM outcomes").fetchall() == [
            ("reserving_inventory",)]
    finally:
        conn.close()


def test_an_optional_instance_id_falls_back_to_the_definitions_field() -> None:
    """`instance_id: {path: ..., optional: true}` absent: the id is where the definition finds it
    (order_fulfilment: `data.order_id`); present: the format's id wins."""
    spec = FormatSpec.model_validate({"id": "id", "type": {"constant": "OrderPlaced"},
                                      "time": "at", "data_version": {"constant": 2},
                                      "payload": "order",
                                      "instance_id": {"path": "ref", "optional": True}})
    rules = rules_for("x", spec)
    value = {"id": "e-1", "at": "2026-01-01T10:00:00Z", "order": ORDER}
    absent = decode(RawRecord("t", 0, 0, json.dumps(value).encode()), rules)
    present = decode(RawRecord("t", 0, 1, json.dumps({**value, "ref": "r-9"}).encode()), rules)
    assert isinstance(absent, Event) and isinstance(present, Event)
    assert (absent.instance_id, present.instance_id) == ("o-1", "r-9")


def test_fields_rename_a_services_keys_to_the_payload_models() -> None:
    """The issue's own shape (`orderId`, `customerId`, camelCase): `fields` rename them; the keys
    they were read from leave the payload, the rest stays."""
    spec = FormatSpec.model_validate({
        "id": "eventId", "type": {"path": "eventType", "names": {"order.placed": "OrderPlaced"}},
        "time": {"path": "occurredAt", "format": "epoch_ms"},
        "fields": {"order_id": "orderId", "customer_id": "customerId"}})
    value = {"eventId": "e-1", "eventType": "order.placed", "occurredAt": 1767261600000,
             "orderId": "o-1", "customerId": "c-1", "total": 12.5, "items": ["MUG-01"]}
    rules = rules_for("x", spec)
    event = decode(RawRecord("t", 0, 0, json.dumps(value).encode()), rules)
    assert isinstance(event, Event), event
    assert event.instance_id == "o-1"
    extra = decode(RawRecord("t", 0, 0, json.dumps({**value, "note": "x"}).encode()), rules)
    assert isinstance(extra, DeadLetter) and extra.reason == "payload_invalid"
    assert "data.note" in extra.message


def test_a_nested_object_the_mapping_read_all_of_leaves_a_whole_value_payload() -> None:
    """Nested paths (`meta.id`, `customer.id`): an object every key of which the mapping read
    leaves the payload, nested ones too; one with anything else stays whole; lists stay."""
    spec = FormatSpec.model_validate({
        "id": "meta.id",
        "type": {"path": "meta.kind.name", "names": {"order.placed": "OrderPlaced"}},
        "time": {"path": "meta.at", "format": "epoch_ms"},
        "fields": {"customer_id": "customer.id", "order_id": "lines.0.order"}})
    value = {"meta": {"id": "e-1", "kind": {"name": "order.placed"}, "at": 1767261600000},
             "customer": {"id": "c-1"}, "lines": [{"order": "o-1"}], "total": 12.0}
    reader = MappingReader("nested", spec)
    data = reader.read(RawRecord("t", 0, 0, json.dumps(value).encode())).data
    assert data == {"lines": [{"order": "o-1"}], "total": 12.0,
                    "customer_id": "c-1", "order_id": "o-1"}
    value["customer"]["name"] = "Ada"
    value["meta"]["source"] = "shop"
    data = reader.read(RawRecord("t", 0, 0, json.dumps(value).encode())).data
    assert data["customer"] == {"id": "c-1", "name": "Ada"}
    assert data["meta"] == value["meta"]
    value = {"meta": {"id": "e-2", "kind": {"name": "order.placed"}, "at": 1767261600000},
             "customer": {"id": "c-1"}, "order_id": "o-1", "total": 12.0, "items": ["MUG-01"]}
    spec = spec.model_copy(update={"fields": {"customer_id": Source(path="customer.id")}})
    event = decode(RawRecord("t", 0, 0, json.dumps(value).encode()), rules_for("nested", spec))
    assert isinstance(event, Event), event
    assert (event.event_id, event.instance_id) == ("e-2", "o-1")


@pytest.mark.parametrize(("entry", "named"), [
    ({"id": "id", "tyep": "t", "type": "t", "time": "at"}, "formats.mine.tyep: unknown key"),
    ({"id": {"path": "id", "optinal": True}, "type": "t", "time": "at"}, "are path, header"),
    ({"type": "t", "time": "at"}, "map 'id'"),
    ({"id": {"path": "id", "header": "id"}, "type": "t", "time": "at"}, "exactly one of"),
])
def test_a_formats_file_that_does_not_parse_names_the_place(tmp_path: Path, entry: dict[str, Any],
                                                            named: str) -> None:
    """A misspelt key, a missing attribute, a source in two places: `check-definitions` says
    where in the formats file, in one line, exit 2."""
    formats = tmp_path / "formats.yaml"
    formats.write_text(yaml.safe_dump({"formats": {"mine": entry}}))
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed), contextlib.redirect_stdout(io.StringIO()):
        assert main(["check-definitions", str(BUNDLED_DEFINITIONS), "--formats",
                     str(formats)]) == 2
    lines = printed.getvalue().strip().splitlines()
    assert len(lines) == 1 and str(formats) in lines[0] and named in lines[0], lines

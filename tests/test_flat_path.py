"""The one-call path of flat mapped formats (`schemas.decode._flat_event`) reaches the general
path's verdict, event or dead letter with its reason, for JSON and for Avro."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bench.variants import AVRO_SCHEMA, _avro_record, bench_format
from connectors.format_writer import FormatWriter, confluent_avro
from connectors.simulator import Faults, SimulatorConfig, simulate
from schemas.avro_wire import AvroDecoder
from schemas.decode import DecodeRules, _flat_event, _Reject, decode
from schemas.event import DeadLetter, Event, RawRecord
from schemas.format_choice import chosen_rules, parse_choice
from schemas.mapping import FormatSpec, MappingReader
from schemas.payloads.bundled import bundled_registry
from state.catalog import Catalog, load_catalog

DEFINITIONS = Path(__file__).resolve().parent.parent / "definitions"
HOUR_MS = 3_600_000
ARRIVED = 1_714_564_800_000  # 2024-05-01T12:00:00Z
ORDER = {"order_id": "ord-1", "customer_id": "c-1", "total_cents": 1250, "currency": "EUR",
         "items": [{"sku": "A-1", "quantity": 2}]}


def _catalog() -> Catalog:
    return load_catalog(DEFINITIONS)


# The bench's schema without its payload field (id 2): a record the format cannot read.
NO_PAYLOAD = {**AVRO_SCHEMA, "fields": [f for f in AVRO_SCHEMA["fields"] if f["name"] != "payload"]}


def _rules(catalog: Catalog, spec: FormatSpec) -> DecodeRules:
    rules = catalog.decode_rules(bundled_registry(), 1_048_576, HOUR_MS)
    schemas = {1: AVRO_SCHEMA, 2: NO_PAYLOAD}
    avro = AvroDecoder(schemas.get) if spec.encoding == "avro" else None
    return replace(rules, reader=MappingReader("bench", spec, avro))


def _general(record: RawRecord, rules: DecodeRules) -> Event | DeadLetter:
    """What `decode` gives when the flat one-call path is switched off."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("schemas.decode._flat_event", lambda record, layout, rules: None)
        return decode(record, rules)


def _flat(record: RawRecord, rules: DecodeRules) -> bool:
    """Whether the one-call path judged the record (built an event or rejected it itself)."""
    assert rules.reader is not None and rules.reader.layout is not None
    try:
        return _flat_event(record, rules.reader.layout, rules) is not None
    except _Reject:
        return True


@pytest.mark.parametrize("encoding", ["json", "avro"])
def test_flat_path_agrees_with_the_general_path_on_simulated_traffic(encoding: str) -> None:
    """Simulated traffic of every bundled workflow with every fault (old versions, future stamps,
    records the format cannot read), in the bench's mapped format as JSON and as Avro, decodes to
    the same event or dead letter both ways; most of it in one call."""
    catalog = _catalog()
    cloudevents = catalog.decode_rules(bundled_registry(), 1_048_576, HOUR_MS)
    spec = bench_format(cloudevents.routes)
    writer = FormatWriter(spec, cloudevents)
    faults = Faults(duplicate=0.2, malformed_json=0.1, payload_invalid=0.1, unknown_type=0.1,
                    old_version=0.2, future_stamped=0.05)
    records = simulate(SimulatorConfig(seed=5, instances=300, partitions=2, faults=faults),
                       catalog).records()
    if encoding == "avro":
        spec = spec.model_copy(update={"encoding": "avro"})
        converted = [_avro_record(r, writer) for r in records]
    else:
        converted = [writer.write(r) for r in records]
    rules = _rules(catalog, spec)
    assert sum(_flat(r, rules) for r in converted) > len(converted) // 2
    verdicts = [decode(r, rules) for r in converted]
    assert verdicts == [_general(r, rules) for r in converted]
    # The writer converts valid events only (old versions too): faulty ones stay CloudEvents,
    # which the format cannot read; invalid payloads are the unusual values' tests below.
    reasons = {v.reason for v in verdicts if isinstance(v, DeadLetter)}
    assert reasons == {"time_out_of_range", "mapping_failed"}


def _value(**changes: Any) -> dict[str, Any]:
    """An OrderPlaced in the bench's mapped format, with `changes` (None: the key left out)."""
    value: dict[str, Any] = {
        "eventId": "e-1", "eventType": "order.placed", "occurredAt": ARRIVED - 60_000,
        "instance": "ord-1", "seq": 3, "trace": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01",
        "schemaVersion": "2", "payload": ORDER}
    value.update(changes)
    return {k: v for k, v in value.items() if v is not None}


JSON_CASES = {
    "usual": _value(),
    "no_optional_attributes": _value(seq=None, trace=None, schemaVersion=None),
    "version_as_number": _value(schemaVersion=2),
    "version_true": _value(schemaVersion=True),
    "version_float": _value(schemaVersion=2.0),
    "old_version": _value(schemaVersion="1"),
    "unknown_version": _value(schemaVersion="9"),
    "sequence_bool": _value(seq=True),
    "sequence_text": _value(seq="12"),
    "sequence_not_decimal": _value(seq="x1"),
    "id_number": _value(eventId=17),
    "id_empty": _value(eventId=""),
    "no_instance": _value(instance=None),
    "instance_number": _value(instance=42),
    "instance_list": _value(instance=["a"]),
    "time_text": _value(occurredAt="1714564740000"),
    "time_bool": _value(occurredAt=True),
    "time_future": _value(occurredAt=ARRIVED + 2 * HOUR_MS),
    "time_too_old": _value(occurredAt=0),
    "trace_number": _value(trace=5),
    "trace_broken": _value(trace="00-zz"),
    "type_not_in_table": _value(eventType="order.exploded"),
    "type_unrouted_name": _value(eventType="OrderPlaced"),
    "payload_invalid": _value(payload={**ORDER, "total_cents": -1}),
    "payload_as_text": _value(payload=json.dumps(ORDER)),
    "payload_null": _value(payload=None),
    "type_in_payload_first": {"payload": {**ORDER, "eventType": "ticket.opened"},
                              **_value(payload=None)},
}


@pytest.mark.parametrize("value", list(JSON_CASES.values()), ids=list(JSON_CASES))
def test_flat_path_agrees_on_unusual_json_values(value: dict[str, Any]) -> None:
    """Attributes of an unexpected kind, versions, times and payloads reach the same verdict
    with and without the one-call path."""
    catalog = _catalog()
    spec = bench_format(catalog.decode_rules(bundled_registry(), 1_048_576, HOUR_MS).routes)
    rules = _rules(catalog, spec)
    record = RawRecord("file:x", 0, 1, json.dumps(value).encode(), b"k", (), ARRIVED)
    assert decode(record, rules) == _general(record, rules)
    if value is JSON_CASES["usual"]:
        assert _flat(record, rules)


AVRO_CASES = {
    "usual": _value(payload=json.dumps(ORDER)),
    "payload_not_json": _value(payload="{nope"),
    "payload_invalid": _value(payload=json.dumps({**ORDER, "currency": 5})),
    "payload_not_object": _value(payload="[1, 2]"),
    "old_version": _value(payload=json.dumps(ORDER), schemaVersion="1"),
    "unknown_type": _value(payload=json.dumps(ORDER), eventType="order.exploded"),
    "time_future": _value(payload=json.dumps(ORDER), occurredAt=ARRIVED + 2 * HOUR_MS),
}


@pytest.mark.parametrize("value", list(AVRO_CASES.values()), ids=list(AVRO_CASES))
def test_flat_path_agrees_on_unusual_avro_records(value: dict[str, Any]) -> None:
    """Avro records whose payload text, version, type or time is unusual, cut-short bytes and a
    schema without the payload field reach the same verdict with and without the one-call
    path."""
    catalog = _catalog()
    spec = bench_format(catalog.decode_rules(bundled_registry(), 1_048_576, HOUR_MS).routes)
    rules = _rules(catalog, spec.model_copy(update={"encoding": "avro"}))
    raw = confluent_avro(value, AVRO_SCHEMA, 1)
    without_payload = confluent_avro({k: v for k, v in value.items() if k != "payload"},
                                     NO_PAYLOAD, 2)
    for body in (raw, raw[:-3], without_payload):
        record = RawRecord("file:x", 0, 1, body, b"k", (), ARRIVED)
        assert decode(record, rules) == _general(record, rules)
        if value is AVRO_CASES["usual"] and body is raw:
            assert _flat(record, rules)


def test_formats_the_flat_path_does_not_cover_have_no_layout() -> None:
    """Nested paths, `fields`, a whole-value payload and the outbox keep the general path."""
    base = {"id": "eventId", "type": "eventType", "time": "occurredAt", "instance_id": "who",
            "payload": "payload"}
    assert MappingReader("f", FormatSpec.model_validate(base)).layout is not None
    for change in ({"instance_id": "order.id"}, {"fields": {"order_id": "who"}},
                   {"payload": None}, {"payload": "eventId"}):
        spec = FormatSpec.model_validate({**base, **change})
        assert MappingReader("f", spec).layout is None, change
    assert MappingReader("o", FormatSpec(base="debezium-outbox")).layout is None


def test_formats_chosen_per_source_take_the_fast_path_of_their_own() -> None:
    """With a format per source, a record takes the one-call path of its source's format: a
    CloudEvent on a mapped source is the mapping's dead letter, not a CloudEvents event, and a
    mapped record on the CloudEvents source is not read by the mapping; as the general path."""
    catalog = _catalog()
    base = catalog.decode_rules(bundled_registry(), 1_048_576, HOUR_MS)
    spec = bench_format(base.routes)
    rules = chosen_rules(base, parse_choice("m.jsonl=bench,cloudevents"),
                         lambda name: None if name == "cloudevents" else MappingReader(
                             "bench", spec))
    cloudevent = json.dumps({
        "specversion": "1.0", "id": "e-1", "source": "/shop", "type": "OrderPlaced",
        "time": "2024-05-01T11:59:00Z", "dataversion": "2", "data": ORDER}).encode()
    mapped = json.dumps(_value()).encode()
    verdicts = {}
    for source in ("file:m.jsonl", "file:c.jsonl"):
        for name, value in (("cloudevent", cloudevent), ("mapped", mapped)):
            record = RawRecord(source, 0, 1, value, None, (), ARRIVED)
            verdict = decode(record, rules)
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr("schemas.decode._typed_event", lambda record, rules: None)
                assert verdict == _general(record, rules)
            verdicts[source, name] = verdict
    assert isinstance(verdicts["file:m.jsonl", "mapped"], Event)
    assert isinstance(verdicts["file:c.jsonl", "cloudevent"], Event)
    dead = verdicts["file:m.jsonl", "cloudevent"]
    assert isinstance(dead, DeadLetter) and dead.reason == "mapping_failed"
    assert isinstance(verdicts["file:c.jsonl", "mapped"], DeadLetter)

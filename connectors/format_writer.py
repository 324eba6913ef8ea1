"""CloudEvents records rewritten in another format (`schemas.mapping`), for `produce --format`,
the tests and the bench: the inverse of the format's mapping, so reading the rewritten record
gives back the event.

Each attribute goes where the format reads it: a path in the JSON value, a header, the key, or
the message timestamp (the record's arrival time becomes the event time); types through the
inverse of the format's names. A record that does not decode as a CloudEvent is kept as it was:
it stays bad input in any format.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastavro import parse_schema, schemaless_writer

from schemas.avro_wire import MAGIC
from schemas.decode import DecodeRules, decode
from schemas.envelope import envelope_from_headers, is_binary_mode
from schemas.event import Event, RawRecord
from schemas.mapping import FormatSpec, Source

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FormatWriter:
    """Rewrites records of CloudEvents (judged by `rules`) in the format `spec`."""

    def __init__(self, spec: FormatSpec, rules: DecodeRules) -> None:
        # Judged without the future-skew bound: that depends on when the record arrives, which
        # the reading run judges in its own format.
        self.spec, self.rules = spec, replace(rules, max_future_skew_ms=None)
        outbox = spec.base == "debezium-outbox"
        self.places: dict[str, Source] = {
            "id": spec.id or Source(header="id"),
            "type": spec.type or Source(header="eventType"),
            "time": spec.time or Source(timestamp=True),
        }
        optional = {"instance_id": spec.instance_id or (Source(key=True) if outbox else None),
                    "sequence": spec.sequence, "trace_id": spec.trace_id,
                    "data_version": spec.data_version}
        self.places.update({n: s for n, s in optional.items() if s is not None})
        names = spec.type.names if spec.type is not None and spec.type.names else {}
        self.type_names = {ours: theirs for theirs, ours in names.items()}

    def write(self, record: RawRecord) -> RawRecord:
        """The record in this format (unchanged when it is no valid CloudEvent)."""
        event = decode(record, self.rules)
        if not isinstance(event, Event):
            return record
        envelope = (envelope_from_headers(record.headers, record.value)
                    if is_binary_mode(record.headers) else json.loads(record.value))
        data = dict(envelope.get("data") or {})
        attributes: dict[str, Any] = {
            "id": event.event_id, "type": self.type_names.get(event.type, event.type),
            "time": event.time_ms, "instance_id": event.instance_id,
            "sequence": envelope.get("sequence"), "trace_id": envelope.get("traceparent"),
            "data_version": envelope.get("dataversion"),
        }
        value: dict[str, Any] = {}
        if self.spec.payload is not None and self.spec.payload.path is not None:
            _put(value, self.spec.payload.path, data)
        else:
            value = data
        headers: list[tuple[str, bytes]] = []
        key, arrived = record.key, record.arrived_ms
        for name, field in [*self.places.items(),
                            *((f"fields.{n}", s) for n, s in self.spec.fields.items())]:
            found = (data.pop(name[7:], None) if name.startswith("fields.")
                     else attributes[name])
            if found is None or field.constant is not None:
                continue
            if name == "time":
                found = _rendered_time(event.time_ms, field)
            if field.path is not None:
                _put(value, field.path, found)
            elif field.header is not None:
                headers.append((field.header, str(found).encode()))
            elif field.key:
                key = str(found).encode()
            elif field.timestamp:
                arrived = int(found)
        raw = json.dumps(value, separators=(",", ":"))
        if self.spec.base == "debezium-outbox":  # the payload column as a JSON string
            raw = json.dumps(raw)
        return RawRecord(record.source, record.partition, record.offset, raw.encode(), key,
                         tuple(headers), arrived)


def _put(value: dict[str, Any], path: str, found: Any) -> None:
    """Set `found` at the dotted `path`, making the objects on the way."""
    *parents, last = path.split(".")
    for step in parents:
        value = value.setdefault(step, {})
    value[last] = found


def _rendered_time(ms: int, field: Source) -> Any:
    """The event time as the format reads it back."""
    fmt = field.format or "rfc3339"
    if field.timestamp or fmt == "epoch_ms":
        return ms
    if fmt == "epoch_s":
        return ms // 1000 if ms % 1000 == 0 else ms / 1000
    if fmt == "epoch_us":
        return ms * 1000
    moment = _EPOCH + timedelta(milliseconds=ms)
    if fmt == "rfc3339":
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    zone = ZoneInfo(field.zone) if field.zone else UTC
    return moment.astimezone(zone).strftime(fmt)


def confluent_avro(value: dict[str, Any], schema: Any, schema_id: int) -> bytes:
    """`value` in Confluent's Avro wire format: magic 0, the schema id, Avro binary."""
    stream = io.BytesIO()
    stream.write(bytes([MAGIC]) + schema_id.to_bytes(4, "big"))
    schemaless_writer(stream, parse_schema(schema), value)
    return stream.getvalue()


def avro_value(value: dict[str, Any], schema: Any) -> dict[str, Any]:
    """A format's JSON value made to fit a record schema: a nested object or list where the schema
    has a string is written as JSON text (a payload field holding JSON), RFC 3339 text where it
    has an Avro timestamp as that time, a decimal string where it has a number as that number."""
    fields = schema.get("fields", []) if isinstance(schema, dict) else []
    fitted = dict(value)
    for field in fields:
        kinds = field["type"] if isinstance(field["type"], list) else [field["type"]]
        found = fitted.get(field["name"])
        if isinstance(found, dict | list) and "string" in kinds:
            fitted[field["name"]] = json.dumps(found, separators=(",", ":"))
        elif isinstance(found, str) and _timestamp(kinds):
            fitted[field["name"]] = datetime.fromisoformat(found.replace("Z", "+00:00"))
        elif isinstance(found, str) and found.isdigit() and {"long", "int"} & set(map(str, kinds)):
            fitted[field["name"]] = int(found)  # a decimal `sequence` or `dataversion`
    return fitted


def _timestamp(kinds: list[Any]) -> bool:
    return any(isinstance(k, dict) and str(k.get("logicalType", "")).startswith("timestamp-")
               for k in kinds)

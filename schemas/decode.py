"""Bytes in, `Event` or `DeadLetter` out: the only place input is parsed, and it never raises.

A dead letter keeps the raw bytes and a machine-readable reason:
`too_large`, `malformed_json`, `not_cloudevent`, `missing_attribute`, `invalid_attribute`,
`unknown_type`, `unknown_version`, `payload_invalid`, `source_error` (the source reported an
error instead of a record), `mapping_failed` (a `--format` other than CloudEvents could not read
the record: the message names the path), `time_out_of_range` (outside
the accepted range: by default 2000-2200, set per run or per definition with `accept_times`,
or stamped more than `max_future_skew_ms` after the record's arrival time: one event from a broken
clock must not drag the watermark forward and expire everything). Arrival time is archived with
each record, so a replay reaches the same verdict.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from functools import cache
from typing import Any, Literal
from zlib import crc32

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import from_json

from schemas.envelope import CloudEventEnvelope, envelope_from_headers, is_binary_mode
from schemas.errors import HeaderError, UnknownVersion
from schemas.event import ARRIVAL_FIELD_HEADER, DeadLetter, Event, RawRecord
from schemas.mapped import FlatLayout, Mapped, MappingFailed, RecordReader
from schemas.payloads.registry import PayloadRegistry

MIN_TIME_MS = 946_684_800_000  # 2000-01-01: older stamps are clock bugs, not business events
MAX_TIME_MS = 7_258_118_400_000  # 2200-01-01
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
# RFC 3339 date-time (offset optional: a route may name the zone of naive stamps). Checked before
# `datetime.fromisoformat`, which also takes dates alone, week dates and basic-format ISO 8601.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
# The same with the offset required and an upper-case `Z`: what `datetime.fromisoformat` reads as
# it is (it takes any date-time separator, so `t` and a space too).
_RFC3339_ZONED = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})"
)
_fromisoformat = datetime.fromisoformat
_DECIMAL = re.compile(r"-?[0-9]{1,19}")  # ASCII digits only: `int()` also takes "٣", "1_0", " 7 "
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_EXAMPLE_TIME = "'2024-05-01T12:00:00Z'"
# What each envelope attribute must be, for the fix in an `invalid_attribute` message.
_EXPECTED = {
    "specversion": 'the string "1.0"',
    "id": "a non-empty string of at most 512 characters, unique per event",
    "source": "a non-empty string of at most 1024 characters (a URI reference)",
    "type": "a non-empty string of at most 256 characters",
    "time": f"an RFC 3339 timestamp string such as {_EXAMPLE_TIME}",
    "subject": "a string of at most 512 characters",
    "datacontenttype": "a string such as 'application/json'",
    "dataschema": "a URI string",
    "dataversion": "a decimal string such as \"2\"",
    "sequence": "a decimal string such as \"42\"",
    "data": "a JSON object",
}


@dataclass(frozen=True, slots=True)
class Route:
    """How events of one type find their instance: which workflow, and where its id is."""

    workflow_type: str
    id_field: str | None = None  # None: the CloudEvents `subject`
    assume_zone: tzinfo | None = None  # zone for timestamps without offset; None rejects them
    accept_times: tuple[int, int] | None = None  # [from, until) ms; None: the run's range


@dataclass(frozen=True)
class DecodeRules:
    """Everything decoding needs, built once from the loaded workflow definitions."""

    routes: dict[str, Route]
    registry: PayloadRegistry
    catch_all: Route | None = None  # case-tracking definitions that accept any event type
    max_bytes: int = 1_048_576
    min_time_ms: int = MIN_TIME_MS
    max_time_ms: int = MAX_TIME_MS
    max_future_skew_ms: int | None = 3_600_000  # event time may run this far ahead of arrival
    reader: RecordReader | None = None  # a format other than CloudEvents (`schemas.mapping`)
    # Formats chosen per file or topic: the rules of a record's source (`schemas.format_choice`).
    by_source: Callable[[str], DecodeRules] | None = None
    # The typed fast path of each type seen, by the type's raw bytes (`_typed_plan`).
    plans: dict[bytes, _TypedPlan | None] = field(default_factory=dict, init=False, repr=False,
                                                  compare=False)
    # The one-call path of a flat format (`_flat_event`), by raw type (bytes of JSON, Avro text).
    flat_plans: dict[bytes | str, _FlatPlan | None] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def route(self, event_type: str) -> Route | None:
        """The route of a type, or the catch-all, or None (unknown type)."""
        return self.routes.get(event_type, self.catch_all)

    def for_source(self, source: str) -> DecodeRules:
        """The rules reading the records of `source` (`file:<name>`, `kafka:<topic>`)."""
        return self if self.by_source is None else self.by_source(source)


@dataclass(frozen=True, slots=True)
class _TypedPlan:
    """What the fast path needs for one registered type, looked up once instead of per event."""

    event_type: str
    validate_json: Callable[[bytes], Any]  # the envelope with `type`, `data` pinned
    versions: frozenset[str | int | None]  # `dataversion` values meaning the newest version
    route: Route | None
    id_attribute: str | None  # a declared payload field holding the instance id, if it is one


@dataclass(frozen=True, slots=True)
class _FlatPlan:
    """What the one-call path of a flat format needs for one raw type, looked up once."""

    event_type: str  # after the format's table of type names
    validate: Callable[[Any], Any]  # JSON: the value's bytes; Avro: the payload fastavro read
    validate_text: Callable[[Any], Any]  # Avro: a payload held as JSON text
    attributes: tuple[str | None, ...]  # where id, time, instance, sequence, trace, version are
    versions: frozenset[str | int | None]
    route: Route
    id_route: Route  # the format names the instance id: judged as such (`_mapped_instance`)


class _Reject(Exception):
    def __init__(self, reason: str, message: str, event_id: str | None = None,
                 event_type: str | None = None) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message
        self.event_id, self.event_type = event_id, event_type


def decode(record: RawRecord, rules: DecodeRules) -> Event | DeadLetter:
    """Decode one record; every failure becomes a `DeadLetter` naming the field at fault."""
    try:
        if rules.by_source is not None:  # formats chosen per source: the fast path of its own
            rules = rules.by_source(record.source)
        if record.error is None and len(record.value) <= rules.max_bytes:
            # The usual record: one call less (the general path tries no fast path again).
            reader = rules.reader
            if reader is None:
                event = None if record.headers else _typed_event(record, rules)
            else:
                event = None if reader.layout is None else _flat_event(record, reader.layout,
                                                                      rules)
            if event is not None:
                return event
        return _decode(record, rules)
    except _Reject as r:
        return DeadLetter(r.reason, r.message, record, r.event_id, r.event_type)
    except Exception as e:
        return DeadLetter("decoder_error", f"{type(e).__name__}: {e}", record)


def _decode(record: RawRecord, rules: DecodeRules) -> Event:
    if record.error is not None:
        raise _Reject("source_error", record.error)
    if len(record.value) > rules.max_bytes:
        msg = (f"value is {len(record.value)} bytes; the limit is {rules.max_bytes} "
               "(--max-event-bytes)")
        raise _Reject("too_large", msg)
    if rules.reader is not None:
        return _mapped_event(record, rules.reader, rules)
    if record.headers and not is_binary_mode(record.headers):
        event = _typed_event(record, rules)
        if event is not None:
            return event
    envelope = _envelope(record)
    event_id, event_type = envelope.id, envelope.type
    route = _accepted_route(envelope.specversion, rules.route(event_type), event_id, event_type)
    time_ms = _time_ms(envelope.time, route, rules, record.arrived_ms, event_id, event_type)
    data = _payload(envelope, rules.registry, event_id, event_type)
    value = envelope.subject if route.id_field is None else _field(data, route.id_field)
    return Event(event_id, event_type, time_ms, route.workflow_type,
                 _instance_id(value, route, event_id, event_type), record.source,
                 record.partition, record.offset, record.arrived_ms, _body_crc(record),
                 _sequence(envelope.sequence, event_id, event_type),
                 _trace_id(envelope.traceparent))


def _body_crc(record: RawRecord) -> int:
    """The CRC that tells a redelivery (same id, same content) from a conflicting duplicate: of
    the bytes, or, when a header names the attribute holding the arrival time (event files with
    `--arrival-field`), of the content without it, so two deliveries that differ only in when
    they arrived are the same event."""
    for name, value in record.headers:
        if name == ARRIVAL_FIELD_HEADER:
            try:
                content = from_json(record.value)
            except ValueError:  # a value of another encoding (Avro): its bytes, as they are
                break
            if isinstance(content, dict):
                content.pop(value.decode("utf-8", "replace"), None)
            return zlib.crc32(json.dumps(content, sort_keys=True, separators=(",", ":"),
                                         ensure_ascii=False).encode())
    return zlib.crc32(record.value)


_TYPE = re.compile(rb'"type"\s*:\s*"([^"\\]{1,256})"')


def _typed_event(record: RawRecord, rules: DecodeRules) -> Event | None:
    """The fast path for well-formed structured events of a registered type at its newest version:
    envelope and payload validated in one `validate_json` call, no intermediate dict.

    The type is guessed from the bytes only to pick the model; the model pins `type` to that
    literal and the version is checked after, so a wrong guess just fails. A failed validation
    returns None and goes the general way, which gives every dead letter its reason, so both
    ways always reach the same verdict. Once validated, the checks are the general path's own,
    inlined for the usual event (the general functions run whenever one would reject).
    """
    value = record.value
    guess = _TYPE.search(value)
    if guess is None:
        return None
    raw_type = guess.group(1)
    plan = rules.plans.get(raw_type, _UNPLANNED)
    if plan is _UNPLANNED:
        plan = rules.plans[raw_type] = _typed_plan(raw_type, rules)
    if plan is None:
        return None
    try:
        envelope = plan.validate_json(value)
    except ValidationError:
        return None
    if envelope.dataversion not in plan.versions:
        return None
    event_id, event_type, route = envelope.id, plan.event_type, plan.route
    if envelope.specversion != "1.0" or route is None:
        route = _accepted_route(envelope.specversion, route, event_id, event_type)
    if plan.id_attribute is not None:
        instance = envelope.data.__dict__[plan.id_attribute]
    elif route.id_field is None:
        instance = envelope.subject
    else:
        instance = _field(envelope.data, route.id_field)
    return _judged(record, rules, event_id, event_type, route, envelope.time, instance, route,
                   envelope.sequence, _trace_id(envelope.traceparent))


def _judged(record: RawRecord, rules: DecodeRules, event_id: str, event_type: str, route: Route,
            time: str | int, instance: Any, id_route: Route, sequence: str | int | None,
            trace_id: str | None) -> Event:
    """The one-call paths' shared tail, for attributes already validated: the general path's
    checks of time, instance id (judged with `id_route`) and sequence, inlined for the usual
    event (the general functions run whenever one would reject), then the `Event`."""
    if isinstance(time, str):
        time_ms = _time_ms(time, route, rules, record.arrived_ms, event_id, event_type)
    else:
        time_ms = _checked_ms(time, time, route, rules, record.arrived_ms, event_id, event_type)
    if type(instance) is not str or not 0 < len(instance) <= 512:
        instance = _instance_id(instance, id_route, event_id, event_type)
    return Event(event_id, event_type, time_ms, route.workflow_type, instance, record.source,
                 record.partition, record.offset, record.arrived_ms,
                 _body_crc(record) if record.headers else crc32(record.value),
                 None if sequence is None else _sequence(sequence, event_id, event_type),
                 trace_id)


_UNPLANNED: Any = object()  # a type not looked up yet (None: looked up, no fast path)


def _accepted_route(specversion: str, route: Route | None, event_id: str,
                    event_type: str) -> Route:
    """The route of a CloudEvents 1.0 event of a known type; both ways of decoding judge here."""
    if specversion != "1.0":
        raise _Reject("not_cloudevent", _wrong_version(specversion), event_id, event_type)
    if route is None:
        msg = (f"type {event_type!r} belongs to no loaded workflow definition; add it to a "
               "definition, or stop sending it to this input")
        raise _Reject("unknown_type", msg, event_id, event_type)
    return route


def _typed_plan(raw_type: bytes, rules: DecodeRules) -> _TypedPlan | None:
    """The fast path of a type, or None when the type has no registered payload model."""
    event_type = raw_type.decode("utf-8", "replace")
    registry = rules.registry
    if not registry.knows(event_type):
        return None
    latest = registry.latest(event_type)
    payload = registry.models[(event_type, latest)]
    route = rules.route(event_type)
    id_field = route.id_field if route is not None else None
    declared = id_field is not None and not id_field.startswith("_") and (
        id_field in payload.model_fields)
    validator = _typed_model(event_type, payload).__pydantic_validator__
    return _TypedPlan(event_type, validator.validate_json,
                      _newest_versions(latest), route, id_field if declared else None)


def _newest_versions(latest: int) -> frozenset[str | int | None]:
    """The data-version values that mean the newest version (absent: version 1)."""
    versions: set[str | int | None] = {latest, str(latest)}
    if latest == 1:
        versions.add(None)
    return frozenset(versions)


class _TypedEnvelope(CloudEventEnvelope):
    """The envelope of the fast path. It lives only until its event is built, so its strings are
    not looked up in pydantic's cache of repeated strings (measured: 5 % of validating)."""

    model_config = ConfigDict(cache_strings="none")


@cache
def _typed_model(event_type: str, payload: type[BaseModel]) -> type[CloudEventEnvelope]:
    """The envelope with `type` pinned to `event_type` and `data` required to be `payload`."""
    model: type[CloudEventEnvelope] = create_model(
        f"{payload.__name__}Event", __base__=_TypedEnvelope,
        type=(Literal[event_type], ...),  # type: ignore[arg-type]  # a Literal made at run time
        data=(payload, ...),
    )
    return model


def _envelope(record: RawRecord) -> CloudEventEnvelope:
    attrs: dict[str, Any] | None = None
    try:
        if is_binary_mode(record.headers):
            attrs = envelope_from_headers(record.headers, record.value)
            return CloudEventEnvelope.model_validate(attrs)
        return CloudEventEnvelope.model_validate_json(record.value)
    except HeaderError as e:
        msg = f"binary-mode {e}; producers must write CloudEvents attributes as UTF-8 text"
        raise _Reject("invalid_attribute", msg) from e
    except ValidationError as e:
        raise _classify(e, attrs if attrs is not None else record.value) from e
    except ValueError as e:  # binary mode: the value is not JSON
        msg = f"binary-mode data is not valid JSON: {e}; send the data as one UTF-8 JSON object"
        raise _Reject("malformed_json", msg) from e


def _classify(error: ValidationError, raw: dict[str, Any] | bytes) -> _Reject:
    """Turn pydantic's first error into our reason, naming the attribute.

    Another CloudEvents version is `not_cloudevent` whatever else is wrong with it (a 0.3 event
    without `time` must not be told to add `time`).
    """
    first = error.errors()[0]
    kind, loc = first["type"], str(first["loc"][0]) if first["loc"] else ""
    if kind == "json_invalid":
        msg = (f"not valid JSON: {first['msg']}; send one UTF-8 JSON object "
               "(CloudEvents structured mode)")
        return _Reject("malformed_json", msg)
    if kind in ("model_type", "model_attributes_type") or not loc:
        msg = ("the value is JSON but not a CloudEvents object; send a JSON object with "
               "'specversion': '1.0', 'id', 'source', 'type' and 'time'")
        return _Reject("not_cloudevent", msg)
    if loc == "specversion":
        if kind == "missing":
            msg = "no 'specversion': not a CloudEvent; add \"specversion\": \"1.0\""
        else:
            msg = f"attribute 'specversion': {first['msg']}; it must be {_EXPECTED['specversion']}"
        return _Reject("not_cloudevent", msg)
    version = _specversion(raw)
    if version is not None and version != "1.0":
        return _Reject("not_cloudevent", _wrong_version(version))
    if kind == "missing":
        msg = (f"required CloudEvents attribute {loc!r} is missing; add it "
               f"({_EXPECTED.get(loc, loc)})")
        return _Reject("missing_attribute", msg)
    expected = _EXPECTED.get(loc, "valid")
    return _Reject("invalid_attribute", f"attribute {loc!r}: {first['msg']}; it must be {expected}")


def _specversion(raw: dict[str, Any] | bytes) -> Any:
    """The `specversion` of a record that failed validation (only parsed again on that path)."""
    if isinstance(raw, bytes):
        try:
            raw = from_json(raw)
        except ValueError:
            return None
    return raw.get("specversion") if isinstance(raw, dict) else None


def _wrong_version(version: Any) -> str:
    return (f"specversion is {version!r}; only CloudEvents '1.0' is supported: "
            "send \"specversion\": \"1.0\" events")


def _time_ms(text: str, route: Route, rules: DecodeRules, arrived_ms: int, event_id: str,
             event_type: str) -> int:
    """Event time in UTC ms; a stamp far ahead of its arrival would drag the watermark forward."""
    ms = _stamp_ms(text)
    if ms is None:
        ms = _parsed_ms(text, route, rules, event_id, event_type)
    return _checked_ms(ms, text, route, rules, arrived_ms, event_id, event_type)


def _checked_ms(ms: int, text: str | int, route: Route, rules: DecodeRules, arrived_ms: int,
                event_id: str, event_type: str) -> int:
    """The event time if it is in the accepted range and not too far ahead of the arrival."""
    low, high = route.accept_times or (rules.min_time_ms, rules.max_time_ms)
    if not low <= ms < high:
        msg = (f"attribute 'time' {text!r} is outside the accepted range ({_day(low)} to "
               f"{_day(high)}); check the producer's clock, or widen the range: `accept_times` "
               "in the workflow definition, or --accept-times-from / --accept-times-until")
        raise _Reject("time_out_of_range", msg, event_id, event_type)
    skew = rules.max_future_skew_ms
    if skew is not None and arrived_ms > 0 and ms > arrived_ms + skew:
        msg = (f"attribute 'time' {text!r} is {(ms - arrived_ms) // 1000} s ahead of the record's "
               f"arrival; the bound is {skew // 1000} s (--max-future-skew)")
        raise _Reject("time_out_of_range", msg, event_id, event_type)
    return ms


def _day(ms: int) -> str:
    """A range bound as text: the date at midnight UTC, else the full time."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.date().isoformat() if ms % 86_400_000 == 0 else moment.isoformat()


def _stamp_ms(text: str) -> int | None:
    """An RFC 3339 stamp with its offset (`Z` or `±hh:mm`, any fraction) in UTC ms, read by
    `datetime`'s C parser; None for anything else, which `_parsed_ms` judges (and explains).

    The C parser takes more than RFC 3339 (dates alone, week dates, basic format, `,` fractions,
    `+hhmm`), so the pattern decides what is a stamp; it refuses a lower-case `z`, which
    `_parsed_ms` reads."""
    if _RFC3339_ZONED.fullmatch(text) is None:
        return None
    try:
        return (_fromisoformat(text) - _EPOCH) // _MS
    except (ValueError, OverflowError):  # no such day or time (30 February, 24:00), or year 0
        return None


def _parsed_ms(text: str, route: Route, rules: DecodeRules, event_id: str, event_type: str) -> int:
    """Any RFC 3339 stamp in ms, with a zone from the route for stamps without offset."""
    try:
        if not _RFC3339.fullmatch(text):
            raise ValueError(text)
        # Python 3.11 reads neither a lower-case 't'/'z' (RFC 3339 allows them) nor a space.
        stamp = datetime.fromisoformat(text[:10] + "T" + text[11:].upper())
    except ValueError as e:
        msg = (f"attribute 'time' is {text!r}, not an RFC 3339 timestamp; write one such as "
               f"{_EXAMPLE_TIME}")
        raise _Reject("invalid_attribute", msg, event_id, event_type) from e
    if stamp.tzinfo is None:
        if route.assume_zone is None:
            msg = (f"attribute 'time' {text!r} has no UTC offset; add one, or set "
                   f"'naive_time_zone' in the {route.workflow_type!r} definition")
            raise _Reject("invalid_attribute", msg, event_id, event_type)
        stamp = stamp.replace(tzinfo=route.assume_zone)
    try:
        # Integer arithmetic: `int(stamp.timestamp() * 1000)` is a millisecond short for ~1% of
        # stamps (float rounding, e.g. 2039-06-16T10:10:21.035Z).
        return (stamp - _EPOCH) // _MS
    except OverflowError:
        return rules.min_time_ms - 1


def _payload(envelope: CloudEventEnvelope, registry: PayloadRegistry, event_id: str,
             event_type: str) -> BaseModel | dict[str, Any]:
    return _validated(envelope.dataversion, envelope.data, registry, event_id, event_type)


def _validated(dataversion: Any, payload: dict[str, Any] | None, registry: PayloadRegistry,
               event_id: str, event_type: str) -> BaseModel | dict[str, Any]:
    """The payload validated against its version's model and upcast, or a rejection."""
    raw_version = dataversion if dataversion is not None else "1"
    if isinstance(raw_version, bool) or not isinstance(raw_version, str | int):
        msg = (f"the data version is {raw_version!r}; it must be a whole number such as \"2\" "
               "(or absent for version 1)")
        raise _Reject("unknown_version", msg, event_id, event_type)
    if isinstance(raw_version, str) and not _DECIMAL.fullmatch(raw_version):
        msg = (f"attribute 'dataversion' is {raw_version!r}; it must be a whole number "
               "such as \"2\" (or absent for version 1)")
        raise _Reject("unknown_version", msg, event_id, event_type)
    version = int(raw_version)
    data = payload if payload is not None else {}
    if not registry.knows(event_type):
        return data
    try:
        return registry.validate(event_type, version, data)
    except UnknownVersion as e:
        msg = f"{e}; send one of those as 'dataversion', or register the model of this version"
        raise _Reject("unknown_version", msg, event_id, event_type) from e
    except ValidationError as e:
        first = e.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        msg = (f"data{where}: {first['msg']} (payload {event_type} v{version}); fix the "
               "producer, or send the 'dataversion' this payload was written for")
        raise _Reject("payload_invalid", msg, event_id, event_type) from e


def _instance_id(value: Any, route: Route, event_id: str, event_type: str) -> str:
    """The instance id from the subject or the data field the route names, or a rejection."""
    where = "attribute 'subject'" if route.id_field is None else f"data.{route.id_field}"
    if value is None or value == "":
        msg = (f"{where} is missing; add it: the {route.workflow_type!r} definition takes the "
               "instance id from it")
        raise _Reject("missing_attribute", msg, event_id, event_type)
    # An unvalidated payload (no model registered) may hold anything: only text or whole numbers,
    # as short as a subject, are ids (not `True`, `1.5` or a megabyte string keying state).
    if isinstance(value, bool) or not isinstance(value, str | int) or len(str(value)) > 512:
        msg = (f"{where} is {type(value).__name__} {str(value)[:40]!r}; the instance id must be "
               "a string of at most 512 characters or a whole number")
        raise _Reject("invalid_attribute", msg, event_id, event_type)
    return str(value)


def instance_id_of(envelope: Mapping[str, Any], rules: DecodeRules) -> str | None:
    """The instance id of a parsed structured-mode event, found where `decode` finds it (the
    subject or the route's data field); None where decoding would reject the event first. For
    sources that key records themselves (event files), so an instance's records share a key."""
    if rules.reader is not None:
        return _mapped_instance_id(envelope, rules.reader, rules)
    event_type = envelope.get("type")
    route = rules.route(event_type) if isinstance(event_type, str) else None
    if route is None or not isinstance(event_type, str):
        return None
    data = envelope.get("data")
    value = (envelope.get("subject") if route.id_field is None
             else data.get(route.id_field) if isinstance(data, dict) else None)
    try:
        return _instance_id(value, route, "", event_type)
    except _Reject:
        return None


def _field(data: BaseModel | dict[str, Any], name: str) -> Any:
    """`dict(data).get(name)` without building the dict: `dict()` of a model first probes it for
    `keys`, a failed attribute lookup that costs as much as validating the payload."""
    if isinstance(data, dict):
        return data.get(name)
    if name.startswith("_"):  # `dict(model)` leaves private attributes out
        return None
    if name in data.__dict__:
        return data.__dict__[name]
    return (data.__pydantic_extra__ or {}).get(name)


def _sequence(value: str | int | None, event_id: str, event_type: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and not _DECIMAL.fullmatch(value):
        msg = (f"extension 'sequence' is {value!r}; flowkeeper orders by decimal sequences only: "
               "send a decimal string such as \"42\" or leave it out")
        raise _Reject("invalid_attribute", msg, event_id, event_type)
    return int(value)


def _trace_id(traceparent: Any) -> str | None:
    """The trace id of a well-formed traceparent; a broken one (or one that is not text) is
    dropped, never fatal."""
    if type(traceparent) is not str or _TRACEPARENT.fullmatch(traceparent) is None:
        return None
    trace_id = traceparent[3:35]
    # W3C trace context: version ff and all-zero ids are invalid.
    if (traceparent.startswith("ff") or trace_id == _ZERO_TRACE
            or traceparent.startswith(_ZERO_PARENT, 36)):
        return None
    return trace_id


_ZERO_TRACE, _ZERO_PARENT = "0" * 32, "0" * 16


_WHOLE = (str, int)  # what a format's sequence or data version may be (`MappingReader`)


def _flat_event(record: RawRecord, layout: FlatLayout, rules: DecodeRules) -> Event | None:
    """The one-call path of a flat format (`FlatLayout`), built as `_typed_event`. JSON: the
    attributes and payload validated by one `validate_json` on the bytes, with a model per raw
    type that pins the type and holds the newest payload. Avro: fastavro's dict holds the
    attributes typed by the writer schema already, so the one call validates its payload alone
    (JSON text or a record). Anything unusual (a failed validation, an older version, an
    attribute of another kind) returns None: `_mapped_event` then gives every dead letter its
    reason, so both ways reach the same verdict."""
    avro_value = layout.avro_value
    if avro_value is None:
        guess = layout.type_guess.search(record.value)
        if guess is None:
            return None
        key: bytes | str = guess.group(1)
    else:
        try:
            value = avro_value(record.value)
        except MappingFailed:
            return None
        raw_type = value.get(layout.keys[1]) if type(value) is dict else None
        if type(raw_type) is not str or not 0 < len(raw_type) <= 256:
            return None
        key = raw_type
    plan = rules.flat_plans.get(key, _UNPLANNED)
    if plan is _UNPLANNED:
        plan = rules.flat_plans[key] = _flat_plan(key, layout, rules)
    if plan is None:
        return None
    try:
        if avro_value is None:
            attributes = plan.validate(record.value).__dict__
        else:
            payload = value.get(layout.payload)
            (plan.validate_text if type(payload) is str else plan.validate)(payload)
            attributes = value
    except ValidationError:
        return None
    event_id, raw_time, instance, sequence, trace, version = map(attributes.get, plan.attributes)
    if (type(event_id) is not str or not 0 < len(event_id) <= 512 or instance is None
            or type(version) not in _VERSION_KINDS or version not in plan.versions
            or (sequence is not None and type(sequence) not in _WHOLE)):
        return None
    try:
        time = layout.to_time(raw_time)
    except ValueError:
        return None
    trace = _mapped_trace(trace) if type(trace) is str else None
    return _judged(record, rules, event_id, plan.event_type, plan.route, time, instance,
                   plan.id_route, sequence, trace)


_VERSION_KINDS = (str, int, type(None))  # `True` and `1.0` equal 1: the general path judges them


def _flat_plan(key: bytes | str, layout: FlatLayout, rules: DecodeRules) -> _FlatPlan | None:
    """The one-call path of a raw type, or None when its type has no route or payload model (the
    general path then says so)."""
    raw_type = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    event_type = layout.names.get(raw_type, raw_type)
    registry, route = rules.registry, rules.route(event_type)
    if route is None or not registry.knows(event_type):
        return None
    latest = registry.latest(event_type)
    payload_model = registry.models[(event_type, latest)]
    payload = payload_model.__pydantic_validator__
    if layout.avro_value is None:
        model = _flat_model(layout.keys, layout.payload, raw_type, payload_model)
        validate = validate_text = model.__pydantic_validator__.validate_json
        read = tuple(n if k is not None else None for n, k in zip(_FLAT_NAMES, layout.keys,
                                                                  strict=True))
    else:
        validate, validate_text, read = payload.validate_python, payload.validate_json, layout.keys
    return _FlatPlan(event_type, validate, validate_text, tuple(read[i] for i in _ATTRIBUTE_ORDER),
                     _newest_versions(latest), route, _named_route(route.workflow_type))


class _FlatValue(BaseModel):
    """The value of the flat path; lives only until its event is built (`_TypedEnvelope`)."""

    model_config = ConfigDict(cache_strings="none")


_FLAT_NAMES = ("id", "type", "time", "instance", "sequence", "trace", "version")  # = `keys`
_ATTRIBUTE_ORDER = (0, 2, 3, 4, 5, 6)  # what `_flat_event` reads: all but the type


@cache
def _flat_model(keys: tuple[str | None, ...], payload_key: str, raw_type: str,
                payload: type[BaseModel]) -> type[BaseModel]:
    """The JSON value of a flat format: the attributes at their keys (any value: judged after),
    the type pinned to `raw_type`, the payload `payload`."""
    fields: dict[str, Any] = {"type": (Literal[raw_type], Field(validation_alias=keys[1]))}
    for name, key in zip(_FLAT_NAMES, keys, strict=True):
        if key is not None and name != "type":  # an attribute not mapped is left out
            fields[name] = (Any, Field(None, validation_alias=key))
    fields["data"] = (payload, Field(validation_alias=payload_key))
    model: type[BaseModel] = create_model(f"{payload.__name__}Flat", __base__=_FlatValue,
                                          **fields)
    return model


def _mapped_event(record: RawRecord, reader: RecordReader, rules: DecodeRules) -> Event:
    """A record of another format, read by its mapping, then judged as a CloudEvent is: the same
    route, time range, payload validation and instance id, so both forms reach the same `Event`."""
    try:
        mapped = reader.read(record)
    except MappingFailed as e:
        raise _Reject(e.reason, e.message, e.event_id) from e
    event_id, event_type = mapped.event_id, mapped.event_type
    route = rules.route(event_type)
    if route is None:
        msg = (f"type {event_type!r} (format {reader.name!r}) belongs to no loaded workflow "
               "definition; add it to a definition or to the format's type names, or stop "
               "sending it to this input")
        raise _Reject("unknown_type", msg, event_id, event_type)
    if isinstance(mapped.time, str):
        time_ms = _time_ms(mapped.time, route, rules, record.arrived_ms, event_id, event_type)
    else:
        time_ms = _checked_ms(mapped.time, mapped.time, route, rules, record.arrived_ms,
                              event_id, event_type)
    data = _validated(mapped.data_version, mapped.data, rules.registry, event_id, event_type)
    instance = _mapped_instance(mapped, data, route, reader.name)
    return Event(event_id, event_type, time_ms, route.workflow_type, instance, record.source,
                 record.partition, record.offset, record.arrived_ms, _body_crc(record),
                 _sequence(mapped.sequence, event_id, event_type), _mapped_trace(mapped.trace_id))


def _mapped_instance(mapped: Mapped, data: BaseModel | dict[str, Any], route: Route,
                     format_name: str) -> str:
    """The instance id the format names, else the one the route finds in the payload."""
    if mapped.instance_id is None:
        if route.id_field is None:
            msg = (f"format {format_name!r} names no instance id and the {route.workflow_type!r} "
                   "definition takes it from the subject; map 'instance_id' in the format")
            raise _Reject("missing_attribute", msg, mapped.event_id, mapped.event_type)
        return _instance_id(_field(data, route.id_field), route, mapped.event_id,
                            mapped.event_type)
    return _instance_id(mapped.instance_id, _named_route(route.workflow_type), mapped.event_id,
                        mapped.event_type)


@cache
def _named_route(workflow_type: str) -> Route:
    """The route of an instance id the format names (made once per workflow type)."""
    return Route(workflow_type)


_TRACE_ID = re.compile(r"[0-9a-f]{32}")


def _mapped_trace(value: str | None) -> str | None:
    """A traceparent's trace id, or a bare trace id; anything else is dropped, never fatal."""
    if value is None:
        return None
    if len(value) == 55:  # a traceparent
        return _trace_id(value)
    if _TRACE_ID.fullmatch(value):
        return None if value == "0" * 32 else value
    return _trace_id(value)


def _mapped_instance_id(value: Mapping[str, Any], reader: RecordReader,
                        rules: DecodeRules) -> str | None:
    """`instance_id_of` for a format's parsed value (no key or headers: an event file's row)."""
    try:
        mapped = reader.read_object(value)
    except MappingFailed:
        return None
    route = rules.route(mapped.event_type)
    if route is None:
        return None
    try:
        return _mapped_instance(mapped, mapped.data, route, reader.name)
    except _Reject:
        return None

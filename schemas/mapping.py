"""Declarative formats: events as services already emit them, read into flowkeeper's event model
without a re-publisher.

A format names where each attribute is: a dotted `path` in the JSON value (`order.id`,
`items.0.sku`), a Kafka `header`, the record `key`, the message `timestamp`, or a `constant`.
Written as a bare string, a source is a path. Time is RFC 3339 text (the default), `epoch_s`,
`epoch_ms`, `epoch_us`, or a `strptime` pattern with a `zone` (or `%z`); the type goes through an
optional table of names (`order.placed: OrderPlaced`). The payload is the object at `payload`
(default: the whole value less the top-level keys the other attributes were read from), and
`fields` sets payload fields by name from any source.

```yaml
formats:
  shop:
    id: eventId
    type: {path: eventType, names: {order.placed: OrderPlaced}}
    time: {path: occurredAt, format: epoch_ms}
```

`base: debezium-outbox` reads what Debezium's outbox event router writes by default: the key is
the aggregate id (the instance id), header `id` the event id, the value the payload (a JSON
object, a JSON string, or either wrapped by Kafka Connect's JSON converter as
`{"schema": ..., "payload": ...}`), the type from header `eventType` and the time from the message
timestamp; any of them can be named instead. The format of that name with no entry reads
exactly those defaults.

`encoding: avro` reads values in Confluent's Avro wire format (`schemas.avro_wire`) into the value
the paths then read; Avro timestamps are read as the time as they are.

A record the format cannot read raises `MappingFailed` (dead letter `mapping_failed`) naming the
path; everything after (type known, time in range, payload valid) the decoder judges as for
CloudEvents.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from pydantic_core import from_json

from schemas.avro_wire import AvroDecoder, EpochMs
from schemas.bounded_read import read_bounded
from schemas.errors import ConfigError, DefinitionError
from schemas.event import RawRecord
from schemas.mapped import FlatLayout, Mapped, MappingFailed
from schemas.payloads.registry import PayloadRegistry

CLOUDEVENTS = "cloudevents"
DEBEZIUM_OUTBOX = "debezium-outbox"
BUILT_IN = (CLOUDEVENTS, DEBEZIUM_OUTBOX)
FORMATS_FILE = "formats.yaml"
MAX_FORMATS_BYTES = 262_144
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_EPOCH_SCALE = {"epoch_s": 1000, "epoch_ms": 1, "epoch_us": 0.001}
_DECIMAL = re.compile(r"-?[0-9]{1,19}(?:\.[0-9]{1,9})?")
_MISSING = object()


class Source(BaseModel):
    """Where one attribute is read from: exactly one of path, header, key, timestamp, constant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    header: str | None = None
    key: bool = False
    timestamp: bool = False
    constant: str | int | None = None
    optional: bool = False
    format: str | None = None  # time: rfc3339, epoch_s, epoch_ms, epoch_us or a strptime pattern
    zone: str | None = None  # time: the zone of a pattern's stamps without offset
    names: dict[str, str] | None = None  # type: the format's names -> definition types

    @model_validator(mode="before")
    @classmethod
    def _path_shorthand(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_place(self) -> Source:
        places = [self.path is not None, self.header is not None, self.key, self.timestamp,
                  self.constant is not None]
        if sum(places) != 1:
            msg = ("name exactly one of 'path', 'header', 'key: true', 'timestamp: true' or "
                   "'constant'")
            raise ValueError(msg)
        return self

    def describe(self) -> str:
        """Where it reads, as the user wrote it (for messages)."""
        if self.path is not None:
            return f"path {self.path!r}"
        if self.header is not None:
            return f"header {self.header!r}"
        return "the key" if self.key else "the message timestamp" if self.timestamp else (
            f"constant {self.constant!r}")


class FormatSpec(BaseModel):
    """One entry of `formats:`; see the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: Literal["json", "debezium-outbox"] = "json"
    encoding: Literal["json", "avro"] = "json"  # avro: Confluent's wire format (`avro_wire`)
    id: Source | None = None
    type: Source | None = None
    time: Source | None = None
    instance_id: Source | None = None
    sequence: Source | None = None
    trace_id: Source | None = None
    data_version: Source | None = None
    payload: Source | None = None  # None: the whole value (less what the attributes used)
    fields: dict[str, Source] = {}

    @field_validator("sequence", "trace_id", "data_version")
    @classmethod
    def _optional(cls, value: Source | None) -> Source | None:
        return value.model_copy(update={"optional": True}) if value is not None else None

    @model_validator(mode="after")
    def _needed(self) -> FormatSpec:
        if self.base == "json":
            missing = [n for n in ("id", "type", "time") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"map {', '.join(repr(n) for n in missing)} (or use "
                                 "'base: debezium-outbox' for its defaults)")
        return self


class FormatsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    formats: dict[str, FormatSpec]
    read: str | None = None  # OUT/input_format.yaml: the `--format` the run read with


def load_formats(file: Path) -> dict[str, FormatSpec]:
    """The formats of a `formats.yaml`; a `DefinitionError` names the file and the path in it."""
    return _formats_file(file).formats


def recorded_choice(file: Path) -> str:
    """The `--format` a run read with, from the `input_format.yaml` it wrote (one written before
    formats could be chosen per source holds one format: that one)."""
    parsed = _formats_file(file)
    if parsed.read is not None:
        return parsed.read
    (name,) = parsed.formats
    return name


def _formats_file(file: Path) -> FormatsFile:
    raw = read_bounded(file, MAX_FORMATS_BYTES, " of formats")
    try:
        document = yaml.safe_load(raw)
        parsed = FormatsFile.model_validate(document)
    except yaml.YAMLError as e:
        raise DefinitionError(f"{file}: not valid YAML: {e}") from e
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p not in ("function-after",)) or "(top)"
        msg = str(first.get("ctx", {}).get("error", first["msg"]))
        if first["type"] == "extra_forbidden":
            depth = len(first["loc"])
            model = FormatsFile if depth == 1 else FormatSpec if depth == 3 else Source
            msg = (f"unknown key {first['loc'][-1]!r}; the keys here are "
                   f"{', '.join(model.model_fields)}")
        raise DefinitionError(f"{file}: at {where}: {msg}") from e
    for name in parsed.formats:
        if name in BUILT_IN and name != DEBEZIUM_OUTBOX:
            raise DefinitionError(f"{file}: at formats.{name}: {name!r} is built in; "
                                  "give the format another name")
    return parsed


def check_format(name: str, spec: FormatSpec, known_types: set[str] | None,
                 registry: PayloadRegistry) -> list[str]:
    """Problems that would make every record of the format a dead letter, one line each: a type
    no definition knows (`known_types` None: any type is known), a payload field of no model, a
    time format that cannot be read."""
    problems = []
    at = f"format {name!r}"
    named = spec.type.names if spec.type is not None and spec.type.names else {}
    types = set(named.values())
    if spec.type is not None and spec.type.constant is not None:
        types.add(str(spec.type.constant))
    if known_types is not None:
        for event_type in sorted(types - known_types):
            problems.append(f"{at}: type {event_type!r} is known to no loaded definition; "
                            f"choose from {', '.join(sorted(known_types))}")
    checked = types or set(known_types or {t for t, _ in registry.models})
    model_fields = {f for (t, _), model in registry.models.items() if t in checked
                    for f in model.model_fields}
    for field in sorted(spec.fields):
        if field not in model_fields:
            problems.append(f"{at}: fields.{field} is a field of no payload model of its types; "
                            "name a field the payload models declare")
    if spec.time is not None:
        problem = _time_problem(spec.time)
        if problem:
            problems.append(f"{at}: time: {problem}")
    return problems


def _time_problem(source: Source) -> str | None:
    fmt = source.format or "rfc3339"
    if source.timestamp and source.format is not None:
        return "the message timestamp is epoch ms already; drop 'format'"
    if fmt in ("rfc3339", *_EPOCH_SCALE):
        return None if source.zone is None else "'zone' is for strptime patterns only"
    if "%" not in fmt:
        return (f"format {fmt!r} is none of rfc3339, epoch_s, epoch_ms, epoch_us and no strptime "
                "pattern")
    if source.zone is None and "%z" not in fmt:
        return f"pattern {fmt!r} has no %z: name the 'zone' its stamps are in"
    if source.zone is not None:
        try:
            ZoneInfo(source.zone)
        except (ZoneInfoNotFoundError, ValueError):
            return f"zone {source.zone!r} is not an IANA time zone such as 'Europe/Berlin'"
    return None


def format_spec(name: str, formats: dict[str, FormatSpec]) -> FormatSpec:
    """The spec a `--format` names: a `formats:` entry, or the built-in Debezium defaults."""
    if name in formats:
        return formats[name]
    if name == DEBEZIUM_OUTBOX:
        return FormatSpec(base="debezium-outbox")
    known = ", ".join([*BUILT_IN, *sorted(n for n in formats if n not in BUILT_IN)])
    raise ConfigError(f"--format {name!r} is neither built in nor in formats.yaml; choose from "
                      f"{known}")


Getter = Callable[[Any, RawRecord | None], Any]


class MappingReader:
    """A `FormatSpec` compiled into getters: reads records into `Mapped` (`RecordReader`)."""

    def __init__(self, name: str, spec: FormatSpec, avro: AvroDecoder | None = None) -> None:
        if spec.encoding == "avro" and avro is None:
            raise ConfigError(f"format {name!r} reads Avro: give --schema-registry-url or "
                              "--avro-schemas (a folder of <schema id>.avsc files)")
        self.name, self.spec, self.avro = name, spec, avro if spec.encoding == "avro" else None
        outbox = spec.base == "debezium-outbox"
        self._outbox = outbox
        self._id = self._getter("id", spec.id or Source(header="id"))
        self._type = self._getter("type", spec.type or Source(header="eventType"))
        self._time = self._getter("time", spec.time or Source(timestamp=True))
        default_instance = Source(key=True) if outbox else None
        instance = spec.instance_id or default_instance
        self._instance = self._getter("instance_id", instance) if instance else None
        self._optional = [(n, self._getter(n, s)) for n, s in (
            ("sequence", spec.sequence), ("trace_id", spec.trace_id),
            ("data_version", spec.data_version)) if s is not None]
        self._payload = self._getter("payload", spec.payload) if spec.payload else None
        self._fields = [(n, self._getter(f"fields.{n}", s)) for n, s in spec.fields.items()]
        # Top-level keys the attributes consume: left out of a whole-value payload.
        used = [spec.id, spec.type, spec.time, spec.instance_id, spec.sequence, spec.trace_id,
                spec.data_version, *spec.fields.values()]
        self._consumed = frozenset(s.path for s in used
                                   if s is not None and s.path is not None and "." not in s.path)
        self._nested = _read_tree([s.path for s in used
                                   if s is not None and s.path is not None and "." in s.path])
        self._names = (spec.type.names if spec.type is not None else None) or {}
        self._optional_names = [name for name, _ in self._optional]
        self._flat = _flat_keys([spec.id, spec.type, spec.time, instance, spec.sequence,
                                   spec.trace_id, spec.data_version])
        time = spec.time or Source(timestamp=True)
        self._to_time = _time_reader(time)
        # An Avro timestamp the time reads at the top level comes as `EpochMs`, not a datetime.
        self._epoch_fields = frozenset(
            [time.path] if time.path is not None and "." not in time.path
            and (time.format or "rfc3339") in ("rfc3339", *_EPOCH_SCALE) else [])
        self.layout = self._layout(spec)

    def _layout(self, spec: FormatSpec) -> FlatLayout | None:
        """The flat layout of a format whose attributes and payload are distinct top-level keys
        (no `fields`, no outbox unwrapping); None for any other, read by `read` alone."""
        payload = spec.payload
        if (self._flat is None or self._outbox or spec.fields or payload is None
                or payload.path is None or "." in payload.path or payload.path.isdigit()):
            return None
        keys = tuple(s.path if s is not None else None for s in (
            spec.id, spec.type, spec.time, spec.instance_id, spec.sequence, spec.trace_id,
            spec.data_version))
        used = [k for k in (*keys, payload.path) if k is not None]
        if len(set(used)) != len(used):
            return None
        avro, epochs = self.avro, self._epoch_fields
        guess = re.compile(re.escape(_json_key(keys[1] or "")) + rb'\s*:\s*"([^"\\]{1,256})"')
        return FlatLayout(keys, payload.path, self._names, self._to_time, guess,
                          None if avro is None else partial(avro.value, epoch_fields=epochs))

    def read(self, record: RawRecord) -> Mapped:
        if self.avro is not None:
            value = self.avro.value(record.value, self._epoch_fields)
            return self._mapped(value if type(value) is dict else self._unwrap(value), record)
        try:
            value = from_json(record.value)
        except ValueError as e:
            msg = f"format {self.name!r}: the value is not JSON ({e}); send one JSON object"
            raise MappingFailed("mapping_failed", msg) from e
        plain = type(value) is dict and not self._outbox
        return self._mapped(value if plain else self._unwrap(value), record)

    def read_object(self, value: Any) -> Mapped:
        return self._mapped(self._unwrap(value), None)

    def _unwrap(self, value: Any) -> Any:
        """The object the paths read: Connect's wrapping and a payload string undone (outbox)."""
        if self._outbox:
            value = _connect_payload(value)
            if isinstance(value, str):
                try:
                    value = from_json(value)
                except ValueError as e:
                    msg = (f"format {self.name!r}: the value is a string but not JSON ({e}); "
                           "the outbox payload must be a JSON object")
                    raise MappingFailed("mapping_failed", msg) from e
        if not isinstance(value, dict):
            msg = (f"format {self.name!r}: the value is a JSON {type(value).__name__}, not an "
                   "object")
            raise MappingFailed("mapping_failed", msg)
        return value

    def _mapped(self, value: dict[str, Any], record: RawRecord | None) -> Mapped:
        flat = self._flat
        if flat is not None:  # every attribute at a top-level key: read in one pass
            found = tuple(map(value.get, flat))
            if (type(found[0]) is str and 0 < len(found[0]) <= 512
                    and type(found[1]) is str and 0 < len(found[1]) <= 256
                    and found[2] is not None and found[3] is not None):
                event_id, raw_type = found[0], found[1]
                return self._built(value, record, event_id, self._names.get(raw_type, raw_type),
                                   found[2], found[3], zip(self._optional_names, found[4:],
                                                           strict=True))
        event_id = self._id(value, record)
        if type(event_id) is not str or not 0 < len(event_id) <= 512:
            event_id = self._event_id(event_id)
        raw_type = self._type(value, record)
        if type(raw_type) is not str or not 0 < len(raw_type) <= 256:
            raise self._failed("type", f"{_shown(raw_type)} is no event type (text of 1 to 256 "
                               "characters)", event_id)
        event_type = self._names.get(raw_type, raw_type)
        raw_time = self._time(value, record)
        return self._built(value, record, event_id, event_type, raw_time, None,
                           ((name, get(value, record)) for name, get in self._optional))

    def _built(self, value: dict[str, Any], record: RawRecord | None, event_id: str,
               event_type: str, raw_time: Any, instance: Any,
               optional: Iterable[tuple[str, Any]]) -> Mapped:
        """The `Mapped` of attributes found (`instance` None: read it with its getter; an
        optional attribute that is `_MISSING` or null is left out)."""
        try:
            time = self._to_time(raw_time)
        except ValueError as e:
            raise self._failed("time", str(e), event_id) from e
        nested = self._nested
        data = self._payload(value, record) if self._payload else (
            {k: v for k, v in value.items() if k not in self._consumed and not (
                k in nested and _all_read(v, nested[k]))}
            if self._consumed or nested else value)
        if type(data) is str:  # a payload column or Avro field holding JSON text
            with contextlib.suppress(ValueError):  # not JSON: judged just below
                data = from_json(data)
        if type(data) is not dict and not isinstance(data, dict):
            raise self._failed("payload", f"{_shown(data)} is not a JSON object", event_id)
        if self._fields:
            data = dict(data)
            for name, get in self._fields:
                found = get(value, record)
                if found is not _MISSING:
                    data[name] = found
        mapped = Mapped(event_id, event_type, time, data)
        if instance is None and self._instance is not None:
            instance = self._instance(value, record)
        if instance is not None:
            mapped.instance_id = None if instance is _MISSING else instance  # None: the route's
        for name, found in optional:
            kind = type(found)
            if found is _MISSING or found is None:
                continue
            if name == "trace_id":
                if kind is str or isinstance(found, str):  # a broken one is dropped, never fatal
                    mapped.trace_id = found
            elif kind is not str and kind is not int and (isinstance(found, bool)
                                                          or not isinstance(found, str | int)):
                raise self._failed(name, f"{_shown(found)} is not a whole number", event_id)
            elif name == "sequence":
                mapped.sequence = found
            else:
                mapped.data_version = found
        return mapped

    def _event_id(self, found: Any) -> str:
        """An id that is not plain text: a whole number as text, anything else a failure."""
        if isinstance(found, int) and not isinstance(found, bool):
            found = str(found)
        if not isinstance(found, str) or not 0 < len(found) <= 512:
            raise self._failed("id", f"{_shown(found)} is no event id (text of 1 to 512 "
                               "characters)")
        return found

    def _failed(self, attribute: str, problem: str, event_id: str | None = None) -> MappingFailed:
        source = {"id": self.spec.id or Source(header="id"),
                  "type": self.spec.type or Source(header="eventType"),
                  "time": self.spec.time or Source(timestamp=True)}.get(attribute)
        where = f" ({source.describe()})" if source is not None else ""
        return MappingFailed("mapping_failed",
                             f"format {self.name!r}: {attribute}{where}: {problem}", event_id)

    def _getter(self, attribute: str, source: Source) -> Getter:
        """A function of (value, record) giving the attribute; a required one that is absent
        raises `MappingFailed` naming where it looked, an optional one gives `_MISSING`."""
        where = f"format {self.name!r}: {attribute} ({source.describe()})"
        optional = source.optional or attribute in ("sequence", "trace_id", "data_version") or (
            attribute.startswith("fields."))

        def absent() -> Any:
            if optional:
                return _MISSING
            raise MappingFailed("mapping_failed", f"{where}: nothing there; the format needs it")

        if source.constant is not None:
            constant = source.constant
            return lambda value, record: constant
        if source.path is not None:
            steps = [int(s) if s.isdigit() else s for s in source.path.split(".")]
            if len(steps) == 1 and isinstance(steps[0], str):  # the common case, one lookup
                name = steps[0]

                def at_key(value: dict[str, Any], record: RawRecord | None) -> Any:
                    found = value.get(name)  # the value is a dict (`_unwrap`)
                    return absent() if found is None else found
                return at_key

            def at_path(value: Any, record: RawRecord | None) -> Any:
                for step in steps:
                    value = _step(value, step)
                    if value is _MISSING:
                        return absent()
                return absent() if value is None else value
            return at_path
        if source.header is not None:
            name = source.header

            def in_header(value: Any, record: RawRecord | None) -> Any:
                if record is None:
                    return absent()
                for key, raw in record.headers:
                    if key == name and raw is not None:
                        try:
                            return raw.decode("utf-8")
                        except UnicodeDecodeError as e:
                            msg = f"{where}: not UTF-8 text"
                            raise MappingFailed("mapping_failed", msg) from e
                return absent()
            return in_header
        if source.key:
            outbox = self._outbox

            def in_key(value: Any, record: RawRecord | None) -> Any:
                if record is None or not record.key:
                    return absent()
                try:
                    text = record.key.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise MappingFailed("mapping_failed", f"{where}: not UTF-8 text") from e
                return _connect_key(text) if outbox else text
            return in_key

        def stamp(value: Any, record: RawRecord | None) -> Any:
            return record.arrived_ms if record is not None and record.arrived_ms > 0 else absent()
        return stamp


def _json_key(key: str) -> bytes:
    """A key as it is written in JSON (quoted, escaped)."""
    return json.dumps(key, ensure_ascii=False).encode()


def _flat_keys(sources: list[Source | None]) -> tuple[str, ...] | None:
    """The top-level keys the id, type, time, instance id and the optional attributes that are
    set read, in that order, when every one of them reads such a key; None otherwise (null or
    absent values then take the attribute's getter, which says what is missing)."""
    required, optional = sources[:4], [s for s in sources[4:] if s is not None]
    if any(s is None for s in required[:3]) or any(
            s is not None and (s.path is None or "." in s.path or s.path.isdigit())
            for s in (*required, *optional)):
        return None
    if required[3] is None:
        return None
    return tuple(s.path for s in (*required, *optional) if s is not None and s.path)


ReadTree = dict[str, "ReadTree"]
"""The nested paths the attributes read, as a tree of keys; an empty tree: read whole."""


def _read_tree(paths: list[str]) -> ReadTree:
    """The tree of `paths` (`customer.id` -> {"customer": {"id": {}}}); a list is never read
    whole (`_all_read`), so a path through an index keeps its list."""
    tree: ReadTree = {}
    for path in paths:
        node = tree
        for step in path.split("."):
            node = node.setdefault(step, {})
    return tree


def _all_read(value: Any, read: ReadTree) -> bool:
    """Whether the attributes read all of `value`: every key of an object, each one read whole or
    all of it read in turn. Such an object leaves a whole-value payload; one with anything else
    stays in it whole (`customer.id` read from `{"customer": {"id": .., "name": ..}}` keeps
    `customer` as it is, so a payload model with a `customer` still finds all of it)."""
    if not read:
        return True
    if not isinstance(value, dict) or not value:
        return False
    return all(key in read and _all_read(child, read[key]) for key, child in value.items())


def _step(value: Any, step: int | str) -> Any:
    """One step of a path: a list index or an object key (`_MISSING` when there is none)."""
    if isinstance(value, list) and isinstance(step, int):
        return value[step] if step < len(value) else _MISSING
    if isinstance(value, dict):
        return value.get(str(step), _MISSING)
    return _MISSING


def _connect_payload(value: Any) -> Any:
    """Kafka Connect's JSON converter with schemas wraps a value as {"schema", "payload"}."""
    if isinstance(value, dict) and value.keys() == {"schema", "payload"}:
        return value["payload"]
    return value


def _connect_key(text: str) -> Any:
    """The aggregate id of an outbox key: plain text (string converter), a JSON string, or Kafka
    Connect's {"schema", "payload"} wrapping of either."""
    if not text.startswith(("{", '"')):
        return text
    try:
        parsed = _connect_payload(from_json(text))
    except ValueError:
        return text
    return parsed if isinstance(parsed, str | int) and not isinstance(parsed, bool) else text


def _time_reader(source: Source) -> Callable[[Any], str | int]:
    """Turns the raw time into RFC 3339 text (judged by the decoder) or UTC ms; ValueError names
    what was expected."""
    if source.timestamp:
        return lambda raw: int(raw)
    fmt = source.format or "rfc3339"
    if fmt == "rfc3339":
        def rfc3339(raw: Any) -> str | int:
            if type(raw) is EpochMs:  # an Avro timestamp (`schemas.avro_wire`)
                return int(raw)
            if isinstance(raw, datetime) and raw.tzinfo is not None:  # Avro's timestamp types
                return (raw - _EPOCH) // _MS
            if not isinstance(raw, str):
                raise ValueError(f"{_shown(raw)} is not RFC 3339 text such as "
                                 "'2026-01-01T10:00:00Z'")
            return raw
        return rfc3339
    if fmt in _EPOCH_SCALE:
        scale = _EPOCH_SCALE[fmt]

        def epoch(raw: Any) -> str | int:
            if type(raw) is EpochMs:  # an Avro timestamp (`schemas.avro_wire`)
                return int(raw)
            if isinstance(raw, datetime) and raw.tzinfo is not None:  # Avro's timestamp types
                return (raw - _EPOCH) // _MS
            if isinstance(raw, str) and _DECIMAL.fullmatch(raw):
                raw = float(raw) if "." in raw else int(raw)
            if isinstance(raw, bool) or not isinstance(raw, int | float) or raw != raw:
                raise ValueError(f"{_shown(raw)} is not a number of {fmt[6:]} since 1970 ({fmt})")
            if isinstance(raw, int) and scale == 1:
                return raw
            return int(raw * scale // 1) if scale != 0.001 else int(raw // 1000)
        return epoch
    zone = ZoneInfo(source.zone) if source.zone else None

    def pattern(raw: Any) -> str | int:
        if not isinstance(raw, str):
            raise ValueError(f"{_shown(raw)} is not text in the pattern {fmt!r}")
        try:
            moment = datetime.strptime(raw, fmt)  # noqa: DTZ007 (the zone is set just below)
        except ValueError as e:
            raise ValueError(f"{_shown(raw)} does not match the pattern {fmt!r}") from e
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        return (moment - _EPOCH) // _MS
    return pattern


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def known_types_of(routes: Iterable[str], catch_all: bool) -> set[str] | None:
    """The types a run's definitions route (None: a case-tracking definition takes any)."""
    return None if catch_all else set(routes)

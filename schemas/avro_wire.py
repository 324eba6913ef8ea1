"""Avro in Confluent's wire format: magic byte 0, the writer schema's id (4 bytes, big-endian),
then the record in Avro binary encoding, decoded with fastavro into the plain value a format's
mapping reads (`schemas.mapping`).

Schemas come from a `SchemaLookup`: a schema registry (`connectors.schema_registry`) or local
`.avsc` files named by their id (`local_schemas`). A lookup answers None for an id it does not
know (dead letter `unknown_schema`); parsed schemas are cached per id.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader
from fastavro.schema import SchemaParseException

from schemas.errors import ConfigError
from schemas.mapped import MappingFailed

SchemaLookup = Callable[[int], dict[str, Any] | None]
"""The writer schema (parsed Avro JSON) of a schema id, or None when there is none."""

MAGIC = 0


class EpochMs(int):
    """A top-level Avro `timestamp-millis` or `timestamp-micros` field read as UTC milliseconds
    instead of a datetime (`AvroDecoder.value`'s `epoch_fields`): building the datetime and
    turning it back into milliseconds was a fifth of the Avro decoding time. The time readers of
    `schemas.mapping` take it as the instant it is."""

    __slots__ = ()


class AvroDecoder:
    """Confluent-framed Avro bytes to a value; the parsed schema of each id is kept."""

    def __init__(self, lookup: SchemaLookup) -> None:
        self.lookup = lookup
        # By the record's first 5 bytes (magic byte and schema id): a known one needs no check.
        self.parsed: dict[tuple[bytes, frozenset[str]], tuple[Any, list[tuple[str, int]]]] = {}

    def value(self, raw: bytes, epoch_fields: frozenset[str] = frozenset()) -> Any:
        """The decoded record, its top-level timestamp fields named in `epoch_fields` as
        `EpochMs`; `MappingFailed` (`unknown_schema`, `mapping_failed`) otherwise."""
        header = raw[:5]
        parsed = self.parsed.get((header, epoch_fields))
        if parsed is None:
            if len(raw) < 5 or raw[0] != MAGIC:
                msg = (f"not Avro in Confluent's wire format: {len(raw)} bytes starting "
                       f"{header.hex() or 'with nothing'}; expected magic byte 00 and a 4-byte "
                       "schema id")
                raise MappingFailed("mapping_failed", msg)
            parsed = self._parsed(header, epoch_fields)
        schema, epochs = parsed
        stream = io.BytesIO(raw)
        stream.seek(5)
        try:
            value: Any = schemaless_reader(stream, schema, None)
        except (EOFError, StopIteration, ValueError, IndexError, UnicodeDecodeError) as e:
            schema_id = int.from_bytes(header[1:], "big")
            msg = (f"Avro record of schema id {schema_id} cannot be read ({type(e).__name__}: "
                   f"{e or 'truncated'}); the bytes are cut short or written with another schema")
            raise MappingFailed("mapping_failed", msg) from e
        if stream.tell() != len(raw):
            schema_id = int.from_bytes(header[1:], "big")
            msg = (f"Avro record of schema id {schema_id} ends {len(raw) - stream.tell()} bytes "
                   "before the value does; it was written with another schema")
            raise MappingFailed("mapping_failed", msg)
        for name, divisor in epochs:
            found = value[name]
            if found is not None:
                value[name] = EpochMs(found // divisor)
        return value

    def _parsed(self, header: bytes, epoch_fields: frozenset[str]) -> tuple[Any,
                                                                            list[tuple[str, int]]]:
        """The parsed writer schema of a record's header, the `epoch_fields` it has as timestamps
        read as plain longs, and those fields with the divisor to milliseconds."""
        schema_id = int.from_bytes(header[1:], "big")
        found = self.lookup(schema_id)
        if found is None:
            msg = (f"Avro schema id {schema_id} is unknown to the schema registry (or the "
                   "--avro-schemas folder); register it, or check which registry the "
                   "producer writes to")
            raise MappingFailed("unknown_schema", msg)
        try:
            plain, epochs = _plain_timestamps(found, epoch_fields)
            parsed = self.parsed[(header, epoch_fields)] = parse_schema(plain), epochs
        except (SchemaParseException, ValueError, TypeError, KeyError) as e:
            msg = f"Avro schema id {schema_id} is no valid Avro schema: {e}"
            raise MappingFailed("unknown_schema", msg) from e
        return parsed


_DIVISORS = {"timestamp-millis": 1, "timestamp-micros": 1000}


def _plain_timestamps(schema: dict[str, Any], names: frozenset[str]
                      ) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """A copy of a record schema whose top-level fields in `names` that are UTC timestamps (or
    nullable ones) are plain longs, and those fields with their divisor to milliseconds."""
    fields = schema.get("fields") if names and schema.get("type") == "record" else None
    if not isinstance(fields, list):
        return schema, []
    epochs: list[tuple[str, int]] = []
    copied = []
    for field in fields:
        kind = field.get("type") if isinstance(field, dict) else None
        members = kind if isinstance(kind, list) else [kind]
        stamps = [m for m in members if isinstance(m, dict) and m.get("type") == "long"
                  and m.get("logicalType") in _DIVISORS]
        if field.get("name") in names and len(stamps) == 1 and len(members) <= 2 and all(
                m == "null" or m is stamps[0] for m in members):
            epochs.append((field["name"], _DIVISORS[stamps[0]["logicalType"]]))
            field = {**field, "type": (["null" if m == "null" else "long" for m in members]
                                       if isinstance(kind, list) else "long")}
        copied.append(field)
    return {**schema, "fields": copied}, epochs


def local_schemas(folder: Path) -> SchemaLookup:
    """Schemas from `<id>.avsc` files in `folder`, read up front (a `ConfigError` names a file
    that is not an Avro schema)."""
    if not folder.is_dir():
        raise ConfigError(f"--avro-schemas {folder}: no such folder; name a folder of "
                          "<schema id>.avsc files")
    schemas: dict[int, dict[str, Any]] = {}
    for file in sorted(folder.glob("*.avsc")):
        if not file.stem.isdigit():
            raise ConfigError(f"{file}: name Avro schema files by their schema id, e.g. 42.avsc")
        try:
            schema = json.loads(file.read_text("utf-8"))
            parse_schema(schema)
        except (SchemaParseException, ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"{file}: not an Avro schema: {e}") from e
        schemas[int(file.stem)] = schema
    return schemas.get


def saving_schemas(lookup: SchemaLookup, folder: Path) -> SchemaLookup:
    """`lookup`, each schema it finds also written to `folder/<id>.avsc` (once per id, atomically:
    a temporary file renamed), so a replay reads them there without the registry."""
    saved: set[int] = set()

    def found(schema_id: int) -> dict[str, Any] | None:
        schema = lookup(schema_id)
        if schema is not None and schema_id not in saved:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{schema_id}.avsc"
            temporary = folder / f".{schema_id}.avsc.{os.getpid()}.{threading.get_ident()}"
            temporary.write_text(json.dumps(schema, indent=1), "utf-8")
            temporary.replace(path)
            saved.add(schema_id)
        return schema
    return found

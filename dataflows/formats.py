"""The input format a run reads (`--format`), loaded and checked before anything runs: a format
that names a type no definition knows or a field of no payload model stops the run with one line
naming it (`schemas.mapping`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import yaml

from connectors.schema_registry import SchemaRegistry
from dataflows.settings import Settings
from schemas.avro_wire import AvroDecoder, local_schemas
from schemas.decode import DecodeRules
from schemas.errors import ConfigError, DefinitionError
from schemas.mapping import (
    CLOUDEVENTS,
    FORMATS_FILE,
    FormatSpec,
    MappingReader,
    check_format,
    format_spec,
    known_types_of,
    load_formats,
)
from schemas.payloads.bundled import bundled_registry
from schemas.payloads.registry import PayloadRegistry
from state.catalog import Catalog


def formats_file(definitions: Path, named: Path | None) -> Path | None:
    """The formats file: the one named, else `formats.yaml` beside the definitions, if any."""
    if named is not None:
        if not named.is_file():
            raise ConfigError(f"--formats {named}: no such file; name the YAML file holding "
                              "'formats:'")
        return named
    folder = definitions if definitions.is_dir() else definitions.parent
    found = folder / FORMATS_FILE
    return found if found.is_file() else None


def loaded_formats(definitions: Path, named: Path | None) -> dict[str, FormatSpec]:
    """Every format of the formats file (none without one)."""
    file = formats_file(definitions, named)
    return load_formats(file) if file is not None else {}


def check_formats(formats: dict[str, FormatSpec], catalog: Catalog,
                  registry: PayloadRegistry) -> list[str]:
    """The problems of every format against the loaded definitions and payload models."""
    rules = catalog.decode_rules(registry)
    known = known_types_of(rules.routes, rules.catch_all is not None)
    return [p for name, spec in sorted(formats.items())
            for p in check_format(name, spec, known, registry)]


def run_reader(settings: Settings, catalog: Catalog) -> MappingReader | None:
    """The reader of `--format` (None: CloudEvents, today's decoder), checked against the
    definitions; a `DefinitionError` (one line per problem) or `ConfigError` stops the run."""
    return named_reader(settings.source.format, settings.definitions, settings.source.formats,
                        catalog, lambda: avro_decoder(settings))


def named_reader(name: str, definitions: Path, named: Path | None, catalog: Catalog,
                 avro: Callable[[], AvroDecoder | None] = lambda: None) -> MappingReader | None:
    """The checked reader of the format `name` (None: CloudEvents)."""
    formats = loaded_formats(definitions, named)
    if name == CLOUDEVENTS:
        return None
    spec = format_spec(name, formats)
    problems = check_formats({name: spec}, catalog, bundled_registry())
    if problems:
        raise DefinitionError("\n".join(problems))
    return MappingReader(name, spec, avro() if spec.encoding == "avro" else None)


def archive_rules(args: argparse.Namespace, catalog: Catalog) -> DecodeRules:
    """Rules decoding a run's archive as the run did (`dataflows.format_flags`)."""
    rules = catalog.decode_rules(bundled_registry())
    reader = named_reader(args.format, args.definitions, args.formats, catalog)
    return rules if reader is None else replace(rules, reader=reader)


def avro_decoder(settings: Settings) -> AvroDecoder | None:
    """Avro schemas from the registry (checked reachable now) or the local folder; None when
    neither is set (`MappingReader` then says what to give)."""
    source = settings.source
    if source.schema_registry_url:
        password = source.schema_registry_password
        registry = SchemaRegistry(source.schema_registry_url, source.schema_registry_username,
                                  password.get_secret_value() if password else None,
                                  source.schema_registry_ca)
        registry.check()
        return AvroDecoder(registry.schema)
    if source.avro_schemas is not None:
        return AvroDecoder(local_schemas(source.avro_schemas))
    return None


def with_format(rules: DecodeRules, settings: Settings, catalog: Catalog) -> DecodeRules:
    """The rules reading the run's `--format`."""
    reader = run_reader(settings, catalog)
    return rules if reader is None else replace(rules, reader=reader)


RUN_FORMAT_FILE = "input_format.yaml"
"""Written into a run's --out: the one format its input was read with, so `replay` reads the
archive the same way without being told."""


def record_format(settings: Settings) -> None:
    """Keep the run's format beside its outputs (none for CloudEvents)."""
    path = settings.out / RUN_FORMAT_FILE
    name = settings.source.format
    if name == CLOUDEVENTS:
        path.unlink(missing_ok=True)
        return
    spec = format_spec(name, loaded_formats(settings.definitions, settings.source.formats))
    settings.out.mkdir(parents=True, exist_ok=True)
    document = {"formats": {name: spec.model_dump(mode="json", exclude_defaults=True)}}
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def recorded_format(out: Path) -> tuple[str, Path] | None:
    """The format a run in `out` read (its name and the file holding it), if it left one."""
    path = out / RUN_FORMAT_FILE
    if not path.is_file():
        return None
    (name,) = load_formats(path)
    return name, path

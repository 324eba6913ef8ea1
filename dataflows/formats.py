"""The input formats a run reads (`--format`, a default and per-file or per-topic choices,
`schemas.format_choice`), loaded and checked before anything runs: a format that names a type no
definition knows or a field of no payload model, an unknown format or a pattern that matches
nothing this run reads stops the run with one line naming it (`schemas.mapping`)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import yaml

from connectors.schema_registry import SchemaRegistry
from dataflows.settings import Settings
from schemas.avro_wire import AvroDecoder, local_schemas, saving_schemas
from schemas.decode import DecodeRules
from schemas.errors import ConfigError, DefinitionError
from schemas.format_choice import FormatChoice, chosen_rules, parse_choice
from schemas.mapping import (
    CLOUDEVENTS,
    FORMATS_FILE,
    FormatSpec,
    MappingReader,
    check_format,
    format_spec,
    known_types_of,
    load_formats,
    recorded_choice,
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


def run_choice(settings: Settings) -> FormatChoice:
    """`--format` parsed; a pattern that matches none of the files the run reads stops it with
    one line. Topic patterns are not checked: a run reads one topic, so one choice shared by the
    runs of several topics names topics this one does not read (a replay reads the choice its run
    recorded)."""
    choice = parse_choice(settings.source.format)
    if settings.source.kind != "file":
        return choice
    names = [Path(p).name for p in settings.source.files]
    unmatched = choice.unmatched(names)
    if unmatched:
        raise ConfigError(f"--format {settings.source.format!r}: {unmatched[0]!r} matches no "
                          f"file this run reads ({', '.join(names)}); fix the pattern or drop it")
    return choice


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


def choice_rules(rules: DecodeRules, choice: FormatChoice, definitions: Path, named: Path | None,
                 catalog: Catalog, avro: Callable[[], AvroDecoder | None]) -> DecodeRules:
    """`rules` reading each source in its chosen format, every format checked against the
    definitions first; one Avro decoder (one schema cache) serves all Avro formats."""
    decoders: list[AvroDecoder | None] = []

    def shared() -> AvroDecoder | None:
        if not decoders:
            decoders.append(avro())
        return decoders[0]
    return chosen_rules(rules, choice,
                        lambda name: named_reader(name, definitions, named, catalog, shared))


def archive_rules(args: argparse.Namespace, catalog: Catalog) -> DecodeRules:
    """Rules decoding a run's archive as the run did (`dataflows.format_flags`): its recorded
    formats and the Avro schemas it saved, unless `--format` says otherwise."""
    rules = catalog.decode_rules(bundled_registry())
    out = getattr(args, "out", None)
    recorded = recorded_format(out) if out is not None and args.format is None else None
    text, named = recorded if recorded is not None else (args.format or CLOUDEVENTS,
                                                         args.formats)
    saved = out / AVRO_SCHEMAS_DIR if out is not None else None

    def avro() -> AvroDecoder | None:
        return (AvroDecoder(local_schemas(saved)) if saved is not None and saved.is_dir()
                else None)
    return choice_rules(rules, parse_choice(text), args.definitions, named, catalog, avro)


AVRO_SCHEMAS_DIR = "avro_schemas"
"""Written into a run's --out: each Avro schema the run fetched, as <id>.avsc, so a replay (and
`inspect`, `console`) decodes the archive without the registry."""


def avro_decoder(settings: Settings) -> AvroDecoder | None:
    """Avro schemas from the registry (checked reachable now) or the local folder, each one
    fetched also saved in OUT/avro_schemas; None when neither is set (`MappingReader` then says
    what to give)."""
    source = settings.source
    if source.schema_registry_url:
        password = source.schema_registry_password
        registry = SchemaRegistry(source.schema_registry_url, source.schema_registry_username,
                                  password.get_secret_value() if password else None,
                                  source.schema_registry_ca)
        registry.check()
        return AvroDecoder(saving_schemas(registry.schema, settings.out / AVRO_SCHEMAS_DIR))
    if source.avro_schemas is not None:
        lookup = local_schemas(source.avro_schemas)
        if source.avro_schemas.resolve() == (settings.out / AVRO_SCHEMAS_DIR).resolve():
            return AvroDecoder(lookup)
        return AvroDecoder(saving_schemas(lookup, settings.out / AVRO_SCHEMAS_DIR))
    return None


def with_format(rules: DecodeRules, settings: Settings, catalog: Catalog) -> DecodeRules:
    """The rules reading the run's `--format`, per source where it chooses per file or topic."""
    return choice_rules(rules, run_choice(settings), settings.definitions,
                        settings.source.formats, catalog, lambda: avro_decoder(settings))


RUN_FORMAT_FILE = "input_format.yaml"
"""Written into a run's --out: the formats its input was read with and which source read which
(`read:`, the `--format` value), so `replay` reads the archive the same way without being told."""


def record_format(settings: Settings) -> None:
    """Keep the run's formats beside its outputs (none for CloudEvents only)."""
    path = settings.out / RUN_FORMAT_FILE
    choice = parse_choice(settings.source.format)
    if choice.names == [CLOUDEVENTS]:
        path.unlink(missing_ok=True)
        return
    formats = loaded_formats(settings.definitions, settings.source.formats)
    used = {name: format_spec(name, formats).model_dump(mode="json", exclude_defaults=True)
            for name in choice.names if name != CLOUDEVENTS}
    settings.out.mkdir(parents=True, exist_ok=True)
    document = {"read": choice.text(), "formats": used}
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(yaml.safe_dump(document, sort_keys=False))
    temporary.replace(path)


def recorded_format(out: Path) -> tuple[str, Path] | None:
    """The `--format` a run in `out` read with and the file holding its formats, if it left
    one."""
    path = out / RUN_FORMAT_FILE
    if not path.is_file():
        return None
    return recorded_choice(path), path

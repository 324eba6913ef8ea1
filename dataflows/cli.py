"""The `flowkeeper` command line: `flowkeeper --help`, and `--help` on every command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dataflows.analysis_cli import add_inspect, add_report
from dataflows.archive_cli import add_import_log, add_replay, add_verify
from dataflows.bench_cli import add_bench
from dataflows.console_cli import add_console
from dataflows.kafka_tools import add_produce, add_tail, add_topics
from dataflows.load_duckdb import add_load_duckdb
from dataflows.run_command import cmd_run, settings_arguments
from dataflows.settings import field_info
from schemas.errors import FlowkeeperError

if TYPE_CHECKING:
    from state.catalog import Catalog


def cmd_check_definitions(args: argparse.Namespace) -> int:
    """Load and statically check definitions; print what each defines."""
    from state.catalog import load_catalog
    from state.definition import StateMachine

    catalog = load_catalog(Path(args.path))
    for definition in catalog.all():
        kind = (f"{len(definition.states)} states" if isinstance(definition, StateMachine)
                else "case tracking")
        source = catalog.files[(definition.workflow, definition.version)]
        print(f"ok  {definition.workflow} v{definition.version}: {kind}, "
              f"{len(definition.event_types())} event types  ({source})")
    for name, calendar in sorted(catalog.calendars.items()):
        weekly = sum(end - start for day in calendar.hours for start, end in day)
        print(f"ok  calendar {name}: {calendar.zone.key}, {weekly / 3_600_000:g}h a week, "
              f"{len(calendar.holidays)} holidays")
    return _check_formats(catalog, Path(args.path), args.formats)


def _check_formats(catalog: Catalog, definitions: Path, named: Path | None) -> int:
    """The formats beside the definitions (or `--formats`), checked against them."""
    from dataflows.formats import check_formats, formats_file, loaded_formats
    from schemas.errors import DefinitionError
    from schemas.payloads.bundled import bundled_registry

    formats = loaded_formats(definitions, named)
    problems = check_formats(formats, catalog, bundled_registry())
    if problems:
        raise DefinitionError("\n".join(f"{formats_file(definitions, named)}: {p}"
                                        for p in problems))
    for name in sorted(formats):
        print(f"ok  format {name}  ({formats_file(definitions, named)})")
    return 0


Handler = Callable[[argparse.Namespace], int]


def _add_run(sub: Any) -> Handler:
    run = sub.add_parser("run",
                         help="run the pipeline (default: the embedded simulator) into --out",
                         description="Run the main dataflow and print a summary at the end.")
    run.add_argument("files", nargs="*", type=Path, metavar="PATH", help=(
        "with --source file: the event files to read, e.g. `flowkeeper run --source file "
        "events/*.jsonl.gz` (" + field_info("files").description + ")"))
    settings_arguments(run)
    run.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    return cmd_run


def _add_check_definitions(sub: Any) -> Handler:
    check = sub.add_parser("check-definitions", help="validate workflow definition files",
                           description="Load and statically check workflow definitions; "
                           "exit 2 with the file, the path in it and a fix on the first problem.")
    check.add_argument("path", help="a definition YAML file or a folder of them")
    check.add_argument("--formats", type=Path, default=None, help=(
        "the formats file to check too (default: formats.yaml in the folder, if there is one)"))
    return cmd_check_definitions


# Each command module contributes one `add_*(subparsers) -> handler` function here.
COMMANDS: list[Callable[[Any], Handler]] = [
    _add_run, _add_check_definitions, add_replay, add_verify, add_import_log, add_report,
    add_inspect, add_console, add_topics, add_produce, add_tail, add_bench, add_load_duckdb,
]


def parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    main = argparse.ArgumentParser(prog="flowkeeper",
                                   description="Watch and drive business workflows "
                                   "from event streams (Bytewax).")
    sub = main.add_subparsers(dest="command", required=True, metavar="COMMAND")
    handlers: dict[str, Handler] = {}
    for add in COMMANDS:
        before = set(sub.choices)
        handler = add(sub)
        (name,) = set(sub.choices) - before
        handlers[name] = handler
    return main, handlers


def main(argv: Sequence[str] | None = None) -> int:
    main_parser, handlers = parser()
    args: Any = main_parser.parse_args(argv)
    try:
        return handlers[args.command](args)
    except FlowkeeperError as e:
        print(f"flowkeeper {args.command}: error: {e}", file=sys.stderr)
        return e.exit_status


if __name__ == "__main__":
    sys.exit(main())

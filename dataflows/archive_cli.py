"""The `replay`, `verify` and `import-log` commands: replay what really happened, compare runs,
and turn process-mining logs into archives."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.errors import ConfigError
from state.durations import parse_business, parse_deadline_duration

Handler = Callable[[argparse.Namespace], int]


def _not_for_replay(name: str) -> bool:
    """Settings a replay takes from its ARCHIVE argument or never uses (it sends nothing to Kafka:
    a what-if run must not issue real commands)."""
    return (name in ("source", "archive_path", "idle_grace")
            or name.startswith(("sim_", "kafka_")) or name.endswith("_topic"))


def add_replay(sub: Any) -> Handler:
    from dataflows.run_command import settings_arguments
    from dataflows.settings import FLAGS

    replay = sub.add_parser(
        "replay", help="feed an input archive through the same dataflow into --out",
        description="Replay an archive through the same dataflow: one source partition per "
        "archived input partition, in archived order, so every verdict is reproduced. Give other "
        "--definitions (a tighter deadline) for a what-if run into another --out, and compare the "
        "two with `flowkeeper verify`. Event time only: the wall clock is never used. "
        "--definitions defaults to ARCHIVE/definition.yaml when import-log wrote one; the replay "
        "archives nothing unless --archive is given, and sends nothing to Kafka.")
    replay.add_argument("archive_dir", type=Path, metavar="ARCHIVE",
                        help="a run's --out folder, its parquet/archive folder, or an "
                        "import-log folder")
    settings_arguments(replay, omit=[n for n in FLAGS if _not_for_replay(n)])
    replay.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    return cmd_replay


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay ARCHIVE into --out and print the run summary."""
    from dataflows.formats import AVRO_SCHEMAS_DIR, recorded_format
    from dataflows.replay import replay_source
    from dataflows.run_command import execute, prepare_out, settings_from, start_recovery
    from state.catalog import load_catalog

    args.source, args.archive_path = "archive", args.archive_dir
    settings = settings_from(args)
    updates: dict[str, Any] = {"kafka_brokers": ""}
    imported_definition = args.archive_dir / "definition.yaml"
    if "definitions" not in settings.model_fields_set and imported_definition.is_file():
        updates["definitions"] = imported_definition
    if "archive" not in settings.sinks.model_fields_set:
        updates["archive"] = False
    recorded = recorded_format(args.archive_dir)
    if recorded is not None and "format" not in settings.source.model_fields_set:
        updates["format"], updates["formats"] = recorded  # read as the recorded run read it
    saved_schemas = args.archive_dir / AVRO_SCHEMAS_DIR  # the Avro schemas the run fetched
    if saved_schemas.is_dir() and not ({"schema_registry_url", "avro_schemas"}
                                       & settings.source.model_fields_set):
        updates["avro_schemas"] = saved_schemas
    settings = settings.with_flags(**updates)
    source = replay_source(settings, load_catalog(settings.definitions, settings.calendars))
    if source.archive.resolve().is_relative_to(settings.out.resolve()):
        msg = (f"the archive {source.archive} is inside --out {settings.out}: replaying there "
               "would replace it; choose another --out")
        raise ConfigError(msg)
    recovery, resuming = start_recovery(settings, args.overwrite)  # a long replay resumes too
    prepare_out(settings, args.overwrite, resuming)
    print(f"replaying {source.archive} ({len(source.list_parts())} partitions) with definitions "
          f"{settings.definitions} into {settings.out}", file=sys.stderr)
    return execute(settings, source, None, recovery)


def add_verify(sub: Any) -> Handler:
    from analysis.output_diff import COMPARED

    verify = sub.add_parser(
        "verify", help="compare two output sets table by table; exit 1 when they differ",
        description="Compare the Parquet outputs of two runs (e.g. a recorded run and its replay) "
        "row by row, by row_id and full content. Prints per table: identical, or how many rows are "
        "missing, extra or changed and the first differing instances with the changed columns. "
        "Exit status 0 when identical, 1 when they differ, 2 on a usage error: fit to gate a "
        "deployment.")
    verify.add_argument("recorded", type=Path, metavar="RECORDED",
                        help="the --out folder of the reference run")
    verify.add_argument("replayed", type=Path, metavar="REPLAYED",
                        help="the --out folder to check against it")
    verify.add_argument("--tables", default=",".join(COMPARED),
                        help=f"comma-separated tables to compare (default: {','.join(COMPARED)})")
    verify.add_argument("--all-columns", action="store_true",
                        help="also compare the columns that restate the definitions (due times "
                        "of armed deadlines, business durations), left out by default so a "
                        "what-if names the instances whose verdicts or commands change")
    verify.add_argument("--show", type=int, default=5, metavar="N",
                        help="differing instances to show per table (default 5)")
    return cmd_verify


def cmd_verify(args: argparse.Namespace) -> int:
    """Print the per-table comparison; 0 identical, 1 different."""
    from analysis.output_diff import compare_outputs

    tables = tuple(t.strip() for t in args.tables.split(",") if t.strip())
    diffs = compare_outputs(args.recorded, args.replayed, tables, args.all_columns)
    for diff in diffs:
        if diff.identical:
            print(f"{diff.table:<13} identical  {diff.recorded:>10,} rows")
            continue
        print(f"{diff.table:<13} DIFFERENT  {diff.recorded:,} recorded, {diff.replayed:,} "
              f"replayed: {diff.count('missing'):,} missing, {diff.count('extra'):,} extra, "
              f"{diff.count('changed'):,} changed, in {len(diff.instances):,} instances")
        for instance in diff.instances[:args.show]:
            print(f"    {instance}: {_how(d for d in diff.differences if d.instance == instance)}")
        if len(diff.instances) > args.show:
            print(f"    ... and {len(diff.instances) - args.show:,} more")
    different = [d for d in diffs if not d.identical]
    if not different:
        print(f"verdict: identical ({len(diffs)} tables, {sum(d.recorded for d in diffs):,} rows)")
        return 0
    print(f"verdict: {len(different)} of {len(diffs)} tables differ")
    return 1


def _how(differences: Any) -> str:
    """`3 rows missing; changed: outcome, ended_at` for one instance's differing rows."""
    counts: dict[str, int] = {}
    columns: dict[str, None] = {}
    for d in differences:
        counts[d.kind] = counts.get(d.kind, 0) + 1
        columns.update(dict.fromkeys(d.columns))
    parts = [f"{n} row{'s' if n > 1 else ''} {kind}"
             for kind, n in counts.items() if kind != "changed"]
    if columns:
        parts.append(f"{counts['changed']} changed ({', '.join(columns)})")
    return "; ".join(parts)


def add_import_log(sub: Any) -> Handler:
    importer = sub.add_parser(
        "import-log", help="convert an XES or CSV event log into an archive of CloudEvents",
        description="Convert a process-mining event log (.xes, .xes.gz, .csv) into an input "
        "archive under --out: case id -> subject (instance id), activity -> type, timestamp -> "
        "time, lifecycle, resource and other attributes -> data; cases merged by (timestamp, file "
        "position). Writes --out/definition.yaml, a case-tracking definition with the --sla rules, "
        "so `flowkeeper replay OUT --out RESULTS` gives durations, variants, SLA breaches and "
        "stuck cases in DuckDB.")
    importer.add_argument("log", type=Path, metavar="FILE", help="the event log")
    importer.add_argument("--out", type=Path, required=True, help="the archive folder to write")
    importer.add_argument("--time-zone", default="UTC",
                          help="IANA zone of timestamps without a UTC offset (default UTC)")
    importer.add_argument("--partitions", type=int, default=4, help="input partitions (default 4)")
    importer.add_argument("--source", help="source name of the events (default: the file name)")
    importer.add_argument("--workflow",
                          help="workflow type in definition.yaml (default: the source name)")
    importer.add_argument("--sla", action="append", default=[], metavar="FROM->TO<=LIMIT",
                          help="a step SLA, e.g. 'ER Registration->IV Antibiotics<=1h' (FROM '*': "
                          "from the case's first event; TO 'B|C|D': the first of them); "
                          "repeatable")
    importer.add_argument("--complete-within", metavar="LIMIT",
                          help="a rule: every case must end within LIMIT of its first event")
    importer.add_argument("--stuck-after", metavar="LIMIT",
                          help="a rule: a case with no event for LIMIT is stuck (an anomaly)")
    importer.add_argument("--calendars", type=Path, metavar="FOLDER",
                          help="a folder of business calendars, copied to OUT/calendars so the "
                          "replay counts business time in them")
    importer.add_argument("--calendar", metavar="NAME",
                          help="the calendar (of --calendars) the rules count business time in: "
                          "then limits like '8 business hours' or '2 business days' work")
    importer.add_argument("--case-column", help="CSV: the case id column (default: found by name)")
    importer.add_argument("--activity-column", help="CSV: the activity column")
    importer.add_argument("--time-column", help="CSV: the timestamp column")
    importer.add_argument("--time-format",
                          help="strptime pattern of the timestamps (default ISO 8601)")
    importer.add_argument("--delimiter",
                          help="CSV: the field separator (default: guessed from the header)")
    importer.add_argument("--overwrite", action="store_true",
                          help="replace an archive already in --out")
    return cmd_import_log


def cmd_import_log(args: argparse.Namespace) -> int:
    """Import the log, write the definition, print a summary and the next command."""
    from connectors.event_logs import ACTIVITY, CASE, TIMESTAMP, read_log
    from connectors.log_import import StepSla, accepted_days, import_events, write_definition
    from state.catalog import load_catalog

    try:
        zone = ZoneInfo(args.time_zone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        msg = f"--time-zone {args.time_zone!r} is no IANA zone; write e.g. UTC or Europe/Amsterdam"
        raise ConfigError(msg) from e
    try:
        slas = [StepSla.parse(text) for text in args.sla]
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if args.partitions < 1:
        raise ConfigError(f"--partitions {args.partitions}: need at least 1")
    for flag, limit in (("--complete-within", args.complete_within),
                        ("--stuck-after", args.stuck_after)):
        if limit is not None:
            try:
                parse_deadline_duration(limit)
            except ValueError as e:
                raise ConfigError(f"{flag} {limit!r}: {e}") from e
    _check_calendar(args.calendars, args.calendar)
    limits = [s.limit for s in slas] + [args.complete_within, args.stuck_after]
    if args.calendar is None and any(parse_business(x) for x in limits if x is not None):
        raise ConfigError("a limit in business time needs a calendar: add --calendars FOLDER "
                          "--calendar NAME")
    _clear(args.out, args.overwrite)
    source = args.source or args.log.name.split(".")[0]
    columns = {CASE: args.case_column, ACTIVITY: args.activity_column, TIMESTAMP: args.time_column}
    events = read_log(args.log, zone, time_format=args.time_format, delimiter=args.delimiter,
                      columns={role: name for role, name in columns.items() if name})
    started = time.monotonic()

    def progress(count: int) -> None:
        rate = count / max(time.monotonic() - started, 1e-9)
        print(f"  {count:>10,} events read  {rate:>9,.0f}/s", file=sys.stderr, flush=True)

    summary = import_events(events, args.out, source=source, partitions=args.partitions,
                            progress=progress)
    definition = args.out / "definition.yaml"
    accept_times = accepted_days(summary.first_ms, summary.last_ms) if summary.events else None
    write_definition(definition, workflow=args.workflow or source, log_name=args.log.name,
                     span_ms=summary.last_ms - summary.first_ms, slas=slas,
                     complete_within=args.complete_within, stuck_after=args.stuck_after,
                     accept_times=accept_times, calendar=args.calendar)
    if args.calendars is not None:
        _copy_calendars(args.calendars, args.out / "calendars")
    load_catalog(definition)  # the rules in business time need the calendar: refused otherwise
    rules = len(slas) + (args.complete_within is not None) + (args.stuck_after is not None)
    seconds = time.monotonic() - started
    print(f"imported {summary.events:,} events of {summary.cases:,} cases from {args.log} in "
          f"{seconds:.1f} s ({summary.events / max(seconds, 1e-9):,.0f}/s)\n"
          f"  exact duplicates (same id): {summary.duplicates:,}; "
          f"partitions: {summary.partitions}\n"
          f"  archive:    {summary.archive}\n  definition: {definition} ({rules} SLA rules)")
    if accept_times:
        widened = ", ".join(f"{bound} {day}" for bound, day in accept_times.items())
        print(f"  {summary.outside_default_times:,} events lie outside the default time range "
              f"(2000-01-01 to 2200-01-01): definition.yaml accepts times {widened} "
              "(accept_times), so the replay keeps them")
    known = sorted(summary.activities)
    shown = ", ".join(map(repr, known[:8])) + (f" and {len(known) - 8} more" if len(known) > 8
                                               else "")
    for sla in slas:
        unknown = sla.unknown_activities(summary.activities)
        if unknown:
            print(f"  warning: --sla {sla.text!r}: {', '.join(map(repr, unknown))} never "
                  f"occur{'s' if len(unknown) == 1 else ''} in the log, so the rule cannot "
                  f"measure {'it' if len(unknown) == 1 else 'them'}; the log's activities "
                  f"(case-sensitive) are {shown}")
    print(f"next: flowkeeper replay {args.out} --out {args.out}-replay")
    return 0


def _check_calendar(folder: Path | None, name: str | None) -> None:
    """`--calendar` names a calendar of `--calendars`, which must load (before any import)."""
    from state.calendar_files import load_calendars

    if folder is None and name is None:
        return
    if folder is None or name is None:
        raise ConfigError("--calendars FOLDER and --calendar NAME go together")
    if not folder.is_dir():
        raise ConfigError(f"--calendars {folder}: no such folder")
    calendars = load_calendars(folder)
    if name not in calendars:
        known = ", ".join(sorted(calendars)) or "none"
        raise ConfigError(f"--calendar {name!r} is not in {folder} (calendars: {known})")


def _copy_calendars(folder: Path, target: Path) -> None:
    """The calendar files and their .ics holiday files, beside the written definition."""
    target.mkdir(parents=True, exist_ok=True)
    for file in sorted(folder.iterdir()):
        if file.is_file() and file.suffix.lower() in (".yaml", ".yml", ".ics"):
            shutil.copyfile(file, target / file.name)


def _clear(out: Path, overwrite: bool) -> None:
    """Refuse to mix two imports in one folder, unless --overwrite."""
    earlier = [p for p in (out / "archive", out / "definition.yaml", out / "calendars")
               if p.exists()]
    if earlier and not overwrite:
        raise ConfigError(f"{out} already holds an archive; pass --overwrite to replace it, or "
                          "choose another --out")
    for path in earlier:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)

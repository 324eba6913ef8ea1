"""The `report` and `inspect` commands: a run's outputs for people, as a page or one instance."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dataflows.format_flags import format_arguments
from dataflows.settings import BUNDLED_DEFINITIONS
from schemas.errors import ConfigError

Handler = Callable[[argparse.Namespace], int]


def _output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out"),
                        help="the run's output folder (default: out)")
    parser.add_argument("--source", choices=("duckdb", "parquet"), default="duckdb",
                        help="read the DuckDB file (default: the source of truth) or the Parquet "
                        "files")
    parser.add_argument("--definitions", type=Path, default=BUNDLED_DEFINITIONS,
                        help="the run's workflow definitions (deadlines for --source parquet; "
                        "decoding the archive for inspect); default: the bundled ones")


def add_report(sub: Any) -> Handler:
    report = sub.add_parser(
        "report", help="write a self-contained HTML report of a run",
        description="Write one HTML page about a run (outcomes, step latency against the SLA, "
        "breaches, slowest and stuck instances, compensations, dead letters, variants, input) "
        "with embedded figures: it opens offline and can be attached anywhere.")
    _output_arguments(report)
    report.add_argument("--output", type=Path,
                        help="the HTML file to write (default: OUT/report.html)")
    return cmd_report


def cmd_report(args: argparse.Namespace) -> int:
    """Render the report of --out and say where it is."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError("the report draws with matplotlib: pip install 'flowkeeper[analysis]'")
    from analysis.outputs import open_outputs
    from analysis.report import write_report
    from state.catalog import load_catalog

    catalog = load_catalog(args.definitions) if args.source == "parquet" else None
    conn = open_outputs(args.out, args.source, catalog)
    try:
        target = write_report(conn, str(args.out), args.output or args.out / "report.html")
    finally:
        conn.close()
    print(f"report: {target}")
    return 0


def add_inspect(sub: Any) -> Handler:
    inspect = sub.add_parser(
        "inspect", help="show the life of one workflow instance",
        description="Show every input record of one instance (event time and arrival time, "
        "disposition), its transitions, the deadlines armed and what became of them, commands, "
        "anomalies, corrections and the outcome, in event-time order. Reads the outputs and, when "
        "present, the input archive (OUT/parquet/archive) for event types and dead letters.")
    inspect.add_argument("instance_id", metavar="INSTANCE_ID", help="the workflow instance id")
    inspect.add_argument("--workflow", help="the workflow type, when the id exists in several")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of a timeline")
    _output_arguments(inspect)
    format_arguments(inspect)
    return cmd_inspect


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print one instance's timeline (or its JSON)."""
    from analysis.outputs import RunOutputs, open_outputs
    from analysis.timeline import instance_timeline
    from dataflows.formats import archive_rules
    from state.catalog import load_catalog

    catalog = load_catalog(args.definitions)
    conn = open_outputs(args.out, args.source, catalog)
    try:
        timeline = instance_timeline(conn, args.instance_id, workflow=args.workflow,
                                     archive=RunOutputs(args.out).archive_dir,
                                     rules=archive_rules(args, catalog))
    finally:
        conn.close()
    if args.json:
        json.dump(timeline.to_json(), sys.stdout, indent=2)
        print()
    else:
        print(timeline.render())
    return 0

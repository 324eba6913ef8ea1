"""Running the pipeline from a command: the settings flags every running command shares, the
output folder, recovery, the progress line and the summary (`flowkeeper run`, `replay`, ...).

Kept apart from `dataflows.cli` (which only assembles the commands) so the command modules can
use it without importing the command line that imports them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from dataflows.settings import FLAGS, Settings, field_info, flag_of, shown_default, variable
from schemas.errors import ConfigError

if TYPE_CHECKING:
    from bytewax.inputs import Source

    from schemas.event import RawRecord


def settings_arguments(parser: argparse.ArgumentParser, omit: Collection[str] = ()) -> None:
    """One flag per setting (but those in `omit`, by flag name), documented from the settings
    model; unset flags fall back to the setting's environment variable, then to the default."""
    for name in FLAGS:
        info = field_info(name)
        if name in omit or info.annotation == list[Path]:  # lists: the command's positionals
            continue
        flag = "--" + name.replace("_", "-")
        help_text = f"{info.description} (env {variable(name)}; default {shown_default(name)})"
        if info.annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, default=None, metavar=name.split("_")[-1].upper(),
                                help=help_text)


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the flags given, then the environment, then defaults."""
    given = {k: v for k, v in vars(args).items() if k in FLAGS and v not in (None, [])}
    try:
        return Settings.from_flags(**given)
    except ValidationError as e:
        problems = "; ".join(_flag(err["loc"]) + err["msg"] for err in e.errors())
        raise ConfigError(f"invalid settings: {problems}") from e


def _flag(loc: tuple[int | str, ...]) -> str:
    """`--name: ` of the setting an error is about (nothing for errors about several)."""
    name = flag_of(loc)
    return f"--{name.replace('_', '-')}: " if name else ""


def prepare_out(settings: Settings, overwrite: bool, resuming: bool = False) -> None:
    """Make sure the output folder is usable and holds no earlier results (unless --overwrite, or
    unless this run resumes from a recovery folder: then it continues those results)."""
    out = settings.out
    earlier = [p for p in (settings.parquet_dir, settings.duckdb_path) if p.exists()]
    if resuming:
        earlier = []
    if earlier and not overwrite:
        raise ConfigError(f"{out} already holds results ({', '.join(map(str, earlier))}); "
                          "pass --overwrite to replace them, or choose another --out")
    for path in earlier:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write to output folder {out}: {e.strerror}; "
                          "choose another --out or fix its permissions") from e


def progress_printer(stop: threading.Event, started: float, every: float = 2.0) -> None:
    """Print restored state once, then events/s, open instances and dead letters while the flow
    runs (checked four times a second, printed every `every` seconds)."""
    from runtime.progress import PROGRESS

    last_records, last_time = 0, started
    restore_reported = False
    while True:
        stopping = stop.wait(0.25)
        if PROGRESS.restored_shards and not restore_reported:
            restore_reported = True
            print(f"  restored {PROGRESS.restored_shards:,} shards holding "
                  f"{PROGRESS.restored_instances:,} instances in {PROGRESS.restore_seconds:.2f} s",
                  file=sys.stderr, flush=True)
        now = time.monotonic()
        if stopping:
            return
        if now - last_time < every:
            continue
        records = PROGRESS.records
        rate = (records - last_records) / max(now - last_time, 1e-9)
        print(f"  {records:>10,} records  {rate:>9,.0f}/s  open {PROGRESS.open_instances:>8,}  "
              f"dead letters {PROGRESS.dead_letters:,}", file=sys.stderr, flush=True)
        last_records, last_time = records, now


def cmd_run(args: argparse.Namespace) -> int:
    """Run the main dataflow on the configured source and print a summary."""
    from dataflows.sources import prepare_source

    settings = settings_from(args)
    recovery, resuming = start_recovery(settings, args.overwrite)
    prepare_out(settings, args.overwrite, resuming)
    source, truth_dir = prepare_source(settings)
    return execute(settings, source, truth_dir, recovery)


def start_recovery(settings: Settings, overwrite: bool) -> tuple[dict[str, Any], bool]:
    """`cli_main` arguments for the recovery folder, if one is set, and whether this run resumes."""
    from dataflows.recovery import prepare_recovery

    recovery = settings.recovery
    if recovery.dir is None:
        return {}, False
    if overwrite and recovery.dir.exists():
        shutil.rmtree(recovery.dir)
    config, resuming = prepare_recovery(recovery.dir, recovery.partitions,
                                        recovery.backup_interval.total_seconds())
    verb = "resuming from" if resuming else "created"
    print(f"{verb} recovery folder {recovery.dir}", file=sys.stderr)
    return {"recovery_config": config, "epoch_interval": recovery.snapshot_interval}, resuming


def execute(settings: Settings, source: Source[RawRecord], truth_dir: Path | None,
            recovery: dict[str, Any] | None = None) -> int:
    """Run the dataflow on `source` with a progress line, then print the summary."""
    from bytewax.run import cli_main

    from dataflows.formats import record_format
    from dataflows.jsonlog import configure_logging
    from dataflows.load_duckdb import loading_beside
    from dataflows.local_cluster import run_local_cluster, shipped
    from dataflows.pipeline import build_flow
    from dataflows.summary import processed_line, render
    from runtime.progress import PROGRESS

    configure_logging(settings.telemetry.log_level)
    PROGRESS.reset()
    # --processes N: the processes get `source` or rebuild it (`dataflows.local_cluster.shipped`)
    flow = build_flow(settings, source=source) if settings.processes == 1 else None
    record_format(settings)
    started = time.monotonic()
    stop = threading.Event()
    printer = threading.Thread(target=progress_printer, args=(stop, started), daemon=True)
    printer.start()
    try:
        with loading_beside(settings):  # DuckDB follows the committed Parquet files
            if flow is None:
                run_local_cluster(settings, bool(recovery), shipped(source))
            else:
                cli_main(flow, workers_per_process=settings.workers, **(recovery or {}))
    finally:
        stop.set()
        printer.join()
    seconds = time.monotonic() - started
    if settings.sinks.duckdb:
        print(render(settings.duckdb_path, settings.parquet_dir, truth_dir, seconds,
                     PROGRESS.records, PROGRESS.moved))
    else:
        print(f"{processed_line(PROGRESS.records, seconds, PROGRESS.moved)}; "
              f"Parquet in {settings.parquet_dir}")
    return 0

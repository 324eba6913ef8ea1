"""One source of truth for recovery and scaling under `python -m bytewax.run`.

`flowkeeper run` applies the recovery folder, snapshot and backup intervals, worker and process
counts from the settings itself. Under `python -m bytewax.run "dataflows.bytewax_main:flow()"`
Bytewax's own flags decide them (`-r`, `-s`, `-b`, `-w`, `-i`/`-a`, or their `BYTEWAX_*`
variables), while the dataflow needs the recovery folder too (its Parquet writers replace an
earlier attempt's files only on a start without a snapshot). So there the flags win: a recovery
folder given only as `-r` is taken into the settings, and a `FLOWKEEPER_*` setting that
bytewax.run would silently not apply, or that says something else than its flag, stops the run
with one line naming both.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

from dataflows.settings import Settings, variable
from schemas.errors import ConfigError


def bytewax_run_flags() -> argparse.Namespace | None:
    """bytewax.run's parsed flags when this process is `python -m bytewax.run`, else None."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is None or spec.name != "bytewax.run":
        return None
    from bytewax.run import _parse_args  # the parser bytewax.run itself used (Bytewax 0.21)

    flags: argparse.Namespace = _parse_args()
    return flags


def reconcile(settings: Settings, flags: argparse.Namespace) -> Settings:
    """`settings` with bytewax.run's recovery folder; `ConfigError` naming every disagreement."""
    recovery, folder = settings.recovery, flags.recovery_directory
    problems = []
    if recovery.dir is not None and folder is None:
        problems.append(f"{variable('recovery_dir')}={recovery.dir} is set but bytewax.run has no "
                        f"-r, so it would run without recovery: pass -r {recovery.dir} "
                        "-s SECONDS -b SECONDS (or unset it)")
    elif (folder is not None and recovery.dir is not None
          and folder.resolve() != recovery.dir.resolve()):
        problems.append(f"{variable('recovery_dir')}={recovery.dir} and bytewax.run -r {folder} "
                        "differ: give one folder (or only -r)")
    for field, flag, value in (("snapshot_interval", "-s", flags.snapshot_interval),
                               ("backup_interval", "-b", flags.backup_interval)):
        wanted: timedelta = getattr(recovery, field)
        if field in recovery.model_fields_set and value != wanted:
            shown = f"{value.total_seconds():g}" if value is not None else "not given"
            problems.append(f"{variable(field)}={wanted.total_seconds():g} but bytewax.run {flag} "
                            f"is {shown}; bytewax.run applies only {flag}: give it there (or make "
                            "both equal)")
    workers = flags.workers_per_process or 1
    if "workers" in settings.model_fields_set and settings.workers != workers:
        problems.append(f"{variable('workers')}={settings.workers} but bytewax.run -w is "
                        f"{workers}; bytewax.run applies only -w: give it there (or make both "
                        "equal)")
    addresses = getattr(flags, "addresses", None)
    processes = len(addresses.split(";")) if addresses else 1
    if "processes" in settings.model_fields_set and settings.processes != processes:
        problems.append(f"{variable('processes')}={settings.processes} but bytewax.run runs "
                        f"{processes} process{'es' if processes > 1 else ''} (-a); bytewax.run "
                        "starts none itself: start one per address with -i/-a (or use "
                        "`flowkeeper run --processes`)")
    if problems:
        raise ConfigError("; ".join(problems))
    if folder is not None and recovery.dir is None:
        return settings.with_flags(recovery_dir=folder)
    return settings


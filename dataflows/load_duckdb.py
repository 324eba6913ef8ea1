"""The DuckDB loader from the commands: beside `flowkeeper run`, and `flowkeeper load-duckdb`.

`flowkeeper run` loads the committed Parquet files every flush interval while the dataflow runs
(`loading_beside`), then every file once the dataflow has returned, so the run returns only when
DuckDB holds them all. Under `python -m bytewax.run` the dataflow writes Parquet only, and
`flowkeeper load-duckdb --out DIR --follow` is the same loader as a command beside it (until
SIGINT or SIGTERM); without `--follow` it loads every file of a finished run once.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

from analysis.duckdb_views import create_views
from connectors.duckdb_loader import DuckDBLoader, Loaded, follow
from dataflows.settings import Settings
from runtime.fatal import exit_with_message
from schemas.errors import ConfigError, FlowkeeperError
from state.catalog import load_catalog


def open_loader(settings: Settings) -> DuckDBLoader:
    """The loader of `settings.out`, holding its DuckDB file, with the views of its definitions."""
    views = partial(create_views, catalog=load_catalog(settings.definitions))
    return DuckDBLoader(settings.duckdb_path, settings.parquet_dir, views)


@contextmanager
def loading_beside(settings: Settings) -> Iterator[None]:
    """While the `with` block runs the dataflow, `load-duckdb --follow` in a child process loads
    the committed files; when the block returns, the child loads every file (SIGUSR1: the run
    has ended) and exits, so DuckDB then holds them all. Nothing when `settings.sinks.duckdb` is
    off. The child ends when this process does (even by SIGKILL); a child that dies early ends
    the run with one line, as a sink's write error does."""
    if not settings.sinks.duckdb:
        yield
        return
    settings.parquet_dir.mkdir(parents=True, exist_ok=True)  # the processes of `--processes`
    child = _FollowerProcess(settings)  # may not have made it yet
    try:
        yield
    except BaseException:
        with suppress(FlowkeeperError):  # the run's own error is the one to show
            child.stop(signal.SIGTERM)
        raise
    if child.stop(signal.SIGUSR1) == 0:
        return
    loader = open_loader(settings)  # the child was still starting: load here
    try:
        loader.load(everything=True)
    finally:
        loader.close()


class _FollowerProcess:
    """`flowkeeper load-duckdb --follow` for this run, watched by a thread."""

    def __init__(self, settings: Settings) -> None:
        self._stopping = False
        self._errors = ""
        seconds = settings.sinks.flush_interval.total_seconds()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "dataflows.load_duckdb", "--follow", "--quiet",
             "--out", str(settings.out), "--definitions", str(settings.definitions),
             "--flush-seconds", f"{seconds:g}", "--parent-pid", str(os.getpid())],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._watcher = threading.Thread(target=self._watch, name="duckdb-loader-watch",
                                         daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        self._errors = self._proc.communicate()[1]
        if self._proc.returncode != 0 and not self._stopping:
            exit_with_message(self._failure())

    def _failure(self) -> FlowkeeperError:
        code = self._proc.returncode
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        last = self._errors.strip().splitlines()[-1:] or ["no message"]
        return FlowkeeperError(f"the DuckDB loader beside the run {how}: {last[0]}; Parquet is "
                               "complete up to the last snapshot: run again to resume (with "
                               "--recovery-dir) or load with `flowkeeper load-duckdb`")

    def stop(self, how: signal.Signals) -> int:
        """Stop the child (SIGTERM: a last pass over the committed files; SIGUSR1: over every
        file) and wait for it; its exit status, or the error that ended it."""
        self._stopping = True
        if self._proc.poll() is None:
            self._proc.send_signal(how)
        self._watcher.join()
        if self._proc.returncode not in (0, -how):  # -how: it had not started to follow yet
            raise self._failure()
        return self._proc.returncode


def _printed(loaded: Loaded) -> None:
    print(f"loaded {loaded.files:,} files ({loaded.rows:,} rows, {loaded.inserted:,} new)",
          flush=True)


def _end(ended: threading.Event, stop: threading.Event) -> None:
    """SIGUSR1: the run has ended; stop following and load every file."""
    ended.set()
    stop.set()


def cmd_load_duckdb(args: argparse.Namespace) -> int:
    """Load the run's Parquet files into its DuckDB file: once, or following a live run."""
    given = {k: v for k, v in (("out", args.out), ("definitions", args.definitions),
                               ("flush_seconds", args.flush_seconds)) if v is not None}
    settings = Settings.from_flags(**given)
    if not settings.parquet_dir.is_dir():
        raise ConfigError(f"{settings.parquet_dir} does not exist: point --out at the folder a run "
                          "writes (`flowkeeper run --out`, FLOWKEEPER_OUT under bytewax.run)")
    loader = open_loader(settings)
    stop, ended = threading.Event(), threading.Event()
    try:
        if args.follow:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            signal.signal(signal.SIGUSR1, lambda *_: _end(ended, stop))
            report = None if args.quiet else _printed
            if report:
                print(f"following {settings.parquet_dir} into {settings.duckdb_path} (SIGINT or "
                      "SIGTERM stops)", flush=True)
            parent = args.parent_pid
            follow(loader, stop, max(settings.sinks.flush_interval.total_seconds(), 0.05),
                   report, lambda: parent is None or os.getppid() == parent)
        loaded = loader.load(everything=not args.follow or ended.is_set())
        if not args.quiet:
            _printed(loaded)
    finally:
        loader.close()
    return 0


def add_load_duckdb(sub: Any) -> Any:
    """The `load-duckdb` command."""
    parser = sub.add_parser(
        "load-duckdb", help="load a run's committed Parquet files into its DuckDB file",
        description=(
            "Load the Parquet files under OUT/parquet into OUT/flowkeeper.duckdb (tables, views, "
            "and loaded_parquet_files, each file once). With --follow, beside a running "
            "`python -m bytewax.run` dataflow: load the committed files every --flush-seconds "
            "until SIGINT or SIGTERM (with recovery, a file is committed once a snapshot covers "
            "it), or until SIGUSR1, which says the run has ended: then load every file and exit. "
            "Without --follow: every file, once, for a run that has ended."))
    parser.add_argument("--out", type=Path, default=None,
                        help="the run's output folder (env FLOWKEEPER_OUT; default out)")
    parser.add_argument("--definitions", type=Path, default=None,
                        help="the run's workflow definitions, for the views that read deadlines "
                        "(env FLOWKEEPER_DEFINITIONS; default the bundled ones)")
    parser.add_argument("--flush-seconds", default=None, metavar="SECONDS",
                        help="with --follow: seconds between loads (env "
                        "FLOWKEEPER_SINKS__FLUSH_INTERVAL; default 5)")
    parser.add_argument("--follow", action="store_true",
                        help="keep loading committed files beside a live run until stopped")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    return cmd_load_duckdb


def main(argv: list[str] | None = None) -> int:
    """`python -m dataflows.load_duckdb ARGS` = `flowkeeper load-duckdb ARGS`, importing only
    what loading needs (half the start-up of the whole command line): the run's child uses it."""
    parser = argparse.ArgumentParser(prog="flowkeeper")
    handler = add_load_duckdb(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["load-duckdb", *(sys.argv[1:] if argv is None else argv)])
    try:
        code: int = handler(args)
    except FlowkeeperError as e:
        print(f"flowkeeper load-duckdb: error: {e}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())

"""The DuckDB loader from the commands: beside `flowkeeper run`, and `flowkeeper load-duckdb`.

`flowkeeper run` loads the committed Parquet files every flush interval while the dataflow runs
(`loading_beside`), then every file once the dataflow has returned, so the run returns only when
DuckDB holds them all. Under `python -m bytewax.run` the dataflow writes Parquet only, and
`flowkeeper load-duckdb --out DIR --follow` is the same loader as a command beside it (until
SIGINT or SIGTERM); without `--follow` it loads every file of a finished run once.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from analysis.duckdb_views import create_views
from connectors.duckdb_loader import DuckDBLoader, Follower, Loaded, follow
from dataflows.settings import Settings
from runtime.fatal import exit_with_message
from schemas.errors import ConfigError
from state.catalog import load_catalog


def open_loader(settings: Settings) -> DuckDBLoader:
    """The loader of `settings.out`, holding its DuckDB file, with the views of its definitions."""
    views = partial(create_views, catalog=load_catalog(settings.definitions))
    return DuckDBLoader(settings.duckdb_path, settings.parquet_dir, views)


@contextmanager
def loading_beside(settings: Settings) -> Iterator[None]:
    """Follow the run's committed files while the `with` block runs the dataflow; when it returns,
    load every file. Nothing when `settings.sinks.duckdb` is off. A load error ends the process
    with one line (as a sink's write error does)."""
    if not settings.sinks.duckdb:
        yield
        return
    follower = Follower(open_loader(settings), settings.sinks.flush_interval.total_seconds(),
                        exit_with_message)
    try:
        yield
    except BaseException:
        follower.stop()
        raise
    follower.finish(everything=True)


def _printed(loaded: Loaded) -> None:
    print(f"loaded {loaded.files:,} files ({loaded.rows:,} rows, {loaded.inserted:,} new)",
          flush=True)


def cmd_load_duckdb(args: argparse.Namespace) -> int:
    """Load the run's Parquet files into its DuckDB file: once, or following a live run."""
    given = {k: v for k, v in (("out", args.out), ("definitions", args.definitions),
                               ("flush_seconds", args.flush_seconds)) if v is not None}
    settings = Settings.from_flags(**given)
    if not settings.parquet_dir.is_dir():
        raise ConfigError(f"{settings.parquet_dir} does not exist: point --out at the folder a run "
                          "writes (`flowkeeper run --out`, FLOWKEEPER_OUT under bytewax.run)")
    loader = open_loader(settings)
    try:
        if args.follow:
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            print(f"following {settings.parquet_dir} into {settings.duckdb_path} (SIGINT or "
                  "SIGTERM stops)", flush=True)
            follow(loader, stop, max(settings.sinks.flush_interval.total_seconds(), 0.05),
                   _printed)
        loaded = loader.load(everything=not args.follow)
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
            "it). Without --follow: every file, once, for a run that has ended."))
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
    return cmd_load_duckdb


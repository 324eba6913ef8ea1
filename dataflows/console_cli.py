"""`flowkeeper console`: serve the web console over a run's output folder until Ctrl-C."""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dataflows.format_flags import format_arguments
from dataflows.settings import BUNDLED_DEFINITIONS
from schemas.errors import ConfigError

Handler = Callable[[argparse.Namespace], int]
LOOPBACK = "127.0.0.1"
TOKEN_VARIABLE = "FLOWKEEPER_CONSOLE_TOKEN"


def add_console(sub: Any) -> Handler:
    console = sub.add_parser(
        "console", help="open a read-only web console on a run's outputs",
        description="Serve a web console over --out: an overview that refreshes itself while a "
        "run writes, the instances with filters, each instance's life from publish to outcome, "
        "and the dead letters. It reads the committed Parquet files while a pipeline holds the "
        "DuckDB file, and the DuckDB file of a finished run; it never writes.")
    console.add_argument("--out", type=Path, default=Path("out"),
                         help="the run's output folder (default: out)")
    console.add_argument("--source", choices=("auto", "duckdb", "parquet"), default="auto",
                         help="what to read: auto (DuckDB unless a run is writing it, then "
                         "Parquet; the default), or always one of them")
    console.add_argument("--definitions", type=Path, default=BUNDLED_DEFINITIONS,
                         help="the run's workflow definitions (default: the bundled ones)")
    console.add_argument("--host", default=LOOPBACK,
                         help="address to listen on (default 127.0.0.1; any other needs --token)")
    console.add_argument("--port", type=int, default=8765,
                         help="port to listen on (default 8765; 0 picks a free one)")
    console.add_argument("--token", default=os.environ.get(TOKEN_VARIABLE),
                         help=f"a secret every request must carry (env {TOKEN_VARIABLE}); needed "
                         "with --host")
    console.add_argument("--refresh", type=int, default=5, metavar="SECONDS",
                         help="the overview reloads itself this often (0: never; default 5)")
    format_arguments(console)
    return cmd_console


def cmd_console(args: argparse.Namespace) -> int:
    """Check the flags, bind the port, then serve until interrupted."""
    if importlib.util.find_spec("starlette") is None:
        raise ConfigError("the console needs its web stack: pip install 'flowkeeper[console]'")
    if args.host != LOOPBACK and not args.token:
        raise ConfigError(f"--host {args.host} exposes the console beyond this machine: give a "
                          f"secret with --token or {TOKEN_VARIABLE}")
    import uvicorn

    from console.app import create_app
    from console.reader import RunReader
    from dataflows.formats import archive_rules
    from state.catalog import load_catalog

    catalog = load_catalog(args.definitions)
    app = create_app(RunReader(args.out, catalog, args.source),
                     archive_rules(args, catalog), token=args.token,
                     refresh_seconds=max(args.refresh, 0))
    listener = socket.create_server((args.host, args.port))
    host, port = listener.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"console: http://{shown}:{port}/  reading {args.out}"
          + ("  (open it with ?token=<your token>)" if args.token else "")
          + "  Ctrl-C stops it", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[listener])
    return 0

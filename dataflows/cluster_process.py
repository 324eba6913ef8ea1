"""One process of the local cluster that `flowkeeper run --processes N` starts and stops
(`dataflows.local_cluster`): `python -m dataflows.cluster_process INDEX ADDRESSES PROGRESS_FD`.

The settings arrive pickled on stdin, exactly as the command validated (and, for a replay,
completed) them, so no process rebuilds them from a different environment; with them comes the
simulator's source (or None: other sources are rebuilt from the settings here; every process
lists the same partitions and Bytewax reads each in one of them). With the dataflow built, the
process writes `READY` on PROGRESS_FD and runs it once the command writes "go" on stdin (stdin
closed without it: the command is stopping). It reports its progress counters as JSON lines on
PROGRESS_FD until it ends, ignores Ctrl-C (the command stops its processes by PID) and ends
itself when the command is gone (the progress pipe breaks).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import sys
import threading
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

from dataflows.settings import Settings
from schemas.errors import ConfigError

if TYPE_CHECKING:
    from bytewax.inputs import Source

    from schemas.event import RawRecord

REPORT_EVERY_S = 0.25
ORPHANED = 70  # EX_SOFTWARE: the command that started this process is gone
READY = "ready\n"


def report_progress(pipe: IO[str], stop: threading.Event) -> None:
    """Write this process's counters to `pipe` until `stop`, then once more (the final ones)."""
    from runtime.progress import PROGRESS

    while True:
        stopping = stop.wait(REPORT_EVERY_S)
        try:
            pipe.write(json.dumps(PROGRESS.snapshot()) + "\n")
            pipe.flush()
        except OSError:  # the command is gone: nobody would stop this process
            os._exit(ORPHANED)
        if stopping:
            return


def process_settings(settings: Settings, index: int) -> Settings:
    """This process's settings: process i serves its metrics on the metrics port + i."""
    port = settings.telemetry.metrics_port
    return settings.with_flags(metrics_port=port + index) if port and index else settings


def recovery_arguments(settings: Settings) -> dict[str, Any]:
    """`cli_main`'s recovery arguments: the folder the command prepared, and its intervals."""
    from bytewax.recovery import RecoveryConfig

    recovery = settings.recovery
    assert recovery.dir is not None
    return {"recovery_config": RecoveryConfig(str(recovery.dir), recovery.backup_interval),
            "epoch_interval": recovery.snapshot_interval}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataflows.cluster_process",
                                     description="one process of `flowkeeper run --processes`")
    parser.add_argument("index", type=int, help="this process's id, from 0")
    parser.add_argument("addresses", help="every process's host:port, `;`-separated")
    parser.add_argument("progress_fd", type=int, help="where to write the progress counters")
    parser.add_argument("--recovery", action="store_true", help="snapshot to --recovery-dir")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    given: tuple[Settings, Source[RawRecord] | None] = pickle.load(sys.stdin.buffer)
    settings, source = process_settings(given[0], args.index), given[1]

    from bytewax.run import cli_main

    from dataflows.jsonlog import configure_logging
    from dataflows.pipeline import build_flow

    configure_logging(settings.telemetry.log_level)
    try:
        flow = build_flow(settings, source=source)
    except ConfigError as e:
        print(f"flowkeeper: error: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    with os.fdopen(args.progress_fd, "w") as pipe:
        pipe.write(READY)
        pipe.flush()
        if sys.stdin.buffer.read() != b"go":
            return ORPHANED
        reporter = threading.Thread(target=report_progress, args=(pipe, stop), daemon=True)
        reporter.start()
        try:
            cli_main(flow, workers_per_process=settings.workers, process_id=args.index,
                     addresses=args.addresses.split(";"),
                     **(recovery_arguments(settings) if args.recovery else {}))
        finally:
            stop.set()
            reporter.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())

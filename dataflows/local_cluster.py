"""`--processes N`: the dataflow as a local Bytewax cluster of N processes, started and stopped by
the command, so a run uses N cores (worker threads of one process share one core under the GIL).

Each process (`dataflows.cluster_process`) runs `--workers` threads and listens on a free
loopback port; Bytewax spreads the input partitions over all the cluster's workers and routes
rows between processes (the one DuckDB writer partition lives in one process; the Parquet
writer partitions are spread like the inputs). The command prepared the output and recovery
folders before; it sums the processes' progress counters into its own (`runtime.progress`) and
prints the one progress line and, once every process has finished, the one summary.

The processes start together: each imports and builds the dataflow, says it is ready, and waits
for the word to go; the command lets them go in index order, `STAGGER_S` apart, so every process
listens before a later one connects to it (Bytewax's networking waits a whole second before it
tries a refused connection again).

A process that fails stops the run: the others are stopped by PID (SIGTERM, then SIGKILL after
`STOP_GRACE_S`), and the error names the process, its exit status and its last lines on stderr.
Ctrl-C stops every process the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from bytewax.inputs import Source

from connectors.simulator import SimulatorSource
from dataflows.cluster_process import READY
from dataflows.settings import REPO_ROOT, Settings
from runtime.progress import PROGRESS
from schemas.errors import ProcessFailedError
from schemas.event import RawRecord

POLL_S = 0.05
STAGGER_S = 0.05
STOP_GRACE_S = 5.0
TAIL_LINES = 12


@dataclass
class Member:
    """One started process: its output tail and its latest progress counters."""

    index: int
    process: subprocess.Popen[bytes]
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    counters: dict[str, float] = field(default_factory=dict)
    ready: threading.Event = field(default_factory=threading.Event)
    readers: list[threading.Thread] = field(default_factory=list)
    feeder: threading.Thread | None = None

    def describe(self) -> str:
        return f"process {self.index} (pid {self.process.pid})"


def free_addresses(count: int) -> list[str]:
    """`127.0.0.1:PORT` for `count` loopback ports nobody listens on right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [f"127.0.0.1:{probe.getsockname()[1]}" for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def shipped(source: Source[RawRecord]) -> Source[RawRecord] | None:
    """The source itself when sending it costs less than rebuilding it in every process (the
    simulator: 20,000 instances take seconds to simulate, a second to unpickle), else None."""
    return source if isinstance(source, SimulatorSource) else None


def run_local_cluster(settings: Settings, recovery: bool,
                      source: Source[RawRecord] | None = None) -> None:
    """Run the dataflow in `settings.processes` processes until all end; `recovery`: snapshot to
    the recovery folder the command prepared; `source`: the source to send them (None: each
    rebuilds it from the settings). Raises `ProcessFailedError` when one fails."""
    addresses = ";".join(free_addresses(settings.processes))
    payload = pickle.dumps((settings, source), protocol=pickle.HIGHEST_PROTOCOL)
    members: list[Member] = []
    try:
        for index in range(settings.processes):
            members.append(start(index, addresses, payload, recovery))
        pids = ", ".join(str(m.process.pid) for m in members)
        print(f"started {len(members)} processes (pids {pids}), {settings.workers} worker "
              f"thread{'s' if settings.workers > 1 else ''} each, on {addresses}",
              file=sys.stderr, flush=True)
        wait_for(members, lambda: all(m.ready.is_set() for m in members))
        for member in members:
            go(member)
        wait_for(members, lambda: False)
    except BaseException as e:
        stopped = stop(members)
        if isinstance(e, KeyboardInterrupt) and stopped:
            print(f"interrupted: stopped {', '.join(m.describe() for m in stopped)}",
                  file=sys.stderr, flush=True)
        raise


def start(index: int, addresses: str, payload: bytes, recovery: bool) -> Member:
    """Start process `index` with its progress pipe; the pickled settings and source go to its
    stdin."""
    read_end, write_end = os.pipe()
    command = [sys.executable, "-m", "dataflows.cluster_process", str(index), addresses,
               str(write_end), *(["--recovery"] if recovery else [])]
    try:
        process = subprocess.Popen(command, cwd=os.getcwd(), stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   pass_fds=(write_end,), env=_env())
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    member = Member(index, process)
    progress = os.fdopen(read_end, "r")
    member.readers = [threading.Thread(target=_forward_output, args=(member,), daemon=True),
                      threading.Thread(target=_read_progress, args=(member, progress),
                                       daemon=True)]
    for reader in member.readers:
        reader.start()
    member.feeder = threading.Thread(target=_feed, args=(member, payload), daemon=True)
    member.feeder.start()
    return member


def _feed(member: Member, payload: bytes) -> None:
    """Send the settings and source while the process starts (the others start meanwhile)."""
    assert member.process.stdin is not None
    try:
        member.process.stdin.write(payload)
        member.process.stdin.flush()
    except (BrokenPipeError, ValueError):  # it died, or was stopped: `wait_for` reports how
        pass


def go(member: Member) -> None:
    """Let a ready process run its dataflow, `STAGGER_S` after the one before it."""
    assert member.process.stdin is not None and member.feeder is not None
    member.feeder.join()
    try:
        with member.process.stdin as pipe:
            pipe.write(b"go")
    except BrokenPipeError:  # it died meanwhile: `wait_for` reports how
        pass
    time.sleep(STAGGER_S)


def _env() -> dict[str, str]:
    """The command's environment, with this checkout importable wherever the command runs."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), path]))}


def _forward_output(member: Member) -> None:
    """Pass the process's output on to the command's stderr, keeping its last lines."""
    assert member.process.stdout is not None
    with member.process.stdout as output:
        for raw in output:
            line = raw.decode(errors="replace")
            member.tail.append(line.rstrip("\n"))
            sys.stderr.write(line)
            sys.stderr.flush()


def _read_progress(member: Member, pipe: IO[str]) -> None:
    with pipe:
        for line in pipe:
            if line == READY:
                member.ready.set()
            else:
                member.counters = json.loads(line)


def wait_for(members: list[Member], done: Callable[[], bool]) -> None:
    """Sum the progress counters until `done()` or every process ended; the first failure stops
    the rest."""
    while True:
        PROGRESS.set_sums([m.counters for m in members])
        codes = [m.process.poll() for m in members]
        failed = [m for m, code in zip(members, codes, strict=True) if code not in (None, 0)]
        if failed:
            raise ProcessFailedError(failure_message(failed, stop(members), len(members)))
        if done():
            return
        if all(code == 0 for code in codes):
            break
        time.sleep(POLL_S)
    for member in members:
        for reader in member.readers:
            reader.join()
    PROGRESS.set_sums([m.counters for m in members])


def stop(members: list[Member]) -> list[Member]:
    """Stop the processes still running, by PID: SIGTERM, then SIGKILL after `STOP_GRACE_S`;
    returns those it stopped."""
    running = [m for m in members if m.process.poll() is None]
    for member in running:
        member.process.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for member in running:
        try:
            member.process.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            member.process.kill()
            member.process.wait()
    for member in members:
        _close_stdin(member)
        for reader in member.readers:
            reader.join(STOP_GRACE_S)
    return running


def _close_stdin(member: Member) -> None:
    """Close the pipe to a process that never got the word to go."""
    if member.process.stdin is not None and not member.process.stdin.closed:
        with contextlib.suppress(OSError):  # it is gone: nothing was left to flush to it
            member.process.stdin.close()


def exit_status(code: int) -> str:
    """`exited with status 74`, or `was killed by signal 9 (SIGKILL)`."""
    if code >= 0:
        return f"exited with status {code}"
    try:
        name = f" ({signal.Signals(-code).name})"
    except ValueError:
        name = ""
    return f"was killed by signal {-code}{name}"


def failure_message(failed: list[Member], stopped: list[Member], count: int) -> str:
    """Which processes failed and how, their last stderr lines, and which were stopped."""
    parts = []
    for member in failed:
        code = member.process.returncode
        assert code is not None
        lines = "\n".join(f"    {line}" for line in member.tail)
        told = (f"; its last lines on stderr:\n{lines}" if lines else
                "; it wrote nothing on stderr")
        parts.append(f"{member.describe()} of {count} {exit_status(code)}{told}")
    if stopped:
        parts.append(f"stopped {', '.join(m.describe() for m in stopped)}")
    return "\n".join(parts)

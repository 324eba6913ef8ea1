"""`run` and `replay --processes N`: a local cluster of N processes started and stopped by the
command gives the outputs of one process, prints one summary, reports a failed process, stops on
Ctrl-C, and resumes from its recovery folder after a process was killed."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from analysis.output_diff import compare_outputs
from connectors.simulator import simulate
from dataflows.cli import main as cli_main
from dataflows.settings import Settings
from dataflows.sources import simulator_config
from state.catalog import load_catalog
from tests.crash_kit import parquet_files, wait_for_progress
from tests.test_recovery import assert_same_outputs

pytestmark = pytest.mark.slow  # every test starts real processes

REPO = Path(__file__).resolve().parents[1]
SIM = ["--sim-instances", "300", "--sim-seed", "5"]
SUMMARY_HEAD = "instances by outcome:"
STARTED = re.compile(r"started (\d+) processes \(pids ([\d, ]+)\)")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """One `flowkeeper` command in this process: exit status, stdout and stderr."""
    code = cli_main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_identical(expected: Path, got: Path) -> None:
    diffs = compare_outputs(expected, got)
    assert diffs and all(d.identical for d in diffs), [d for d in diffs if not d.identical]


def started_pids(stderr: str) -> list[int]:
    """The process ids the command said it started."""
    found = STARTED.search(stderr)
    assert found, stderr
    return [int(pid) for pid in found.group(2).split(", ")]


def gone(pid: int) -> bool:
    """True when no process has this id (the command waited for its children, so no zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulator run in one process: the reference outputs."""
    out = tmp_path_factory.mktemp("one") / "out"
    assert cli_main(["run", "--out", str(out), *SIM]) == 0
    return out


def test_two_processes_on_the_simulator_match_one_and_print_one_summary(
        one_process: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`run --processes 2` starts two processes, writes the outputs of one process, and prints
    the summary once, with every record counted and the ground truth met."""
    capsys.readouterr()
    out = tmp_path / "out"
    code, printed, told = run(capsys, "run", "--out", str(out), "--processes", "2", *SIM)
    assert code == 0, told
    assert len(started_pids(told)) == 2
    assert printed.count(SUMMARY_HEAD) == 1 and told.count(SUMMARY_HEAD) == 0
    ledger = sum(d.recorded for d in compare_outputs(one_process, out, ("ledger",)))
    assert f"processed {ledger:,} records" in printed
    assert "accuracy vs ground truth: outcomes 300/300, commands 300/300  ✓" in printed
    assert_identical(one_process, out)


def test_two_processes_on_an_event_file_match_one(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The simulator's stream as a JSON-lines file gives identical outputs in 1 and 2 processes
    (2 workers each in the second: 4 workers over 4 file partitions)."""
    settings = Settings.from_flags(sim_instances=400, sim_seed=11)
    sim = simulate(simulator_config(settings), load_catalog(settings.definitions))
    records = sorted(sim.records(), key=lambda r: (r.arrived_ms, r.partition, r.offset))
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(r.value + b"\n" for r in records
                              if not r.headers and b"\n" not in r.value))
    outs = {n: tmp_path / f"out{n}" for n in (1, 2)}
    for processes, out in outs.items():
        code, _, told = run(capsys, "run", "--source", "file", str(path), "--out", str(out),
                            "--processes", str(processes), "--workers", str(processes))
        assert code == 0, told
    assert_identical(outs[1], outs[2])


def test_replay_in_two_processes_verifies_identical(
        one_process: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`replay --processes 2` of a run's archive gives outputs `verify` calls identical."""
    replayed = tmp_path / "replayed"
    code, printed, told = run(capsys, "replay", str(one_process), "--out", str(replayed),
                              "--processes", "2")
    assert code == 0, told
    assert printed.count("input accounting:") == 1
    code, report, _ = run(capsys, "verify", str(one_process), str(replayed))
    assert code == 0 and "verdict: identical (7 tables" in report, report


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port someone listens on, whose port below is free."""
    while True:
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = int(holder.getsockname()[1])
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port - 1))
            except OSError:
                holder.close()
                continue
        break
    try:
        yield port
    finally:
        holder.close()


def test_a_failed_process_stops_the_others_and_fails_the_run(
        taken_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Process 1 cannot serve its metrics (port + 1 is taken): the run exits 1 naming it, its
    exit status and its last stderr line, and the other process is stopped, not left behind."""
    code, printed, told = run(capsys, "run", "--out", str(tmp_path / "out"), "--processes", "2",
                              "--metrics-port", str(taken_port - 1), "--sim-speed", "0.01",
                              *SIM)
    assert code == 1
    assert SUMMARY_HEAD not in printed
    pids = started_pids(told)
    error = told[told.index("flowkeeper run: error:"):]
    assert f"process 1 (pid {pids[1]}) of 2 exited with status 2" in error
    assert f"    flowkeeper: error: cannot serve metrics on port {taken_port}" in error
    assert f"stopped process 0 (pid {pids[0]})" in error
    assert all(gone(pid) for pid in pids)


def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    """SIGINT to the command while its processes run (the simulator slowed to real time) stops
    both processes and the command."""
    command = [sys.executable, "-m", "dataflows.cli", "run", "--out", str(tmp_path / "out"),
               "--processes", "2", "--sim-speed", "1", *SIM]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stderr is not None
        seen = ""
        for line in proc.stderr:  # wait for the processes, then for records to flow
            seen += line
            if STARTED.search(seen) and re.search(r"^\s+[1-9][\d,]* records", line):
                break
        pids = started_pids(seen)
        assert all(not gone(pid) for pid in pids)
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert f"interrupted: stopped process 0 (pid {pids[0]})" in rest
    assert all(gone(pid) for pid in pids)


RECOVERED_RUN = ["--sim-instances", "2000", "--sim-seed", "23", "--snapshot-interval", "0.2",
                 "--flush-seconds", "0.05", "--parquet-batch-rows", "500"]


def flowkeeper(out: Path, recovery: Path, processes: int,
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`flowkeeper run` with a recovery folder as its own process, output and errors together."""
    return subprocess.Popen(
        [sys.executable, "-m", "dataflows.cli", "run", "--out", str(out), "--recovery-dir",
         str(recovery), "--processes", str(processes), *RECOVERED_RUN],
        cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def recovered_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run in one process with recovery on: what the crashed runs must equal."""
    out = tmp_path_factory.mktemp("recovered_reference")
    output = flowkeeper(out, out / "recovery", 1).communicate(timeout=300)[0].decode()
    assert "outcomes 2,000/2,000, commands 2,000/2,000  ✓" in output, output
    return out


def test_kill_9_of_one_process_then_resume_in_two_gives_the_outputs_of_one(
        recovered_reference: Path, tmp_path: Path) -> None:
    """SIGKILL to process 1 of 2 once the run has a snapshot and a third of the reference's files:
    the run fails naming it; run again with the same recovery folder, it resumes and every table,
    in Parquet and DuckDB, equals the uninterrupted 1-process run's, with no row twice."""
    out, recovery = tmp_path / "out", tmp_path / "recovery"
    proc = flowkeeper(out, recovery, 2)
    assert proc.stdout is not None
    seen = b""
    while not STARTED.search(seen.decode()):
        line = proc.stdout.readline()
        assert line, seen.decode()
        seen += line
    pids = started_pids(seen.decode())
    wait_for_progress(proc, out, recovery, len(parquet_files(recovered_reference)) // 3)
    os.kill(pids[1], signal.SIGKILL)
    output = (seen + proc.communicate(timeout=60)[0]).decode()
    assert proc.returncode == 1, output
    assert f"process 1 (pid {pids[1]}) of 2 was killed by signal 9 (SIGKILL)" in output
    assert all(gone(pid) for pid in pids)
    resumed = flowkeeper(out, recovery, 2).communicate(timeout=300)[0].decode()
    assert "resuming from recovery folder" in resumed and resumed.count(SUMMARY_HEAD) == 1
    assert_same_outputs(out, recovered_reference)


@pytest.mark.parametrize("resumed_in", [2, 1])
def test_a_crash_after_a_parquet_rename_then_resume_gives_the_outputs_of_one(
        recovered_reference: Path, tmp_path: Path, resumed_in: int) -> None:
    """A process dies right after its third Parquet file is renamed into place (a crash point):
    the run fails, and a run resumed in 2 processes, or in 1, equals the uninterrupted 1-process
    run everywhere (DuckDB, loaded beside the run, too)."""
    out, recovery = tmp_path / "out", tmp_path / "recovery"
    crashed = flowkeeper(out, recovery, 2, {"FLOWKEEPER_CRASH_AFTER": "parquet_after_rename:3"})
    output = crashed.communicate(timeout=300)[0].decode()
    assert crashed.returncode == 1 and "was killed by signal 9 (SIGKILL)" in output, output
    resumed = flowkeeper(out, recovery, resumed_in).communicate(timeout=300)[0].decode()
    assert "resuming from recovery folder" in resumed, resumed
    assert_same_outputs(out, recovered_reference)

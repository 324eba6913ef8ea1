"""Records stay on the worker that read them: shard keys route to the reading worker in 1 and 2
processes with outputs unchanged, and recovery folders resume exactly with another worker count or
from before keys were salted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from bytewax.testing import TestingSink, cluster_main, run_main

import operators.locality
from connectors.simulator import SimulatorSource, simulate
from connectors.simulator.truth import Simulation
from dataflows.pipeline import build_flow
from dataflows.settings import Settings
from dataflows.sources import simulator_config
from runtime.progress import PROGRESS
from state.catalog import load_catalog
from state.sharding import routing_key, shard_name, siphash13, worker_of
from tests.crash_kit import parquet_files, wait_for_progress
from tests.locality_kit import unsalted
from tests.test_archive_replay import REPO, free_ports

SETTINGS = Settings.from_flags(sim_instances=600, sim_seed=11, out=Path("unused"))
# Every `flowkeeper run` here: small files and frequent snapshots, so a kill lands mid-run.
RUN = ["--sim-instances", "2000", "--sim-seed", "23", "--snapshot-interval", "0.2",
       "--flush-seconds", "0.05", "--parquet-batch-rows", "500"]

# `BuildHasherDefault::<DefaultHasher>::default().hash_one(&StateKey(s))` printed by a Rust
# program (rustc 1.x std, `#[derive(Hash)] struct StateKey(String)` as in Bytewax 0.21): the hash
# Bytewax routes a stateful step's key by.
RUST_HASHES = {
    "": 3476900567878811119,
    "a": 8186225505942432243,
    "key-1": 7378654393789233717,
    "hello world!!": 2025617530448743513,
    "0123456789abcdef": 4385730782170763467,
    "ünïcødé": 1358985797004246166,
    "x" * 23: 4254904415392162509,
    "k0": 1173953869577856307,
    "k1": 16236113890087033243,
}


@pytest.fixture(scope="module")
def simulation() -> Simulation:
    return simulate(simulator_config(SETTINGS), load_catalog(SETTINGS.definitions))


def run_flow(simulation: Simulation, workers: int) -> tuple[list[object], int]:
    """The dataflow's rows on `simulation` with `workers` worker threads, and how many records
    moved to another worker."""
    rows: list[object] = []
    flow = build_flow(SETTINGS, source=SimulatorSource(simulation.partitions),
                      sink=TestingSink(rows))
    moved_before = PROGRESS.moved
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return rows, PROGRESS.moved - moved_before


def run(*argv: str) -> subprocess.Popen[bytes]:
    """`python -m ARGV` as its own process in the repository, output captured."""
    return subprocess.Popen([sys.executable, "-m", *argv], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def finished(proc: subprocess.Popen[bytes]) -> str:
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, output[-3000:]
    return output


def moved(summary: str) -> int:
    """The `M moved to another worker` of a run's summary line."""
    found = re.search(r"\), ([\d,]+) moved to another worker", summary)
    assert found, summary[-2000:]
    return int(found.group(1).replace(",", ""))


def verify(got: Path, want: Path) -> None:
    proc = run("dataflows.cli", "verify", str(want), str(got))
    assert "verdict: identical" in finished(proc)


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`flowkeeper run` with 1 worker: the outputs every other worker count must equal."""
    out = tmp_path_factory.mktemp("one") / "out"
    assert moved(finished(run("dataflows.cli", "run", "--out", str(out), *RUN))) == 0
    return out


def test_siphash_matches_rusts_default_hasher() -> None:
    """The Python SipHash-1-3 of a key's bytes plus 0xFF equals what Rust hashed the key to."""
    for key, expected in RUST_HASHES.items():
        assert siphash13(key.encode() + b"\xff") == expected, key


def test_routing_key_lands_on_the_requested_worker() -> None:
    """Every shard's key lands on the worker asked for, names the shard, and is the bare name with
    one worker (so one-worker keys, and recovery folders, are as before)."""
    shards = [f"{p}/{b}" for p in range(8) for b in range(16)]
    for workers in (1, 2, 3, 4, 7):
        for worker in range(workers):
            for shard in shards:
                key = routing_key(shard, worker, workers)
                assert worker_of(key, workers) == worker and shard_name(key) == shard
    assert all(routing_key(shard, 0, 1) == shard for shard in shards)


def test_two_workers_in_one_process_move_no_record(simulation: Simulation) -> None:
    """With 2 worker threads no record moves between workers, and the rows equal 1 worker's."""
    one, moved_one = run_flow(simulation, 1)
    two, moved_two = run_flow(simulation, 2)
    assert moved_one == moved_two == 0
    assert sorted(map(repr, two)) == sorted(map(repr, one))


def test_unsalted_keys_move_records_and_the_counter_sees_it(
        simulation: Simulation, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the old keys (shard names, routed by hash) records do move, and are counted."""
    monkeypatch.setattr(operators.locality, "routing_key", unsalted)
    _, moved_two = run_flow(simulation, 2)
    assert moved_two > 0


@pytest.mark.slow
def test_cli_two_workers_move_nothing_and_equal_one_worker(one_worker: Path,
                                                          tmp_path: Path) -> None:
    """`flowkeeper run --workers 2` reports 0 records moved, and `verify` finds its outputs
    identical to the 1-worker run's; each worker wrote the rows it made."""
    out = tmp_path / "out"
    summary = finished(run("dataflows.cli", "run", "--out", str(out), *RUN,
                           "--workers", "2"))
    assert moved(summary) == 0
    assert_each_partition_written_by_one_part(out)
    verify(out, one_worker)


@pytest.mark.slow
def test_two_processes_move_nothing_and_equal_one_worker(one_worker: Path,
                                                         tmp_path: Path) -> None:
    """`python -m bytewax.run` as 2 processes moves no record to another worker or process, not
    even to be written, and `verify` finds its outputs identical to the 1-worker run's."""
    out = tmp_path / "out"
    addresses = ";".join(f"127.0.0.1:{port}" for port in free_ports(2))
    env = {**os.environ, "FLOWKEEPER_OUT": str(out), "FLOWKEEPER_SOURCE__SIM_INSTANCES": "2000",
           "FLOWKEEPER_SOURCE__SIM_SEED": "23", "FLOWKEEPER_SINKS__DUCKDB": "false"}
    procs = [subprocess.Popen([sys.executable, "-m", "bytewax.run",
                               "tests.locality_kit:build_flow()", "-a", addresses, "-i", str(i)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(2)]
    try:
        outputs = [finished(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    counts = [re.search(r"moved (\d+) of (\d+)", output) for output in outputs]
    assert all(counts), outputs
    assert [int(c.group(1)) for c in counts if c] == [0, 0]
    assert all(int(c.group(2)) > 0 for c in counts if c)  # both processes ran shards
    assert_each_partition_written_by_one_part(out)  # no row crossed processes to be written
    verify(out, one_worker)


def written_where_read(out: Path) -> dict[str, set[int]]:
    """The input partitions whose ledger rows each Parquet writer part wrote. A worker writes the
    rows it made (`ParquetSink.local_writers`), so with one part per worker no input partition
    shows up under two parts; if rows crossed workers to be written, every part would hold
    rows of every partition (a partition's shards hash to any writer)."""
    parts: dict[str, set[int]] = {}
    for path in (out / "parquet" / "ledger").glob("**/*.parquet"):
        part = re.match(r"part-p(\d+)-", path.name)
        assert part, path
        partitions = pq.read_table(path, columns=["partition"]).column("partition").to_pylist()
        parts.setdefault(part.group(1), set()).update(partitions)
    return parts


def assert_each_partition_written_by_one_part(out: Path) -> None:
    parts = written_where_read(out)
    assert len(parts) == 2, parts
    first, second = parts.values()
    assert first and second and not first & second, parts


def kill_mid_run(command: list[str], out: Path, recovery: Path, reference: Path,
                 share: float = 0.4, later: tuple[str, ...] = ()) -> None:
    """Run `command` with recovery (and the flags `later`, which override `RUN`'s) and SIGKILL
    it after its first snapshot and `share` of the reference run's files."""
    proc = run(*command, "--out", str(out), "--recovery-dir", str(recovery), *RUN, *later)
    wait_for_progress(proc, out, recovery, round(len(parquet_files(reference)) * share))
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"


def resume(out: Path, recovery: Path, workers: int) -> str:
    """`flowkeeper run` resuming from `recovery` with `workers` workers; its output."""
    output = finished(run("dataflows.cli", "run", "--out", str(out), "--recovery-dir",
                          str(recovery), *RUN, "--workers", str(workers)))
    assert "restored" in output, output[-2000:]
    return output


@pytest.mark.slow
def test_resume_with_another_worker_count_keeps_saved_keys(one_worker: Path,
                                                           tmp_path: Path) -> None:
    """Killed with 2 workers and resumed with 3, every shard finds its saved state (it keeps the
    key it was saved under, so its records now move): outputs equal the 1-worker run's."""
    out, recovery = tmp_path / "out", tmp_path / "recovery"
    # Killed at its first resumable snapshot (epochs of 50 ms, not 200): input is still left to
    # read then, so the resume has records to move. At 40 % of the files the whole input may
    # already be read and snapshotted: most files come with the final flush.
    kill_mid_run(["dataflows.cli", "run", "--workers", "2"], out, recovery, one_worker,
                 share=0.0, later=("--snapshot-interval", "0.05"))
    assert moved(resume(out, recovery, 3)) > 0
    verify(out, one_worker)


@pytest.mark.slow
def test_resume_of_a_folder_saved_with_unsalted_keys(one_worker: Path, tmp_path: Path) -> None:
    """A recovery folder written with 2 workers before keys were salted resumes exactly."""
    out, recovery = tmp_path / "out", tmp_path / "recovery"
    kill_mid_run(["tests.locality_kit", "run", "--workers", "2"], out, recovery, one_worker)
    resume(out, recovery, 2)
    verify(out, one_worker)

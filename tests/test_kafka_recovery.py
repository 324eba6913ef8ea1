"""Crash safety while consuming a real 4-partition Kafka topic: kill -9 and a broker pause, with
real processes, and a loud failure when the topic under a recovery snapshot was re-created."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connectors.simulator import simulate
from connectors.simulator.truth import Simulation
from dataflows.settings import Settings
from dataflows.sources import simulator_config
from state.catalog import load_catalog
from tests.crash_kit import parquet_files, parquet_rows, wait_for_progress
from tests.kafka_broker import Broker
from tests.test_kafka import produce_simulation

pytestmark = [pytest.mark.broker, pytest.mark.slow]
TABLES = ("outcomes", "transitions", "commands", "anomalies", "corrections", "dead_letters",
          "ledger", "metrics", "archive")


@pytest.fixture(scope="module")
def simulation() -> Simulation:
    settings = Settings.from_flags(sim_instances=1500, sim_seed=31)
    return simulate(simulator_config(settings), load_catalog(settings.definitions))


def run(broker: Broker, topic: str, out: Path, recovery: Path,
        env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`flowkeeper run --source kafka` as its own process, with a recovery folder."""
    args = [sys.executable, "-m", "dataflows.cli", "run", "--source", "kafka",
            "--kafka-brokers", broker.address, "--kafka-topic", topic, "--no-kafka-tail",
            "--commands-topic", "", "--out", str(out), "--recovery-dir", str(recovery),
            "--snapshot-interval", "0.2", "--flush-seconds", "0.05", "--workers", "2"]
    return subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def finish(broker: Broker, topic: str, out: Path, recovery: Path) -> str:
    for _ in range(5):
        proc = run(broker, topic, out, recovery)
        output = proc.communicate(timeout=300)[0].decode()
        if proc.returncode == 0:
            return output
    raise AssertionError(f"no run completed: {output[-2000:]}")


@pytest.fixture(scope="module")
def topic(broker: Broker, simulation: Simulation) -> str:
    return produce_simulation(broker, simulation)


@pytest.fixture(scope="module")
def reference(broker: Broker, topic: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run over the topic."""
    out = tmp_path_factory.mktemp("kafka-reference")
    output = finish(broker, topic, out, out / "recovery")
    assert "processed" in output
    return out


def assert_same(got: Path, want: Path) -> None:
    for table in TABLES:
        rows = parquet_rows(got, table)
        assert len({r[0] for r in rows}) == len(rows), f"duplicate rows in {table}"
        assert rows == parquet_rows(want, table), f"{table} differs"


@pytest.mark.parametrize("seed", [7])
def test_kill_9_while_consuming_kafka_then_resume(broker: Broker, topic: str,
                                                  reference: Path, tmp_path: Path,
                                                  seed: int) -> None:
    """SIGKILL while consuming the 4-partition topic, after the first snapshot and a random share
    (seeded) of the reference run's files, then a restart with the same recovery folder: every
    table equals the uninterrupted run's, no duplicates."""
    files = round(len(parquet_files(reference)) * random.Random(seed).uniform(0.3, 0.6))
    out, recovery = tmp_path / "out", tmp_path / "recovery"
    proc = run(broker, topic, out, recovery)
    wait_for_progress(proc, out, recovery, files)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"
    finish(broker, topic, out, recovery)
    assert_same(out, reference)


def test_a_rerun_of_a_finished_run_resumes_at_the_ends_and_adds_nothing(
        broker: Broker, topic: str, reference: Path, tmp_path: Path) -> None:
    """A run on the recovery folder of a finished one resumes every partition at its end, also
    where the broker reports a lower end than it serves (Tansu: the first offset of the
    partition's last batch, plus one), and leaves every table as it was."""
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    proc = run(broker, topic, out, out / "recovery")
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, output[-3000:]
    assert_same(out, reference)


def test_crash_right_after_a_parquet_rename_while_consuming_kafka(
        broker: Broker, topic: str, reference: Path, tmp_path: Path) -> None:
    """A kill right after a file rename (a window random kills rarely hit) resumes exactly."""
    out, recovery = tmp_path / "out", tmp_path / "recovery"
    proc = run(broker, topic, out, recovery, {"FLOWKEEPER_CRASH_AFTER": "parquet_after_rename:20"})
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    finish(broker, topic, out, recovery)
    assert_same(out, reference)


def test_broker_paused_mid_run_then_back(broker: Broker, topic: str, reference: Path,
                                         tmp_path: Path) -> None:
    """The broker frozen for 10 s mid-run (SIGSTOP/SIGCONT: Tansu's memory storage would lose the
    topic on a real restart) only delays the run: it finishes with the same outputs."""
    out, recovery = tmp_path / "out", tmp_path / "recovery"
    proc = run(broker, topic, out, recovery)
    wait_for_progress(proc, out, recovery, len(parquet_files(reference)) * 2 // 5)
    os.kill(broker.pid, signal.SIGSTOP)
    try:
        time.sleep(10)  # the outage itself: how long the broker answers nothing
    finally:
        os.kill(broker.pid, signal.SIGCONT)
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, output[-3000:]
    assert_same(out, reference)


def test_a_recreated_topic_under_a_snapshot_fails_loudly(broker: Broker, simulation: Simulation,
                                                         tmp_path: Path) -> None:
    """Resuming from a snapshot whose offsets the re-created topic no longer has stops at once
    with a message naming the topic, partition and offsets, instead of hanging or skipping."""
    from kafka import KafkaAdminClient

    topic = produce_simulation(broker, simulation)
    out, recovery = tmp_path / "out", tmp_path / "recovery"
    finish(broker, topic, out, recovery)
    admin = KafkaAdminClient(**broker.connection.kafka_python())
    try:
        admin.delete_topics([topic])
    except Exception as e:
        pytest.skip(f"this broker cannot delete topics: {e}")
    finally:
        admin.close()
    from connectors.kafka_admin import create_topic

    for _ in range(50):
        try:
            create_topic(broker.connection, topic, simulation.config.partitions, 1,
                         {"retention.ms": "-1"})
            break
        except Exception:
            time.sleep(0.2)
    proc = run(broker, topic, out, recovery)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 74, output[-3000:]
    assert f"'{topic}' partition" in output and "re-created or truncated" in output

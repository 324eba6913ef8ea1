"""The `metrics` rows, folded in the shards: identical to the rows of Bytewax's windowing operator
(a fixture made by that code), consistent with the run's own tables, closed on time on a live
stream with no further input (an injected clock, no sleeps), with the quantiles of a DDSketch."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ddsketch import DDSketch
from hypothesis import given
from hypothesis import strategies as st

from connectors.simulator import simulate
from connectors.simulator.truth import Simulation
from dataflows.settings import Settings
from dataflows.sources import simulator_config
from operators.shard_step import ShardLogic, ShardStepConfig
from schemas.event import RawRecord
from schemas.payloads.bundled import bundled_registry
from state.admission import Admission
from state.catalog import load_catalog
from state.metric_windows import MetricsWindow, metric_row
from state.output import FACT_WINDOW_MS, FactTally, Row
from state.shard import ShardConfig
from state.table_rows import TableRows
from tests.test_live_idle import order_placed
from tests.test_pipeline import run_flow

# The fixture holds the `metrics` rows of this workload as the code before the fold (commit
# f0f0799, `operators/metrics.py`: EventClock, TumblingWindower, fold_window keyed by workflow
# type and shard) wrote them, 1 worker, sorted by row_id; 1 and 2 workers agreed then.
FIXTURE = Path(__file__).parent / "fixtures" / "metrics_sim400_seed26.json.gz"
SETTINGS = Settings.from_flags(sim_instances=400, sim_seed=26, out=Path("unused"))
COUNTS = ("events_in", "started", "duplicates", "late", "anomalies", "dead_letters",
          "completed", "failed", "cancelled", "timed_out", "compensated", "compensation_failed")


@pytest.fixture(scope="module")
def simulation() -> Simulation:
    return simulate(simulator_config(SETTINGS), load_catalog(SETTINGS.definitions))




def metrics(rows: list[Row]) -> list[dict[str, Any]]:
    return sorted((row for table, row in rows if table == "metrics"), key=lambda r: r["row_id"])


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_rows_equal_those_of_the_windowing_operator(simulation: Simulation,
                                                            workers: int) -> None:
    """On the simulator workload (400 instances over weeks of event time, with duplicates, late
    events and dead letters), every `metrics` row equals the row the windowing operator wrote."""
    expected = json.loads(gzip.decompress(FIXTURE.read_bytes()))
    got = metrics(run_flow(simulation, SETTINGS, workers))
    assert len(got) == len(expected) > 1000
    assert got == expected
    assert {r["window_start"] for r in got} != {got[0]["window_start"]}
    assert all(sum(r[k] for r in got) > 0 for k in ("duplicates", "late", "dead_letters",
                                                     "latency_count"))


def test_metrics_counts_add_up_to_the_run_tables(simulation: Simulation) -> None:
    """Per workflow type and shard, the windows' counts sum to what the ledger and the outcomes
    say: every event in, duplicate, late and anomalous record, start and outcome (dead letters
    per shard: the ledger may not know the workflow type a dead letter was counted under)."""
    rows = run_flow(simulation, SETTINGS)
    summed: Counter[tuple[str, str, str]] = Counter()
    for row in metrics(rows):
        for name in COUNTS:
            workflow_type = "*" if name == "dead_letters" else row["workflow_type"]
            summed[workflow_type, row["shard"], name] += row[name]
    recount: Counter[tuple[str, str, str]] = Counter()
    disposition = {"duplicate": "duplicates", "late": "late", "anomalous": "anomalies"}
    for table, row in rows:
        key = (row.get("workflow_type") or "unknown", row["shard"])
        if table == "ledger":
            if row["disposition"] != "dead_lettered":
                recount[(*key, "events_in")] += 1
            if row["disposition"] == "dead_lettered":
                recount["*", row["shard"], "dead_letters"] += 1
            elif row["disposition"] in disposition:
                recount[(*key, disposition[row["disposition"]])] += 1
        elif table == "outcomes":
            recount[(*key, "started")] += 1
            recount[(*key, row["outcome"])] += 1
    assert +summed == +recount


MINUTE = timedelta(milliseconds=FACT_WINDOW_MS)
PLACED = datetime(2026, 3, 2, 10, 0, 30, tzinfo=UTC)  # inside the window 10:00-10:01


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def live_shard(clock: FakeClock, drain_at_eof: bool = False) -> tuple[ShardLogic, list[Row]]:
    """A live shard logic (idle grace 1 s) that has taken one order placed at `PLACED`."""
    settings = Settings()
    catalog = load_catalog(settings.definitions)
    config = ShardStepConfig(catalog=catalog, rules=catalog.decode_rules(bundled_registry()),
                             shard=ShardConfig(allowed_lateness_ms=0), buckets=1,
                             drain_at_eof=drain_at_eof, idle_grace=timedelta(seconds=1),
                             clock=clock)
    admitted = Admission(config.rules, buckets=1).admit(
        [RawRecord("live", 0, 0, order_placed(PLACED), b"live-o1")])
    logic = ShardLogic(config, None)
    [(name, items)] = admitted.items()
    return logic, only_rows(logic.on_batch([(name, items)])[0])


def only_rows(chunks: Iterable[TableRows]) -> list[Row]:
    """The `(table, dict)` rows of the one chunk an engine call handed on."""
    [chunk] = chunks
    return chunk.dict_rows()


def test_a_silent_live_shard_closes_its_window_a_grace_after_it_ends() -> None:
    """With no further input, the shard wakes a grace after its open window ends (before the
    order's deadline), and the idle tick emits that window's row; nothing closes it earlier."""
    clock = FakeClock(PLACED + timedelta(seconds=5))
    logic, rows = live_shard(clock)
    assert logic.notify_at() == clock.now + timedelta(seconds=1)  # the order, held at the watermark
    clock.now += timedelta(seconds=1)
    released = only_rows(logic.on_notify()[0])
    assert any(table == "transitions" for table, _ in released)
    assert not any(table == "metrics" for table, _ in rows + released)
    window_end = datetime(2026, 3, 2, 10, 1, tzinfo=UTC)
    assert logic.notify_at() == window_end + timedelta(seconds=1)
    clock.now = window_end + timedelta(seconds=1)
    closed = only_rows(logic.on_notify()[0])
    [row] = [row for table, row in closed if table == "metrics"]
    assert (row["window_start"], row["events_in"], row["started"], row["open_at_end"]) == (
        int((window_end - MINUTE).timestamp() * 1000), 1, 1, 1)
    assert logic.notify_at() is not None and logic.notify_at() > window_end + MINUTE


def test_the_end_of_input_emits_open_windows_drained_or_not() -> None:
    """At EOF every open window is emitted, whether deadlines are drained or not (as the windowing
    operator did); drained, the deadline's facts are in it too."""
    for drain, outcomes in ((False, 0), (True, 1)):
        clock = FakeClock(PLACED + timedelta(seconds=5))
        logic, _ = live_shard(clock, drain_at_eof=drain)
        clock.now += timedelta(seconds=1)
        logic.on_notify()  # the order is released: its window is open
        assert logic.shard is not None and logic.shard.metrics.open
        rows = only_rows(logic.on_eof()[0])
        tables = Counter(table for table, _ in rows)
        assert tables["metrics"] >= 1 and tables["outcomes"] == outcomes
        assert not logic.shard.metrics.open


@given(st.lists(st.one_of(st.floats(-10.0, 1e9, allow_nan=False), st.just(0.0),
                          st.sampled_from([1e-320, 5e-324])), min_size=1, max_size=60),
       st.integers(1, 4))
def test_latency_quantiles_are_those_of_ddsketch(latencies: list[float], calls: int) -> None:
    """Whatever the latencies (zeros, negatives, subnormals, spread over several calls' tallies),
    the row's count and p50/p95/p99 are exactly `ddsketch.DDSketch(0.01)`'s for the same values
    clamped at 0."""
    window = MetricsWindow()
    for part in range(calls):
        window.add(FactTally(latencies=latencies[part::calls]))
    sketch = DDSketch(relative_accuracy=0.01)
    for value in latencies:
        sketch.add(max(value, 0.0))
    row = metric_row("w", "0/0", 0, window)
    assert row["latency_count"] == sketch.count == len(latencies)
    assert [row["latency_p50_ms"], row["latency_p95_ms"], row["latency_p99_ms"]] == [
        sketch.get_quantile_value(q) for q in (0.5, 0.95, 0.99)]

"""One broken clock cannot move a partition's event time (`state.admission`): a record stamped far
ahead of the partition is held until the partition's other traffic corroborates the jump, and is
dead-lettered when it does not; real jumps (a quiet week in a sparse log) still move the clock,
and everything else in the stream is judged exactly as without the outliers."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import replace
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
import pytest
from bytewax.testing import TestingSink, cluster_main, run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from connectors.simulator import SimulatorSource, simulate
from connectors.simulator.truth import Simulation, write_ground_truth
from console.queries import overview
from dataflows.cli import main
from dataflows.pipeline import build_flow
from dataflows.settings import Settings
from dataflows.sources import simulator_config
from dataflows.summary import accuracy
from operators.telemetry import Telemetry
from schemas.event import DeadLetter, Event, RawRecord
from schemas.payloads.registry import PayloadRegistry
from state.admission import MAX_HELD, NEVER, QUORUM, Admission, Admitted, TimeJump, span
from state.catalog import Catalog, load_catalog
from tests.demo_kit import run_command
from tests.engine_kit import ORDER_V1, T0, ce, write_catalog
from tests.kafka_broker import Broker

HOUR_MS = 3_600_000
SKEW_MS = HOUR_MS


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return write_catalog(tmp_path, ORDER_V1)


def admission(catalog: Catalog, **kwargs: Any) -> Admission:
    return Admission(catalog.decode_rules(PayloadRegistry()), 1, NEVER, SKEW_MS,
                     lateness_ms=5_000, **kwargs)


def record(offset: int, value: bytes, order: str) -> RawRecord:
    return RawRecord("test", 0, offset, value, order.encode())


def traffic(start_minute: float, orders: int, first: int = 0) -> list[tuple[bytes, str]]:
    """One `OrderPlaced` per order, a minute apart, from `start_minute`."""
    return [(ce(f"e{first + n}", "OrderPlaced", start_minute + n, f"o{first + n}"), f"o{first + n}")
            for n in range(orders)]


def admit_all(admission: Admission, values: list[tuple[bytes, str]],
              finish: bool = True, start: int = 0) -> list[Admitted]:
    """Every admitted item (ticks left out), in order, one record per batch from offset `start`."""
    items: list[Admitted] = []
    for offset, (value, order) in enumerate(values, start=start):
        for group in admission.admit([record(offset, value, order)]).values():
            items += [item for item in group if item[1] is not None]
    if finish:
        for group in admission.finish().values():
            items += [item for item in group if item[1] is not None]
    return items


def offsets(items: list[Admitted], kind: type) -> list[int]:
    return [d.record.offset if isinstance(d, DeadLetter) else d.offset  # type: ignore[union-attr]
            for _, d in items if type(d) is kind]


def test_a_broken_producer_cannot_move_the_clock(catalog: Catalog) -> None:
    """Five records of one order stamped 124 years ahead are dead-lettered as time_out_of_range
    with a message naming the jump; every other record is admitted on the clock it had."""
    values = traffic(0, 10)
    broken = [(ce(f"x{n}", "OrderViewed", 124 * 525_960 + n, "o-broken"), "o-broken")
              for n in range(5)]
    values = values[:3] + broken + values[3:]
    items = admit_all(admission(catalog), values)
    refused = [d for _, d in items if isinstance(d, DeadLetter)]
    assert [d.record.offset for d in refused] == [3, 4, 5, 6, 7]
    assert {d.reason for d in refused} == {"time_out_of_range"}
    assert "124 years ahead of partition 0's event time" in refused[0].message
    assert "--max-future-skew" in refused[0].message
    admitted = [(stamp, d.offset) for stamp, d in items if type(d) is Event]
    assert [o for _, o in admitted] == [0, 1, 2, 8, 9, 10, 11, 12, 13, 14]
    assert max(stamp for stamp, _ in admitted) < T0.timestamp() * 1000 + HOUR_MS
    jumps = [d for _, d in items if isinstance(d, TimeJump)]
    assert {j.kind for j in jumps} == {"refused"} and len(jumps) == 5


def test_a_real_jump_after_a_quiet_week_moves_the_clock(catalog: Catalog) -> None:
    """A sparse log: after a week without events the next records land near each other, so the
    jump is corroborated: nothing is dead-lettered, one `jumped` row names it, and every record is
    admitted in read order on the clock as it would have moved without the rule."""
    week = 7 * 24 * 60
    values = traffic(0, 6) + traffic(week, 8, first=6)
    items = admit_all(admission(catalog), values, finish=False)
    assert offsets(items, DeadLetter) == []
    assert offsets(items, Event) == list(range(14))
    [jump] = [d for _, d in items if isinstance(d, TimeJump)]
    assert jump.kind == "jumped" and jump.event.offset == 6
    assert jump.event.time_ms - jump.from_ms == (week - 5) * 60_000


def test_the_first_record_of_a_partition_can_be_the_outlier(catalog: Catalog) -> None:
    """A partition whose very first record comes from a broken clock still starts on its real
    time: the outlier waits for the others' votes like any record ahead of the clock."""
    values = [(ce("x", "OrderPlaced", 60 * 24 * 365 * 50, "o-x"), "o-x"), *traffic(0, 8)]
    items = admit_all(admission(catalog), values)
    assert offsets(items, DeadLetter) == [0]
    assert offsets(items, Event) == list(range(1, 9))
    assert all(stamp < T0.timestamp() * 1000 + HOUR_MS for stamp, _ in items)


def test_the_end_of_input_admits_what_was_not_refuted(catalog: Catalog) -> None:
    """At the end of a bounded input a held record that fewer than `QUORUM` other instances
    contradicted is admitted (the last records of a sparse log, with a late event after them),
    and one that `QUORUM` contradicted was dead-lettered before."""
    values = [*traffic(0, 6), (ce("tail", "OrderPlaced", 600, "o-r"), "o-r"),
              *traffic(7, QUORUM - 1, first=9)]
    assert offsets(admit_all(admission(catalog), values), Event)[-1] == 6
    values = [*traffic(0, 6), (ce("x", "OrderPlaced", 600, "o-x"), "o-x"),
              *traffic(7, QUORUM, first=9)]
    assert offsets(admit_all(admission(catalog), values), DeadLetter) == [6]


def test_held_records_survive_a_snapshot(catalog: Catalog) -> None:
    """A snapshot keeps the held records and their votes: a resumed admission decides them as
    the uninterrupted one does."""
    values = [*traffic(0, 4), (ce("x", "OrderPlaced", 9_000, "o-x"), "o-x"), *traffic(4, 6, 4)]
    whole = admit_all(admission(catalog), values)
    first = admission(catalog)
    items = admit_all(first, values[:6], finish=False)
    assert first.held, "the outlier is held at the snapshot"
    resumed = admission(catalog)
    resumed.restore(first.snapshot())
    items += admit_all(resumed, values[6:], start=6)
    key = [(stamp, type(d).__name__, getattr(d, "offset", None)) for stamp, d in items]
    assert key == [(stamp, type(d).__name__, getattr(d, "offset", None)) for stamp, d in whole]


def test_the_wall_clock_vouches_on_a_live_stream(catalog: Catalog) -> None:
    """With `--idle-grace` the wall clock vouches for event times up to now: the first record
    of a live partition is admitted at once, not held for votes."""
    now_ms = int(T0.timestamp() * 1000) + 10 * 60_000
    live = admission(catalog, vouch=lambda: now_ms)
    items = admit_all(live, traffic(0, 1), finish=False)
    assert offsets(items, Event) == [0] and not live.held


def test_held_records_are_bounded(catalog: Catalog) -> None:
    """A partition holds at most `MAX_HELD` records; beyond that the oldest are decided."""
    values = [(ce(f"e{n}", "OrderPlaced", n * 120, "o-solo"), "o-solo")
              for n in range(MAX_HELD + 5)]
    kept = admission(catalog)
    items = admit_all(kept, values, finish=False)
    assert len(kept.held) <= MAX_HELD
    assert offsets(items, Event)[:5] == [0, 1, 2, 3, 4]


def test_spans_read_as_people_say_them() -> None:
    """The message's durations: years, days, hours, minutes, seconds."""
    assert span(124 * 31_556_952_000) == "124 years"
    assert span(int(3.8 * HOUR_MS)) == "3.8 h"
    assert span(90_000) == "1.5 min"


# -- the whole dataflow: outliers change only themselves --------------------------------------

SEED = {"sim_instances": 150, "sim_seed": 7, "sim_partitions": 2, "out": Path("unused")}
COMPARED = ("ledger", "outcomes", "commands", "corrections", "transitions", "anomalies",
            "dead_letters")


@cache
def simulation() -> Simulation:
    settings = Settings.from_flags(**SEED)
    return simulate(simulator_config(settings), load_catalog(settings.definitions))


def without_arrival(partitions: list[list[RawRecord]]) -> list[list[RawRecord]]:
    """The stream as an export without arrival times: the skew guard has nothing to compare."""
    return [[replace(r, arrived_ms=0) for r in records] for records in partitions]


@cache
def run_rows(arrival: bool, buckets: int, workers: int,
             outliers: tuple[tuple[int, int, int, int], ...] = ()
             ) -> dict[str, dict[str, tuple[tuple[str, str], ...]]]:
    """Every row of a run by table and row id (shard left out), with `outliers` inserted:
    (partition, position, instance number, years ahead)."""
    partitions = [list(p) for p in simulation().partitions]
    if not arrival:
        partitions = without_arrival(partitions)
    for n, (partition, position, instance, years) in enumerate(outliers):
        template = next(r for r in partitions[partition] if r.key is not None
                        and r.value.startswith(b"{") and b'"OrderPlaced"' in r.value)
        event = json.loads(template.value)
        event["id"] = f"outlier-{n}"
        event["time"] = (T0 + timedelta(days=365 * years)).isoformat()
        event["data"]["order_id"] = f"broken-{instance}"
        value = json.dumps(event).encode()
        at = partitions[partition][position]
        partitions[partition].insert(position, RawRecord(
            at.source, partition, 10_000_000 + n, value, f"broken-{instance}".encode(), (),
            at.arrived_ms))
    rows: list[tuple[str, dict[str, Any]]] = []
    flow = build_flow(Settings.from_flags(**SEED, buckets=buckets),
                      source=SimulatorSource(partitions), sink=TestingSink(rows))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    tables: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {}
    for table, row in rows:
        if table in COMPARED:
            tables.setdefault(table, {})[row["row_id"]] = tuple(
                sorted((k, repr(v)) for k, v in row.items() if k != "shard"))
    return tables


@st.composite
def outlier_sets(draw: st.DrawFn) -> tuple[tuple[int, int, int, int], ...]:
    """1 to 6 records stamped decades ahead: several of one instance, several of others, each
    instance on its own broken clock, never among a partition's last 40 records (the end of
    input admits what fewer than `QUORUM` other instances contradicted)."""
    sizes = [len(p) for p in simulation().partitions]
    count = draw(st.integers(1, 6))
    found = []
    for _ in range(count):
        partition = draw(st.integers(0, len(sizes) - 1))
        position = draw(st.integers(0, sizes[partition] - 40))
        instance = draw(st.integers(0, 2))
        found.append((partition, position, instance, 20 + 30 * instance))
    return tuple(sorted(found, key=lambda o: (o[0], -o[1])))


@pytest.mark.slow
@pytest.mark.parametrize(("arrival", "buckets", "workers"),
                         [(False, 1, 1), (False, 16, 2), (True, 16, 1), (True, 1, 2)])
@settings(max_examples=4, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(outliers=outlier_sets())
def test_outliers_change_only_their_own_dispositions(
        arrival: bool, buckets: int, workers: int,
        outliers: tuple[tuple[int, int, int, int], ...]) -> None:
    """Inserting far-future records (several of one instance, several of others) into a stream
    makes each of them a `time_out_of_range` dead letter and changes no other row: ledger,
    outcomes, commands, corrections, transitions, anomalies and the other dead letters, with and
    without arrival times,
    at 1 and 16 buckets, with 1 and 2 workers."""
    clean = run_rows(arrival, buckets, workers)
    dirty = run_rows(arrival, buckets, workers, outliers)
    source = simulation().partitions[0][0].source
    inserted = {f"{source}/{p}/{10_000_000 + n}" for n, (p, *_) in enumerate(outliers)}
    for table in COMPARED:
        kept = {k: v for k, v in dirty.get(table, {}).items() if k not in inserted}
        assert kept == clean.get(table, {}), table
    for row_id in inserted:
        row = dict(dirty["ledger"][row_id])
        assert row["disposition"] == "'dead_lettered'"
        assert dict(dirty["dead_letters"][row_id])["reason"] == "'time_out_of_range'"


# -- files without arrival times: the simulator's ground truth, and what the run says ---------

@pytest.mark.slow
def test_the_simulated_stream_as_a_file_without_arrival_times_reaches_the_ground_truth(
        tmp_path: Path) -> None:
    """The simulator's records written as a JSON-lines file in arrival order, with no arrival
    times (its events stamped hours after they arrived then have nothing to be compared with but
    the partition's own time), reach every true outcome and command, as the embedded run does."""
    settings = Settings.from_flags(sim_instances=600, sim_seed=23, out=tmp_path)
    sim = simulate(simulator_config(settings), load_catalog(settings.definitions))
    records = sorted(sim.records(), key=lambda r: (r.arrived_ms, r.partition, r.offset))
    kept = [r.value for r in records if not r.headers and b"\n" not in r.value]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(v + b"\n" for v in kept))
    write_ground_truth(sim, tmp_path / "sim")
    out = tmp_path / "out"
    run_command(out, "--source", "file", str(path), "--file-partitions", "4")
    conn = duckdb.connect(str(out / "flowkeeper.duckdb"), read_only=True)
    try:
        skewed = conn.sql("SELECT count(*) FROM dead_letters WHERE reason = 'time_out_of_range'"
                          ).fetchall()[0][0]
        acc = accuracy(conn, tmp_path / "sim" / "ground_truth")
    finally:
        conn.close()
    assert acc.all_ok, acc
    assert skewed > 0  # the stream has stamps far after their arrival, now caught without it


def placed(event_id: str, minutes: float, order: str) -> bytes:
    """An `OrderPlaced` of the bundled order workflow, as the README's example writes it."""
    return json.dumps({
        "specversion": "1.0", "id": event_id, "source": "/shop", "type": "OrderPlaced",
        "time": (T0 + timedelta(minutes=minutes)).isoformat(), "dataversion": "2",
        "data": {"order_id": order, "customer_id": "c-1", "total_cents": 1250, "currency": "EUR",
                 "items": [{"sku": "MUG-01", "quantity": 1}]}}).encode()


def test_a_run_says_where_a_partition_refused_a_broken_clock(tmp_path: Path) -> None:
    """A file run with five records of one order stamped 124 years ahead: the summary names the
    partition, the records and the first of them; the console's overview lists them."""
    values = [placed(f"e{n}", n, f"o{n}") for n in range(12)]
    broken = [placed(f"x{n}", 124 * 525_960 + n, "o-broken") for n in range(5)]
    path = tmp_path / "stream.jsonl"
    path.write_bytes(b"".join(v + b"\n" for v in [*values[:6], *broken, *values[6:]]))
    out = tmp_path / "out"
    printed = run_command(out, "--source", "file", str(path), "--file-partitions", "1")
    assert ("partition 0: 5 records stamped up to 124 years ahead of its event time were "
            "dead-lettered (time_out_of_range), the first at file:stream.jsonl/7") in printed
    conn = duckdb.connect(str(out / "flowkeeper.duckdb"), read_only=True)
    try:
        late = conn.execute("SELECT count(*) FROM ledger WHERE disposition = 'late'").fetchall()
        [jumps] = overview(conn)["event_time_jumps"]
    finally:
        conn.close()
    assert (jumps["partition"], jumps["kind"], jumps["records"]) == (0, "refused", 5)
    assert late == [(0,)]


def test_prometheus_counts_refusals_per_partition(tmp_path: Path) -> None:
    """`flowkeeper_event_time_jumps_total{partition,kind}` counts the refused records of the
    partition, and the gauge holds how far ahead the last one was."""
    values = [placed(f"e{n}", n, f"o{n}") for n in range(12)]
    broken = [placed(f"x{n}", 124 * 525_960 + n, "o-broken") for n in range(5)]
    records = [RawRecord("file:stream.jsonl", 0, n, value, None)
               for n, value in enumerate([*values[:6], *broken, *values[6:]], start=1)]
    registry = CollectorRegistry()
    run_main(build_flow(Settings.from_flags(out=tmp_path), source=SimulatorSource([records]),
                        sink=TestingSink([]), telemetry=Telemetry(registry)))
    labels = {"partition": "0", "kind": "refused"}
    assert registry.get_sample_value("flowkeeper_event_time_jumps_total", labels) == 5
    ahead = registry.get_sample_value("flowkeeper_event_time_last_jump_seconds", labels)
    assert ahead is not None and ahead > 124 * 365 * 86_400


@pytest.mark.broker
def test_a_relay_that_copies_the_event_time_into_the_kafka_timestamp(broker: Broker,
                                                                     tmp_path: Path) -> None:
    """On Kafka, message timestamps equal to the event times (a relay copying them) vouch for
    nothing: the five records of a broken clock are refused there as from the file."""
    values = [placed(f"e{n}", n, f"o{n}") for n in range(12)]
    broken = [placed(f"x{n}", 124 * 525_960 + n, "o-broken") for n in range(5)]
    path = tmp_path / "stream.jsonl"
    path.write_bytes(b"".join(v + b"\n" for v in [*values[:6], *broken, *values[6:]]))
    topic = broker.topic("copied-timestamps", partitions=1)
    kafka = ["--kafka-brokers", broker.address]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["produce", "--topic", topic, "--file", str(path), *kafka]) == 0
    out = tmp_path / "out"
    printed = run_command(out, "--source", "kafka", "--kafka-topic", topic, "--no-kafka-tail",
                          "--commands-topic", "", *kafka)
    assert "partition 0: 5 records stamped up to 124 years ahead of its event time" in printed
    conn = duckdb.connect(str(out / "flowkeeper.duckdb"), read_only=True)
    try:
        late = conn.execute("SELECT count(*) FROM ledger WHERE disposition = 'late'").fetchall()
        refused = conn.execute("SELECT count(*) FROM dead_letters "
                               "WHERE reason = 'time_out_of_range'").fetchall()
    finally:
        conn.close()
    assert (late, refused) == ([(0,)], [(5,)])

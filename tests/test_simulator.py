"""The embedded simulator: deterministic traffic, truth that matches decoding and the definition
semantics, and a Bytewax source that plays it in order, resumes exactly and paces by a clock."""

from __future__ import annotations

import collections
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bytewax.operators as op
import pyarrow.parquet as pq
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import AbortExecution, StatefulSourcePartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main
from kafka.partitioner.default import murmur2

from connectors.simulator import (
    Faults,
    Simulation,
    SimulatorConfig,
    SimulatorSource,
    simulate,
    write_ground_truth,
)
from connectors.simulator.replica import Step, interpret
from connectors.simulator.truth import INSTANCES, RECORDS
from schemas.decode import DecodeRules, decode
from schemas.event import DeadLetter, Event, RawRecord
from schemas.payloads.bundled import bundled_registry
from state.catalog import Catalog, load_catalog
from state.definition import StateMachine

DEFINITIONS = Path(__file__).resolve().parent.parent / "definitions"
MINUTE = 60_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(DEFINITIONS)


@pytest.fixture(scope="module")
def rules(catalog: Catalog) -> DecodeRules:
    return catalog.decode_rules(bundled_registry())


@pytest.fixture(scope="module")
def sim(catalog: Catalog) -> Simulation:
    return simulate(SimulatorConfig(seed=11), catalog)


@pytest.fixture(scope="module")
def small(catalog: Catalog) -> Simulation:
    return simulate(SimulatorConfig(seed=5, instances=150, partitions=3), catalog)


def _near(observed: int, trials: int, share: float) -> bool:
    """Within four standard deviations of a binomial count (plus a little for rounding)."""
    return abs(observed - trials * share) <= 4 * math.sqrt(trials * share * (1 - share)) + 2


def _machine(catalog: Catalog, workflow: str) -> StateMachine:
    definition = catalog.latest(workflow)
    assert isinstance(definition, StateMachine)
    return definition


# -- determinism ----------------------------------------------------------------------------

def test_same_seed_gives_identical_records_and_truth(catalog: Catalog) -> None:
    """Two runs with one seed give byte-identical records and the same truth."""
    config = SimulatorConfig(seed=42, instances=300)
    first, second = simulate(config, catalog), simulate(config, catalog)
    assert first.partitions == second.partitions
    assert first.truth_instances == second.truth_instances
    assert first.truth_records == second.truth_records


def test_different_seed_gives_different_records(catalog: Catalog) -> None:
    """Another seed gives other traffic."""
    a = simulate(SimulatorConfig(seed=42, instances=300), catalog)
    b = simulate(SimulatorConfig(seed=43, instances=300), catalog)
    assert [r.value for r in a.records()] != [r.value for r in b.records()]


# -- records --------------------------------------------------------------------------------

def test_every_record_decodes_as_the_truth_says(sim: Simulation, rules: DecodeRules) -> None:
    """A record decodes to an Event of its instance unless the truth dead-letters it, and then
    to a DeadLetter with exactly the expected reason."""
    assert len(sim.records()) == len(sim.truth_records)
    for record, truth in zip(sim.records(), sim.truth_records, strict=True):
        assert (record.partition, record.offset) == (truth.partition, truth.offset)
        decoded = decode(record, rules)
        if truth.expected_disposition == "dead_lettered":
            assert isinstance(decoded, DeadLetter), truth
            assert decoded.reason == truth.expected_reason, decoded.message
            assert decoded.event_id == truth.event_id
        else:
            assert isinstance(decoded, Event), decoded
            assert (decoded.event_id, decoded.instance_id) == (truth.event_id, truth.instance_id)
            assert decoded.trace_id is not None


def test_instance_id_is_where_the_definition_takes_it(sim: Simulation, catalog: Catalog) -> None:
    """Subject-routed workflows carry the id in `subject`, the others in their `data_field`."""
    for record, truth in zip(sim.records(), sim.truth_records, strict=True):
        if truth.expected_disposition == "dead_lettered":
            continue
        envelope = json.loads(record.value)
        field = _machine(catalog, truth.workflow_type).instance_id.data_field
        if field is None:
            assert envelope["subject"] == truth.instance_id
        else:
            assert envelope["data"][field] == truth.instance_id and "subject" not in envelope


def test_offsets_are_contiguous_per_partition(sim: Simulation) -> None:
    """Each partition holds offsets 0..n-1 of source `simulator`, keyed by instance id."""
    assert len(sim.partitions) == sim.config.partitions
    for p, records in enumerate(sim.partitions):
        assert [r.offset for r in records] == list(range(len(records)))
        assert {(r.partition, r.source, r.headers) for r in records} == {(p, "simulator", ())}


def test_all_events_of_an_instance_share_one_partition(sim: Simulation) -> None:
    """An instance's records all go to the partition Kafka's default partitioner gives its id
    (murmur2, as event files and `produce` place records), keyed by it."""
    partitions = collections.defaultdict(set)
    for record, truth in zip(sim.records(), sim.truth_records, strict=True):
        assert record.key == truth.instance_id.encode()
        partitions[truth.instance_id].add(record.partition)
    for instance_id, found in partitions.items():
        want = (murmur2(instance_id.encode()) & 0x7FFFFFFF) % sim.config.partitions
        assert found == {want}


def test_arrival_times_never_decrease_within_a_partition(sim: Simulation) -> None:
    """Records are in arrival order."""
    for records in sim.partitions:
        arrivals = [r.arrived_ms for r in records]
        assert arrivals == sorted(arrivals)


# -- truth ----------------------------------------------------------------------------------

def test_configured_shares_roughly_hold(sim: Simulation) -> None:
    """Scenario and fault counts are near their configured shares."""
    config, n = sim.config, sim.config.instances
    scenarios = collections.Counter(t.scenario for t in sim.truth_instances)
    late = scenarios["late_after_timeout"]
    assert late <= n * config.faults.late_after_timeout + 4 * math.sqrt(n * 0.03) + 2
    assert late >= 0.6 * n * config.faults.late_after_timeout  # a few near the end cannot be late
    mixed = 1 - config.faults.late_after_timeout
    assert _near(scenarios["completed"], n, config.mix.completed * mixed)
    assert _near(scenarios["failed"], n, config.mix.failed * mixed)
    faults = collections.Counter(f for t in sim.truth_records for f in (t.fault or "").split(","))
    for fault in ("duplicate", "malformed_json", "payload_invalid", "unknown_type",
                  "future_stamped", "after_end"):
        assert _near(faults[fault], n, getattr(config.faults, fault)), fault
    assert _near(faults["out_of_order"] // 2, n, config.faults.out_of_order * 0.95)
    versioned = sum(t.workflow_type in ("order_fulfilment", "loan_application")
                    for t in sim.truth_instances)
    assert _near(faults["old_version"], versioned, config.faults.old_version)
    compensating = [t for t in sim.truth_instances
                    if t.expected_outcome in ("compensated", "compensation_failed")]
    failed = sum(t.expected_outcome == "compensation_failed" for t in compensating)
    assert _near(failed, len(compensating), config.faults.missing_ack)


def test_dispositions_follow_the_faults(sim: Simulation) -> None:
    """Duplicates, late events and events after the end get the dispositions their fault implies."""
    for truth in sim.truth_records:
        faults = set((truth.fault or "").split(","))
        if "duplicate" in faults:
            assert truth.expected_disposition == "duplicate"
        elif "late_after_timeout" in faults:
            assert truth.expected_disposition == "late"
        elif "after_end" in faults:
            assert truth.expected_disposition == "anomalous"
        elif truth.expected_disposition != "dead_lettered":
            assert truth.expected_disposition in ("applied", "ignored")


def test_late_after_timeout_instances_expect_a_correction(sim: Simulation) -> None:
    """Exactly the late-after-timeout instances expect a correction, each with one late record."""
    late = collections.Counter(t.instance_id for t in sim.truth_records
                               if t.expected_disposition == "late")
    for truth in sim.truth_instances:
        assert truth.expects_correction == (truth.scenario == "late_after_timeout")
        assert late[truth.instance_id] == (truth.scenario == "late_after_timeout")
        if truth.scenario == "late_after_timeout":
            assert truth.expected_outcome in ("timed_out", "compensated", "compensation_failed")


def test_outcomes_match_scenarios(sim: Simulation) -> None:
    """Each scenario ends in its outcome, or in compensation of steps already done."""
    allowed = {"completed": {"completed"}, "failed": {"failed"}, "cancelled": {"cancelled"},
               "timed_out": {"timed_out"}, "late_after_timeout": {"timed_out"}}
    for truth in sim.truth_instances:
        undone = {"compensated", "compensation_failed"}
        assert truth.expected_outcome in allowed[truth.scenario] | undone
        assert truth.scenario != "completed" or truth.expected_outcome == "completed"
        prefix = f"{truth.workflow_type}/{truth.instance_id}/"
        assert all(k.startswith(prefix) and k.rsplit("/", 1)[1].isdigit()
                   for k in truth.expected_commands)


def test_faults_can_be_switched_off(catalog: Catalog) -> None:
    """With every fault off, each record is applied or ignored and nothing needs correcting."""
    clean = simulate(SimulatorConfig(seed=3, instances=400, faults=Faults.none()), catalog)
    assert {t.expected_disposition for t in clean.truth_records} <= {"applied", "ignored"}
    assert not any(t.expects_correction for t in clean.truth_instances)
    assert all(t.fault is None for t in clean.truth_records)
    assert "compensation_failed" not in {t.expected_outcome for t in clean.truth_instances}


def test_ground_truth_parquet_round_trips(small: Simulation, tmp_path: Path) -> None:
    """The truth files have the explicit schemas and hold every row."""
    instances, records = write_ground_truth(small, tmp_path)
    assert instances == tmp_path / "ground_truth" / "instances.parquet"
    read_instances, read_records = pq.read_table(instances), pq.read_table(records)
    assert read_instances.schema.equals(INSTANCES) and read_records.schema.equals(RECORDS)
    assert read_instances.num_rows == len(small.truth_instances)
    assert read_records.num_rows == len(small.truth_records)
    first = small.truth_instances[0]
    assert read_instances.to_pylist()[0]["expected_commands"] == list(first.expected_commands)


# -- the oracle's interpreter, against the definition text ----------------------------------

def test_replica_times_out_and_compensates_in_reverse_order(catalog: Catalog) -> None:
    """Silence at awaiting_shipment: reminder at 24h, timeout at 48h, then the release and the
    refund (newest step first), and compensation_failed an hour later without acks."""
    orders = _machine(catalog, "order_fulfilment")
    steps = [Step(T0, "OrderPlaced"), Step(T0 + MINUTE, "PaymentAuthorized"),
             Step(T0 + 2 * MINUTE, "InventoryReserved")]
    replica, dispositions = interpret(orders, "o1", steps)
    shipped_by = T0 + 2 * MINUTE + 48 * 60 * MINUTE
    assert dispositions == ["applied"] * 3
    reminded_at = T0 + 2 * MINUTE + 24 * 60 * MINUTE
    assert replica.commands == [
        f"order_fulfilment/o1/awaiting_shipment/ExpediteShipment/{reminded_at}",
        f"order_fulfilment/o1/reserving_inventory/ReleaseInventory/{shipped_by}",
        f"order_fulfilment/o1/awaiting_payment/RefundPayment/{shipped_by}",
    ]
    assert (replica.outcome, replica.state, replica.ended_ms) == (
        "compensation_failed", "timed_out", shipped_by + 60 * MINUTE)


def test_replica_takes_an_event_at_exactly_the_deadline_in_time(catalog: Catalog) -> None:
    """A payment at exactly 30 minutes beats the 30-minute cancellation."""
    orders = _machine(catalog, "order_fulfilment")
    steps = [Step(T0, "OrderPlaced"), Step(T0 + 30 * MINUTE, "PaymentAuthorized")]
    replica, _ = interpret(orders, "o2", steps, until_ms=T0 + 31 * MINUTE)
    assert replica.state == "reserving_inventory"
    reminder = f"order_fulfilment/o2/awaiting_payment/SendPaymentReminder/{T0 + 15 * MINUTE}"
    assert replica.commands == [reminder]


def test_replica_counts_the_offer_deadline_from_submission(catalog: Catalog) -> None:
    """The signing deadline (`from: ApplicationSubmitted`) expires 14 days after submission."""
    loans = _machine(catalog, "loan_application")
    day = 24 * 60 * MINUTE
    steps = [Step(T0, "ApplicationSubmitted"), Step(T0 + MINUTE, "CreditCheckPassed"),
             Step(T0 + 5 * day, "ReviewApproved")]
    replica, _ = interpret(loans, "a1", steps)
    expiry = f"loan_application/a1/contract_signing/WithdrawLoanOffer/{T0 + 14 * day}"
    assert replica.commands[-1] == expiry
    assert (replica.outcome, replica.state) == ("timed_out", "offer_expired")


# -- the Bytewax source ---------------------------------------------------------------------

def _run(source: SimulatorSource, out: list[RawRecord],
         recovery: RecoveryConfig | None = None) -> None:
    flow = Dataflow("simulator_test")
    records = op.input("in", flow, source)
    op.output("out", records, TestingSink(out))
    run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)


def _by_partition(records: list[RawRecord], count: int) -> list[list[RawRecord]]:
    found: list[list[RawRecord]] = [[] for _ in range(count)]
    for record in records:
        found[record.partition].append(record)
    return found


def test_source_emits_every_record_in_order_per_partition(small: Simulation) -> None:
    """Through `run_main`, each partition's records come out complete and in arrival order."""
    out: list[RawRecord] = []
    _run(SimulatorSource(small.partitions, batch_size=16), out)
    assert _by_partition(out, len(small.partitions)) == small.partitions


def test_source_partition_resumes_from_its_offset(small: Simulation) -> None:
    """Resumed at offset n, a partition emits from offset n on and snapshots the next offset."""
    part = SimulatorSource(small.partitions, batch_size=4).build_part("in", "1", 5)
    batch = list(part.next_batch())
    assert [r.offset for r in batch] == [5, 6, 7, 8] and part.snapshot() == 9
    rest: list[RawRecord] = []
    with pytest.raises(StopIteration):
        while True:
            rest += part.next_batch()
    assert batch + rest == small.partitions[1][5:]


class _AbortingPartition(StatefulSourcePartition[RawRecord, int]):
    """Aborts the execution after a number of batches, like `TestingSource.ABORT`."""

    def __init__(self, inner: StatefulSourcePartition[RawRecord, int], batches: int) -> None:
        self.inner, self.batches = inner, batches

    def next_batch(self) -> list[RawRecord]:
        if self.batches == 0:
            raise AbortExecution()
        self.batches -= 1
        return list(self.inner.next_batch())

    def snapshot(self) -> int:
        return self.inner.snapshot()


class _AbortingSource(SimulatorSource):
    def build_part(self, step_id: str, for_part: str,
                   resume_state: int | None) -> StatefulSourcePartition[RawRecord, int]:
        return _AbortingPartition(super().build_part(step_id, for_part, resume_state), 3)


def test_source_resumes_after_an_abort_with_recovery(small: Simulation, tmp_path: Path) -> None:
    """After an aborted run, a recovered run continues each partition right after its snapshot."""
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    before: list[RawRecord] = []
    _run(_AbortingSource(small.partitions, batch_size=5), before, recovery)
    after: list[RawRecord] = []
    _run(SimulatorSource(small.partitions, batch_size=5), after, recovery)
    count = len(small.partitions)
    for first, second, expected in zip(_by_partition(before, count), _by_partition(after, count),
                                       small.partitions, strict=True):
        assert second and second == expected[second[0].offset:]
        assert first == expected[: len(first)] and second[0].offset <= len(first)


class _FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_paced_source_emits_nothing_before_the_scheduled_wall_time(small: Simulation) -> None:
    """At 60x, a record arriving a minute after the first is due one wall second after start."""
    clock = _FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
    start = clock.now
    source = SimulatorSource(small.partitions, speed=60.0, clock=clock)
    origin = min(p[0].arrived_ms for p in small.partitions)
    p = max(range(len(small.partitions)), key=lambda i: small.partitions[i][0].arrived_ms)
    first = small.partitions[p][0]
    part = source.build_part("in", str(p), None)
    due = start + timedelta(microseconds=math.ceil((first.arrived_ms - origin) * 1000 / 60.0))
    assert first.arrived_ms > origin and part.next_awake() == due
    clock.now = due - timedelta(microseconds=1)
    assert list(part.next_batch()) == []
    clock.now = due
    assert next(iter(part.next_batch())) == first
    awake = part.next_awake()
    assert awake is not None and awake > start


def test_paced_and_unpaced_sources_emit_identical_records(small: Simulation) -> None:
    """Paced by a fake clock jumping to each `next_awake`, a partition yields what unpaced does."""
    clock = _FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
    paced = SimulatorSource(small.partitions, batch_size=7, speed=3600.0, clock=clock)
    for p, expected in enumerate(small.partitions):
        part = paced.build_part("in", str(p), None)
        got: list[RawRecord] = []
        while len(got) < len(expected):
            awake = part.next_awake()
            assert awake is not None
            clock.now = max(clock.now, awake)
            got += part.next_batch()
        assert got == expected
        with pytest.raises(StopIteration):
            part.next_batch()

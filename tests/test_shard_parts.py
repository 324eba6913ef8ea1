"""Each part of a shard alone, as Bytewax tests its window logic: the clock with explicit times
(a fake wall clock), the scheduler, the key table, the engine with a callback instead of
corrections, and the corrections on a hand-made tombstone; then the property that ties them
together again: `take` over a slice equals `receive` + `release` per record."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.event import Event, RawRecord
from schemas.payloads.registry import PayloadRegistry
from state.admission import NEVER, Admission, Admitted
from state.catalog import Catalog
from state.corrections import Corrections, Stated
from state.definition import StateMachine
from state.engine import Engine, ShardConfig
from state.key_table import CONFLICTING, DUPLICATE, NEW, KeyTable, Tombstone
from state.machine import MachineInstance
from state.output import Out
from state.scheduler import EVICT, REJUDGE, Scheduler
from state.shard import Shard
from state.shard_clock import END_OF_TIME, ShardClock
from tests.engine_kit import CASES, ORDER_V1, T0, write_catalog
from tests.strategies import cases

MIN = 60_000
START = int(T0.timestamp() * 1000)
KEY = "shop_order/o1"


def at(minutes: float) -> int:
    return START + int(minutes * MIN)


def event(event_id: str, event_type: str, minutes: float, order: str = "o1",
          crc: int = 7) -> Event:
    return Event(event_id=event_id, type=event_type, time_ms=at(minutes),
                 workflow_type="shop_order", instance_id=order, source="test", partition=0,
                 offset=0, arrived_ms=at(minutes), body_crc=crc)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return write_catalog(tmp_path_factory.mktemp("defs"), ORDER_V1, CASES)


def engine_of(catalog: Catalog, **kwargs: object) -> Engine:
    rules = catalog.decode_rules(PayloadRegistry())
    return Engine(catalog, rules, ShardConfig(), KeyTable(), Scheduler(), **kwargs)  # type: ignore[arg-type]


# -- the clock --------------------------------------------------------------------------------

def test_clock_moves_the_watermark_only_when_the_frontier_passes_the_lateness() -> None:
    """The watermark trails the frontier by the allowed lateness and never moves back;
    `catch_up` says when it moved."""
    clock = ShardClock(allowed_lateness_ms=MIN)
    assert clock.catch_up(at(10)) and clock.watermark == at(9)
    assert not clock.catch_up(at(5)) and (clock.frontier, clock.watermark) == (at(10), at(9))
    clock.advance_to(at(12))
    assert not clock.catch_up(at(11)) and clock.watermark == at(12)  # moved, but not by this


def test_clock_tells_out_of_order_events_and_follows_in_order_ones() -> None:
    """An event behind the frontier is out of order and moves nothing; one ahead moves both."""
    clock = ShardClock(allowed_lateness_ms=MIN)
    assert not clock.observe(at(5)) and (clock.frontier, clock.watermark) == (at(5), at(4))
    assert clock.observe(at(4.5)) and (clock.frontier, clock.watermark) == (at(5), at(4))


def test_clock_end_of_time_moves_the_frontier_too() -> None:
    """At the end of a bounded input both frontier and watermark reach the end of time."""
    clock = ShardClock(allowed_lateness_ms=MIN, frontier=at(3), watermark=at(2))
    clock.advance_to(END_OF_TIME)
    assert clock.frontier == clock.watermark == END_OF_TIME


def test_clock_idle_advance_follows_a_fake_wall_clock_after_the_grace() -> None:
    """Quiet for less than the grace: nothing moves; quiet for the grace: the watermark is the
    wall time minus the grace, and the wake-up time is a grace after the next due item."""
    clock = ShardClock(allowed_lateness_ms=MIN)
    clock.catch_up(at(10))
    grace = timedelta(seconds=1)
    last_input = T0 + timedelta(minutes=10)
    assert not clock.idle_advance(last_input + timedelta(milliseconds=999), last_input, grace)
    assert clock.watermark == at(9)
    assert clock.idle_advance(last_input + timedelta(seconds=5), last_input, grace)
    assert clock.watermark == at(10) + 4_000
    assert ShardClock.wake_at(at(15), last_input, grace) == T0 + timedelta(minutes=15, seconds=1)
    assert ShardClock.wake_at(None, last_input, grace) is None
    assert ShardClock.wake_at(END_OF_TIME, last_input, grace) is None


def test_clock_snapshots_itself_by_name() -> None:
    """A restored clock equals the one snapshotted."""
    clock = ShardClock(allowed_lateness_ms=MIN, frontier=at(3), watermark=at(2))
    assert ShardClock.restore(MIN, clock.snapshot()) == clock
    assert ShardClock(MIN).snapshot() == {"frontier": NEVER, "watermark": NEVER}


# -- the scheduler ----------------------------------------------------------------------------

def test_scheduler_answers_whether_anything_is_due() -> None:
    """Due means strictly before the watermark, at the head of either heap."""
    scheduler = Scheduler()
    assert not scheduler.due(END_OF_TIME)
    scheduler.schedule(at(30), EVICT, KEY)
    assert not scheduler.due(at(30)) and scheduler.due(at(30) + 1)
    scheduler.buffer(event("e1", "OrderPlaced", 5), False, KEY)
    assert not scheduler.due(at(5)) and scheduler.due(at(5) + 1)


# -- the key table ----------------------------------------------------------------------------

def test_key_table_remembers_event_ids_per_key() -> None:
    """A new id, then the same id and bytes (duplicate), then the same id with other bytes."""
    keys = KeyTable()
    assert keys.remember(KEY, event("e1", "OrderPlaced", 0)) == NEW
    assert keys.remember(KEY, event("e1", "OrderPlaced", 0)) == DUPLICATE
    assert keys.remember(KEY, event("e1", "OrderPlaced", 0, crc=8)) == CONFLICTING
    assert keys.remember("shop_order/o2", event("e1", "OrderPlaced", 0, "o2")) == NEW


def test_key_table_gauge_reports_only_changes(catalog: Catalog) -> None:
    """Two instances begin and one ends: one `open` fact with the count at the end of the call,
    then nothing until the count changes again."""
    definition = catalog.latest("shop_order")
    assert isinstance(definition, StateMachine)
    keys = KeyTable()
    for key in (KEY, "shop_order/o2"):
        keys.begin(key, "shop_order", MachineInstance(definition, key, at(0)))
    assert keys.finish(KEY, "shop_order") and not keys.finish(KEY, "shop_order")
    out = Out("s", fact_clock=at(1))
    keys.gauge_facts(out)
    assert [t.open_at_end for t in out.tallies.values()] == [1]
    again = Out("s", fact_clock=at(2))
    keys.gauge_facts(again)
    assert again.tallies == {} and keys.open_instances == 1


def test_key_table_evicts_to_a_tombstone_and_forgets_it_after_its_own_retention(
        catalog: Catalog) -> None:
    """The tombstone keeps the final state, version and history; a forget due before its own
    expiry keeps it; at its expiry it goes, with the key's seen ids and early counts."""
    definition = catalog.latest("shop_order")
    assert isinstance(definition, StateMachine)
    keys = KeyTable()
    keys.remember(KEY, event("e1", "OrderPlaced", 0))
    instance = MachineInstance(definition, KEY, at(0))
    instance.start(event("e1", "OrderPlaced", 0), Out("s"))
    keys.begin(KEY, "shop_order", instance)
    keys.history[KEY] += ("OrderPlaced", at(0), None)
    assert keys.evict(KEY, at(60), at(120)) and not keys.evict(KEY, at(60), at(120))
    tombstone = keys.tombstones[KEY]
    assert (tombstone.state, tombstone.version, tombstone.history) == (
        "awaiting_payment", 1, ("OrderPlaced", at(0), None))
    assert not keys.forget(KEY, at(119)) and KEY in keys.tombstones
    assert keys.forget(KEY, at(120)) and KEY not in keys.tombstones and KEY not in keys.seen


# -- the engine -------------------------------------------------------------------------------

def test_engine_reports_changes_of_watched_keys_only(catalog: Catalog) -> None:
    """Events applied and deadlines fired on a watched key call back with their event time;
    the same on an unwatched key do not."""
    changes: list[tuple[str, int, bool]] = []
    engine = engine_of(catalog, watched={KEY},
                       on_change=lambda key, t, out, timer: changes.append((key, t, timer)))
    for e in (event("e1", "OrderPlaced", 0), event("f1", "OrderPlaced", 1, "o2"),
              event("e2", "PaymentAuthorized", 2)):
        engine.scheduler.buffer(e, False, e.instance_key)
    out = Out("s")
    engine.release(at(20), out)
    assert changes == [(KEY, at(0), False), (KEY, at(2), False), (KEY, at(12), False),
                       (KEY, at(15), False)]  # a deadline the instance no longer waits for
    assert [r["command"] for t, r in out.rows if t == "commands"] == [
        "RefundPayment", "SendPaymentReminder"]  # o1's reserving timed out; o2's reminder
    engine.scheduler.schedule(at(25), REJUDGE, KEY)
    engine.release(at(26), out)
    assert changes[-1] == (KEY, at(25), True)


def test_engine_that_never_evicts_keeps_ended_instances(catalog: Catalog) -> None:
    """A what-if engine schedules no eviction for an ended instance; a live one does."""
    for evicts in (True, False):
        engine = engine_of(catalog, evicts=evicts)
        for e in (event("e1", "OrderPlaced", 0), event("e2", "PaymentDeclined", 1)):
            engine.scheduler.buffer(e, False, e.instance_key)
        engine.release(at(5), Out("s"))
        assert engine.keys.instances[KEY].outcome == "failed"
        assert engine.scheduler.evictions() == ({KEY} if evicts else set())


def test_engine_forgets_an_orphan_key_and_says_so(catalog: Catalog) -> None:
    """An event that starts nothing is an orphan anomaly counted on its key; a day later the key
    is forgotten and `on_forget` hears of it."""
    forgotten: list[str] = []
    engine = engine_of(catalog, on_forget=forgotten.append)
    engine.scheduler.buffer(event("e1", "PaymentAuthorized", 0), False, KEY)
    out = Out("s")
    engine.release(at(1), out)
    assert [r["kind"] for t, r in out.rows if t == "anomalies"] == ["orphan_event"]
    assert KEY in engine.keys.early_counts and forgotten == []
    engine.release(at(24 * 60) + 1, out)
    assert forgotten == [KEY] and KEY not in engine.keys.early_counts


# -- the corrections --------------------------------------------------------------------------

def test_corrections_judge_a_late_event_from_a_tombstone_and_follow_it(catalog: Catalog) -> None:
    """A payment 5 minutes before the timeout that ended the order: in time it would be
    reserving (a correction, followed, with a re-judge when the reserving deadline would fire);
    the re-judge states where that run ends up next."""
    keys, scheduler = KeyTable(), Scheduler()
    keys.tombstones[KEY] = Tombstone("timed_out", at(30), at(30 + 24 * 60), "timed_out", 1,
                                     ("OrderPlaced", at(0), None))
    corrections = Corrections("s", catalog, catalog.decode_rules(PayloadRegistry()),
                              ShardConfig(), keys, scheduler)
    out = Out("s")
    corrections.late(event("e2", "PaymentAuthorized", 25), KEY, at(31), out)
    rows = [r for t, r in out.rows if t == "corrections"]
    assert [(r["original_outcome"], r["corrected_state"], r["detected_at"]) for r in rows] == [
        ("timed_out", "reserving", at(31))]
    [followed] = corrections.followed[KEY]
    assert followed.stated.before == ("timed_out", "timed_out")
    assert followed.stated.after == (None, "reserving")
    assert [k.rsplit("/", 2)[1] for k in followed.stated.would_not_have_sent] == ["CancelOrder"]
    assert (followed.revision, followed.due_ms) == (1, at(35))
    assert [(t.due_ms, t.kind) for t in scheduler.timers] == [(at(35), REJUDGE)]
    with pytest.raises(FrozenInstanceError):
        followed.stated.after = (None, "x")  # type: ignore[misc]
    corrections.follow(KEY, at(35), out, True)
    rows = [r for t, r in out.rows if t == "corrections"]
    assert [(r["row_id"].rsplit("/", 1)[-1], r["corrected_state"]) for r in rows[1:]] == [
        ("2", "failed")]
    assert isinstance(corrections.followed[KEY][0].stated, Stated)
    corrections.forget(KEY)
    assert KEY not in corrections.followed


# -- the parts together -----------------------------------------------------------------------

PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def admitted(catalog: Catalog, values: list[bytes]) -> list[Admitted]:
    """The records as admission stamps them for the one shard of one partition."""
    admission = Admission(catalog.decode_rules(PayloadRegistry()), buckets=1)
    return [item for offset, value in enumerate(values)
            for item in admission.admit([RawRecord("test", 0, offset, value, b"k")])["0/0"]]


@PROPERTY
@given(events=cases(), data=st.data(), lateness=st.sampled_from([0, MIN, 10 * MIN]))
def test_take_over_a_slice_equals_receive_and_release_per_record(
        catalog: Catalog, events: list[bytes], data: st.DataObject, lateness: int) -> None:
    """Whatever the slicing, and with duplicates, late events and dead letters: `take` on each
    slice gives the rows (`metrics` rows as a set: a slice folds its facts once, at its end) and
    fact clock of `receive` then `release` per record, and leaves the same shard behind."""
    repeats = data.draw(st.lists(st.sampled_from(events), max_size=3))
    values = [*data.draw(st.permutations(events + repeats)), b"{broken"]
    items = admitted(catalog, values)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(items)), max_size=4)))
    slices = [items[a:b] for a, b in zip([0, *cuts], [*cuts, len(items)], strict=True)
              if a < b]  # the dataflow never hands a shard an empty slice
    rules, config = catalog.decode_rules(PayloadRegistry()), ShardConfig(lateness)
    taking, stepping = (Shard("0/0", catalog, rules, config) for _ in range(2))
    for piece in slices:
        took, stepped = Out("0/0"), Out("0/0")
        taking.take(piece, took)
        for item in piece:
            stepping.receive(item, stepped)
            stepping.release(stepped)
        assert _tables(took) == _tables(stepped) and took.fact_clock == stepped.fact_clock
        assert _metrics(took) == _metrics(stepped)
    assert taking.snapshot() == stepping.snapshot()


def _tables(out: Out) -> list[tuple[str, dict[str, Any]]]:
    return [(table, row) for table, row in out.rows if table != "metrics"]


def _metrics(out: Out) -> list[dict[str, Any]]:
    return sorted((row for table, row in out.rows if table == "metrics"),
                  key=lambda row: row["row_id"])


def test_the_property_reaches_late_events_and_corrections(catalog: Catalog) -> None:
    """Guards against a vacuous property: a permutation of a generated-style case at zero
    lateness has late events, and one of them a correction."""
    from hypothesis import find

    def late_with_correction(values: list[bytes]) -> bool:
        shard = Shard("0/0", catalog, catalog.decode_rules(PayloadRegistry()), ShardConfig(0))
        out = Out("0/0")
        shard.take(admitted(catalog, values), out)
        return any(t == "corrections" for t, _ in out.rows)

    found = find(cases().flatmap(st.permutations), late_with_correction,
                 settings=settings(max_examples=500, deadline=None, database=None))
    assert late_with_correction(found)

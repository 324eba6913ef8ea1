"""Properties of the engine over generated cases: order, duplicates, snapshots, accounting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state.catalog import Catalog
from state.shard import SNAPSHOT_VERSION, Shard
from tests.engine_kit import ORDER_V1, Harness, ce, write_catalog
from tests.strategies import SCRIPTS, cases

LATENESS = 10 * 24 * 3_600_000  # longer than any generated case: every permutation is in time
PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return write_catalog(tmp_path_factory.mktemp("defs"), ORDER_V1)


def verdicts(h: Harness) -> tuple[list[tuple[str, str, str]], list[str]]:
    tables = h.tables()
    outcomes = sorted((o["instance_id"], o["outcome"], o["final_state"])
                      for o in tables["outcomes"])
    commands = sorted(c["idempotency_key"] for c in tables["commands"])
    return outcomes, commands


@PROPERTY
@given(events=cases(), data=st.data())
def test_any_permutation_within_lateness_gives_the_same_verdicts(
        catalog: Catalog, events: list[bytes], data: st.DataObject) -> None:
    """Any arrival order within the allowed lateness yields the same outcomes and commands."""
    shuffled = data.draw(st.permutations(events))
    in_order = Harness(catalog, LATENESS).feed(*events).drain()
    permuted = Harness(catalog, LATENESS).feed(*shuffled).drain()
    assert verdicts(in_order) == verdicts(permuted)


@PROPERTY
@given(events=cases(), data=st.data())
def test_duplicates_change_nothing_but_duplicate_counts(catalog: Catalog, events: list[bytes],
                                                        data: st.DataObject) -> None:
    """Re-sending any events any number of times only raises the duplicate counts."""
    copies = data.draw(st.lists(st.sampled_from(events), max_size=8))
    noisy = list(events)
    for value in copies:
        noisy.insert(data.draw(st.integers(0, len(noisy))), value)
    clean = Harness(catalog, LATENESS).feed(*events).drain()
    dirty = Harness(catalog, LATENESS).feed(*noisy).drain()
    assert verdicts(clean) == verdicts(dirty)
    dispositions = list(dirty.dispositions().values())
    assert dispositions.count("duplicate") == len(copies)
    by_instance = {o["instance_id"]: o for o in dirty.tables()["outcomes"]}
    assert sum(o["duplicates"] for o in by_instance.values()) == len(copies)


@PROPERTY
@given(events=cases(), cut=st.integers(0, 30), lateness=st.sampled_from([0, 60_000, LATENESS]))
def test_snapshot_restore_midway_equals_one_pass(catalog: Catalog, events: list[bytes], cut: int,
                                                 lateness: int) -> None:
    """Snapshotting after a prefix, restoring into a new shard and feeding the rest gives exactly
    the rows of one uninterrupted pass (`metrics` rows included: open windows are in the
    snapshot)."""
    cut = min(cut, len(events))
    one_pass = Harness(catalog, lateness).feed(*events).drain()
    first = Harness(catalog, lateness).feed(*events[:cut])
    second = Harness(catalog, lateness)
    second.shard = Shard.restore(first.shard.snapshot(), catalog, first.shard.rules,
                                 first.shard.config)
    second.offset = first.offset
    second.feed(*events[cut:]).drain()
    assert Harness.joined(first, second) == Harness.joined(one_pass)


@PROPERTY
@given(events=cases(), data=st.data(), lateness=st.sampled_from([0, 120_000, LATENESS]))
def test_input_accounting_always_adds_up(catalog: Catalog, events: list[bytes], data: st.DataObject,
                                         lateness: int) -> None:
    """Whatever the order, duplicates and lateness, every record gets exactly one ledger row and
    every outcome's counts sum to its events."""
    repeats = data.draw(st.lists(st.sampled_from(events), max_size=4))
    noisy = data.draw(st.permutations(events + repeats))
    h = Harness(catalog, lateness).feed(*noisy, b"{broken").drain()
    ledger = h.tables()["ledger"]
    assert sorted(r["offset"] for r in ledger) == list(range(len(noisy) + 1))
    for outcome in h.tables().get("outcomes", []):
        parts = ("applied", "duplicates", "late", "ignored", "anomalies")
        assert sum(outcome[p] for p in parts) == outcome["events"]


def test_strategy_covers_every_script(tmp_path: Path) -> None:
    """The generated cases exercise each scripted scenario (guards against a vacuous strategy)."""
    from tests.strategies import SCRIPTS

    assert {"happy", "silent", "compensated", "compensation_failed", "noisy"} <= set(SCRIPTS)


def test_snapshot_of_the_previous_format_restores_and_continues(catalog: Catalog,
                                                                tmp_path: Path) -> None:
    """A v1 shard snapshot (checked-in fixture) is migrated on restore, and feeding the rest of
    the events gives exactly the table rows of an uninterrupted run (its metrics windows were
    Bytewax's state then, so the `metrics` rows of windows open at the snapshot differ)."""
    import json

    from tests.engine_kit import CASES
    from tests.snapshot_kit import LATENESS_MS, PREFIX, REST

    both = write_catalog(tmp_path, ORDER_V1, CASES)
    fixture_path = Path(__file__).parent / "fixtures" / "shard_snapshot_v1.json"
    fixture = json.loads(fixture_path.read_text())
    assert fixture["version"] == 1
    one_pass = Harness(both, LATENESS_MS).feed(*PREFIX, *REST).drain()
    prefix = Harness(both, LATENESS_MS).feed(*PREFIX)
    resumed = Harness(both, LATENESS_MS)
    resumed.shard = Shard.restore(fixture, both, resumed.shard.rules, resumed.shard.config)
    resumed.offset = len(PREFIX)
    resumed.feed(*REST).drain()
    def tables(*harnesses: Harness) -> dict[str, list[dict[str, Any]]]:
        return {table: rows for table, rows in Harness.joined(*harnesses).items()
                if table != "metrics"}

    assert tables(prefix, resumed) == tables(one_pass)
    assert resumed.shard.snapshot()["version"] == SNAPSHOT_VERSION


ORDER_TYPES = sorted({t for script in SCRIPTS.values() for t in script})
MINUTE = 60_000
LATE_TYPES = ["PaymentAuthorized", "InventoryReserved", "ItemsPicked", "InvoiceSent",
              "LabelPrinted", "OrderShipped"]


def verdict_of(h: Harness, key: str) -> tuple[str | None, str]:
    """(outcome, state) of an instance, live or from its tombstone; (None, "") if never started."""
    instance = h.shard.keys.instances.get(key)
    if instance is not None:
        return instance.outcome, instance.state
    tombstone = h.shard.keys.tombstones.get(key)
    return (tombstone.outcome, tombstone.state) if tombstone is not None else (None, "")


def order_history(data: st.DataObject) -> tuple[list[tuple[int, bytes]], int]:
    """A random script of order o1 as (minute, event) pairs, 1-40 min apart, and a minute within
    it for a late event."""
    script = SCRIPTS[data.draw(st.sampled_from(sorted(SCRIPTS)))]
    history, at = [], 0
    for i, event_type in enumerate(script):
        at += data.draw(st.integers(1, 40))
        history.append((at, ce(f"a{i}", event_type, at)))
    return history, data.draw(st.integers(0, at))


@PROPERTY
@given(data=st.data())
def test_a_correction_is_what_a_run_with_the_late_event_in_time_concludes(
        catalog: Catalog, data: st.DataObject) -> None:
    """For a random order history and a random event that arrives late: a correction is written
    exactly when a fresh run with that event delivered in its place reaches another (outcome,
    state) at the same watermark, and it states that verdict and the commands that run sends
    that this one did not, and the other way round; whether the instance is still
    live or already evicted (its `retention` is 1h) when the late event arrives, and with events
    of the instance that came after its end (released by a second pusher) replayed too."""
    history, late_minute = order_history(data)
    minutes = [m for m, _ in history]
    late = (late_minute, ce("late", data.draw(st.sampled_from(ORDER_TYPES)), late_minute))
    push = data.draw(st.integers(minutes[-1] + 2, minutes[-1] + 600))
    tail = [(m, ce(f"t{i}", data.draw(st.sampled_from(ORDER_TYPES)), m)) for i, m in enumerate(
        sorted(data.draw(st.lists(st.integers(push + 1, push + 60), max_size=2))))]
    pushers = [ce("p1", "OrderPlaced", push, "other"), ce("p2", "OrderViewed", push + 62, "other")]
    real = Harness(catalog, MINUTE).feed(*(v for _, v in history), pushers[0],
                                         *(v for _, v in tail), pushers[1], late[1])
    assert real.dispositions()[len(history) + len(tail) + 2] == "late"
    in_time = sorted([*history, late], key=lambda timed: timed[0])  # stable: late after ties
    fresh = Harness(catalog, MINUTE).feed(*(v for _, v in in_time), pushers[0],
                                          *(v for _, v in tail), pushers[1])
    assert fresh.shard.clock.watermark == real.shard.clock.watermark
    want, before = verdict_of(fresh, "shop_order/o1"), verdict_of(real, "shop_order/o1")
    corrections = real.tables().get("corrections", [])
    if want == before:
        assert corrections == []
    else:
        (correction,) = corrections
        assert (correction["corrected_outcome"], correction["corrected_state"] or "") == want
        assert correction["original_outcome"] == before[0]
        sent, in_time_sent = (
            {c["idempotency_key"] for c in h.tables().get("commands", [])
             if c["instance_id"] == "o1"} for h in (real, fresh))
        assert correction["would_have_sent"] == sorted(in_time_sent - sent)
        assert correction["would_not_have_sent"] == sorted(sent - in_time_sent)


@settings(PROPERTY, max_examples=300)  # about 1 in 15 examples gets a correction: ~20 a run
@given(data=st.data())
def test_a_followed_correction_ends_at_the_verdict_of_a_run_with_the_late_event_in_time(
        catalog: Catalog, data: st.DataObject) -> None:
    """A random order history, a random late event, then more of the instance's events and the
    end of input: when corrections were written for the late event, the last one states the
    final (outcome, state) of a fresh run with that event delivered in time, and the commands
    that run sends that this one did not, and the other way round."""
    history, late_minute = order_history(data)
    minutes = [m for m, _ in history]
    # Late, mostly with a type the order may be waiting for: a correction is then likely.
    late_type = data.draw(st.sampled_from(ORDER_TYPES) | st.sampled_from(LATE_TYPES))
    late = (late_minute, ce("late", late_type, late_minute))
    push = data.draw(st.integers(minutes[-1] + 2, minutes[-1] + 40))
    after = [(m, ce(f"t{i}", data.draw(st.sampled_from(ORDER_TYPES)), m)) for i, m in enumerate(
        sorted(data.draw(st.lists(st.integers(push + 1, push + 120), max_size=3))))]
    pusher = ce("p1", "OrderPlaced", push, "other")
    real = Harness(catalog, MINUTE).feed(*(v for _, v in history), pusher, late[1],
                                         *(v for _, v in after)).drain()
    in_time = sorted([*history, late], key=lambda timed: timed[0])  # stable: late after ties
    fresh = Harness(catalog, MINUTE).feed(*(v for _, v in in_time), pusher,
                                          *(v for _, v in after)).drain()
    corrections = [c for c in real.tables().get("corrections", [])
                   if c["late_event_id"] == "late"]
    if not corrections:
        return
    last = corrections[-1]
    revision = "" if len(corrections) == 1 else f"/{len(corrections)}"
    assert last["row_id"] == f"shop_order/o1/correction/late{revision}"
    ended = [(o["outcome"], o["final_state"]) for o in fresh.tables()["outcomes"]
             if o["instance_id"] == "o1"]  # the drain evicted it: its outcome row tells
    assert [(last["corrected_outcome"], last["corrected_state"])] == ended
    sent, in_time_sent = (
        {c["idempotency_key"] for c in h.tables().get("commands", []) if c["instance_id"] == "o1"}
        for h in (real, fresh))
    assert last["would_have_sent"] == sorted(in_time_sent - sent)
    assert last["would_not_have_sent"] == sorted(sent - in_time_sent)

"""The workflow engine's verdicts, one feature at a time, on a shard fed record by record."""

from __future__ import annotations

from pathlib import Path

import pytest

from state.catalog import Catalog
from state.shard import Shard
from tests.engine_kit import CASES, ORDER_V1, T0, Harness, ce, write_catalog

MIN = 60_000


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return write_catalog(tmp_path, ORDER_V1, CASES)


HAPPY = [
    ce("e1", "OrderPlaced", 0), ce("e2", "PaymentAuthorized", 5), ce("e3", "InventoryReserved", 7),
    ce("e4", "ItemsPicked", 20), ce("e5", "InvoiceSent", 21), ce("e6", "LabelPrinted", 25),
    ce("e7", "OrderShipped", 60), ce("e8", "PaymentAuthorized", 2000),
]


def test_happy_path_completes_with_transitions_and_step_durations(catalog: Catalog) -> None:
    """An order that goes through every step ends `completed` with its audit trail and durations."""
    h = Harness(catalog).feed(*HAPPY[:7]).drain()
    outcome = h.outcome()
    assert outcome["outcome"] == "completed"
    assert outcome["final_state"] == "delivered"
    assert outcome["duration_ms"] == 60 * MIN
    steps = {s["step"]: s["duration_ms"] for s in outcome["step_durations"]}
    assert steps["awaiting_payment"] == 5 * MIN
    assert steps["packing.label"] == 18 * MIN
    assert steps["packing"] == 18 * MIN
    states = [r["to_state"] for r in h.tables()["transitions"]]
    assert states == ["awaiting_payment", "reserving", "packing", "shipping", "delivered"]
    assert h.commands() == []
    assert outcome["variant"] == "awaiting_payment > reserving > packing > shipping > delivered"


def test_escalation_chain_then_timeout_by_other_traffic(catalog: Catalog) -> None:
    """A quiet order gets the reminder at 15 min and is cancelled at 30 min once another
    instance's events move the shard's watermark past those deadlines, without any drain."""
    h = Harness(catalog, lateness_ms=MIN).feed(ce("e1", "OrderPlaced", 0),
                                               ce("o2-1", "OrderPlaced", 10, "o2"))
    assert h.commands() == []
    h.feed(ce("o2-2", "OrderCancelled", 17, "o2"))  # watermark 16 min: reminder due at 15
    assert h.commands() == ["SendPaymentReminder"]
    assert ("outcomes" not in h.tables()
            or all(r["instance_id"] != "o1" for r in h.tables()["outcomes"]))
    h.feed(ce("o3-1", "OrderPlaced", 32, "o3"))  # watermark 31 min: cancel due at 30
    assert h.commands() == ["SendPaymentReminder", "CancelOrder"]
    outcome = h.outcome()
    assert (outcome["outcome"], outcome["timed_out_step"]) == ("timed_out", "awaiting_payment")
    keys = [r["idempotency_key"] for r in h.tables()["commands"] if r["instance_id"] == "o1"]
    t0 = outcome["started_at"]
    assert keys == [f"shop_order/o1/awaiting_payment/SendPaymentReminder/{t0 + 15 * MIN}",
                    f"shop_order/o1/awaiting_payment/CancelOrder/{t0 + 30 * MIN}"]


def test_event_exactly_at_deadline_is_in_time(catalog: Catalog) -> None:
    """A payment stamped exactly at the cancellation deadline is applied before the deadline
    fires."""
    h = Harness(catalog).feed(ce("e1", "OrderPlaced", 0), ce("e2", "PaymentAuthorized", 30),
                              ce("e3", "InventoryUnavailable", 31)).drain()
    assert h.commands() == ["SendPaymentReminder", "RefundPayment"]
    assert h.outcome()["outcome"] == "compensation_failed"


def test_invalid_transition_is_an_anomaly_and_keeps_state(catalog: Catalog) -> None:
    """An event not allowed in the current state yields an anomaly row and changes nothing."""
    h = Harness(catalog).feed(ce("e1", "OrderPlaced", 0), ce("e2", "OrderShipped", 1),
                              ce("e3", "PaymentDeclined", 2)).drain()
    anomalies = h.tables()["anomalies"]
    assert [(a["kind"], a["state"], a["event_id"]) for a in anomalies] == [
        ("invalid_transition", "awaiting_payment", "e2")]
    assert h.outcome()["outcome"] == "failed"
    assert h.dispositions() == {0: "applied", 1: "anomalous", 2: "applied"}


def test_ignored_events_are_counted_not_applied(catalog: Catalog) -> None:
    """Types listed under `ignore` are counted as ignored, on live and unknown instances alike."""
    h = Harness(catalog).feed(ce("e1", "OrderPlaced", 0), ce("e2", "OrderViewed", 1),
                              ce("z", "OrderViewed", 1, "nobody"),
                              ce("e3", "PaymentDeclined", 2)).drain()
    assert h.dispositions() == {0: "applied", 1: "ignored", 2: "ignored", 3: "applied"}
    assert h.outcome()["ignored"] == 1


def test_duplicates_and_conflicting_duplicates(catalog: Catalog) -> None:
    """The same id twice is a counted duplicate; the same id with another body is an anomaly."""
    h = Harness(catalog).feed(ce("e1", "OrderPlaced", 0), ce("e1", "OrderPlaced", 0),
                              ce("e1", "OrderPlaced", 0, extra={"note": "changed"}),
                              ce("e2", "PaymentDeclined", 1)).drain()
    assert h.dispositions() == {0: "applied", 1: "duplicate", 2: "anomalous", 3: "applied"}
    kinds = [a["kind"] for a in h.tables()["anomalies"]]
    assert kinds == ["conflicting_duplicate"]
    outcome = h.outcome()
    assert (outcome["duplicates"], outcome["anomalies"], outcome["events"]) == (1, 1, 4)


def test_out_of_order_within_lateness_is_applied_in_event_time_order(catalog: Catalog) -> None:
    """Events arriving out of order but within the allowed lateness are reordered and applied."""
    h = Harness(catalog, lateness_ms=10 * MIN).feed(
        ce("e2", "PaymentAuthorized", 5), ce("e1", "OrderPlaced", 0),
        ce("e3", "InventoryUnavailable", 6)).drain()
    assert h.dispositions() == {0: "applied", 1: "applied", 2: "applied"}
    assert h.outcome()["out_of_order"] == 1
    assert h.commands() == ["RefundPayment"]


def test_sequence_breaks_ties_between_equal_times(catalog: Catalog) -> None:
    """At equal event times the CloudEvents `sequence` decides the order, not arrival."""
    h = Harness(catalog).feed(ce("e1", "OrderPlaced", 0, sequence=1),
                              ce("e3", "InventoryUnavailable", 5, sequence=3),
                              ce("e2", "PaymentAuthorized", 5, sequence=2)).drain()
    assert h.dispositions() == {0: "applied", 1: "applied", 2: "applied"}
    assert h.outcome()["final_state"] == "failed"


def test_late_payment_after_timeout_is_recorded_with_a_correction(catalog: Catalog) -> None:
    """A payment stamped before the deadline but arriving after the timeout fired is `late`,
    not applied, and a correction row links it to the timed-out outcome it would have changed."""
    h = Harness(catalog, lateness_ms=MIN).feed(ce("e1", "OrderPlaced", 0),
                                               ce("o2", "OrderPlaced", 45, "o2"),
                                               ce("e2", "PaymentAuthorized", 20))
    assert h.dispositions()[2] == "late"
    assert h.outcome()["outcome"] == "timed_out"
    (correction,) = h.tables()["corrections"]
    assert correction["corrects_row_id"] == "shop_order/o1/outcome"
    assert correction["original_outcome"] == "timed_out"
    assert correction["corrected_state"] == "failed"  # reserving's own 10 min deadline passed too
    assert correction["late_event_id"] == "e2"
    t0 = h.outcome()["started_at"]
    assert correction["would_not_have_sent"] == [  # the cancel went out; the reminder was due
        f"shop_order/o1/awaiting_payment/CancelOrder/{t0 + 30 * MIN}"]  # before the payment
    assert [key.rsplit("/", 2)[1] for key in correction["would_have_sent"]] == ["RefundPayment"]
    assert [a["kind"] for a in h.tables()["anomalies"]] == ["late_event"]


@pytest.mark.parametrize("resume", [False, True])
def test_late_payment_after_eviction_is_judged_from_the_tombstone(catalog: Catalog,
                                                                  resume: bool) -> None:
    """The timed-out order is evicted (retention 1h) before its late payment arrives: its
    tombstone keeps what the what-if needs, so the correction is the one a live instance gets,
    also after a snapshot and restore in between."""
    h = Harness(catalog, lateness_ms=MIN).feed(ce("e1", "OrderPlaced", 0),
                                               ce("o2", "OrderPlaced", 200, "o2"))
    keys = h.shard.keys
    assert "shop_order/o1" in keys.tombstones and "shop_order/o1" not in keys.instances
    if resume:
        h.shard = Shard.restore(h.shard.snapshot(), h.shard.catalog, h.shard.rules,
                                h.shard.config)
    h.feed(ce("e2", "PaymentAuthorized", 20))
    assert h.dispositions()[2] == "late"
    (correction,) = h.tables()["corrections"]
    assert (correction["corrects_row_id"], correction["original_outcome"],
            correction["corrected_state"]) == ("shop_order/o1/outcome", "timed_out", "failed")


def test_a_what_if_after_eviction_replays_the_events_that_came_after_the_end(
        catalog: Catalog) -> None:
    """An order times out in packing (no invoice; its compensations are never acknowledged), is
    evicted, and is then shipped (an event after the end); the invoice arrives late. Had it come
    in time the order would have shipped and completed: the what-if replays the shipment the
    tombstone kept, so the correction says `completed`, as a run with the invoice in time does."""
    h = Harness(catalog, lateness_ms=MIN).feed(
        ce("e1", "OrderPlaced", 0), ce("e2", "PaymentAuthorized", 5),
        ce("e3", "InventoryReserved", 8), ce("e4", "ItemsPicked", 9), ce("e5", "LabelPrinted", 10),
        ce("p1", "OrderPlaced", 200, "other"), ce("e6", "OrderShipped", 201),
        ce("p2", "OrderCancelled", 205, "other"))  # moves the watermark past the shipment
    assert h.shard.keys.tombstones["shop_order/o1"].outcome == "compensation_failed"
    h.feed(ce("e7", "InvoiceSent", 11))
    (correction,) = h.tables()["corrections"]
    assert (correction["original_outcome"], correction["corrected_outcome"],
            correction["corrected_state"]) == ("compensation_failed", "completed", "delivered")


def corrections_of(h: Harness) -> list[tuple[str, str | None, str | None, int]]:
    """Each correction's row id, corrected outcome and state, and when it was detected (min)."""
    t0 = int(T0.timestamp() * 1000)
    return [(c["row_id"], c["corrected_outcome"], c["corrected_state"],
             (c["detected_at"] - t0) // MIN) for c in h.tables().get("corrections", [])]


@pytest.mark.parametrize("resume", [False, True])
def test_a_correction_still_open_is_followed_to_the_verdict_its_deadline_brings(
        catalog: Catalog, resume: bool) -> None:
    """The payment arrives just after the timeout: in time, the order would be reserving, with
    10 minutes left. That correction has no outcome yet; when the reserving deadline would have
    fired, a further row says where it would be (failed, refunding the payment), and when that
    refund's acknowledgement would have been overdue another states the verdict, each at the
    event time it happened; also across a snapshot."""
    h = Harness(catalog, lateness_ms=MIN).feed(ce("e1", "OrderPlaced", 0),
                                               ce("o2", "OrderPlaced", 31, "o2"),
                                               ce("e2", "PaymentAuthorized", 25))
    assert corrections_of(h) == [("shop_order/o1/correction/e2", None, "reserving", 30)]
    if resume:
        h.shard = Shard.restore(h.shard.snapshot(), h.shard.catalog, h.shard.rules,
                                h.shard.config)
    h.feed(ce("o3", "OrderPlaced", 50, "o3"))
    assert corrections_of(h)[1:] == [
        ("shop_order/o1/correction/e2/2", None, "reserving", 30),  # o1's own timeout fires
        ("shop_order/o1/correction/e2/3", None, "failed", 35)]  # in time, reserving would end
    h.feed(ce("o4", "OrderPlaced", 500, "o4")).drain()  # the refund is never acknowledged
    assert corrections_of(h)[3:] == [
        ("shop_order/o1/correction/e2/4", "compensation_failed", "failed", 95)]
    last = h.tables()["corrections"][3]
    assert (last["original_outcome"], last["corrects_row_id"]) == (
        "timed_out", "shop_order/o1/outcome")
    assert [k.rsplit("/", 2)[1] for k in last["would_have_sent"]] == ["RefundPayment"]
    assert [k.rsplit("/", 2)[1] for k in last["would_not_have_sent"]] == ["CancelOrder"]


def test_a_followed_correction_takes_in_the_events_that_come_after_the_end(
        catalog: Catalog) -> None:
    """After the late payment, the order's stock reservation arrives too (after its end, so
    ignored by this run): the in-time run moves on to packing, then times out there by the end
    of input. Each change is a correction row at the event time it happened, and the last states
    what a run with the payment in time concludes."""
    h = Harness(catalog, lateness_ms=MIN).feed(ce("e1", "OrderPlaced", 0),
                                               ce("o2", "OrderPlaced", 31, "o2"),
                                               ce("e2", "PaymentAuthorized", 25),
                                               ce("e3", "InventoryReserved", 32),
                                               ce("o3", "OrderPlaced", 40, "o3")).drain()
    in_time = Harness(catalog, lateness_ms=MIN).feed(
        ce("e1", "OrderPlaced", 0), ce("e2", "PaymentAuthorized", 25),
        ce("o2", "OrderPlaced", 31, "o2"), ce("e3", "InventoryReserved", 32),
        ce("o3", "OrderPlaced", 40, "o3")).drain()
    final = in_time.outcome()
    assert (final["outcome"], final["timed_out_step"]) == ("compensation_failed", "packing")
    rows = h.tables()["corrections"]
    assert [(r["original_outcome"], r["corrected_outcome"], r["corrected_state"])
            for r in rows] == [
        (None, None, "reserving"),  # o1's own timeout is due at 30: not yet fired at 30
        ("timed_out", None, "reserving"),  # then it fires, and cancels the order
        ("timed_out", None, "packing"),  # the reservation, ignored here, moves the in-time run
        ("timed_out", None, "timed_out"),  # its packing deadline fires: compensating
        ("timed_out", final["outcome"], final["final_state"])]  # never acknowledged
    assert [r["row_id"].rsplit("/", 1)[1] for r in rows] == ["e2", "2", "3", "4", "5"]
    assert [(r["detected_at"] - rows[0]["detected_at"]) // MIN for r in rows] == [
        0, 0, 2, 62, 122]  # at 30, 30, 32, 92 (packing's hour), 152 (the compensation's)
    assert rows[-1]["would_not_have_sent"] == h.commands_keys(["CancelOrder"])
    assert sorted(rows[-1]["would_have_sent"]) == in_time.commands_keys(
        ["RefundPayment", "ReleaseInventory"])


def test_late_payment_after_the_tombstone_is_forgotten_has_no_correction(
        catalog: Catalog) -> None:
    """Once the tombstone is forgotten too (24 h after eviction) nothing is left to judge by."""
    h = Harness(catalog, lateness_ms=MIN).feed(ce("e1", "OrderPlaced", 0),
                                               ce("o2", "OrderPlaced", 30 * 60, "o2"),
                                               ce("e2", "PaymentAuthorized", 20))
    assert h.dispositions()[2] == "late"
    assert "corrections" not in h.tables()


def test_late_event_that_changes_nothing_has_no_correction(catalog: Catalog) -> None:
    """A late event the instance would have ignored anyway is recorded but not corrected."""
    h = Harness(catalog, lateness_ms=MIN).feed(ce("e1", "OrderPlaced", 0),
                                               ce("o2", "OrderPlaced", 45, "o2"),
                                               ce("e2", "OrderViewed", 20))
    assert h.dispositions()[2] == "late"
    assert "corrections" not in h.tables()


def test_compensation_in_reverse_order_and_acknowledged(catalog: Catalog) -> None:
    """A failure after two completed steps undoes them newest first and ends `compensated`
    once both acknowledgements arrive."""
    h = Harness(catalog).feed(ce("e1", "OrderPlaced", 0), ce("e2", "PaymentAuthorized", 1),
                              ce("e3", "InventoryReserved", 2), ce("e4", "InvoiceFailed", 3),
                              ce("e5", "InventoryReleased", 4),
                              ce("e6", "PaymentRefunded", 5)).drain()
    assert h.commands() == ["ReleaseInventory", "RefundPayment"]
    commands = h.tables()["commands"]
    assert {c["reason"] for c in commands} == {"compensation"}
    outcome = h.outcome()
    assert (outcome["outcome"], outcome["final_state"]) == ("compensated", "failed")


def test_compensation_without_acks_fails_at_its_deadline(catalog: Catalog) -> None:
    """Missing acknowledgements end the instance `compensation_failed` after the timeout."""
    h = Harness(catalog).feed(ce("e1", "OrderPlaced", 0), ce("e2", "PaymentAuthorized", 1),
                              ce("e3", "InventoryUnavailable", 2),
                              ce("o2", "OrderPlaced", 120, "o2"))
    outcome = h.outcome()
    assert outcome["outcome"] == "compensation_failed"
    assert outcome["ended_at"] - outcome["started_at"] == 62 * MIN


def test_nothing_to_compensate_keeps_the_terminal_outcome(catalog: Catalog) -> None:
    """A timeout before any compensable step completed ends plainly `timed_out`, no undo
    commands."""
    h = Harness(catalog).feed(ce("e1", "OrderPlaced", 0)).drain()
    assert h.commands() == ["SendPaymentReminder", "CancelOrder"]
    assert h.outcome()["outcome"] == "timed_out"


def test_parallel_branches_must_all_finish(catalog: Catalog) -> None:
    """The packing fan-out waits for every branch; one branch twice is an anomaly, not progress."""
    h = Harness(catalog, lateness_ms=0).feed(
        ce("e1", "OrderPlaced", 0), ce("e2", "PaymentAuthorized", 1),
        ce("e3", "InventoryReserved", 2), ce("e4", "ItemsPicked", 3), ce("e5", "ItemsPicked", 4),
        ce("e6", "LabelPrinted", 5),
        ce("tick", "OrderPlaced", 6, "o2"))
    assert h.shard.keys.instances["shop_order/o1"].state == "packing"
    assert h.dispositions()[4] == "anomalous"
    h.feed(ce("e7", "InvoiceSent", 7), ce("tick2", "OrderPlaced", 8, "o3"))
    assert h.shard.keys.instances["shop_order/o1"].state == "shipping"


def test_deadline_measured_from_a_named_earlier_event(catalog: Catalog) -> None:
    """The shipping deadline counts from OrderPlaced, not from entering `shipping`."""
    h = Harness(catalog).feed(ce("e1", "OrderPlaced", 0), ce("e2", "PaymentAuthorized", 1),
                              ce("e3", "InventoryReserved", 2), ce("e4", "ItemsPicked", 3),
                              ce("e5", "LabelPrinted", 3), ce("e6", "InvoiceSent", 50)).drain()
    (escalation,) = [c for c in h.tables()["commands"] if c["command"] == "EscalateShipping"]
    assert escalation["due_at"] == h.outcome()["started_at"] + 3 * 24 * 60 * MIN
    assert h.outcome()["outcome"] == "compensation_failed"


def test_orphan_event_is_an_anomaly(catalog: Catalog) -> None:
    """A non-start event for an instance that never started is an `orphan_event` anomaly."""
    h = Harness(catalog).feed(ce("e2", "PaymentAuthorized", 1)).drain()
    assert [a["kind"] for a in h.tables()["anomalies"]] == ["orphan_event"]
    assert h.dispositions() == {0: "anomalous"}


def test_finished_instances_are_evicted_leaving_a_tombstone(catalog: Catalog) -> None:
    """After the retention period the instance leaves memory, yet its late duplicate is still
    recognised and a new event for it is an anomaly, not a new instance."""
    h = Harness(catalog, lateness_ms=MIN).feed(ce("e1", "OrderPlaced", 0),
                                               ce("e2", "PaymentDeclined", 1),
                                               ce("o2", "OrderPlaced", 10, "o2"),
                                               ce("o3", "OrderPlaced", 200, "o3"))
    assert "shop_order/o1" not in h.shard.keys.instances
    assert "shop_order/o1" in h.shard.keys.tombstones
    h.feed(ce("e1", "OrderPlaced", 0), ce("e9", "OrderShipped", 201),
           ce("o4", "OrderPlaced", 203, "o4"))
    assert h.dispositions()[4] == "duplicate"
    assert h.dispositions()[5] == "anomalous"
    assert h.tables()["anomalies"][-1]["kind"] == "after_terminal"


def test_tombstones_expire_too(catalog: Catalog) -> None:
    """Tombstones are forgotten after their own retention, so memory stays bounded."""
    h = Harness(catalog, lateness_ms=MIN).feed(ce("e1", "OrderPlaced", 0),
                                               ce("e2", "PaymentDeclined", 1),
                                               ce("o2", "OrderPlaced", 10, "o2"),
                                               ce("o3", "OrderPlaced", 200, "o3"))
    assert "shop_order/o1" in h.shard.keys.tombstones
    h.feed(ce("o4", "OrderPlaced", 3 * 24 * 60, "o4"))
    assert "shop_order/o1" not in h.shard.keys.tombstones
    assert "shop_order/o1" not in h.shard.keys.seen


def test_running_instances_keep_their_definition_version(tmp_path: Path) -> None:
    """An instance started on v1 finishes on v1 after v2 (with a shorter deadline) is loaded."""
    v1 = write_catalog(tmp_path / "a", ORDER_V1)
    h = Harness(v1, lateness_ms=MIN).feed(ce("e1", "OrderPlaced", 0),
                                          ce("x", "OrderViewed", 2, "o9"))
    assert "shop_order/o1" in h.shard.keys.instances
    snapshot = h.shard.snapshot()
    v2_text = ORDER_V1.replace("version: 1", "version: 2").replace("after: 30m", "after: 20m")
    both = write_catalog(tmp_path / "b", ORDER_V1, v2_text)
    h2 = Harness(both, lateness_ms=MIN)
    h2.shard = type(h.shard).restore(snapshot, both, h2.shard.rules, h2.shard.config)
    h2.feed(ce("o2", "OrderPlaced", 3, "o2")).drain()
    assert h2.outcome("o1")["definition_version"] == 1
    assert h2.outcome("o2")["definition_version"] == 2
    cancels = {c["instance_id"]: c["due_at"] - h2.outcome(c["instance_id"])["started_at"]
               for c in h2.tables()["commands"] if c["command"] == "CancelOrder"}
    assert cancels == {"o1": 30 * MIN, "o2": 20 * MIN}


def test_case_tracking_records_variant_sla_and_duration(catalog: Catalog) -> None:
    """A tracked case gets its activity sequence, an SLA breach when Assigned comes late, a stuck
    anomaly after two idle days, and closes with duration last minus first event."""
    h = Harness(catalog).feed(ce("t1", "Opened", 0, subject="c1"),
                              ce("t2", "Assigned", 90, subject="c1"),
                              ce("t3", "Closed", 4 * 24 * 60, subject="c1")).drain()
    outcome = h.outcome("c1", "tickets")
    assert outcome["variant"] == "Opened > Assigned > Closed"
    assert outcome["outcome"] == "completed"
    assert outcome["duration_ms"] == 4 * 24 * 60 * MIN
    kinds = sorted(a["kind"] for a in h.tables()["anomalies"])
    assert kinds == ["sla_breached", "sla_overdue", "stuck"]


def test_case_without_end_activity_times_out_when_idle(catalog: Catalog) -> None:
    """A case that never reaches an `end_on` activity closes as `timed_out` and is overdue."""
    h = Harness(catalog).feed(ce("t1", "Opened", 0, subject="c2"),
                              ce("t2", "Assigned", 30, subject="c2")).drain()
    assert h.outcome("c2", "tickets")["outcome"] == "timed_out"
    kinds = sorted(a["kind"] for a in h.tables()["anomalies"])
    assert kinds == ["case_overdue", "stuck"]


def test_case_definition_without_rules_closes_when_idle(tmp_path: Path) -> None:
    """Rules are optional: a case of a definition without any still closes on its idle timer."""
    bare = CASES[:CASES.index("rules:")]
    h = Harness(write_catalog(tmp_path, bare)).feed(ce("t1", "Opened", 0, subject="c3")).drain()
    assert h.outcome("c3", "tickets")["outcome"] == "timed_out"
    assert h.tables()["anomalies"] == []


def test_every_record_has_exactly_one_ledger_row_and_counts_add_up(catalog: Catalog) -> None:
    """Each input record ends in one ledger row, and each outcome's counts sum to its events."""
    h = Harness(catalog, lateness_ms=MIN).feed(
        *HAPPY, b"not json", ce("e1", "OrderPlaced", 0), ce("q", "OrderPlaced", 90, "o2"),
        ce("late", "OrderViewed", 1, "o2"))
    h.drain()
    ledger = h.tables()["ledger"]
    assert sorted(r["offset"] for r in ledger) == list(range(h.offset))
    for outcome in h.tables()["outcomes"]:
        parts = ("applied", "duplicates", "late", "ignored", "anomalies")
        assert sum(outcome[p] for p in parts) == outcome["events"]

"""Shared helpers for engine tests: a tiny definition set, CloudEvent bytes, a one-shard harness."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from schemas.event import RawRecord
from schemas.payloads.registry import PayloadRegistry
from state.admission import Admission
from state.catalog import Catalog, load_catalog
from state.output import Out
from state.shard import END_OF_TIME, Shard, ShardConfig

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

ORDER_V1 = """
workflow: shop_order
version: 1
instance_id: {data_field: order_id}
start: [OrderPlaced]
initial: awaiting_payment
ignore: [OrderViewed]
compensation_timeout: 1h
retention: 1h
states:
  awaiting_payment:
    on: {PaymentAuthorized: reserving, PaymentDeclined: declined, OrderCancelled: cancelled}
    deadlines:
      - {after: 15m, command: SendPaymentReminder}
      - {after: 30m, command: CancelOrder, goto: timed_out}
    compensation: {command: RefundPayment, ack: PaymentRefunded}
  reserving:
    on: {InventoryReserved: packing, InventoryUnavailable: failed}
    compensation: {command: ReleaseInventory, ack: InventoryReleased}
    deadlines: [{after: 10m, goto: failed}]
  packing:
    parallel:
      label: {done: LabelPrinted}
      invoice: {done: InvoiceSent, failed: InvoiceFailed}
      pick: {done: ItemsPicked}
    then: shipping
    on_failure: failed
    deadlines: [{after: 1h, goto: timed_out}]
  shipping:
    on: {OrderShipped: delivered}
    deadlines: [{after: 3d, from: OrderPlaced, command: EscalateShipping, goto: timed_out}]
  delivered: {outcome: completed}
  declined: {outcome: failed}
  cancelled: {outcome: cancelled}
  failed: {outcome: failed}
  timed_out: {outcome: timed_out}
"""

CASES = """
workflow: tickets
mode: case_tracking
version: 1
events: any
end_on: [Closed]
close_after_idle: 10d
rules:
  - {within: 1h, from: Opened, to: Assigned}
  - {complete_within: 5d}
  - {stuck_after: 2d}
"""


def write_catalog(tmp_path: Path, *documents: str) -> Catalog:
    """Write definition documents into a folder and load them together."""
    folder = tmp_path / "defs"
    folder.mkdir(parents=True, exist_ok=True)
    for i, document in enumerate(documents):
        (folder / f"d{i}.yaml").write_text(document)
    return load_catalog(folder)


def ce(event_id: str, event_type: str, minutes: float, order: str = "o1", *,
       subject: str | None = None, sequence: int | None = None,
       extra: dict[str, Any] | None = None) -> bytes:
    """CloudEvent bytes at T0 + minutes, for the order workflow (id in data) or tickets
    (subject)."""
    body: dict[str, Any] = {
        "specversion": "1.0", "id": event_id, "source": "test", "type": event_type,
        "time": (T0 + timedelta(minutes=minutes)).isoformat(),
        "data": {"order_id": order, **(extra or {})},
    }
    if subject is not None:
        body["subject"] = subject
    if sequence is not None:
        body["sequence"] = str(sequence)
    return json.dumps(body).encode()


class Harness:
    """Feeds records into one shard, one batch per record, and groups output rows by table."""

    def __init__(self, catalog: Catalog, lateness_ms: int = 60_000) -> None:
        rules = catalog.decode_rules(PayloadRegistry())
        self.admission = Admission(rules, buckets=1)
        self.shard = Shard("0/0", catalog, rules, ShardConfig(allowed_lateness_ms=lateness_ms))
        self.out = Out("0/0")
        self.offset = 0

    def feed(self, *values: bytes) -> Harness:
        for value in values:
            record = RawRecord("test", 0, self.offset, value, b"k")
            for admitted in self.admission.admit([record])["0/0"]:
                self.shard.receive(admitted, self.out)
                self.shard.release(self.out)
            self.offset += 1
        return self

    def drain(self) -> Harness:
        """End the input as the shard step does: every deadline due, every metrics window out."""
        self.shard.advance_to(END_OF_TIME, self.out)
        self.shard.close_metrics(self.out)
        return self

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for table, row in self.out.rows:
            grouped[table].append(row)
        return grouped

    @staticmethod
    def joined(*harnesses: Harness) -> dict[str, list[dict[str, Any]]]:
        """Each table's rows of harnesses run one after the other (rows are kept per table: the
        order across tables is no output's)."""
        joined: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for harness in harnesses:
            for table, rows in harness.tables().items():
                joined[table] += rows
        return dict(joined)

    def outcome(self, instance: str = "o1", workflow: str = "shop_order") -> dict[str, Any]:
        rows = [r for r in self.tables()["outcomes"] if r["instance_id"] == instance
                and r["workflow_type"] == workflow]
        assert len(rows) == 1, rows
        return rows[0]

    def commands(self, instance: str = "o1") -> list[str]:
        return [r["command"] for r in self.tables()["commands"] if r["instance_id"] == instance]

    def commands_keys(self, commands: list[str], instance: str = "o1") -> list[str]:
        """The idempotency keys of the instance's commands of these names, sorted."""
        return sorted(r["idempotency_key"] for r in self.tables()["commands"]
                      if r["instance_id"] == instance and r["command"] in commands)

    def dispositions(self) -> dict[int, str]:
        return {r["offset"]: r["disposition"] for r in self.tables()["ledger"]}

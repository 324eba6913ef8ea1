"""The live wall-clock path: an idle stream still fires deadlines on time (real sleeps, on
purpose)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import TestingSink, run_main

from dataflows.pipeline import build_flow
from dataflows.settings import Settings
from schemas.event import RawRecord


class HoldOpenSource(FixedPartitionedSource[RawRecord, None]):
    """Emits its records, then stays open and silent until `stop` is set: a quiet live topic."""

    def __init__(self, records: list[RawRecord], stop: threading.Event) -> None:
        self.records, self.stop = records, stop

    def list_parts(self) -> list[str]:
        return ["0"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _HoldOpenPartition:
        return _HoldOpenPartition(iter(self.records), self.stop)


class _HoldOpenPartition(StatefulSourcePartition[RawRecord, None]):
    def __init__(self, records: Iterator[RawRecord], stop: threading.Event) -> None:
        self.records, self.stop = records, stop

    def next_batch(self) -> list[RawRecord]:
        batch = list(self.records)
        if not batch and self.stop.is_set():
            raise StopIteration
        return batch

    def next_awake(self) -> datetime | None:
        return datetime.now(UTC) + timedelta(milliseconds=50)

    def snapshot(self) -> None:
        return None


def order_placed(at: datetime) -> bytes:
    return json.dumps({
        "specversion": "1.0", "id": "live-1", "source": "shop", "type": "OrderPlaced",
        "time": at.isoformat(), "dataversion": "2",
        "data": {"order_id": "live-o1", "customer_id": "c1", "total_cents": 1999, "currency": "EUR",
                 "items": [{"sku": "SKU-1", "quantity": 1}]},
    }).encode()


def test_idle_live_stream_fires_the_deadline_within_seconds_of_wall_time(tmp_path: Path) -> None:
    """With no further events, the 15-minute payment reminder of an order placed 15 min minus
    2 s ago is emitted about `idle_grace` after it falls due, and not before."""
    now = datetime.now(UTC)
    due = now + timedelta(seconds=2)
    record = RawRecord("live", 0, 0, order_placed(due - timedelta(minutes=15)), b"live-o1",
                       arrived_ms=int(now.timestamp() * 1000))
    settings = Settings.from_flags(out=tmp_path, idle_grace="1s", drain_at_eof=False)
    rows: list[tuple[str, dict[str, object]]] = []
    stop = threading.Event()
    flow = build_flow(settings, source=HoldOpenSource([record], stop), sink=TestingSink(rows))
    runner = threading.Thread(target=run_main, args=(flow,), daemon=True)
    runner.start()
    fired_at = None
    try:
        while datetime.now(UTC) < due + timedelta(seconds=10):
            if any(t == "commands" and r["command"] == "SendPaymentReminder"
                   for t, r in list(rows)):
                fired_at = datetime.now(UTC)
                break
            time.sleep(0.05)
    finally:
        stop.set()
        runner.join(timeout=10)
    assert fired_at is not None, "the reminder never fired on an idle stream"
    lag = (fired_at - due).total_seconds()
    assert 0 <= lag <= 4, f"fired {lag:.2f} s after due; expected about idle_grace (1 s)"
    assert not any(t == "outcomes" for t, _ in rows), "CancelOrder is 15 min away: nothing ends"

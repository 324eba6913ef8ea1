"""The peer: Quix Streams running a per-key state machine over the benchmark topic.

Runs in Quix's own virtual environment: `python bench/quix_peer.py BROKER TOPIC RECORDS MODE`
prints the Quix version and records/s. Per key (the order id) it reads the event, drops duplicate
ids, and moves the order's state along the order-fulfilment transitions in RocksDB-backed state.
MODE says how the event is read:
- `json`: `json.loads` only, no validation (the cheapest possible job);
- `validated`: flowkeeper's own decoder (`schemas.decode`: CloudEvents envelope and payload
  validated with the same pydantic models and rules), which is the comparable job: it then lacks
  only flowkeeper's reordering, deadlines and outputs.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import quixstreams
from quixstreams import Application, State

TRANSITIONS: dict[tuple[str | None, str], str] = {
    (None, "OrderPlaced"): "awaiting_payment",
    ("awaiting_payment", "PaymentAuthorized"): "reserving_inventory",
    ("awaiting_payment", "PaymentDeclined"): "payment_declined",
    ("reserving_inventory", "InventoryReserved"): "awaiting_shipment",
    ("reserving_inventory", "InventoryUnavailable"): "failed",
    ("awaiting_shipment", "OrderShipped"): "in_transit",
    ("in_transit", "OrderDelivered"): "delivered",
    **{(s, "OrderCancelled"): "cancelled"
       for s in ("awaiting_payment", "reserving_inventory", "awaiting_shipment")},
}


def json_reader() -> Callable[[bytes], tuple[Any, Any] | None]:
    """(event id, type) of a JSON value, as found in it, or None when it is not JSON."""
    def read(value: bytes) -> tuple[Any, Any] | None:
        try:
            event = json.loads(value)
        except ValueError:
            return None
        return (event.get("id"), event.get("type")) if isinstance(event, dict) else None
    return read


def validating_reader() -> Callable[[bytes], tuple[Any, Any] | None]:
    """(event id, type) of a value flowkeeper's decoder accepts, or None for a dead letter."""
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    from schemas.decode import decode
    from schemas.event import Event, RawRecord
    from schemas.payloads.bundled import bundled_registry
    from state.catalog import load_catalog

    rules = load_catalog(root / "definitions").decode_rules(bundled_registry())

    def read(value: bytes) -> tuple[Any, Any] | None:
        event = decode(RawRecord("bench", 0, 0, value), rules)
        return (event.event_id, event.type) if isinstance(event, Event) else None
    return read


def main(broker: str, topic: str, records: int, mode: str) -> None:
    read = validating_reader() if mode == "validated" else json_reader()
    app = Application(broker_address=broker, consumer_group=f"bench-{uuid.uuid4()}",
                      auto_offset_reset="earliest", state_dir=f"/tmp/quix-state-{uuid.uuid4()}")
    done = {"n": 0, "started": 0.0}

    def step(value: bytes, state: State) -> Any:
        if done["n"] == 0:
            done["started"] = time.perf_counter()
        done["n"] += 1
        if done["n"] >= records:
            app.stop()
        event = read(value)
        if event is None:
            return None
        event_id, event_type = event
        seen = state.get("seen", [])
        if event_id in seen:
            return None
        state.set("seen", [*seen, event_id])
        target = TRANSITIONS.get((state.get("state"), event_type))
        if target is not None:
            state.set("state", target)
        return target

    sdf = app.dataframe(app.topic(topic, value_deserializer="bytes", key_deserializer="bytes"))
    sdf.apply(step, stateful=True)
    app.run()
    print(quixstreams.__version__, records / (time.perf_counter() - done["started"]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])

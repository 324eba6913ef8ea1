"""The peer: Quix Streams running a per-key state machine over the benchmark topic.

Runs in Quix's own virtual environment (no flowkeeper imports):
`python bench/quix_peer.py BROKER TOPIC RECORDS` prints the Quix version and records/s. Per key
(the order id) it parses the CloudEvent, drops duplicate ids, and moves the order's state along
the order-fulfilment transitions in RocksDB-backed state: the same kind of work as flowkeeper's
engine, without its validation, reordering, deadlines and outputs.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from typing import Any

import quixstreams
from quixstreams import Application, State

TRANSITIONS = {
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


def main(broker: str, topic: str, records: int) -> None:
    app = Application(broker_address=broker, consumer_group=f"bench-{uuid.uuid4()}",
                      auto_offset_reset="earliest", state_dir=f"/tmp/quix-state-{uuid.uuid4()}")
    done = {"n": 0, "started": 0.0}

    def step(value: bytes, state: State) -> Any:
        if done["n"] == 0:
            done["started"] = time.perf_counter()
        done["n"] += 1
        if done["n"] >= records:
            app.stop()
        try:
            event = json.loads(value)
        except ValueError:
            return None
        seen = state.get("seen", [])
        if event.get("id") in seen:
            return None
        state.set("seen", [*seen, event.get("id")])
        target = TRANSITIONS.get((state.get("state"), event.get("type")))
        if target is not None:
            state.set("state", target)
        return target

    sdf = app.dataframe(app.topic(topic, value_deserializer="bytes", key_deserializer="bytes"))
    sdf.apply(step, stateful=True)
    app.run()
    print(quixstreams.__version__, records / (time.perf_counter() - done["started"]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))

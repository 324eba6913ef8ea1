"""The event script behind `fixtures/shard_snapshot_v1.json` (a snapshot of the previous format)."""

from __future__ import annotations

from tests.engine_kit import ce

PREFIX = [
    ce("a1", "OrderPlaced", 0, "a"), ce("a2", "PaymentAuthorized", 3, "a"),
    ce("b1", "OrderPlaced", 5, "b"), ce("c1", "OrderPlaced", 6, "c"),
    ce("c2", "PaymentDeclined", 7, "c"),
    ce("a2", "PaymentAuthorized", 3, "a"), ce("t1", "Opened", 8, subject="case-1"),
    ce("d1", "OrderPlaced", 90, "d"), ce("b2", "OrderViewed", 8.5, "b"),
]
REST = [
    ce("a3", "InventoryReserved", 95, "a"), ce("t2", "Assigned", 100, subject="case-1"),
    ce("b3", "PaymentAuthorized", 10, "b"), ce("d2", "PaymentAuthorized", 101, "d"),
    ce("e1", "OrderPlaced", 300, "e"),
]
LATENESS_MS = 60_000

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

# Behind `fixtures/shard_snapshot_v4.repr` (written by the code of 5df5bec, the last v4): a shard
# with every kind of row a snapshot holds: open orders and a case, an evicted order's tombstone
# with its history, a late payment still followed (with its re-judge timer), deadlines, evictions
# and forgets pending, early counts, and events still held back for lateness.
V4_PREFIX = [
    *PREFIX,
    ce("p1", "OrderPlaced", 100, "p"), ce("f1", "OrderPlaced", 131, "f"),
    ce("g1", "OrderPlaced", 186, "g"), ce("p2", "PaymentAuthorized", 125, "p"),
    ce("x1", "PaymentAuthorized", 150, "x"), ce("g2", "OrderViewed", 187, "g"),
]
V4_REST = [
    ce("c3", "OrderCancelled", 8, "c"), ce("p3", "InventoryReserved", 132, "p"),
    ce("h1", "OrderPlaced", 200, "h"), ce("b3", "PaymentAuthorized", 10, "b"),
    ce("h2", "PaymentAuthorized", 201, "h"), ce("t3", "Closed", 260, subject="case-1"),
    ce("k1", "OrderPlaced", 400, "k"),
]

"""Hypothesis strategies for engine properties: timed event scripts of the test order workflow."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.engine_kit import ce

SCRIPTS: dict[str, list[str]] = {
    "happy": ["OrderPlaced", "PaymentAuthorized", "InventoryReserved", "ItemsPicked",
              "LabelPrinted", "InvoiceSent", "OrderShipped"],
    "declined": ["OrderPlaced", "OrderViewed", "PaymentDeclined"],
    "silent": ["OrderPlaced"],
    "compensated": ["OrderPlaced", "PaymentAuthorized", "InventoryReserved", "InvoiceFailed",
                    "InventoryReleased", "PaymentRefunded"],
    "compensation_failed": ["OrderPlaced", "PaymentAuthorized", "InventoryUnavailable"],
    "noisy": ["OrderPlaced", "OrderShipped", "PaymentAuthorized", "PaymentAuthorized",
              "InventoryReserved"],
}


@st.composite
def cases(draw: st.DrawFn, max_instances: int = 3) -> list[bytes]:
    """Events of 1..n orders, each following a script with 1 s .. 9 min gaps, in event-time order
    with all times distinct (equal times are ordered by arrival, which a permutation changes)."""
    count = draw(st.integers(1, max_instances))
    timed: list[tuple[int, bytes]] = []
    used: set[int] = set()
    for n in range(count):
        script = SCRIPTS[draw(st.sampled_from(sorted(SCRIPTS)))]
        seconds = draw(st.integers(0, 600))
        for i, event_type in enumerate(script):
            seconds += draw(st.integers(1, 540))
            while seconds in used:
                seconds += 1
            used.add(seconds)
            timed.append((seconds, ce(f"o{n}-{i}", event_type, seconds / 60, f"o{n}")))
    return [value for _, value in sorted(timed)]


CALENDAR_ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC",
                  "Asia/Kolkata")


@st.composite
def week_hours(draw: st.DrawFn) -> tuple[tuple[tuple[int, int], ...], ...]:
    """Seven weekdays of 0-3 non-overlapping working intervals on a 15-minute grid (so interval
    ends fall in and around DST gaps); at least one weekday works."""
    days = []
    for _ in range(7):
        cuts = sorted(draw(st.sets(st.integers(0, 96), max_size=6)))
        cuts = cuts[: len(cuts) // 2 * 2]
        days.append(tuple((a * 900_000, b * 900_000)
                          for a, b in zip(cuts[::2], cuts[1::2], strict=True) if a < b))
    if not any(days):
        weekday = draw(st.integers(0, 6))
        days[weekday] = ((draw(st.integers(0, 95)) * 900_000, 24 * 3_600_000),)
    return tuple(days)

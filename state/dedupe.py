"""Deduplication memory: the event ids each instance key has seen, with their body CRCs.

An exact redelivery (same id, same bytes) is a `duplicate`; the same id with other bytes is a
conflicting duplicate. Millions of keys hold a few ids each, so a key's ids are a flat
(id, crc, id, crc, ...) tuple while there are at most `SEEN_FLAT_MAX` (a dict costs 184 bytes even
for one id), then a dict.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

Seen = tuple[Any, ...] | dict[str, int]
SEEN_FLAT_MAX = 8


def seen_crc(seen: Seen, event_id: str) -> int | None:
    """The body CRC of `event_id` if the key has seen it."""
    if isinstance(seen, dict):
        return seen.get(event_id)
    for i in range(0, len(seen), 2):
        if seen[i] == event_id:
            crc: int = seen[i + 1]
            return crc
    return None


def with_seen(seen: Seen, event_id: str, crc: int) -> Seen:
    """`seen` with `event_id` added (a new tuple, or the same dict)."""
    if isinstance(seen, dict):
        seen[event_id] = crc
        return seen
    if len(seen) < 2 * SEEN_FLAT_MAX:
        return (*seen, event_id, crc)
    return {**dict(zip(seen[::2], seen[1::2], strict=True)), event_id: crc}


def seen_from_dict(seen: dict[str, int]) -> Seen:
    """The compact form of a key's ids as older snapshots stored them (a dict)."""
    return tuple(chain.from_iterable(seen.items())) if len(seen) <= SEEN_FLAT_MAX else seen

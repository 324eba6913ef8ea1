"""Admission: one input partition's records decoded in partition order, each stamped with the
partition's event-time frontier, and grouped by the shard that holds their instance.

The partition is the unit of event time. Its **frontier** is the largest event time of any valid
record read from it so far (as Kafka Streams' stream time), and every shard of the partition
judges lateness against the watermark that follows from it. Whether an event is late therefore
depends on the partition's records alone, not on how many shards (`--buckets`) the partition is
split into or which of them the event's instance hashes to.

A shard sees only its own slice, so each record carries the frontier as it stood before that
record, and when the frontier moved during a batch, each shard of the partition also gets a
**tick** (the frontier after the batch, no record) so that its buffered events and deadlines are
released as soon as the partition's time has passed them, even when its own slice is quiet.
"""

from __future__ import annotations

from schemas.decode import DecodeRules, decode
from schemas.event import DeadLetter, Event, RawRecord
from state.sharding import bucket_of, partition_shards

NEVER = -(2**62)

Admitted = tuple[int, Event | DeadLetter | None]
"""(the partition's frontier before this record, the decoded record); `None` is a tick."""


class Admission:
    """Decoder and event-time frontier of one input partition; see the module docstring."""

    def __init__(self, rules: DecodeRules, buckets: int, frontier: int = NEVER) -> None:
        self.rules, self.buckets, self.frontier = rules, buckets, frontier

    def admit(self, records: list[RawRecord]) -> dict[str, list[Admitted]]:
        """The records (of this partition, in order), decoded and stamped, by shard name; plus a
        tick for every shard of the partition the frontier moved past in this batch."""
        groups: dict[str, list[Admitted]] = {}
        rules, buckets = self.rules, self.buckets
        start = frontier = self.frontier
        names = partition_shards(records[0].partition, buckets) if records else ()
        for record in records:
            decoded = decode(record, rules)
            name = names[bucket_of(record.key, buckets)]
            group = groups.get(name)
            if group is None:
                groups[name] = [(frontier, decoded)]
            else:
                group.append((frontier, decoded))
            if type(decoded) is Event and decoded.time_ms > frontier:
                frontier = decoded.time_ms
        self.frontier = frontier
        if frontier > start:
            for name in names:
                groups.setdefault(name, []).append((frontier, None))
        return groups

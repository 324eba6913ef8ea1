"""Admission: one input partition's records decoded in partition order, each stamped with the
partition's event-time frontier, and grouped by the shard that holds their instance.

The partition is the unit of event time. Its **frontier** is the largest event time of any
admitted record read from it so far (as Kafka Streams' stream time), and every shard of the
partition judges lateness against the watermark that follows from it. Whether an event is late
therefore depends on the partition's records alone, not on how many shards (`--buckets`) the
partition is split into or which of them the event's instance hashes to.

A shard sees only its own slice, so each record carries the frontier as it stood before that
record, and when the frontier moved during a batch, each shard of the partition also gets a
**tick** (the frontier after the batch, no record) so that its buffered events and deadlines are
released as soon as the partition's time has passed them, even when its own slice is quiet.

**One outlier cannot move the frontier.** A record stamped more than `skew_ms` (the run's
`--max-future-skew`) after the frontier, with no arrival time of its own to vouch for it (one
measured apart from its stamp: decoding already refused stamps more than `skew_ms` after that),
is held back, not admitted, until the partition's later traffic decides about it. Each later
event of *another* instance votes once per instance: *against* it when admitting it would make
the voter late (stamped more than the allowed lateness before it, while not late already), *with*
it when the voter lands near it (up to `skew_ms` after it; records further ahead abstain: they
are jumps themselves). Events of its own instance never
vote, so a broken producer cannot vouch for itself.

- `QUORUM` votes against: dead-lettered as `time_out_of_range`, with a message naming the jump.
- `QUORUM` votes with: admitted (the jump was real: the partition's time moved there), and with
  it every held record up to its time plus `skew_ms` whose own votes are not against it.
- The frontier reaching it: admitted (it no longer moves the clock).
- The end of a bounded input, or more than `MAX_HELD` held (the oldest first): admitted unless
  refuted (nothing contradicted it enough: the last records of a sparse log).

Held records are admitted in read order, each stamped with the frontier as it then stands,
exactly as an in-line record would have been at that moment. The first records of a partition
have no frontier to compare with, so they wait for the same votes. On a live stream
(`--idle-grace`) the wall clock vouches too: a record stamped no later than now minus the grace
plus `skew_ms` is never held. Each admitted jump and each refused record also yields a `TimeJump`
row (`event_time_jumps`), so a run can say when and where its partitions' clocks jumped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.decode import DecodeRules, decode
from schemas.event import DeadLetter, Event, RawRecord
from state.sharding import bucket_of, partition_shards

NEVER = -(2**62)
QUORUM = 4  # distinct other instances that decide about a held record
MAX_HELD = 1_000  # held records per partition; beyond it the oldest is admitted unless refuted


@dataclass(frozen=True, slots=True)
class TimeJump:
    """A record stamped more than the skew bound ahead of its partition's event time: admitted
    (`jumped`: other instances' records corroborated it) or refused (`refused`: dead-lettered)."""

    kind: str
    event: Event
    from_ms: int
    votes_with: int
    votes_against: int

    def to_row(self) -> dict[str, Any]:
        """The `event_time_jumps` table row (schema in `schemas.tables.EVENT_TIME_JUMPS`)."""
        e = self.event
        return {
            "row_id": f"{e.source}/{e.partition}/{e.offset}/jump",
            "source": e.source, "partition": e.partition, "offset": e.offset,
            "event_id": e.event_id, "event_type": e.type, "workflow_type": e.workflow_type,
            "instance_id": e.instance_id, "kind": self.kind, "from_time": self.from_ms,
            "to_time": e.time_ms, "ahead_ms": e.time_ms - self.from_ms,
            "votes_with": self.votes_with, "votes_against": self.votes_against,
        }


Admitted = tuple[int, Event | DeadLetter | TimeJump | None]
"""(the partition's frontier before this record, the decoded record); `None` is a tick."""


@dataclass(slots=True)
class Held:
    """A record held back: an event stamped far ahead of its partition's event time, with the
    instances that voted with and against it so far; or, before the partition has any event
    time, a dead letter waiting for it (so its metric facts and rows follow the first events)."""

    record: RawRecord
    decoded: Event | DeadLetter
    key: str = ""
    votes_with: set[str] = field(default_factory=set)
    votes_against: set[str] = field(default_factory=set)
    against_ms: int = NEVER  # the latest time of a record that voted against it

    def vote(self, key: str, time_ms: int, skew_ms: int, lateness_ms: int,
             watermark: int) -> None:
        """One vote per other instance: against this record when admitting it would make the
        voter late (and nothing else does: the voter is not behind the partition's `watermark`
        already), with it when the voter lands near it (up to the skew after it)."""
        event = self.decoded
        if (type(event) is not Event or key == self.key or key in self.votes_with
                or key in self.votes_against or time_ms < watermark):
            return
        if time_ms < event.time_ms - lateness_ms:
            self.votes_against.add(key)
            self.against_ms = max(self.against_ms, time_ms)
        elif time_ms <= event.time_ms + skew_ms:
            self.votes_with.add(key)

    def vouched(self, level: int, skew_ms: int) -> bool:
        """Whether a confirmed time `level` covers this record (within the skew) and its own
        votes do not speak against it."""
        assert type(self.decoded) is Event
        with_, against = len(self.votes_with), len(self.votes_against)
        return (self.decoded.time_ms <= level + skew_ms
                and (against == 0 or with_ > against))

    def verdict(self, final: bool) -> bool | None:
        """True: admit, False: refuse, None: wait; `final` (end of input, or too many held)
        admits what the votes have not refuted."""
        with_, against = len(self.votes_with), len(self.votes_against)
        if with_ >= QUORUM:
            return True
        if against >= QUORUM:
            return False
        return True if final else None  # unrefuted at the end: the benefit of the doubt


class Admission:
    """Decoder and event-time frontier of one input partition; see the module docstring.

    `skew_ms` None turns the outlier rule off (every valid record moves the frontier); `vouch`
    returns the wall clock's trusted event time on a live stream (now minus the idle grace)."""

    def __init__(self, rules: DecodeRules, buckets: int, frontier: int = NEVER,
                 skew_ms: int | None = None, vouch: Callable[[], int] | None = None,
                 lateness_ms: int = 0) -> None:
        self.rules, self.buckets, self.frontier = rules, buckets, frontier
        self.skew_ms, self.vouch, self.lateness_ms = skew_ms, vouch, lateness_ms
        self.held: list[Held] = []
        self.partition: int | None = None

    def admit(self, records: list[RawRecord]) -> dict[str, list[Admitted]]:
        """The records (of this partition, in order), decoded and stamped, by shard name; plus a
        tick for every shard of the partition the frontier moved past in this batch."""
        groups: dict[str, list[Admitted]] = {}
        if not records:
            return groups
        rules, buckets = self.rules, self.buckets
        start = frontier = self.frontier
        self.partition = records[0].partition
        names = partition_shards(self.partition, buckets)
        trusted = self.vouch() if self.vouch is not None else NEVER
        rule, skew = self.skew_ms is not None, self.skew_ms or 0  # rule off: nothing is held
        for record in records:
            decoded = decode(record, rules)
            if type(decoded) is Event:  # too far ahead, and no arrival of its own vouches for it
                held = (rule and decoded.time_ms > (frontier if frontier > trusted else trusted)
                        + skew and not _arrival_vouches(decoded))
            else:  # a dead letter before the partition has any time waits for its first event
                held = rule and frontier == NEVER and trusted == NEVER
            if held:
                self.frontier = frontier
                self._hold(record, decoded)
                self._decide(groups, names, False, trusted)
                frontier = self.frontier
                continue
            name = names[bucket_of(record.key, buckets)]
            group = groups.get(name)
            if group is None:
                groups[name] = [(frontier, decoded)]
            else:
                group.append((frontier, decoded))
            if type(decoded) is Event:
                if decoded.time_ms > frontier:
                    frontier = decoded.time_ms
                if self.held:  # an in-line event, judged on the clock before it, then votes
                    self.frontier = frontier
                    self._vote(decoded)
                    self._decide(groups, names, False, trusted)
                    frontier = self.frontier
        self.frontier = frontier
        self._tick(groups, names, start)
        return groups

    def finish(self) -> dict[str, list[Admitted]]:
        """At the end of a bounded input: every held record not refuted is admitted."""
        groups: dict[str, list[Admitted]] = {}
        if not self.held or self.partition is None:
            return groups
        names = partition_shards(self.partition, self.buckets)
        start = self.frontier
        self._decide(groups, names, True, NEVER)
        self._tick(groups, names, start)
        return groups

    def _tick(self, groups: dict[str, list[Admitted]], names: tuple[str, ...],
              start: int) -> None:
        if self.frontier > start:
            for name in names:
                groups.setdefault(name, []).append((self.frontier, None))

    def _hold(self, record: RawRecord, decoded: Event | DeadLetter) -> None:
        if type(decoded) is Event:
            self._vote(decoded)
            self.held.append(Held(record, decoded, decoded.instance_key))
        else:
            self.held.append(Held(record, decoded))

    def _vote(self, event: Event) -> None:
        assert self.skew_ms is not None
        key, time_ms, skew, lateness = (event.instance_key, event.time_ms, self.skew_ms,
                                        self.lateness_ms)
        watermark = self.frontier - lateness
        for held in self.held:
            held.vote(key, time_ms, skew, lateness, watermark)

    def _decide(self, groups: dict[str, list[Admitted]], names: tuple[str, ...], final: bool,
                trusted: int) -> None:
        """Admit, refuse or keep every held record, in read order.

        A held record is admitted when its votes confirm it, once the frontier reaches it (it no
        longer moves the clock), or when a confirmed record vouches for its time (up to that
        record's time plus the skew, or the wall clock's on a live stream) and its own votes are
        not against it; each is stamped with the frontier as it then stands, exactly as an
        in-line record would have been. Records the votes refute are dead-lettered. `final` (end
        of input) admits every record not refuted; beyond `MAX_HELD` the oldest are decided so.
        Repeated while admissions move the frontier."""
        assert self.skew_ms is not None
        changed = True
        while changed and self.held:
            changed = False
            overflow = len(self.held) - MAX_HELD
            verdicts = [held.verdict(final or index < overflow)
                        for index, held in enumerate(self.held)]
            level = max([trusted, *(held.decoded.time_ms for held, verdict
                                    in zip(self.held, verdicts, strict=True)
                                    if verdict and type(held.decoded) is Event)])
            kept: list[Held] = []
            for held, verdict in zip(self.held, verdicts, strict=True):
                decoded = held.decoded
                if type(decoded) is not Event:  # a dead letter waiting for the first event time
                    if self.frontier > NEVER or final:
                        self._put(groups, names, held, decoded)
                    else:
                        kept.append(held)
                    continue
                if (verdict or decoded.time_ms <= self.frontier
                        or held.vouched(level, self.skew_ms)):
                    self._admit_held(groups, names, held)
                    changed = True
                elif verdict is False:
                    self._refuse(groups, names, held, decoded)
                else:
                    kept.append(held)
            self.held = kept

    def _put(self, groups: dict[str, list[Admitted]], names: tuple[str, ...], held: Held,
             item: Event | DeadLetter | TimeJump) -> None:
        name = names[bucket_of(held.record.key, self.buckets)]
        groups.setdefault(name, []).append((self.frontier, item))

    def _admit_held(self, groups: dict[str, list[Admitted]], names: tuple[str, ...],
                    held: Held) -> None:
        """Admit a held event on the frontier as it stands; a `jumped` row when it moves the
        frontier by more than the skew at once."""
        assert self.skew_ms is not None and type(held.decoded) is Event
        event, frontier = held.decoded, self.frontier
        if event.time_ms > frontier + self.skew_ms and frontier > NEVER:
            self._put(groups, names, held, TimeJump("jumped", event, frontier,
                                                    len(held.votes_with),
                                                    len(held.votes_against)))
        self._put(groups, names, held, event)
        self.frontier = max(frontier, event.time_ms)

    def _refuse(self, groups: dict[str, list[Admitted]], names: tuple[str, ...], held: Held,
                event: Event) -> None:
        """Dead-letter a held event the votes refuted, with a `refused` row."""
        assert self.skew_ms is not None
        since = self.frontier if self.frontier > NEVER else held.against_ms
        votes = (len(held.votes_with), len(held.votes_against))
        self._put(groups, names, held, TimeJump("refused", event, since, *votes))
        self._put(groups, names, held, _refused(held, event, since, self.skew_ms))

    def snapshot(self) -> dict[str, Any]:
        """The frontier and the held records (re-decoded on restore: decoding is a pure
        function of the bytes), with their votes."""
        return {"version": 2, "frontier": self.frontier, "partition": self.partition,
                "held": [(_record_data(h.record), sorted(h.votes_with), sorted(h.votes_against),
                          h.against_ms) for h in self.held]}

    def restore(self, data: dict[str, Any]) -> None:
        """Resume from `snapshot` (version 1 kept only the frontier)."""
        self.frontier = data["frontier"]
        self.partition = data.get("partition")
        self.held = []
        for record_data, with_, against, against_ms in data.get("held", ()):
            record = RawRecord(*record_data)
            decoded = decode(record, self.rules)
            key = decoded.instance_key if type(decoded) is Event else ""
            self.held.append(Held(record, decoded, key, set(with_), set(against), against_ms))


def _arrival_vouches(event: Event) -> bool:
    """An arrival time measured apart from the event's stamp (a broker's or producer's
    timestamp, a simulated arrival, an `--arrival-field`) vouches for the event: decoding has
    already refused stamps more than the skew after it. One equal to the stamp to the millisecond
    is a copy of it (a file without arrival times, a relay that copies the event time into the
    Kafka timestamp) and says nothing."""
    return event.arrived_ms > 0 and event.arrived_ms != event.time_ms


def _record_data(record: RawRecord) -> tuple[Any, ...]:
    return (record.source, record.partition, record.offset, record.value, record.key,
            tuple(record.headers), record.arrived_ms, record.error)


def _refused(held: Held, event: Event, frontier: int, skew_ms: int) -> DeadLetter:
    """The dead letter of a refused record, naming the jump it would have made."""
    ahead = span(event.time_ms - frontier)
    msg = (f"attribute 'time' {_iso(event.time_ms)} is {ahead} ahead of partition "
           f"{event.partition}'s event time ({_iso(frontier)}), and the records of "
           f"{len(held.votes_against)} other instances read after it are older than that "
           f"({len(held.votes_with)} came near it): admitting it would have moved the partition's "
           "clock on its own and made them late. Check the producer's clock; if the jump is "
           f"real, raise --max-future-skew (now {span(skew_ms)})")
    return DeadLetter("time_out_of_range", msg, held.record, event.event_id, event.type)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def span(ms: int) -> str:
    """A duration for people: the largest unit that fits (years, days, hours, minutes, s)."""
    for unit, size in (("years", 31_556_952_000), ("days", 86_400_000), ("h", 3_600_000),
                       ("min", 60_000)):
        if ms >= size:
            value = ms / size
            return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"
    return f"{ms / 1000:g} s"

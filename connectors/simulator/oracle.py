"""The ground truth: what the engine must conclude about every record and every instance.

Independent of `state.admission`, `state.shard` and `state.machine`: a record-by-record replay of
the event-time rules (per input partition: frontier = largest event time of any valid record,
watermark = frontier - allowed lateness; a record's event id seen before in its instance is a
duplicate; an event before the watermark at its arrival is late, recorded and never applied),
then `replica.interpret` per instance. The end
of the bounded input fires every pending deadline, so the final verdict interprets every accepted
event with no time limit.

A late event yields a correction when interpreting it, with the instance's history so far and the
same watermark, changes (outcome, state) — if the instance is known then: started, and not yet
forgotten (the watermark has passed `retention` plus the tombstone's day after it ended, in
event time; an evicted instance is still judged from its tombstone until then).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from connectors.simulator.replica import IDLE, Step, interpret
from state.definition import StateMachine
from state.durations import parse_duration_ms
from state.sharding import shard_of

NEVER = -(2**62)
DEAD, DUPLICATE, LATE, ACCEPTED = "dead_lettered", "duplicate", "late", "accepted"


@dataclass(frozen=True, slots=True)
class Meta:
    """What the simulator knows of one record; `event_id` is what the ledger shows (None when
    the value does not parse), `dead_reason` the dead-letter reason it was built to get."""

    workflow_type: str
    instance_id: str
    event_id: str | None
    type: str | None = None
    time_ms: int | None = None
    sequence: int | None = None
    dead_reason: str | None = None
    faults: tuple[str, ...] = ()

    @property
    def instance_key(self) -> str:
        return f"{self.workflow_type}/{self.instance_id}"


@dataclass(frozen=True, slots=True)
class Arrival:
    """One record as its shard saw it: the verdict before interpretation and its partition's
    watermarks before and after it."""

    meta: Meta
    partition: int
    offset: int
    shard: str
    verdict: str  # dead_lettered | duplicate | late | accepted
    index: int  # position among the shard's records
    watermark_before: int
    watermark_after: int


@dataclass
class _Clock:
    frontier: int = NEVER
    watermark: int = NEVER
    seen: dict[str, set[str]] = field(default_factory=dict)


def arrivals(partitions: Sequence[Sequence[tuple[bytes | None, Meta]]], lateness_ms: int,
             buckets: int) -> list[Arrival]:
    """Replay each partition in order: dead letter, duplicate, late or accepted."""
    found: list[Arrival] = []
    for partition, records in enumerate(partitions):
        clock = _Clock()
        shard_counts: dict[str, int] = {}
        for offset, (key, meta) in enumerate(records):
            name = shard_of(partition, key, buckets)
            index = shard_counts[name] = shard_counts.get(name, -1) + 1
            before = clock.watermark
            verdict = _verdict(clock, meta, lateness_ms)
            found.append(Arrival(meta, partition, offset, name, verdict, index, before,
                                 clock.watermark))
    return found


def _verdict(clock: _Clock, meta: Meta, lateness_ms: int) -> str:
    if meta.dead_reason is not None:
        return DEAD
    assert meta.event_id is not None and meta.time_ms is not None
    watermark = clock.watermark
    clock.frontier = max(clock.frontier, meta.time_ms)  # every valid record moves time
    clock.watermark = max(clock.watermark, clock.frontier - lateness_ms)
    seen = clock.seen.setdefault(meta.instance_key, set())
    if meta.event_id in seen:
        return DUPLICATE
    seen.add(meta.event_id)
    return LATE if meta.time_ms < watermark else ACCEPTED


@dataclass(frozen=True, slots=True)
class InstanceVerdict:
    """What the engine must conclude about one instance once the input has drained."""

    outcome: str | None
    final_state: str
    commands: tuple[str, ...]
    expects_correction: bool


def judge(found: list[Arrival], definitions: dict[str, StateMachine]
          ) -> tuple[dict[str, InstanceVerdict], list[str]]:
    """Per instance key its verdict; per arrival (same order) its expected ledger disposition."""
    by_instance: dict[str, list[int]] = {}
    for i, arrival in enumerate(found):
        if arrival.verdict != DEAD:
            by_instance.setdefault(arrival.meta.instance_key, []).append(i)
    dispositions = [a.verdict for a in found]
    verdicts = {}
    for key, indexes in by_instance.items():
        first = found[indexes[0]].meta
        definition = definitions[first.workflow_type]
        accepted = [i for i in indexes if found[i].verdict == ACCEPTED]
        steps = [_step(found[i]) for i in accepted]
        replica, taken = interpret(definition, first.instance_id, steps)
        for i, disposition in zip(accepted, taken, strict=True):
            dispositions[i] = disposition
        corrected = any(_corrects(found, accepted, i, definition)
                        for i in indexes if found[i].verdict == LATE)
        verdicts[key] = InstanceVerdict(replica.outcome, replica.state, tuple(replica.commands),
                                        corrected)
    return verdicts, dispositions


def _step(arrival: Arrival) -> Step:
    meta = arrival.meta
    assert meta.time_ms is not None and meta.type is not None
    return Step(meta.time_ms, meta.type, (meta.sequence or 0, arrival.index))


def _corrects(found: list[Arrival], accepted: list[int], late: int,
              definition: StateMachine) -> bool:
    """Would the late event, applied in its place, change the instance's (outcome, state)?"""
    arrival = found[late]
    watermark = arrival.watermark_before
    earlier = [_step(found[i]) for i in accepted if found[i].index < arrival.index]
    history = [step for step in earlier if step.time_ms < watermark]  # what was released
    instance_id = arrival.meta.instance_id
    before, _ = interpret(definition, instance_id, history, watermark)
    if before.phase == IDLE or _forgotten(before.ended_ms, watermark, definition.retention):
        return False
    after, _ = interpret(definition, instance_id, [*history, _step(arrival)], watermark)
    return (before.outcome, before.state) != (after.outcome, after.state)


TOMBSTONE_RETENTION_MS = 86_400_000  # the engine's default: a tombstone lives a day


def _forgotten(ended_ms: int | None, watermark: int, retention: str) -> bool:
    """Forgotten once the watermark passes `retention` and then the tombstone's day after the
    end (event time only)."""
    return ended_ms is not None and (
        watermark > ended_ms + parse_duration_ms(retention) + TOMBSTONE_RETENTION_MS)

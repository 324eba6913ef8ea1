"""A shard: the instances of one slice of one input partition, on its partition's event time.

A shard sees the records of its slice in partition order, decoded and stamped by admission
(`state.admission`) with their partition's frontier, and keeps:
- the **frontier** (largest event time of its partition as far as it has been told) and the
  **watermark** (frontier minus the allowed lateness, or wall-clock time when a live stream is
  idle, see `advance_to`): the partition's, so lateness does not depend on the shard count;
- the scheduler (`state.scheduler`): buffered events and timers (armed deadlines, evictions),
  released in event-time order once the watermark passes them;
- the instances, and small tombstones of evicted ones: late duplicates are still recognised, and
  a late event is still judged (with the history the tombstone keeps) until it is forgotten.

Every record ends in exactly one `ledger` row: applied, ignored, anomalous, duplicate, late or
dead_lettered. An event behind the watermark is `late`: recorded, never applied; if applying it in
its place would have changed the instance's verdict, a `corrections` row says so. When that
in-time run has not ended yet, the shard follows it: each later event of the instance and each
deadline of the in-time run re-judges it, and a further row (`.../correction/<event id>/2`, ...)
states every change until it ends.

Everything is a pure function of the records received and the watermarks given, so a replay of
the same partitions gives the same rows at any speed and worker count.

A shard may hold millions of open instances, so per-key state is kept small: keys are interned (one
string however many structures hold it), an instance's applied events are one flat tuple of what a
what-if recomputation reads, and a key's first few event ids are a flat tuple too
(`state.dedupe`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from itertools import chain
from operator import attrgetter
from typing import Any

from schemas.decode import DecodeRules
from schemas.errors import SnapshotError
from schemas.event import DeadLetter, Event
from state.admission import NEVER, Admitted, TimeJump
from state.cases import CaseInstance
from state.catalog import Catalog
from state.dedupe import Seen, seen_crc, seen_from_dict, with_seen
from state.definition import StateMachine
from state.durations import parse_duration_ms
from state.machine import (
    ANOMALOUS,
    APPLIED,
    COUNT_KEYS,
    NO_COUNTS,
    Counts,
    MachineInstance,
    anomaly_row,
    counted,
    deadline_ref,
)
from state.output import CommandKeys, Out
from state.scheduler import DEADLINE, EVENT, EVICT, FORGET, REJUDGE, Buffered, Scheduler
from state.snapshot import encode_instance, layouts, readers

SNAPSHOT_VERSION = 4
END_OF_TIME = 2**62

Instance = MachineInstance | CaseInstance
Verdict = tuple[str | None, str]  # (outcome, state)
Judged = tuple[tuple[Any, ...], int, Verdict, bool, str | None]
"""What judging a late event needs: history, definition version, verdict, ended, trace id."""
Stated = tuple[Verdict, Verdict, tuple[str, ...], tuple[str, ...]]
"""What a correction row states: this run's verdict, the in-time run's, and the idempotency keys
of the commands the in-time run would have sent and would not have sent."""
HISTORY_WIDTH = 3  # per applied event in `Shard.history`: type, time, sequence
_EVENTS, _OUT_OF_ORDER = COUNT_KEYS.index("events"), COUNT_KEYS.index("out_of_order")
_COUNTER = {disposition: COUNT_KEYS.index(name) for disposition, name in (
    ("applied", "applied"), ("ignored", "ignored"), ("anomalous", "anomalies"),
    ("duplicate", "duplicates"), ("late", "late"))}


@dataclass(frozen=True)
class ShardConfig:
    """Event-time policy of every shard."""

    allowed_lateness_ms: int = 5_000
    tombstone_retention_ms: int = 86_400_000


@dataclass(slots=True)
class Tombstone:
    """What remains of an evicted instance until `forget_ms`: enough to recognise its late
    duplicates and to judge a late event (its final state, definition version and applied
    history; `history` None for tombstones restored from snapshots that did not keep it)."""

    outcome: str | None
    ended_ms: int
    forget_ms: int
    state: str = ""
    version: int = 0
    history: tuple[Any, ...] | None = None
    trace_id: str | None = None


@dataclass(slots=True)
class Followed:
    """A late event with a correction while this run or the in-time one had not ended: what its
    latest correction row stated (`Stated`), that row's revision, and when a re-judge is
    scheduled (None: none)."""

    late: Event
    stated: Stated
    revision: int
    due_ms: int | None = None

    def to_data(self) -> tuple[Any, ...]:
        late = self.late
        return (late.workflow_type, late.instance_id, late.event_id, late.type, late.time_ms,
                late.sequence, [list(part) for part in self.stated], self.revision, self.due_ms)

    @classmethod
    def from_data(cls, row: Any) -> Followed:
        *event, stated, revision, due_ms = row
        before, after, would, would_not = (tuple(part) for part in stated)
        return cls(_what_if_event(*event), (before, after, would, would_not), revision, due_ms)


# A tombstone in a snapshot: its fields in this order, restored by name (older snapshots wrote
# only the first three; the rest then take their defaults).
_TOMBSTONE_FIELDS = tuple(f.name for f in fields(Tombstone))
_tombstone_row = attrgetter(*_TOMBSTONE_FIELDS)


class Shard:
    """Instances, buffered events and deadlines of one shard; see the module docstring."""

    def __init__(self, name: str, catalog: Catalog, rules: DecodeRules,
                 config: ShardConfig) -> None:
        self.name, self.catalog, self.rules, self.config = name, catalog, rules, config
        self.watermark = NEVER
        self.frontier = NEVER
        self.fact_clock = 0
        self.scheduler = Scheduler()
        self.evicts = True  # False in what-if scratch shards
        self.instances: dict[str, Instance] = {}
        self.history: dict[str, tuple[Any, ...]] = {}  # flat, `HISTORY_WIDTH` items per event
        self.tombstones: dict[str, Tombstone] = {}
        self.seen: dict[str, Seen] = {}
        self._finished: set[str] = set()
        self.open_by_workflow: dict[str, int] = {}
        self._open_before: dict[str, int] = {}  # changed since `gauge_facts`: the count before
        self.early_counts: dict[str, Counts] = {}  # events settled before their instance began
        self.followed: dict[str, list[Followed]] = {}  # corrections while a run is still open

    # -- input -----------------------------------------------------------------------------

    def receive(self, admitted: Admitted, out: Out) -> None:
        """Take one admitted record of this shard's slice (or a tick), in partition order: first
        catch up with the partition's frontier before it, releasing what that makes due."""
        frontier, decoded = admitted
        if frontier > self.frontier:
            self.frontier = frontier
            watermark = frontier - self.config.allowed_lateness_ms
            if watermark > self.watermark:
                self.watermark = watermark
                self._release(out)
        if decoded is None:
            return
        if isinstance(decoded, TimeJump):
            out.row("event_time_jumps", decoded.to_row())
            return
        if isinstance(decoded, DeadLetter):
            self._dead_letter(decoded, out)
            return
        event = decoded
        key = _key(event)
        seen = self.seen.get(key, ())
        crc = seen_crc(seen, event.event_id)
        if crc is not None:
            if crc == event.body_crc:
                self._settle(event, key, "duplicate", out)
            else:
                self._conflicting_duplicate(event, key, out)
            return
        self.seen[key] = with_seen(seen, event.event_id, event.body_crc)
        if event.time_ms < self.watermark:
            self._late(event, key, out)
            return
        out_of_order = event.time_ms < self.frontier
        self.frontier = max(self.frontier, event.time_ms)
        self.watermark = max(self.watermark, self.frontier - self.config.allowed_lateness_ms)
        self.scheduler.buffer(event, out_of_order, key)

    def take(self, items: list[Admitted], out: Out) -> None:
        """`receive` each item of a slice in order, each followed by `release` and `gauge_facts`,
        as the dataflow runs a shard: those two are called only when the scheduler's head is due
        or a gauge changed, which most records leave as they were."""
        receive, release = self.receive, self._release
        events, timers = self.scheduler.events, self.scheduler.timers
        out.fact_clock = max(out.fact_clock, self.fact_clock)
        for admitted in items:
            receive(admitted, out)
            watermark = self.watermark
            if (events and events[0].time_ms < watermark) or (
                    timers and timers[0].due_ms < watermark):
                release(out)
            if self._open_before:
                self.gauge_facts(out)
        self.fact_clock = out.fact_clock

    def advance_to(self, watermark_ms: int, out: Out) -> None:
        """Move the watermark (never back) and release everything now due.

        The dataflow calls this after each batch with the watermark it has, and with wall-clock
        time minus a grace when a live partition is idle, and with `END_OF_TIME` when a bounded
        input ends (every pending deadline is then due).
        """
        self.watermark = max(self.watermark, watermark_ms)
        if watermark_ms >= END_OF_TIME:
            self.frontier = max(self.frontier, self.watermark)
        self._release(out)

    def release(self, out: Out) -> None:
        """Release what the current watermark allows (after a batch of `receive` calls)."""
        self._release(out)

    @property
    def open_instances(self) -> int:
        return sum(self.open_by_workflow.values())

    def gauge_facts(self, out: Out) -> None:
        """Open instances per workflow that changed since the last call, as metric facts. The
        dataflow calls it after every record (and idle tick, and end of input): only changes, so
        the facts depend on the records alone (not on batching or on a restore)."""
        if not self._open_before:
            return
        before = self._open_before
        for workflow_type, count in self.open_by_workflow.items():
            if before.get(workflow_type, count) != count:
                out.fact(workflow_type, out.fact_clock, "open", float(count))
        before.clear()

    def _count_open(self, workflow_type: str, change: int) -> None:
        count = self.open_by_workflow.get(workflow_type, 0)
        self._open_before.setdefault(workflow_type, count)
        self.open_by_workflow[workflow_type] = count + change

    def next_due(self) -> int | None:
        """Event time of the earliest scheduled item, for the dataflow's wall-clock idle timer."""
        return self.scheduler.next_due()

    # -- release loop ----------------------------------------------------------------------

    def _release(self, out: Out) -> None:
        out.fact_clock = max(out.fact_clock, self.fact_clock)
        pop_due = self.scheduler.pop_due
        while (entry := pop_due(self.watermark)) is not None:
            if isinstance(entry, Buffered):
                self._apply(entry.event, entry.key, entry.out_of_order, out)
            elif entry.kind == DEADLINE:
                instance = self.instances.get(entry.key)
                if instance is not None:
                    assert entry.ref is not None
                    instance.fire(entry.ref, entry.due_ms, out)
                    self._after(entry.key, instance, out)
                    if entry.key in self.followed:
                        self._follow(entry.key, entry.due_ms, out)
            elif entry.kind == EVICT:
                self._evict(entry.key, entry.due_ms)
            elif entry.kind == FORGET:
                self._forget(entry.key, entry.due_ms)
            else:
                self._follow(entry.key, entry.due_ms, out, timer=True)
        self.fact_clock = out.fact_clock

    def _apply(self, event: Event, key: str, out_of_order: bool, out: Out) -> None:
        instance = self.instances.get(key)
        if instance is None:
            tombstone = self.tombstones.get(key)
            if tombstone is not None:
                out.row("anomalies", anomaly_row(event.workflow_type, event.instance_id,
                                                 "after_terminal", None, event, event.time_ms,
                                                 "instance already ended and was evicted", None))
                self._settle(event, key, ANOMALOUS, out)
                if tombstone.history is not None:  # a what-if replays it, as a live one would
                    tombstone.history += (event.type, event.time_ms, event.sequence)
                    if key in self.followed:
                        self._follow(key, event.time_ms, out)
                return
            instance = self._start(event, key, out)
            if instance is None:
                if event.type in getattr(self.catalog.latest(event.workflow_type), "ignore", ()):
                    self._settle(event, key, "ignored", out)
                else:
                    detail = f"{event.type} for an instance that never started"
                    out.row("anomalies", anomaly_row(event.workflow_type, event.instance_id,
                                                     "orphan_event", None, event, event.time_ms,
                                                     detail, None))
                    self._settle(event, key, ANOMALOUS, out)
                self.scheduler.schedule(event.time_ms + self.config.tombstone_retention_ms,
                                        FORGET, key)
                return
            disposition = (instance.apply(event, out) if isinstance(instance, CaseInstance)
                           else APPLIED)
        else:
            disposition = instance.apply(event, out)
        if out_of_order:
            instance.counts = counted(instance.counts, _OUT_OF_ORDER)
        self.history[key] += (event.type, event.time_ms, event.sequence)
        self._settle(event, key, disposition, out, instance)
        self._after(key, instance, out)
        if key in self.followed:
            self._follow(key, event.time_ms, out)

    def _start(self, event: Event, key: str, out: Out) -> Instance | None:
        definition = self.catalog.latest(event.workflow_type)
        instance: Instance
        if isinstance(definition, StateMachine):
            if event.type not in definition.start:
                return None
            instance = MachineInstance(definition, key, event.time_ms)
        else:
            instance = CaseInstance(definition, key, event.time_ms)
        early = self.early_counts.pop(key, None)
        if early is not None:
            instance.counts = early
        self.instances[key] = instance
        self.history[key] = ()
        self._count_open(event.workflow_type, 1)
        instance.start(event, out)
        return instance

    def _after(self, key: str, instance: Instance, out: Out) -> None:
        """Queue the deadlines the instance armed; emit its outcome once when it ends."""
        for due, ref in instance.armed:
            self.scheduler.schedule(due, DEADLINE, key, ref)
        instance.armed = ()
        if instance.outcome is not None and key not in self._finished:  # ended
            self._finished.add(key)
            self._count_open(instance.workflow_type, -1)
            out.row("outcomes", instance.outcome_row())
            assert instance.ended_ms is not None
            retention = parse_duration_ms(instance.definition.retention)
            if self.evicts:
                self.scheduler.schedule(instance.ended_ms + retention, EVICT, key)

    def _evict(self, key: str, at_ms: int) -> None:
        instance = self.instances.pop(key, None)
        if instance is None:
            return
        history = self.history.pop(key, None)
        self._finished.discard(key)
        forget_ms = at_ms + self.config.tombstone_retention_ms
        self.tombstones[key] = Tombstone(instance.outcome, instance.ended_ms or at_ms, forget_ms,
                                         instance.state, instance.definition.version, history,
                                         instance.trace_id)
        self.scheduler.schedule(forget_ms, FORGET, key)

    def _forget(self, key: str, due_ms: int) -> None:
        """Drop what is kept of a key, unless an instance or a younger tombstone still needs it."""
        tombstone = self.tombstones.get(key)
        if key in self.instances or (tombstone is not None and tombstone.forget_ms > due_ms):
            return
        self.tombstones.pop(key, None)
        self.seen.pop(key, None)
        self.early_counts.pop(key, None)
        self.followed.pop(key, None)

    # -- dispositions ----------------------------------------------------------------------

    def _settle(self, event: Event, key: str, disposition: str, out: Out,
                instance: Instance | None = None) -> None:
        """Write the ledger row of an event and count it on its instance."""
        instance = instance or self.instances.get(key)
        if instance is not None:
            instance.counts = counted(instance.counts, _EVENTS, _COUNTER[disposition])
        else:
            self.early_counts[key] = counted(self.early_counts.get(key, NO_COUNTS), _EVENTS,
                                             _COUNTER[disposition])
        out.row("ledger", {
            "row_id": f"{event.source}/{event.partition}/{event.offset}",
            "source": event.source, "partition": event.partition, "offset": event.offset,
            "event_id": event.event_id, "workflow_type": event.workflow_type,
            "instance_id": event.instance_id, "disposition": disposition,
            "event_time": event.time_ms, "arrived_at": event.arrived_ms,
        })
        out.fact(event.workflow_type, event.time_ms, "event_in")
        if disposition in ("duplicate", "late", ANOMALOUS):
            out.fact(event.workflow_type, event.time_ms, disposition)

    def _dead_letter(self, dead: DeadLetter, out: Out) -> None:
        record = dead.record
        out.row("dead_letters", dead.to_row())
        out.row("ledger", {  # shard stamped by `Out.row`
            "row_id": f"{record.source}/{record.partition}/{record.offset}",
            "source": record.source, "partition": record.partition, "offset": record.offset,
            "event_id": dead.event_id, "workflow_type": None, "instance_id": None,
            "disposition": "dead_lettered", "event_time": None, "arrived_at": record.arrived_ms,
        })
        route = self.rules.route(dead.event_type) if dead.event_type else None
        workflow = route.workflow_type if route else "unknown"
        out.fact(workflow, max(self.frontier, 0), "dead_letter")

    def _conflicting_duplicate(self, event: Event, key: str, out: Out) -> None:
        detail = "same event id as an earlier event but a different body"
        instance = self.instances.get(key)
        state = instance.state if instance is not None else None
        row_key = f"{event.event_id}/{event.source}/{event.partition}/{event.offset}"
        out.row("anomalies", anomaly_row(event.workflow_type, event.instance_id,
                                         "conflicting_duplicate", state, event,
                                         max(self.watermark, event.time_ms), detail, None,
                                         key=row_key))
        self._settle(event, key, ANOMALOUS, out)

    def _late(self, event: Event, key: str, out: Out) -> None:
        """Record a late event; emit a correction if it would have changed the verdict."""
        self._release(out)
        instance = self.instances.get(key)
        state = instance.state if instance is not None else None
        lag = self.watermark - event.time_ms
        out.row("anomalies", anomaly_row(event.workflow_type, event.instance_id, "late_event",
                                         state, event, self.watermark,
                                         f"{lag} ms behind the watermark", None))
        self._settle(event, key, "late", out)
        judged = self._judged(key)
        if judged is not None:
            self._correct(key, event, judged, None, out, self.watermark, self.watermark)

    def _follow(self, key: str, at_ms: int, out: Out, *, timer: bool = False) -> None:
        """Re-judge the followed late events of `key` as of event time `at_ms`: after a later
        event or a deadline of the instance at that time, or at a re-judge timer due then (one
        still waited for). As of the trigger's own time, not the watermark, so the rows do not
        depend on how records are batched or shared out. Forgotten keys have nothing left to
        judge by."""
        followed = self.followed.pop(key, [])
        judged = self._judged(key)
        if judged is None:
            return
        for entry in followed:
            if timer and entry.due_ms != at_ms:  # a timer it no longer waits for
                self.followed.setdefault(key, []).append(entry)
            else:
                self._correct(key, entry.late, judged, entry, out, at_ms + 1, at_ms)

    def _correct(self, key: str, late: Event, judged: Judged, followed: Followed | None,
                 out: Out, until_ms: int, detected_at: int) -> None:
        """Write a correction when a run with `late` in time has, before event time `until_ms`,
        another verdict than this one, and a further row each time what it states changes
        (either run moved on, by an event or a deadline); follow it until both runs have
        ended."""
        history, version, before, ended, trace_id = judged
        what_if, in_time_commands, next_due = self._recompute(history, version, late, until_ms)
        after = (what_if.outcome, what_if.state) if what_if is not None else (None, "")
        if followed is None and after == before:
            return
        _, sent, _ = self._recompute(history, version, late, until_ms, in_time=False)
        stated = (before, after, tuple(sorted(in_time_commands - sent)),
                  tuple(sorted(sent - in_time_commands)))
        revision = followed.revision if followed is not None else 0
        if followed is None or stated != followed.stated:
            revision += 1
            row_id = f"{late.workflow_type}/{late.instance_id}/correction/{late.event_id}"
            out.row("corrections", {
                "row_id": row_id if revision == 1 else f"{row_id}/{revision}",
                "workflow_type": late.workflow_type, "instance_id": late.instance_id,
                "corrects_row_id": f"{key}/outcome" if ended else None,
                "original_outcome": before[0], "corrected_outcome": after[0],
                "corrected_state": after[1] or None, "late_event_id": late.event_id,
                "late_event_type": late.type, "late_event_time": late.time_ms,
                "detected_at": detected_at, "trace_id": trace_id,
                "would_have_sent": list(stated[2]), "would_not_have_sent": list(stated[3]),
            })
        if ended and (what_if is None or what_if.ended):
            return
        self.followed.setdefault(key, []).append(Followed(late, stated, revision, next_due))
        if next_due is not None and (followed is None or followed.due_ms != next_due):
            self.scheduler.schedule(next_due, REJUDGE, key)

    def _judged(self, key: str) -> Judged | None:
        """What judging a late event of `key` needs: applied history, definition version,
        (outcome, state), whether it ended, trace id; from the instance, or from its tombstone
        until that is forgotten; None when neither is kept (never started, or forgotten)."""
        instance = self.instances.get(key)
        if instance is not None:
            return (self.history[key], instance.definition.version,
                    (instance.outcome, instance.state), instance.ended, instance.trace_id)
        tombstone = self.tombstones.get(key)
        if tombstone is None or tombstone.history is None:
            return None
        return (tombstone.history, tombstone.version, (tombstone.outcome, tombstone.state), True,
                tombstone.trace_id)

    def _recompute(self, history: tuple[Any, ...], version: int, late: Event, until_ms: int, *,
                   in_time: bool = True) -> tuple[Instance | None, set[str], int | None]:
        """The instance as it would be had `late` arrived in time (`in_time=False`: the history
        alone, as this run has it) once everything before event time `until_ms` is released,
        the idempotency keys of the commands it sends by then, and when its next deadline is
        due: same engine, scratch shard, which never evicts (the verdict is wanted however long
        ago the instance ended)."""
        scratch = Shard(self.name, self.catalog, self.rules, self.config)
        scratch.evicts = False
        scratch.catalog = _pinned(self.catalog, late.workflow_type, version)
        for event in [*_history_events(history, late), *([late] if in_time else [])]:
            scratch.scheduler.buffer(event, False, _key(event))
        scratch.watermark = until_ms
        commands = CommandKeys(self.name)
        scratch._release(commands)
        return scratch.instances.get(late.instance_key), commands.keys, scratch.next_due()

    # -- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Versioned plain data (no pickled classes): survives code moves and upgrades.

        The shard's own tuples are shared, not copied (they are immutable), and instances are rows
        named once per kind (`state.snapshot`), not dicts: a million open instances unpickle and
        restore in seconds."""
        return {
            "version": SNAPSHOT_VERSION,
            "name": self.name,
            "watermark": self.watermark, "frontier": self.frontier,
            "arrivals": self.scheduler.arrivals, "fact_clock": self.fact_clock,
            "queue": self.scheduler.to_data(),
            "layouts": layouts(),
            "instances": {k: encode_instance(i) for k, i in self.instances.items()},
            "history": dict(self.history),
            "finished": sorted(self._finished),
            "tombstones": {k: _tombstone_row(t) for k, t in self.tombstones.items()},
            "seen": {k: v if isinstance(v, tuple) else dict(v) for k, v in self.seen.items()},
            "early_counts": dict(self.early_counts),
            "followed": {k: [f.to_data() for f in v] for k, v in self.followed.items()},
        }

    @classmethod
    def restore(cls, data: dict[str, Any], catalog: Catalog, rules: DecodeRules,
                config: ShardConfig) -> Shard:
        """Rebuild a shard from `snapshot()` output, migrating older snapshot versions."""
        data = migrate_snapshot(data)
        shard = cls(data["name"], catalog, rules, config)
        shard.watermark, shard.frontier = data["watermark"], data["frontier"]
        shard.fact_clock = data["fact_clock"]
        shard.scheduler = Scheduler.from_data(data["queue"], data["arrivals"])
        # Every live key has seen an event; interning it here makes the unpickled key (one object
        # in every structure, as pickle keeps shared strings shared) the one new events look up.
        shard.seen = {sys.intern(k): v if isinstance(v, tuple) else dict(v)
                      for k, v in data["seen"].items()}
        read = readers(data["layouts"])
        for name, row in data["instances"].items():
            key = sys.intern(name)
            instance = read[row[0]](key, row, catalog.get(row[1], row[2]))
            shard.instances[key] = instance
            if not instance.ended:
                wf = instance.workflow_type
                shard.open_by_workflow[wf] = shard.open_by_workflow.get(wf, 0) + 1
        shard.history = dict(data["history"])
        shard._finished.update(data["finished"])
        for key in sorted(shard._finished - shard.scheduler.evictions()):
            instance = shard.instances[key]
            assert instance.ended_ms is not None
            evict_at = instance.ended_ms + parse_duration_ms(instance.definition.retention)
            shard.scheduler.schedule(evict_at, EVICT, key)
        shard.tombstones = {k: Tombstone(**dict(zip(_TOMBSTONE_FIELDS, t, strict=False)))
                            for k, t in data["tombstones"].items()}
        shard.early_counts = dict(data["early_counts"])
        shard.followed = {sys.intern(k): [Followed.from_data(row) for row in rows]
                          for k, rows in data.get("followed", {}).items()}  # older: none
        return shard


def migrate_snapshot(data: dict[str, Any]) -> dict[str, Any]:
    """The migration hook: upgrade older snapshot versions to `SNAPSHOT_VERSION` step by step."""
    if data.get("version") == 1:
        data = _v1_to_v2(data)
    if data.get("version") == 2:
        data = _v2_to_v3(data)
    if data.get("version") == 3:
        data = {**data, "version": 4, "layouts": _V3_ROW_FIELDS}  # v4 names its row fields
    version = data.get("version")
    if version != SNAPSHOT_VERSION:
        msg = (f"shard snapshot version {version!r} is not supported by this code (expects "
               f"{SNAPSHOT_VERSION}); add a migration step in state.shard.migrate_snapshot")
        raise SnapshotError(msg)
    return data


_V1_TOMBSTONE_RETENTION_MS = 86_400_000  # v1 kept no expiry; it used the default retention


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v2 keeps only what a what-if recomputation reads of an applied event (id, type, time,
    sequence): the instance is implied by the key, and coordinates are never re-emitted.
    Tombstones carry their own expiry, so an older timer cannot forget a newer tombstone, and
    evictions are due `retention` after the end in event time (v1 counted from when the end was
    processed), so v1's eviction timers are dropped and scheduled anew on restore."""
    history = {k: [[e[0], e[1], e[2], e[10]] for e in events]
               for k, events in data["history"].items()}
    tombstones = {k: [o, e, e + _V1_TOMBSTONE_RETENTION_MS]
                  for k, (o, e) in data["tombstones"].items()}
    queue = [entry for entry in data["queue"] if entry[1] != EVICT]  # rescheduled by `restore`
    return {**data, "version": 2, "history": history, "tombstones": tombstones, "queue": queue}


# The fields of a v3 instance row after (kind, workflow type, version), by their v2 names: the
# v3 layout, fixed forever (v4 snapshots name theirs).
_V3_ROW_FIELDS = {
    "machine": ("started_ms", "state", "entered_ms", "visit", "trace_id", "first_seen", "completed",
                "branches_done", "pending_acks", "outcome", "ended_ms", "timed_out_step",
                "step_durations", "path", "counts"),
    "case": ("started_ms", "last_ms", "visit", "trace_id", "activities", "end_seen", "rule_from",
             "rule_last_to", "rule_done", "outcome", "ended_ms", "counts"),
}


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    """v3 holds the shard's in-memory forms, so restoring builds little: instances are rows, not
    dicts; arrays are tuples; history (without event ids, which a what-if never reads) and a key's
    first few event ids are flat tuples; counts are tuples in `COUNT_KEYS` order; timer queue
    entries lost their constant sequence slot."""
    queue = [(*e[:4], tuple(e[4]), e[5]) if e[1] == EVENT
             else (e[0], e[1], e[3], e[4], None if e[5] is None else deadline_ref(*e[5]))
             for e in data["queue"]]
    instances = {k: (s["kind"], s["workflow_type"], s["version"],
                     *(_v2_value(f, s[f]) for f in _V3_ROW_FIELDS[s["kind"]]))
                 for k, s in data["instances"].items()}
    history = {k: tuple(chain.from_iterable(e[1:] for e in v)) for k, v in data["history"].items()}
    seen = {k: seen_from_dict(v) for k, v in data["seen"].items()}
    early_counts = {k: _v2_value("counts", v) for k, v in data["early_counts"].items()}
    return {**data, "version": 3, "queue": queue, "instances": instances, "history": history,
            "seen": seen, "early_counts": early_counts}


def _v2_value(field: str, value: Any) -> Any:
    if field == "counts":
        return tuple(value[k] for k in COUNT_KEYS)
    if field == "first_seen":
        return tuple(value.items())
    if field == "pending_acks":
        return dict(value) or None
    if field in ("rule_from", "rule_last_to"):
        return {int(k): v for k, v in value.items()}
    if isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


def _pinned(catalog: Catalog, workflow_type: str, version: int) -> Catalog:
    """A catalog whose newest version of one workflow is `version` (for what-if recomputation)."""
    pinned = Catalog(definitions=dict(catalog.definitions), files=catalog.files)
    pinned.definitions[workflow_type] = {version: catalog.get(workflow_type, version)}
    return pinned


def _key(event: Event) -> str:
    """The event's instance key, interned: one string however many structures hold it."""
    return sys.intern(event.instance_key)


def _history_events(history: tuple[Any, ...], late: Event) -> list[Event]:
    """The applied events of `late`'s instance as a what-if recomputation needs them."""
    return [_what_if_event(late.workflow_type, late.instance_id, "",
                           *history[i:i + HISTORY_WIDTH])
            for i in range(0, len(history), HISTORY_WIDTH)]


def _what_if_event(workflow_type: str, instance_id: str, event_id: str, event_type: str,
                   time_ms: int, sequence: int | None) -> Event:
    """An event of an instance as a what-if reads it: type, time and sequence (other ids and the
    coordinates only go into rows the what-if discards)."""
    return Event(event_id=event_id, type=event_type, time_ms=time_ms, workflow_type=workflow_type,
                 instance_id=instance_id, source="", partition=-1, offset=-1, arrived_ms=0,
                 body_crc=0, sequence=sequence)

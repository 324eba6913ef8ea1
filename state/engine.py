"""The engine of a shard: the release loop and what it does to each due item (start or apply an
event, fire a deadline, evict or forget a key), arming the deadlines instances ask for.

The engine knows nothing of corrections. When a key that someone watches (`watched`: the late
events followed by `state.corrections`) changes at event time t (an event applied, a deadline
fired, an event after the end recorded on its tombstone), or a re-judge timer of it falls due, it
calls `on_change(key, t, out, timer)`; when a key is forgotten, `on_forget(key)`. A what-if is
just an engine with nobody watching that never evicts (the verdict is wanted however long ago the
instance ended).
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass

from schemas.decode import DecodeRules
from schemas.event import DeadLetter, Event
from state.cases import CaseInstance
from state.catalog import Catalog
from state.definition import StateMachine
from state.durations import parse_duration_ms
from state.key_table import Instance, KeyTable
from state.machine import ANOMALOUS, APPLIED, COUNT_KEYS, MachineInstance, anomaly_row, counted
from state.output import Out
from state.scheduler import DEADLINE, EVICT, FORGET, Buffered, Scheduler

Changed = Callable[[str, int, Out, bool], None]
"""`(key, at_ms, out, timer)`: a watched key changed at `at_ms` (`timer`: its re-judge fell due)."""
_OUT_OF_ORDER = COUNT_KEYS.index("out_of_order")


@dataclass(frozen=True)
class ShardConfig:
    """Event-time policy of every shard."""

    allowed_lateness_ms: int = 5_000
    tombstone_retention_ms: int = 86_400_000


def _unwatched(key: str, at_ms: int, out: Out, timer: bool) -> None:
    """Nobody follows any key (a what-if engine)."""


def _kept(key: str) -> None:
    """Nothing else to drop when a key is forgotten (a what-if engine)."""


class Engine:
    """Applies a shard's due events and timers to its key table; see the module docstring."""

    def __init__(self, catalog: Catalog, rules: DecodeRules, config: ShardConfig, keys: KeyTable,
                 scheduler: Scheduler, *, evicts: bool = True,
                 watched: Container[str] = frozenset(), on_change: Changed = _unwatched,
                 on_forget: Callable[[str], None] = _kept) -> None:
        self.catalog, self.rules, self.config = catalog, rules, config
        self.keys, self.scheduler, self.evicts = keys, scheduler, evicts
        self.watched, self.on_change, self.on_forget = watched, on_change, on_forget

    def release(self, watermark: int, out: Out) -> None:
        """Apply everything before `watermark`, in the scheduler's order."""
        pop_due, instances, watched = self.scheduler.pop_due, self.keys.instances, self.watched
        while (entry := pop_due(watermark)) is not None:
            if isinstance(entry, Buffered):
                self.apply(entry.event, entry.key, entry.out_of_order, out)
            elif entry.kind == DEADLINE:
                instance = instances.get(entry.key)
                if instance is not None:
                    assert entry.ref is not None
                    instance.fire(entry.ref, entry.due_ms, out)
                    self.arm(entry.key, instance, out)
                    if entry.key in watched:
                        self.on_change(entry.key, entry.due_ms, out, False)
            elif entry.kind == EVICT:
                self.evict(entry.key, entry.due_ms)
            elif entry.kind == FORGET:
                if self.keys.forget(entry.key, entry.due_ms):
                    self.on_forget(entry.key)
            else:  # REJUDGE
                self.on_change(entry.key, entry.due_ms, out, True)

    def apply(self, event: Event, key: str, out_of_order: bool, out: Out) -> None:
        """Apply a due event to its instance, starting one if it is a start event."""
        keys = self.keys
        instance = keys.instances.get(key)
        if instance is None:
            tombstone = keys.tombstones.get(key)
            if tombstone is not None:
                out.row("anomalies", anomaly_row(event.workflow_type, event.instance_id,
                                                 "after_terminal", None, event, event.time_ms,
                                                 "instance already ended and was evicted", None))
                keys.settle(event, key, ANOMALOUS, out)
                if tombstone.history is not None:  # a what-if replays it, as a live one would
                    tombstone.history += (event.type, event.time_ms, event.sequence)
                    if key in self.watched:
                        self.on_change(key, event.time_ms, out, False)
                return
            instance = self.start(event, key, out)
            if instance is None:
                self._never_started(event, key, out)
                return
            disposition = (instance.apply(event, out) if isinstance(instance, CaseInstance)
                           else APPLIED)
        else:
            disposition = instance.apply(event, out)
        if out_of_order:
            instance.counts = counted(instance.counts, _OUT_OF_ORDER)
        keys.history[key] += (event.type, event.time_ms, event.sequence)
        keys.settle(event, key, disposition, out, instance)
        self.arm(key, instance, out)
        if key in self.watched:
            self.on_change(key, event.time_ms, out, False)

    def start(self, event: Event, key: str, out: Out) -> Instance | None:
        """A new instance of the newest definition, if `event` may start one."""
        definition = self.catalog.latest(event.workflow_type)
        instance: Instance
        if isinstance(definition, StateMachine):
            if event.type not in definition.start:
                return None
            instance = MachineInstance(definition, key, event.time_ms)
        else:
            instance = CaseInstance(definition, key, event.time_ms)
        self.keys.begin(key, event.workflow_type, instance)
        instance.start(event, out)
        return instance

    def arm(self, key: str, instance: Instance, out: Out) -> None:
        """Queue the deadlines the instance armed; emit its outcome once when it ends, and
        schedule its eviction `retention` after the end."""
        for due, ref in instance.armed:
            self.scheduler.schedule(due, DEADLINE, key, ref)
        instance.armed = ()
        if instance.outcome is not None and self.keys.finish(key, instance.workflow_type):
            out.row("outcomes", instance.outcome_row())
            assert instance.ended_ms is not None
            retention = parse_duration_ms(instance.definition.retention)
            if self.evicts:
                self.scheduler.schedule(instance.ended_ms + retention, EVICT, key)

    def evict(self, key: str, at_ms: int) -> None:
        """Leave a tombstone for the key's instance; it is forgotten after its own retention."""
        forget_ms = at_ms + self.config.tombstone_retention_ms
        if self.keys.evict(key, at_ms, forget_ms):
            self.scheduler.schedule(forget_ms, FORGET, key)

    def dead_letter(self, dead: DeadLetter, frontier: int, out: Out) -> None:
        """The dead letter's row and its ledger row; its metric fact at the frontier."""
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
        out.fact(workflow, max(frontier, 0), "dead_letter")

    def conflicting_duplicate(self, event: Event, key: str, watermark: int, out: Out) -> None:
        """Same event id as an earlier event of the key but other bytes: an anomaly."""
        detail = "same event id as an earlier event but a different body"
        instance = self.keys.instances.get(key)
        state = instance.state if instance is not None else None
        row_key = f"{event.event_id}/{event.source}/{event.partition}/{event.offset}"
        out.row("anomalies", anomaly_row(event.workflow_type, event.instance_id,
                                         "conflicting_duplicate", state, event,
                                         max(watermark, event.time_ms), detail, None,
                                         key=row_key))
        self.keys.settle(event, key, ANOMALOUS, out)

    def _never_started(self, event: Event, key: str, out: Out) -> None:
        """An event for a key with no instance that cannot start one: ignored when the workflow
        ignores its type, else an orphan; the key is forgotten after the tombstone retention."""
        if event.type in getattr(self.catalog.latest(event.workflow_type), "ignore", ()):
            self.keys.settle(event, key, "ignored", out)
        else:
            detail = f"{event.type} for an instance that never started"
            out.row("anomalies", anomaly_row(event.workflow_type, event.instance_id,
                                             "orphan_event", None, event, event.time_ms,
                                             detail, None))
            self.keys.settle(event, key, ANOMALOUS, out)
        self.scheduler.schedule(event.time_ms + self.config.tombstone_retention_ms, FORGET, key)

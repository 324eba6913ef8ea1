"""The per-key state of a shard, and its only owner: instances, their applied history, the
tombstones of evicted ones, the event ids each key has seen, the counts of events settled before
their instance began, and the open-instance gauge.

A shard may hold millions of open instances, so these stay flat maps keyed by the interned
instance key (one string however many maps hold it), never an object per key: an instance's
applied history is one flat tuple (`HISTORY_WIDTH` items per event: what a what-if reads), and a
key's first few event ids are a flat tuple too (`state.dedupe`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.event import Event
from state.cases import CaseInstance
from state.dedupe import Seen, seen_crc, with_seen
from state.machine import COUNT_KEYS, NO_COUNTS, Counts, MachineInstance, counted
from state.output import Out

Instance = MachineInstance | CaseInstance
HISTORY_WIDTH = 3  # per applied event in `KeyTable.history`: type, time, sequence
NEW, DUPLICATE, CONFLICTING = 0, 1, 2  # what `KeyTable.remember` found
_EVENTS = COUNT_KEYS.index("events")
_COUNTER = {disposition: COUNT_KEYS.index(name) for disposition, name in (
    ("applied", "applied"), ("ignored", "ignored"), ("anomalous", "anomalies"),
    ("duplicate", "duplicates"), ("late", "late"))}


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


class KeyTable:
    """The flat per-key maps of one shard and the open instances per workflow type."""

    def __init__(self) -> None:
        self.instances: dict[str, Instance] = {}
        self.history: dict[str, tuple[Any, ...]] = {}  # flat, `HISTORY_WIDTH` items per event
        self.tombstones: dict[str, Tombstone] = {}
        self.seen: dict[str, Seen] = {}
        self.finished: set[str] = set()  # ended, outcome written, eviction scheduled
        self.early_counts: dict[str, Counts] = {}  # events settled before their instance began
        self.open_by_workflow: dict[str, int] = {}
        self.open_before: dict[str, int] = {}  # changed since `gauge_facts`: the count before

    def remember(self, key: str, event: Event) -> int:
        """Record that `key` has seen `event`: `NEW`, or an exact `DUPLICATE` of an id it has
        seen, or a `CONFLICTING` one (same id, other bytes)."""
        seen = self.seen.get(key)
        if seen is None:  # a key's first event (`with_seen` of nothing, without the calls)
            self.seen[key] = (event.event_id, event.body_crc)
            return NEW
        crc = seen_crc(seen, event.event_id)
        if crc is None:
            self.seen[key] = with_seen(seen, event.event_id, event.body_crc)
            return NEW
        return DUPLICATE if crc == event.body_crc else CONFLICTING

    def begin(self, key: str, workflow_type: str, instance: Instance) -> None:
        """A new instance: it takes over the counts of events settled before it began."""
        early = self.early_counts.pop(key, None)
        if early is not None:
            instance.counts = early
        self.instances[key] = instance
        self.history[key] = ()
        self._count_open(workflow_type, 1)

    def finish(self, key: str, workflow_type: str) -> bool:
        """Mark `key` ended; False when it already was (its outcome is written once)."""
        if key in self.finished:
            return False
        self.finished.add(key)
        self._count_open(workflow_type, -1)
        return True

    def evict(self, key: str, at_ms: int, forget_ms: int) -> bool:
        """Replace the instance of `key` by a tombstone kept until `forget_ms`; False when there
        is no instance (already evicted)."""
        instance = self.instances.pop(key, None)
        if instance is None:
            return False
        history = self.history.pop(key, None)
        self.finished.discard(key)
        self.tombstones[key] = Tombstone(instance.outcome, instance.ended_ms or at_ms, forget_ms,
                                         instance.state, instance.definition.version, history,
                                         instance.trace_id)
        return True

    def forget(self, key: str, due_ms: int) -> bool:
        """Drop what is kept of a key, unless an instance or a younger tombstone still needs it;
        True when it was dropped."""
        tombstone = self.tombstones.get(key)
        if key in self.instances or (tombstone is not None and tombstone.forget_ms > due_ms):
            return False
        self.tombstones.pop(key, None)
        self.seen.pop(key, None)
        self.early_counts.pop(key, None)
        return True

    def settle(self, event: Event, key: str, disposition: str, out: Out,
               instance: Instance | None = None) -> None:
        """Write the ledger row of an event and count it on its instance (or, before the instance
        begins, on the key)."""
        instance = instance or self.instances.get(key)
        if instance is not None:
            instance.counts = counted(instance.counts, _EVENTS, _COUNTER[disposition])
        else:
            self.early_counts[key] = counted(self.early_counts.get(key, NO_COUNTS), _EVENTS,
                                             _COUNTER[disposition])
        out.values("ledger", (  # one per record: a tuple in `schemas.tables.LEDGER` order
            f"{event.source}/{event.partition}/{event.offset}", event.source, event.partition,
            event.offset, event.event_id, event.workflow_type, event.instance_id, disposition,
            event.time_ms, event.arrived_ms, out.shard,
        ))
        out.fact(event.workflow_type, event.time_ms, "event_in")
        if disposition in ("duplicate", "late", "anomalous"):
            out.fact(event.workflow_type, event.time_ms, disposition)

    @property
    def open_instances(self) -> int:
        return sum(self.open_by_workflow.values())

    def gauge_facts(self, out: Out) -> None:
        """Open instances per workflow that changed since the last call, as metric facts: only
        changes, so the facts depend on the records alone (not on batching or on a restore)."""
        before = self.open_before
        if not before:
            return
        for workflow_type, count in self.open_by_workflow.items():
            if before.get(workflow_type, count) != count:
                out.fact(workflow_type, out.fact_clock, "open", float(count))
        before.clear()

    def restored(self, key: str, instance: Instance) -> None:
        """Hold an instance read from a snapshot (no gauge change: it was counted before)."""
        self.instances[key] = instance
        if not instance.ended:
            wf = instance.workflow_type
            self.open_by_workflow[wf] = self.open_by_workflow.get(wf, 0) + 1

    def _count_open(self, workflow_type: str, change: int) -> None:
        count = self.open_by_workflow.get(workflow_type, 0)
        self.open_before.setdefault(workflow_type, count)
        self.open_by_workflow[workflow_type] = count + change

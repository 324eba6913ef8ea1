"""Late events judged: would the instance have another verdict had the late event arrived in time?

An event behind the watermark is recorded `late` and never applied. Judging it replays the
instance's applied history with the late event in its place on a what-if engine (`state.engine`,
which never evicts and which nobody watches) and compares the verdicts. When they differ, a
`corrections` row says so, with the commands the in-time run would have sent and would not have.
While either run has not ended, the late event is `Followed`: each later change of the instance
(the live engine reports it through its `on_change` callback) and each deadline of the in-time run
(a re-judge timer) judges it again, and every change of what it states is one more row
(`.../correction/<event id>/2`, ...), as of the trigger's event time.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from schemas.decode import DecodeRules
from schemas.event import Event
from state.catalog import Catalog
from state.engine import Engine, ShardConfig
from state.key_table import HISTORY_WIDTH, Instance, KeyTable
from state.machine import anomaly_row
from state.output import CommandKeys, Out
from state.scheduler import REJUDGE, Scheduler

Verdict = tuple[str | None, str]  # (outcome, state)


@dataclass(frozen=True, slots=True)
class Judged:
    """What judging a late event of a key needs, from its instance or its tombstone."""

    history: tuple[Any, ...]  # flat, `HISTORY_WIDTH` items per applied event
    version: int  # definition version
    verdict: Verdict
    ended: bool
    trace_id: str | None


@dataclass(frozen=True, slots=True)
class Stated:
    """What a correction row states: this run's verdict, the in-time run's, and the idempotency
    keys of the commands the in-time run would have sent and would not have sent."""

    before: Verdict
    after: Verdict
    would_have_sent: tuple[str, ...]
    would_not_have_sent: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Followed:
    """A late event with a correction while this run or the in-time one had not ended: what its
    latest correction row stated, that row's revision, and when a re-judge is scheduled (None:
    none)."""

    late: Event
    stated: Stated
    revision: int
    due_ms: int | None = None


class Corrections:
    """The late events of one shard's keys, judged and followed; see the module docstring."""

    def __init__(self, name: str, catalog: Catalog, rules: DecodeRules, config: ShardConfig,
                 keys: KeyTable, scheduler: Scheduler) -> None:
        self.name, self.catalog, self.rules, self.config = name, catalog, rules, config
        self.keys, self.scheduler = keys, scheduler
        self.followed: dict[str, list[Followed]] = {}  # updated in place: the engine watches it

    def late(self, event: Event, key: str, watermark: int, out: Out) -> None:
        """Record a late event; emit a correction if it would have changed the verdict."""
        instance = self.keys.instances.get(key)
        state = instance.state if instance is not None else None
        out.row("anomalies", anomaly_row(event.workflow_type, event.instance_id, "late_event",
                                         state, event, watermark,
                                         f"{watermark - event.time_ms} ms behind the watermark",
                                         None))
        self.keys.settle(event, key, "late", out)
        judged = self.judged(key)
        if judged is not None:
            self.correct(key, event, judged, None, out, watermark, watermark)

    def follow(self, key: str, at_ms: int, out: Out, timer: bool) -> None:
        """Re-judge the followed late events of `key` as of event time `at_ms`: after a later
        event or a deadline of the instance at that time, or at a re-judge timer due then (one
        still waited for). As of the trigger's own time, not the watermark, so the rows do not
        depend on how records are batched or shared out. Forgotten keys have nothing left to
        judge by."""
        followed = self.followed.pop(key, [])
        judged = self.judged(key)
        if judged is None:
            return
        for entry in followed:
            if timer and entry.due_ms != at_ms:  # a timer it no longer waits for
                self.followed.setdefault(key, []).append(entry)
            else:
                self.correct(key, entry.late, judged, entry, out, at_ms + 1, at_ms)

    def forget(self, key: str) -> None:
        self.followed.pop(key, None)

    def correct(self, key: str, late: Event, judged: Judged, followed: Followed | None,
                out: Out, until_ms: int, detected_at: int) -> None:
        """Write a correction when a run with `late` in time has, before event time `until_ms`,
        another verdict than this one, and a further row each time what it states changes
        (either run moved on, by an event or a deadline); follow it until both runs have
        ended."""
        history, version, before = judged.history, judged.version, judged.verdict
        what_if, in_time_commands, next_due = self.recompute(history, version, late, until_ms)
        after = (what_if.outcome, what_if.state) if what_if is not None else (None, "")
        if followed is None and after == before:
            return
        _, sent, _ = self.recompute(history, version, late, until_ms, in_time=False)
        stated = Stated(before, after, tuple(sorted(in_time_commands - sent)),
                        tuple(sorted(sent - in_time_commands)))
        revision = followed.revision if followed is not None else 0
        if followed is None or stated != followed.stated:
            revision += 1
            row_id = f"{late.workflow_type}/{late.instance_id}/correction/{late.event_id}"
            out.row("corrections", {
                "row_id": row_id if revision == 1 else f"{row_id}/{revision}",
                "workflow_type": late.workflow_type, "instance_id": late.instance_id,
                "corrects_row_id": f"{key}/outcome" if judged.ended else None,
                "original_outcome": before[0], "corrected_outcome": after[0],
                "corrected_state": after[1] or None, "late_event_id": late.event_id,
                "late_event_type": late.type, "late_event_time": late.time_ms,
                "detected_at": detected_at, "trace_id": judged.trace_id,
                "would_have_sent": list(stated.would_have_sent),
                "would_not_have_sent": list(stated.would_not_have_sent),
            })
        if judged.ended and (what_if is None or what_if.ended):
            return
        self.followed.setdefault(key, []).append(Followed(late, stated, revision, next_due))
        if next_due is not None and (followed is None or followed.due_ms != next_due):
            self.scheduler.schedule(next_due, REJUDGE, key)

    def judged(self, key: str) -> Judged | None:
        """What judging a late event of `key` needs, from the instance, or from its tombstone
        until that is forgotten; None when neither is kept (never started, or forgotten)."""
        instance = self.keys.instances.get(key)
        if instance is not None:
            return Judged(self.keys.history[key], instance.definition.version,
                          (instance.outcome, instance.state), instance.ended, instance.trace_id)
        tombstone = self.keys.tombstones.get(key)
        if tombstone is None or tombstone.history is None:
            return None
        return Judged(tombstone.history, tombstone.version, (tombstone.outcome, tombstone.state),
                      True, tombstone.trace_id)

    def recompute(self, history: tuple[Any, ...], version: int, late: Event, until_ms: int, *,
                  in_time: bool = True) -> tuple[Instance | None, set[str], int | None]:
        """The instance as it would be had `late` arrived in time (`in_time=False`: the history
        alone, as this run has it) once everything before event time `until_ms` is released,
        the idempotency keys of the commands it sends by then, and when its next deadline is
        due: a what-if engine on the definition version the instance runs."""
        keys, scheduler = KeyTable(), Scheduler()
        engine = Engine(pinned(self.catalog, late.workflow_type, version), self.rules,
                        self.config, keys, scheduler, evicts=False)
        for event in [*history_events(history, late), *([late] if in_time else [])]:
            scheduler.buffer(event, False, sys.intern(event.instance_key))
        commands = CommandKeys(self.name)
        engine.release(until_ms, commands)
        return keys.instances.get(late.instance_key), commands.keys, scheduler.next_due()


def pinned(catalog: Catalog, workflow_type: str, version: int) -> Catalog:
    """A catalog whose newest version of one workflow is `version` (for what-if recomputation)."""
    pinned = Catalog(definitions=dict(catalog.definitions), files=catalog.files)
    pinned.definitions[workflow_type] = {version: catalog.get(workflow_type, version)}
    return pinned


def history_events(history: tuple[Any, ...], late: Event) -> list[Event]:
    """The applied events of `late`'s instance as a what-if recomputation needs them."""
    return [what_if_event(late.workflow_type, late.instance_id, "",
                          *history[i:i + HISTORY_WIDTH])
            for i in range(0, len(history), HISTORY_WIDTH)]


def what_if_event(workflow_type: str, instance_id: str, event_id: str, event_type: str,
                  time_ms: int, sequence: int | None) -> Event:
    """An event of an instance as a what-if reads it: type, time and sequence (other ids and the
    coordinates only go into rows the what-if discards)."""
    return Event(event_id=event_id, type=event_type, time_ms=time_ms, workflow_type=workflow_type,
                 instance_id=instance_id, source="", partition=-1, offset=-1, arrived_ms=0,
                 body_crc=0, sequence=sequence)

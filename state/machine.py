"""One workflow instance of a state-machine definition: apply an event, fire a deadline.

Pure and deterministic: no clock, no I/O. The shard (`state.shard`) decides *when* (event-time
order, watermark); this module decides *what* (transitions, commands, compensations, outcome).
Deadlines the instance wants are handed to the shard through `armed`; a deadline reference carries
the state visit it was armed in, so a deadline of a state already left is ignored when it pops.

A shard holds up to millions of open instances, so an instance keeps its records in tuples, and
those that repeat across instances (path, input counts, completed steps) are shared: instances of
one definition go through the same few of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from schemas.event import Event
from state.definition import CaseTracking, StateMachine
from state.durations import parse_duration_ms
from state.output import Out

DeadlineRef = tuple[int, str, int]  # (visit, "state" | "compensation", index)
COMPENSATION_TIMEOUT = "compensation timeout"  # the name of the timer `compensation_timeout` sets

APPLIED, IGNORED, ANOMALOUS = "applied", "ignored", "anomalous"
COUNT_KEYS = ("events", "applied", "duplicates", "late", "out_of_order", "ignored", "anomalies")
Counts = tuple[int, ...]  # input counts of an instance, in `COUNT_KEYS` order
NO_COUNTS: Counts = (0,) * len(COUNT_KEYS)


@lru_cache(maxsize=4096)
def counted(counts: Counts, *indexes: int) -> Counts:
    """`counts` plus one at each index, as a shared tuple: most instances have the same few."""
    return tuple(n + indexes.count(i) for i, n in enumerate(counts))


@lru_cache(maxsize=4096)
def extended(items: tuple[Any, ...], item: Any) -> tuple[Any, ...]:
    """`items + (item,)` as a shared tuple (bounded cache: a rare long path is just not shared)."""
    return (*items, item)


@lru_cache(maxsize=4096)
def deadline_ref(visit: int, kind: str, index: int) -> DeadlineRef:
    """The one shared tuple for a reference: open instances arm the same few again and again."""
    return (visit, kind, index)


class InstanceBase:
    """What both kinds of instance (`MachineInstance`, `state.cases.CaseInstance`) derive alike
    from their fields: the id and type from `key`, and the common part of the `outcomes` row."""

    __slots__ = ()  # the dataclasses below keep their fields in slots
    definition: StateMachine | CaseTracking
    key: str
    started_ms: int
    trace_id: str | None
    outcome: str | None
    ended_ms: int | None
    counts: Counts

    @property
    def workflow_type(self) -> str:
        return self.definition.workflow

    @property
    def instance_id(self) -> str:
        return self.key[len(self.definition.workflow) + 1:]

    @property
    def ended(self) -> bool:
        return self.outcome is not None

    def finished_row(self, final_state: str | None, step_durations: list[dict[str, Any]],
                     timed_out_step: str | None, variant: tuple[str, ...] | list[str],
                     ) -> dict[str, Any]:
        """The one `outcomes` row of a finished instance, with its input counts so far."""
        assert self.outcome is not None and self.ended_ms is not None
        return {
            "row_id": f"{self.key}/outcome",
            "workflow_type": self.workflow_type,
            "definition_version": self.definition.version,
            "instance_id": self.instance_id,
            "outcome": self.outcome,
            "final_state": final_state,
            "started_at": self.started_ms,
            "ended_at": self.ended_ms,
            "duration_ms": self.ended_ms - self.started_ms,
            "step_durations": step_durations,
            "timed_out_step": timed_out_step,
            **dict(zip(COUNT_KEYS, self.counts, strict=True)),
            "variant": " > ".join(variant),
            "trace_id": self.trace_id,
            "business_duration_ms": self.definition.business_ms(
                self.definition.calendar, self.started_ms, self.ended_ms),
        }


@dataclass(slots=True)
class MachineInstance(InstanceBase):
    """Everything one running (or just finished) instance remembers; plain data."""

    definition: StateMachine
    key: str  # "<workflow type>/<instance id>", as the shard knows it (the id is not kept twice)
    started_ms: int
    state: str = ""
    entered_ms: int = 0
    visit: int = 0  # states entered so far: numbers the transitions, tells stale deadlines
    trace_id: str | None = None
    first_seen: tuple[tuple[str, int], ...] = ()  # (type, time) of the types a deadline counts from
    completed: tuple[tuple[str, str, str], ...] = ()  # (step, command, ack)
    branches_done: tuple[str, ...] = ()
    pending_acks: dict[str, str] | None = None  # ack type -> command, once compensating
    outcome: str | None = None  # set when the instance ends
    ended_ms: int | None = None
    timed_out_step: str | None = None
    step_durations: tuple[tuple[str, int], ...] = ()
    path: tuple[str, ...] = ()
    counts: Counts = NO_COUNTS
    armed: tuple[tuple[int, DeadlineRef], ...] = ()  # taken (and emptied) by the shard

    @property
    def compensating(self) -> bool:
        return self.pending_acks is not None and self.outcome is None

    def start(self, event: Event, out: Out) -> None:
        """Enter the initial state on the start event."""
        self.trace_id = event.trace_id
        self._note_first(event)
        self._enter(self.definition.initial, event.time_ms, "event", event, out)
        out.fact(self.workflow_type, event.time_ms, "started")

    def apply(self, event: Event, out: Out) -> str:
        """Apply one in-order event; returns its disposition (applied, ignored or anomalous)."""
        self._note_first(event)
        self.trace_id = self.trace_id or event.trace_id
        if self.outcome is not None:
            return self._anomaly("after_terminal", event, out,
                                 f"instance already ended as {self.outcome}")
        if self.pending_acks is not None:  # compensating
            return self._on_ack(event, out)
        state = self.definition.states[self.state]
        target = state.on.get(event.type)
        if target is not None:
            self._leave_to(target, event.time_ms, "event", event, out)
            return APPLIED
        if state.parallel is not None:
            for name, branch in state.parallel.items():
                if event.type == branch.done and name not in self.branches_done:
                    self._branch_done(name, event, out)
                    return APPLIED
                if event.type == branch.failed:
                    assert state.on_failure is not None
                    self._leave_to(state.on_failure, event.time_ms, "event", event, out)
                    return APPLIED
        if event.type in self.definition.ignore:
            return IGNORED
        return self._anomaly("invalid_transition", event, out,
                             f"{event.type} is not allowed in state {self.state!r}")

    def fire(self, ref: DeadlineRef, due_ms: int, out: Out) -> None:
        """A deadline armed in visit `ref[0]` is due; stale ones (state since left) do nothing."""
        visit, kind, index = ref
        if visit != self.visit or self.ended:
            return
        if kind == "compensation":
            if self.compensating:
                self._finish("compensation_failed", due_ms, out)
            return
        deadline = self.definition.states[self.state].deadlines[index]
        if deadline.command:
            self._command(deadline.command, self.state, "deadline", due_ms, out, deadline.label)
        out.fact(self.workflow_type, due_ms, "deadline_fired")
        if deadline.goto:
            self.timed_out_step = self.state
            self._leave_to(deadline.goto, due_ms, "deadline", None, out)

    # -- internals -------------------------------------------------------------------------

    def _note_first(self, event: Event) -> None:
        """Keep the first time of an event type, only if a deadline counts from that type."""
        if event.type in self.definition.deadline_sources and self._first_seen(event.type) is None:
            self.first_seen += ((event.type, event.time_ms),)

    def _first_seen(self, event_type: str) -> int | None:
        return next((at_ms for seen, at_ms in self.first_seen if seen == event_type), None)

    def _branch_done(self, name: str, event: Event, out: Out) -> None:
        state = self.definition.states[self.state]
        assert state.parallel is not None and state.then is not None
        self.branches_done = extended(self.branches_done, name)
        self.step_durations += ((f"{self.state}.{name}", event.time_ms - self.entered_ms),)
        branch = state.parallel[name]
        if branch.compensation:
            undo = branch.compensation
            step = f"{self.state}.{name}"
            self.completed = extended(self.completed, (step, undo.command, undo.ack))
        if len(self.branches_done) == len(state.parallel):
            self._leave_to(state.then, event.time_ms, "event", event, out)

    def _leave_to(self, target: str, at_ms: int, trigger: str, event: Event | None,
                  out: Out) -> None:
        states = self.definition.states
        current, goal = states[self.state], states[target]
        duration = at_ms - self.entered_ms
        self.step_durations += ((self.state, duration),)
        out.fact(self.definition.workflow, at_ms, "step_latency", float(duration))
        forward = goal.outcome is None or goal.outcome == "completed"
        if forward and current.compensation:
            undo = current.compensation
            self.completed = extended(self.completed, (self.state, undo.command, undo.ack))
        self._enter(target, at_ms, trigger, event, out)

    def _enter(self, target: str, at_ms: int, trigger: str, event: Event | None, out: Out) -> None:
        previous, previous_entered = self.state, self.entered_ms
        definition = self.definition
        self.visit = visit = self.visit + 1
        state = definition.states[target]
        compensating = False
        if state.outcome is None:
            deadlines = self._arm(target, visit, at_ms)
        else:
            deadlines = []
            compensating = state.compensates and bool(self.completed)
            if compensating:
                due = at_ms + parse_duration_ms(definition.compensation_timeout)
                self.armed += ((due, deadline_ref(visit, "compensation", 0)),)
                deadlines.append({"name": COMPENSATION_TIMEOUT, "due_at": due})
        calendars = definition.state_calendars  # empty for a definition in wall time only
        out.row("transitions", {
            "row_id": f"{self.key}/t{visit}",
            "workflow_type": definition.workflow,
            "definition_version": definition.version,
            "instance_id": self.instance_id,
            "seq": visit,
            "from_state": previous or None,
            "to_state": target,
            "trigger": trigger,
            "event_type": event.type if event is not None else None,
            "event_id": event.event_id if event is not None else None,
            "at": at_ms,
            "state_duration_ms": at_ms - previous_entered if previous else None,
            "trace_id": self.trace_id,
            "deadlines": deadlines,
            # Working time spent in the state left, when its time counts in a calendar.
            "business_duration_ms": definition.business_ms(
                calendars[previous], previous_entered, at_ms) if previous in calendars else None,
        })
        self.state, self.entered_ms = target, at_ms
        self.path = extended(self.path, target)
        self.branches_done = ()
        if state.outcome is not None:  # terminal
            if compensating:
                self._compensate(at_ms, out)
            else:
                self._finish(state.outcome, at_ms, out)

    def _arm(self, target: str, visit: int, at_ms: int) -> list[dict[str, Any]]:
        """Arm each deadline of a state just entered: due times are computed here, once
        (business time by the deadline's calendar), and kept absolute. Returns the names and due
        times for the transition's row."""
        deadlines: list[dict[str, Any]] = []
        arming = self.definition.arming[target]
        if not arming:
            return deadlines
        armed = []
        for index, from_event, wall_ms, name in arming:
            base = at_ms if from_event is None else self._first_seen(from_event)
            if base is not None:
                due = (base + wall_ms if wall_ms is not None
                       else self.definition.due_ms(target, index, base))
                armed.append((due, deadline_ref(visit, "state", index)))
                deadlines.append({"name": name, "due_at": due})
        self.armed += tuple(armed)
        return deadlines

    def _compensate(self, at_ms: int, out: Out) -> None:
        """Undo completed steps in reverse order and wait for every acknowledgement (the timeout
        was armed on entering the state)."""
        self.pending_acks = {}  # compensating from now on
        for step, command, ack in reversed(self.completed):
            self._command(command, step, "compensation", at_ms, out)
            self.pending_acks[ack] = command

    def _on_ack(self, event: Event, out: Out) -> str:
        assert self.pending_acks is not None
        if event.type in self.pending_acks:
            del self.pending_acks[event.type]
            if not self.pending_acks:
                self._finish("compensated", event.time_ms, out)
            return APPLIED
        if event.type in self.definition.ignore:
            return IGNORED
        return self._anomaly("invalid_transition", event, out,
                             f"{event.type} is not allowed while compensating")

    def _command(self, command: str, step: str, reason: str, due_ms: int, out: Out,
                 deadline: str | None = None) -> None:
        key = f"{self.key}/{step}/{command}/{due_ms}"
        out.row("commands", {
            "row_id": key,
            "idempotency_key": key,
            "workflow_type": self.workflow_type,
            "instance_id": self.instance_id,
            "command": command,
            "step": step,
            "reason": reason,
            "due_at": due_ms,
            "deadline": deadline,
            "trace_id": self.trace_id,
        })

    def _anomaly(self, kind: str, event: Event, out: Out, detail: str) -> str:
        out.row("anomalies", anomaly_row(self.workflow_type, self.instance_id, kind, self.state,
                                         event, event.time_ms, detail, self.trace_id))
        return ANOMALOUS

    def _finish(self, outcome: str, at_ms: int, out: Out) -> None:
        self.outcome, self.ended_ms = outcome, at_ms
        out.fact(self.workflow_type, at_ms, f"outcome:{outcome}")

    def outcome_row(self) -> dict[str, Any]:
        """The `outcomes` row: final state, time per step, the step that timed out, the path."""
        durations = [{"step": s, "duration_ms": d} for s, d in self.step_durations]
        return self.finished_row(self.state, durations, self.timed_out_step, self.path)


def anomaly_row(workflow_type: str, instance_id: str, kind: str, state: str | None,
                event: Event | None, detected_ms: int, detail: str,
                trace_id: str | None, key: str | None = None) -> dict[str, Any]:
    """An `anomalies` row; its id is unique per instance, kind and event (or `key`)."""
    suffix = key if key is not None else (event.event_id if event else str(detected_ms))
    return {
        "row_id": f"{workflow_type}/{instance_id}/{kind}/{suffix}",
        "workflow_type": workflow_type,
        "instance_id": instance_id,
        "kind": kind,
        "state": state,
        "event_id": event.event_id if event else None,
        "event_type": event.type if event else None,
        "event_time": event.time_ms if event else None,
        "detected_at": detected_ms,
        "detail": detail,
        "trace_id": trace_id if trace_id else (event.trace_id if event else None),
    }


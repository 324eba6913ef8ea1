"""One workflow instance of a state-machine definition: apply an event, fire a deadline.

Pure and deterministic: no clock, no I/O. The shard (`state.shard`) decides *when* (event-time
order, watermark); this module decides *what* (transitions, commands, compensations, outcome).
Deadlines the instance wants are handed to the shard through `armed`; a deadline reference carries
the state visit it was armed in, so a deadline of a state already left is ignored when it pops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.event import Event
from state.definition import StateMachine
from state.durations import parse_duration_ms
from state.output import Out

DeadlineRef = tuple[int, str, int]  # (visit, "state" | "compensation", index)

APPLIED, IGNORED, ANOMALOUS = "applied", "ignored", "anomalous"


@dataclass(slots=True)
class MachineInstance:
    """Everything one running (or just finished) instance remembers; plain data."""

    definition: StateMachine
    instance_id: str
    started_ms: int
    state: str = ""
    entered_ms: int = 0
    visit: int = 0
    phase: str = "running"  # running | compensating | ended
    trace_id: str | None = None
    first_seen: dict[str, int] = field(default_factory=dict)
    completed: list[tuple[str, str, str]] = field(default_factory=list)  # (step, command, ack)
    branches_done: list[str] = field(default_factory=list)
    pending_acks: dict[str, str] = field(default_factory=dict)  # ack type -> command
    outcome: str | None = None
    ended_ms: int | None = None
    timed_out_step: str | None = None
    step_durations: list[tuple[str, int]] = field(default_factory=list)
    path: list[str] = field(default_factory=list)
    seq: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    armed: list[tuple[int, DeadlineRef]] = field(default_factory=list)

    @property
    def workflow_type(self) -> str:
        return self.definition.workflow

    @property
    def ended(self) -> bool:
        return self.phase == "ended"

    def start(self, event: Event, out: Out) -> None:
        """Enter the initial state on the start event."""
        self.trace_id = event.trace_id
        self.first_seen[event.type] = event.time_ms
        self._enter(self.definition.initial, event.time_ms, "event", event, out)
        out.fact(self.workflow_type, event.time_ms, "started")

    def apply(self, event: Event, out: Out) -> str:
        """Apply one in-order event; returns its disposition (applied, ignored or anomalous)."""
        self.first_seen.setdefault(event.type, event.time_ms)
        self.trace_id = self.trace_id or event.trace_id
        if self.phase == "ended":
            return self._anomaly("after_terminal", event, out, f"instance already ended as {self.outcome}")
        if self.phase == "compensating":
            return self._on_ack(event, out)
        state = self.definition.states[self.state]
        if event.type in state.on:
            self._leave_to(state.on[event.type], event.time_ms, "event", event, out)
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
        if visit != self.visit or self.phase == "ended":
            return
        if kind == "compensation":
            if self.phase == "compensating":
                self._finish("compensation_failed", due_ms, out)
            return
        deadline = self.definition.states[self.state].deadlines[index]
        if deadline.command:
            self._command(deadline.command, self.state, "deadline", due_ms, out)
        out.fact(self.workflow_type, due_ms, "deadline_fired")
        if deadline.goto:
            self.timed_out_step = self.state
            self._leave_to(deadline.goto, due_ms, "deadline", None, out)

    # -- internals -------------------------------------------------------------------------

    def _branch_done(self, name: str, event: Event, out: Out) -> None:
        state = self.definition.states[self.state]
        assert state.parallel is not None and state.then is not None
        self.branches_done.append(name)
        self.step_durations.append((f"{self.state}.{name}", event.time_ms - self.entered_ms))
        branch = state.parallel[name]
        if branch.compensation:
            self.completed.append((f"{self.state}.{name}", branch.compensation.command, branch.compensation.ack))
        if len(self.branches_done) == len(state.parallel):
            self._leave_to(state.then, event.time_ms, "event", event, out)

    def _leave_to(self, target: str, at_ms: int, trigger: str, event: Event | None, out: Out) -> None:
        current = self.definition.states[self.state]
        goal = self.definition.states[target]
        duration = at_ms - self.entered_ms
        self.step_durations.append((self.state, duration))
        out.fact(self.workflow_type, at_ms, "step_latency", float(duration))
        forward = not goal.is_terminal or goal.outcome == "completed"
        if forward and current.compensation:
            self.completed.append((self.state, current.compensation.command, current.compensation.ack))
        self._enter(target, at_ms, trigger, event, out)

    def _enter(self, target: str, at_ms: int, trigger: str, event: Event | None, out: Out) -> None:
        previous, previous_entered = self.state, self.entered_ms
        self.seq += 1
        out.row("transitions", {
            "row_id": f"{self.workflow_type}/{self.instance_id}/t{self.seq}",
            "workflow_type": self.workflow_type,
            "definition_version": self.definition.version,
            "instance_id": self.instance_id,
            "seq": self.seq,
            "from_state": previous or None,
            "to_state": target,
            "trigger": trigger,
            "event_type": event.type if event else None,
            "event_id": event.event_id if event else None,
            "at": at_ms,
            "state_duration_ms": at_ms - previous_entered if previous else None,
            "trace_id": self.trace_id,
        })
        self.state, self.entered_ms = target, at_ms
        self.visit += 1
        self.path.append(target)
        self.branches_done = []
        state = self.definition.states[target]
        if state.is_terminal:
            assert state.outcome is not None
            if state.compensates and self.completed:
                self._compensate(at_ms, out)
            else:
                self._finish(state.outcome, at_ms, out)
            return
        for index, deadline in enumerate(state.deadlines):
            base = at_ms if deadline.from_event is None else self.first_seen.get(deadline.from_event)
            if base is not None:
                self.armed.append((base + deadline.after_ms, (self.visit, "state", index)))

    def _compensate(self, at_ms: int, out: Out) -> None:
        """Undo completed steps in reverse order and wait for every acknowledgement."""
        self.phase = "compensating"
        for step, command, ack in reversed(self.completed):
            self._command(command, step, "compensation", at_ms, out)
            self.pending_acks[ack] = command
        timeout = parse_duration_ms(self.definition.compensation_timeout)
        self.armed.append((at_ms + timeout, (self.visit, "compensation", 0)))

    def _on_ack(self, event: Event, out: Out) -> str:
        if event.type in self.pending_acks:
            del self.pending_acks[event.type]
            if not self.pending_acks:
                self._finish("compensated", event.time_ms, out)
            return APPLIED
        if event.type in self.definition.ignore:
            return IGNORED
        return self._anomaly("invalid_transition", event, out,
                             f"{event.type} is not allowed while compensating")

    def _command(self, command: str, step: str, reason: str, due_ms: int, out: Out) -> None:
        key = f"{self.workflow_type}/{self.instance_id}/{step}/{command}/{due_ms}"
        out.row("commands", {
            "row_id": key,
            "idempotency_key": key,
            "workflow_type": self.workflow_type,
            "instance_id": self.instance_id,
            "command": command,
            "step": step,
            "reason": reason,
            "due_at": due_ms,
            "trace_id": self.trace_id,
        })

    def _anomaly(self, kind: str, event: Event, out: Out, detail: str) -> str:
        out.row("anomalies", anomaly_row(self.workflow_type, self.instance_id, kind, self.state,
                                         event, event.time_ms, detail, self.trace_id))
        return ANOMALOUS

    def _finish(self, outcome: str, at_ms: int, out: Out) -> None:
        self.phase, self.outcome, self.ended_ms = "ended", outcome, at_ms
        out.fact(self.workflow_type, at_ms, f"outcome:{outcome}")

    def outcome_row(self) -> dict[str, Any]:
        """The one `outcomes` row of a finished instance, with its input counts so far."""
        assert self.outcome is not None and self.ended_ms is not None
        return {
            "row_id": f"{self.workflow_type}/{self.instance_id}/outcome",
            "workflow_type": self.workflow_type,
            "definition_version": self.definition.version,
            "instance_id": self.instance_id,
            "outcome": self.outcome,
            "final_state": self.state,
            "started_at": self.started_ms,
            "ended_at": self.ended_ms,
            "duration_ms": self.ended_ms - self.started_ms,
            "step_durations": [{"step": s, "duration_ms": d} for s, d in self.step_durations],
            "timed_out_step": self.timed_out_step,
            **self.counts,
            "variant": " > ".join(self.path),
            "trace_id": self.trace_id,
        }

    def to_snapshot(self) -> dict[str, Any]:
        """Plain data: survives code moves; the definition is referenced by (type, version)."""
        return {
            "kind": "machine", "workflow_type": self.workflow_type, "version": self.definition.version,
            "instance_id": self.instance_id, "started_ms": self.started_ms, "state": self.state,
            "entered_ms": self.entered_ms, "visit": self.visit, "phase": self.phase,
            "trace_id": self.trace_id, "first_seen": dict(self.first_seen),
            "completed": [list(c) for c in self.completed], "branches_done": list(self.branches_done),
            "pending_acks": dict(self.pending_acks), "outcome": self.outcome, "ended_ms": self.ended_ms,
            "timed_out_step": self.timed_out_step,
            "step_durations": [list(s) for s in self.step_durations], "path": list(self.path),
            "seq": self.seq,
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any], definition: StateMachine) -> MachineInstance:
        return cls(
            definition=definition, instance_id=data["instance_id"], started_ms=data["started_ms"],
            state=data["state"], entered_ms=data["entered_ms"], visit=data["visit"],
            phase=data["phase"], trace_id=data["trace_id"], first_seen=dict(data["first_seen"]),
            completed=[(a, b, c) for a, b, c in data["completed"]],
            branches_done=list(data["branches_done"]), pending_acks=dict(data["pending_acks"]),
            outcome=data["outcome"], ended_ms=data["ended_ms"], timed_out_step=data["timed_out_step"],
            step_durations=[(s, d) for s, d in data["step_durations"]], path=list(data["path"]),
            seq=data["seq"],
        )


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

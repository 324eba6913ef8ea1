"""A small sequential interpreter of one state-machine instance: the oracle's model of the engine.

Written from the definition semantics, not from `state.machine`, so the ground truth can catch the
engine disagreeing with its own contract. It takes events in event-time order and fires deadlines
in due order; a deadline fires before an event only when it is due strictly earlier (an event at
exactly the deadline is in time). The simulator also walks it step by step to learn what a
scenario's next event may be (current state, armed deadlines, compensations still owed).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

from state.definition import State, StateMachine
from state.durations import parse_duration_ms

APPLIED, IGNORED, ANOMALOUS = "applied", "ignored", "anomalous"
IDLE, RUNNING, COMPENSATING, ENDED = "idle", "running", "compensating", "ended"


@dataclass(frozen=True, slots=True)
class Step:
    """One event for the interpreter; `rank` (sequence, arrival) orders events of equal time."""

    time_ms: int
    type: str
    rank: tuple[int, int] = (0, 0)


@dataclass(frozen=True, slots=True)
class Timer:
    """An armed deadline: `index` into the state's deadlines, or the compensation timeout."""

    due_ms: int
    visit: int
    kind: str  # "state" | "compensation"
    index: int


@dataclass(slots=True)
class Replica:
    """What one instance remembers, in the terms of the definition; see the module docstring."""

    definition: StateMachine
    instance_id: str
    state: str = ""
    entered_ms: int = 0
    visit: int = 0
    phase: str = IDLE
    outcome: str | None = None
    ended_ms: int | None = None
    first_seen: dict[str, int] = field(default_factory=dict)
    done: list[tuple[str, str, str]] = field(default_factory=list)  # (step, command, ack) to undo
    branches: list[str] = field(default_factory=list)
    owed_acks: dict[str, str] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    timers: list[tuple[int, int, Timer]] = field(default_factory=list)
    armed: int = 0

    @property
    def current(self) -> State:
        return self.definition.states[self.state]

    def offer(self, step: Step) -> str:
        """Fire what is due strictly before the event, then take it; returns its disposition."""
        self.advance(step.time_ms)
        return self._take(step)

    def advance(self, until_ms: int | None) -> None:
        """Fire every deadline due strictly before `until_ms` (all of them when None)."""
        while self.timers and (until_ms is None or self.timers[0][0] < until_ms):
            self._fire(heapq.heappop(self.timers)[2])

    def live_deadlines(self) -> list[tuple[int, int]]:
        """(due, index) of the current state's armed deadlines, earliest first."""
        found = [(t.due_ms, t.index) for _, _, t in self.timers
                 if t.visit == self.visit and t.kind == "state"]
        return sorted(found)

    def _take(self, step: Step) -> str:
        if self.phase == IDLE:
            if step.type in self.definition.start:
                self.phase = RUNNING
                self.first_seen[step.type] = step.time_ms
                self._enter(self.definition.initial, step.time_ms)
                return APPLIED
            return IGNORED if step.type in self.definition.ignore else ANOMALOUS  # orphan
        self.first_seen.setdefault(step.type, step.time_ms)
        if self.phase == ENDED:
            return ANOMALOUS
        if self.phase == COMPENSATING:
            return self._acknowledge(step)
        return self._transition(step)

    def _transition(self, step: Step) -> str:
        state = self.current
        if step.type in state.on:
            self._leave(state.on[step.type], step.time_ms)
            return APPLIED
        for name, branch in (state.parallel or {}).items():
            if step.type == branch.done and name not in self.branches:
                self._branch_done(name, step.time_ms)
                return APPLIED
            if step.type == branch.failed and state.on_failure is not None:
                self._leave(state.on_failure, step.time_ms)
                return APPLIED
        return IGNORED if step.type in self.definition.ignore else ANOMALOUS

    def _acknowledge(self, step: Step) -> str:
        if step.type in self.owed_acks:
            del self.owed_acks[step.type]
            if not self.owed_acks:
                self._end("compensated", step.time_ms)
            return APPLIED
        return IGNORED if step.type in self.definition.ignore else ANOMALOUS

    def _branch_done(self, name: str, at_ms: int) -> None:
        state = self.current
        assert state.parallel is not None and state.then is not None
        self.branches.append(name)
        compensation = state.parallel[name].compensation
        if compensation is not None:
            self.done.append((f"{self.state}.{name}", compensation.command, compensation.ack))
        if len(self.branches) == len(state.parallel):
            self._leave(state.then, at_ms)

    def _leave(self, target: str, at_ms: int) -> None:
        """Leaving forward (to a running state or success) makes this step one to undo later."""
        goal = self.definition.states[target]
        forward = not goal.is_terminal or goal.outcome == "completed"
        if forward and self.current.compensation is not None:
            compensation = self.current.compensation
            self.done.append((self.state, compensation.command, compensation.ack))
        self._enter(target, at_ms)

    def _enter(self, target: str, at_ms: int) -> None:
        self.state, self.entered_ms = target, at_ms
        self.visit += 1
        self.branches = []
        state = self.current
        if state.outcome is not None:
            if state.compensates and self.done:
                self._compensate(at_ms)
            else:
                self._end(state.outcome, at_ms)
            return
        for index, deadline in enumerate(state.deadlines):
            since = deadline.from_event
            base = at_ms if since is None else self.first_seen.get(since)
            if base is not None:
                self._arm(self.definition.due_ms(self.state, index, base), "state", index)

    def _compensate(self, at_ms: int) -> None:
        self.phase = COMPENSATING
        for step, command, ack in reversed(self.done):
            self._command(step, command, at_ms)
            self.owed_acks[ack] = command
        timeout = parse_duration_ms(self.definition.compensation_timeout)
        self._arm(at_ms + timeout, "compensation", 0)

    def _fire(self, timer: Timer) -> None:
        if timer.visit != self.visit or self.phase == ENDED:
            return
        if timer.kind == "compensation":
            if self.phase == COMPENSATING:
                self._end("compensation_failed", timer.due_ms)
            return
        deadline = self.current.deadlines[timer.index]
        if deadline.command:
            self._command(self.state, deadline.command, timer.due_ms)
        if deadline.goto:
            self._leave(deadline.goto, timer.due_ms)

    def _arm(self, due_ms: int, kind: str, index: int) -> None:
        self.armed += 1
        timer = Timer(due_ms, self.visit, kind, index)
        heapq.heappush(self.timers, (due_ms, self.armed, timer))

    def _command(self, step: str, command: str, due_ms: int) -> None:
        self.commands.append(f"{self.definition.workflow}/{self.instance_id}/{step}/{command}/{due_ms}")

    def _end(self, outcome: str, at_ms: int) -> None:
        self.phase, self.outcome, self.ended_ms = ENDED, outcome, at_ms


def interpret(definition: StateMachine, instance_id: str, steps: Sequence[Step],
              until_ms: int | None = None) -> tuple[Replica, list[str]]:
    """Run the events in (time, rank) order and the deadlines due before `until_ms` (None: all).

    Returns the instance and each step's disposition, in the order the steps were given.
    """
    replica = Replica(definition, instance_id)
    dispositions = [""] * len(steps)
    for i in sorted(range(len(steps)), key=lambda i: (steps[i].time_ms, steps[i].rank)):
        dispositions[i] = replica.offer(steps[i])
    replica.advance(until_ms)
    return replica, dispositions

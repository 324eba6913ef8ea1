"""What happens to each instance: a route through its definition, timed, as the events its
services send.

A route is a list of moves out of states (an `on` event, the join of a parallel state, a failed
branch) toward a terminal state with the wanted outcome. Walking it on a `Replica` tells, at each
step, the state, its armed deadlines and the compensations owed, so event times can be chosen
well inside a deadline (on time), between a reminder and the deadline (slow), or not at all
(silence: the deadline fires). Works from any definition, not only the bundled ones.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property

from connectors.simulator.config import SimulatorConfig
from connectors.simulator.replica import RUNNING, Replica, Step
from connectors.simulator.wire import stamp
from state.definition import State, StateMachine
from state.durations import parse_duration_ms

OUTCOME_SCENARIOS = ("completed", "failed", "cancelled")
LATE_AFTER_TIMEOUT = "late_after_timeout"
DEFAULT_WINDOW_MS = 10 * 60_000  # how long a step may take in a state without deadlines
MAX_WANDER = 30  # moves before a route must head straight for its goal (cyclic definitions)
LATE_LEAD_MS = (1_000, 10 * 60_000)  # a late-after-timeout event is stamped this long before
AFTER_END_MS = (1_000, 30 * 60_000)  # an event for an ended instance comes this long after
MIN_LATENESS_FOR_SWAP_MS = 20  # out-of-order pairs need room within the allowed lateness
_ANY_END = frozenset(["completed", "failed", "cancelled", "timed_out"])


@dataclass(frozen=True, slots=True)
class Move:
    """One way out of `state`; `event_type` is None for the join of a parallel state."""

    state: str
    kind: str  # "on" | "join" | "fail"
    event_type: str | None
    target: str


@dataclass(frozen=True, slots=True)
class Planned:
    """An event a service sends: its type, its exact event time and that time's RFC 3339 stamp."""

    type: str
    time_ms: int
    stamp: str
    role: str  # "step" | "ack" | "noise" | "after_end" | "late"


@dataclass(slots=True)
class InstancePlan:
    """Everything the services of one instance send, before it becomes records."""

    workflow: str
    instance_id: str
    scenario: str
    start_ms: int
    ended_ms: int
    events: list[Planned]  # by event time; the late event is not among them
    late: Planned | None = None
    late_deadline_ms: int | None = None  # the deadline the late event was meant to beat
    tight: tuple[Planned, Planned] | None = None  # sent within lateness of each other


def moves_from(name: str, state: State) -> list[Move]:
    found = [Move(name, "on", event_type, target) for event_type, target in state.on.items()]
    if state.parallel is not None and state.then is not None:
        found.append(Move(name, "join", None, state.then))
        if state.on_failure is not None:
            found += [Move(name, "fail", b.failed, state.on_failure)
                      for b in state.parallel.values() if b.failed]
    return found


def _distances(definition: StateMachine, outcomes: frozenset[str]) -> dict[str, int]:
    """Fewest moves from each state to a terminal state with one of `outcomes` (absent: none)."""
    states = definition.states
    dist = {n: 0 for n, s in states.items() if s.outcome in outcomes}
    grew = True
    while grew:
        grew = False
        for name, state in states.items():
            reach = [dist[m.target] + 1 for m in moves_from(name, state) if m.target in dist]
            if reach and min(reach) < dist.get(name, len(states) + 1):
                dist[name], grew = min(reach), True
    return dist


@dataclass
class Blueprint:
    """A definition plus what routing asks of it again and again, computed once."""

    definition: StateMachine
    _distances: dict[frozenset[str], dict[str, int]] = field(default_factory=dict)

    def distances(self, outcomes: frozenset[str]) -> dict[str, int]:
        if outcomes not in self._distances:
            self._distances[outcomes] = _distances(self.definition, outcomes)
        return self._distances[outcomes]

    def route(self, rng: random.Random, outcomes: frozenset[str],
              start: str | None = None) -> list[Move]:
        """A random route from `start` (the initial state) to one of `outcomes`; [] if none."""
        definition, dist = self.definition, self.distances(outcomes)
        name = start or definition.initial
        path: list[Move] = []
        if name not in dist:
            return path
        while not definition.states[name].is_terminal:
            options = [m for m in moves_from(name, definition.states[name]) if m.target in dist]
            if len(path) >= MAX_WANDER:
                options = [m for m in options if dist[m.target] < dist[name]]
            move = rng.choice(options)
            path.append(move)
            name = move.target
        return path

    @cached_property
    def scenarios(self) -> tuple[str, ...]:
        """The scenarios this workflow can play out (an outcome must be reachable by events)."""
        initial = self.definition.initial
        found = [s for s in OUTCOME_SCENARIOS if initial in self.distances(frozenset([s]))]
        completing = self.distances(frozenset(["completed"]))
        if any(_has_goto(self.definition.states[n]) for n in completing):
            found.append("timed_out")
        return tuple(found)

    @cached_property
    def noise_types(self) -> list[str]:
        """`ignore` types that nothing else in the definition uses: ignored in every phase."""
        used = _used_types(self.definition)
        return sorted(t for t in self.definition.ignore if t not in used)

    @cached_property
    def stray_types(self) -> list[str]:
        """Types an ended instance may still be sent; never a start type (that would start anew)."""
        definition = self.definition
        return sorted(_used_types(definition) - set(definition.start) - set(definition.ignore))


def _has_goto(state: State) -> bool:
    return any(d.goto for d in state.deadlines)


def _reminds(state: State) -> bool:
    """A command-only deadline besides a `goto` one: a slow step draws the reminder."""
    return _has_goto(state) and any(d.command and not d.goto for d in state.deadlines)


def pick_scenario(rng: random.Random, blueprint: Blueprint, config: SimulatorConfig) -> str:
    """`late_after_timeout` at its fault share, else by the outcome mix over what is feasible."""
    feasible = blueprint.scenarios
    if "timed_out" in feasible and rng.random() < config.faults.late_after_timeout:
        return LATE_AFTER_TIMEOUT
    weights = [getattr(config.mix, s) for s in feasible]
    if sum(weights) <= 0:
        return feasible[0]
    return rng.choices(feasible, weights)[0]


@dataclass
class _Walk:
    """Sends a route's events to a replica, choosing their times; remembers what it sent."""

    rng: random.Random
    replica: Replica
    lateness_ms: int
    events: list[Planned] = field(default_factory=list)
    last_ms: int = 0
    tight: tuple[Planned, Planned] | None = None
    late: Planned | None = None
    late_deadline_ms: int | None = None

    def send(self, event_type: str, at_ms: int, role: str = "step") -> Planned:
        text, ms = stamp(max(at_ms, self.last_ms + 1))
        planned = Planned(event_type, ms, text, role)
        self.replica.offer(Step(ms, event_type))
        self.events.append(planned)
        self.last_ms = ms
        return planned

    def first_due(self, goto: bool | None = None) -> int | None:
        """The earliest armed deadline of the current state (only `goto` ones, or only others)."""
        deadlines = self.replica.current.deadlines
        for due, index in self.replica.live_deadlines():
            if goto is None or bool(deadlines[index].goto) == goto:
                return due
        return None

    def on_time(self, count: int) -> list[int]:
        """`count` increasing times after the last event, together within 40 % of the time left."""
        lo = max(self.last_ms, self.replica.entered_ms)
        due = self.first_due()
        return self._spread(lo, (due if due is not None else lo + DEFAULT_WINDOW_MS) - lo, count)

    def slow_time(self) -> int | None:
        """After the first reminder, well before the `goto` deadline; None if there is no room."""
        reminder, expiry = self.first_due(goto=False), self.first_due(goto=True)
        if reminder is None or expiry is None or not self.last_ms < reminder < expiry - 2:
            return None
        return reminder + 1 + int((expiry - reminder - 2) * self.rng.uniform(0.05, 0.5))

    def tight_time(self) -> int | None:
        """Within half the allowed lateness of the last event, so the two can swap on arrival."""
        if self.lateness_ms < MIN_LATENESS_FOR_SWAP_MS:
            return None
        due = self.first_due()
        at = self.last_ms + self.rng.randint(self.lateness_ms // 10, self.lateness_ms // 2)
        return at if due is None or at < due else None

    def take(self, move: Move, pace: str) -> None:
        """Send the events of one move; `pace` ("normal", "slow", "tight") times the first one."""
        state = self.replica.current
        if state.parallel is None:
            assert move.event_type is not None
            self._send_first(move.event_type, pace, [])
            return
        pending = [n for n in state.parallel if n not in self.replica.branches]
        self.rng.shuffle(pending)
        if move.kind == "join":
            types = [state.parallel[n].done for n in pending]
        else:
            keep = [n for n in pending if state.parallel[n].failed != move.event_type]
            assert move.event_type is not None
            types = [state.parallel[n].done for n in keep[: self.rng.randint(0, len(pending) - 1)]]
            types.append(move.event_type)
        self._send_first(types[0], pace, types[1:])

    def _send_first(self, event_type: str, pace: str, rest: list[str]) -> None:
        before = self.events[-1] if self.events else None
        chosen = {"slow": self.slow_time, "tight": self.tight_time}.get(pace, lambda: None)()
        at = chosen if chosen is not None else self.on_time(1)[0]
        first = self.send(event_type, at)
        if pace == "tight" and chosen is not None and before is not None:
            self.tight = (before, first)
        for event_type_, at_ in zip(rest, self.on_time(len(rest)), strict=True):
            self.send(event_type_, at_)

    def fall_silent(self, late: Move | None) -> None:
        """Send nothing more in this state (a parallel state may get some branches done first);
        the first `goto` deadline fires. `late`: the move whose event is sent on time but arrives
        late (in a parallel state, the done event of the one branch left)."""
        branches = self.replica.current.parallel or {}
        pending = [n for n in branches if n not in self.replica.branches]
        self.rng.shuffle(pending)
        done = pending[:-1] if late else pending[: self.rng.randint(0, max(0, len(pending) - 1))]
        for name, at in zip(done, self.on_time(len(done)), strict=True):
            self.send(branches[name].done, at)
        late_type = late.event_type if late is not None else None
        if late is not None and pending:
            late_type = branches[pending[-1]].done  # the last branch: in time, it would have joined
        expiry = self.first_due(goto=True)
        assert expiry is not None, f"state {self.replica.state!r} has no goto deadline"
        room = expiry - self.last_ms
        if late_type is not None and room > 2 * LATE_LEAD_MS[0]:
            lead = self.rng.randint(LATE_LEAD_MS[0], min(LATE_LEAD_MS[1], room // 2))
            text, ms = stamp(expiry - lead)
            self.late, self.late_deadline_ms = Planned(late_type, ms, text, "late"), expiry
        self.replica.advance(expiry + 1)

    def acknowledge(self, missing: bool) -> None:
        """Compensating services acknowledge (some never do, when `missing`); then time runs out."""
        owed = list(self.replica.owed_acks)
        if missing and owed:
            dropped = set(self.rng.sample(owed, self.rng.randint(1, len(owed))))
            owed = [ack for ack in owed if ack not in dropped]
        timeout = parse_duration_ms(self.replica.definition.compensation_timeout)
        entered = self.replica.entered_ms
        for ack, at in zip(owed, self._spread(entered, timeout, len(owed)), strict=True):
            self.send(ack, at, "ack")
        self.replica.advance(None)

    def _spread(self, base: int, span: int, count: int) -> list[int]:
        times, at = [], base
        for _ in range(count):
            at += max(1, int(span * self.rng.uniform(0.01, 0.4) / count))
            times.append(at)
        return times


def plan_instance(rng: random.Random, blueprint: Blueprint, instance_id: str, start_ms: int,
                  config: SimulatorConfig) -> InstancePlan:
    """Choose a scenario for one instance and play it out on the definition."""
    definition = blueprint.definition
    scenario = pick_scenario(rng, blueprint, config)
    goal = frozenset(["completed" if scenario in ("timed_out", LATE_AFTER_TIMEOUT) else scenario])
    path = blueprint.route(rng, goal)
    silent_at: int | None = None
    if scenario in ("timed_out", LATE_AFTER_TIMEOUT):
        eligible = [i for i, m in enumerate(path) if _has_goto(definition.states[m.state])]
        silent_at = rng.choice(eligible) if eligible else None
        if silent_at is None:
            scenario = "completed"
    paces = _paces(rng, definition, path[:silent_at], config)
    walk = _Walk(rng, Replica(definition, instance_id), config.allowed_lateness_ms)
    walk.send(rng.choice(definition.start), start_ms)
    _play(walk, blueprint, path, silent_at, paces, scenario == LATE_AFTER_TIMEOUT)
    if walk.late is None and scenario == LATE_AFTER_TIMEOUT:
        scenario = "timed_out"
    walk.acknowledge(missing=rng.random() < config.faults.missing_ack)
    ended = walk.replica.ended_ms if walk.replica.ended_ms is not None else walk.last_ms
    events = walk.events + _extras(rng, blueprint, walk, start_ms, ended, config)
    events.sort(key=lambda p: p.time_ms)
    return InstancePlan(definition.workflow, instance_id, scenario, start_ms, ended, events,
                        walk.late, walk.late_deadline_ms, walk.tight)


def _paces(rng: random.Random, definition: StateMachine, moves: list[Move],
           config: SimulatorConfig) -> list[str]:
    """Per move: at most one slow step and at most one tight (out-of-order) step."""
    paces = ["normal"] * len(moves)
    slow = [i for i, m in enumerate(moves) if _reminds(definition.states[m.state])]
    if slow and rng.random() < config.habits.slow_step:
        paces[rng.choice(slow)] = "slow"
    if moves and rng.random() < config.faults.out_of_order:
        paces[rng.randrange(len(moves))] = "tight"
    return paces


def _play(walk: _Walk, blueprint: Blueprint, path: list[Move], silent_at: int | None,
          paces: list[str], late: bool) -> None:
    """Take the route's moves; fall silent at `silent_at`; re-route if a deadline intervened."""
    plan = deque(zip(path[:silent_at], paces, strict=True))
    replica = walk.replica
    while replica.phase == RUNNING:
        if plan and plan[0][0].state == replica.state:
            move, pace = plan.popleft()
            walk.take(move, pace)
        elif not plan and silent_at is not None:
            upcoming = path[silent_at]
            walk.fall_silent(upcoming if late and upcoming.kind != "fail" else None)
            silent_at = None
        else:  # a deadline moved the instance off its route: head for any end from here
            plan = deque((m, "normal") for m in blueprint.route(walk.rng, _ANY_END, replica.state))
            if not plan:
                walk.fall_silent(None)


def _extras(rng: random.Random, blueprint: Blueprint, walk: _Walk, start_ms: int, ended_ms: int,
            config: SimulatorConfig) -> list[Planned]:
    """Ignored noise while the instance runs, and an event after it ended (a fault)."""
    taken = {p.time_ms for p in walk.events} | ({walk.late.time_ms} if walk.late else set())
    extras = []
    quiet = blueprint.noise_types
    if quiet and ended_ms - start_ms > 3 and rng.random() < config.habits.noise:
        for _ in range(rng.randint(1, 3)):
            text, ms = stamp(rng.randint(start_ms + 1, ended_ms - 1))
            if ms not in taken and ms < ended_ms:
                taken.add(ms)
                extras.append(Planned(rng.choice(quiet), ms, text, "noise"))
    stray = blueprint.stray_types
    if stray and rng.random() < config.faults.after_end:
        text, ms = stamp(ended_ms + rng.randint(*AFTER_END_MS))
        extras.append(Planned(rng.choice(stray), ms, text, "after_end"))
    return extras


def _used_types(definition: StateMachine) -> set[str]:
    used: set[str] = set(definition.start)
    for state in definition.states.values():
        used |= set(state.on) | {d.from_event for d in state.deadlines if d.from_event}
        for branch in (state.parallel or {}).values():
            used |= {branch.done} | ({branch.failed} if branch.failed else set())
            used |= {branch.compensation.ack} if branch.compensation else set()
        used |= {state.compensation.ack} if state.compensation else set()
    return used

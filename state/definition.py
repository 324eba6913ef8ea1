"""Workflow definitions as data: one YAML file per workflow type and version.

Definitions are untrusted input: loaded with a safe YAML loader, size-bounded, unknown keys
rejected, and statically checked (unknown targets, unreachable states, states that can hang,
cycles with no deadline). Every error names the file, the path inside it and what to write.

Two modes share one schema root:
- `state_machine`: states, transitions by event type, parallel branches (fan-out/fan-in),
  per-state deadlines with escalation, compensations undone in reverse order.
- `case_tracking`: no state machine; per case the activity sequence plus SLA rules.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import cached_property
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    model_validator,
)

from state.calendar import Calendar
from state.durations import (
    BusinessDuration,
    parse_business,
    parse_deadline_duration,
    parse_duration_ms,
)

Duration = Annotated[str, AfterValidator(lambda s: (parse_duration_ms(s), s)[1])]
DeadlineDuration = Annotated[str, AfterValidator(lambda s: (parse_deadline_duration(s), s)[1])]
Name = Annotated[str, Field(min_length=1, max_length=128)]

OUTCOMES = ("completed", "failed", "cancelled", "timed_out", "compensated", "compensation_failed")
TerminalOutcome = Literal["completed", "failed", "cancelled", "timed_out"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Calendared(_Strict):
    """A definition whose durations may count a calendar's business time: the catalog binds the
    calendars it names (`bind_calendars`) after loading."""

    calendar: Name | None = None
    _calendars: dict[str, Calendar] = PrivateAttr(default_factory=dict)

    def calendar_names(self) -> set[str]:
        """Every calendar the definition names."""
        return {self.calendar} if self.calendar else set()

    def bind_calendars(self, calendars: dict[str, Calendar]) -> None:
        """Give the definition the calendars it names (the catalog does)."""
        self._calendars = {name: calendars[name] for name in self.calendar_names()
                           if name in calendars}

    def bound(self, name: str | None) -> Calendar | None:
        """A named calendar of this definition (None for no name)."""
        return self._calendars[name] if name is not None else None

    def due_after(self, base_ms: int, after: str, calendar: str | None) -> int:
        """`after` (wall or business time, in `calendar`) past `base_ms`, as absolute UTC ms."""
        business = parse_business(after)
        if business is None:
            return base_ms + parse_duration_ms(after)
        return self._calendars[calendar or ""].due_ms(base_ms, business)

    def business_ms(self, calendar: str | None, start_ms: int, end_ms: int) -> int | None:
        """Working time of `calendar` in `[start_ms, end_ms)`; None without a calendar."""
        found = self.bound(calendar)
        return found.working_ms_between(start_ms, end_ms) if found is not None else None


class AcceptTimes(_Strict):
    """The event times this workflow accepts, `[from, until)` (dates are midnight UTC); outside,
    an event is a `time_out_of_range` dead letter. The default range (2000 to 2200) guards live
    streams against broken clocks; a historical log sets its own (`import-log` does)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    since: date | AwareDatetime | None = Field(default=None, alias="from")
    until: date | AwareDatetime | None = None

    def bounds_ms(self, default_from_ms: int, default_until_ms: int) -> tuple[int, int]:
        """`[from, until)` in UTC ms, the defaults where a bound is not given."""
        return (_utc_ms(self.since) if self.since is not None else default_from_ms,
                _utc_ms(self.until) if self.until is not None else default_until_ms)


def _utc_ms(moment: date | datetime) -> int:
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    return int(moment.timestamp() * 1000)


class InstanceIdRule(_Strict):
    """Where the instance id is: the CloudEvents `subject` (default) or a field of `data`."""

    data_field: Name | None = None


class Compensation(_Strict):
    """How to undo a completed step: the command to send and the event that acknowledges it."""

    command: Name
    ack: Name


class Deadline(_Strict):
    """Fires `after` the state was entered (or after the first event of type `from`).

    Emits `command` (if any) and moves to `goto` (if any). Several deadlines in one state form an
    escalation chain: a reminder at 15m, a cancellation at 30m. `after` is wall time ("8h") or
    business time ("8 business hours", "2 business days") of the deadline's `calendar` (else its
    state's, else the definition's).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    after: DeadlineDuration
    from_event: Name | None = Field(default=None, alias="from")
    command: Name | None = None
    goto: Name | None = None
    calendar: Name | None = None
    name: Name | None = None

    @property
    def label(self) -> str:
        """The deadline's name: `name`, else its command, else its target, else its duration."""
        return self.name or self.command or self.goto or f"after {self.after}"

    @property
    def business(self) -> BusinessDuration | None:
        """The business duration, or None for wall time."""
        return parse_business(self.after)

    @property
    def after_ms(self) -> int:
        """Wall time in ms; a business duration has none (`StateMachine.due_ms` counts it)."""
        return parse_duration_ms(self.after)


class Branch(_Strict):
    """One branch of a parallel state: done (or failed) by one event type."""

    done: Name
    failed: Name | None = None
    compensation: Compensation | None = None


class State(_Strict):
    """A state: transitions (`on`), or parallel branches joined into `then`, or a terminal
    outcome."""

    on: dict[Name, Name] = Field(default_factory=dict, max_length=100)
    parallel: dict[Name, Branch] | None = Field(default=None, max_length=50)
    then: Name | None = None
    on_failure: Name | None = None
    deadlines: list[Deadline] = Field(default_factory=list, max_length=20)
    compensation: Compensation | None = None
    outcome: TerminalOutcome | None = None
    compensate: bool | None = None
    calendar: Name | None = None

    @model_validator(mode="after")
    def _shape(self) -> State:
        if self.outcome is not None:
            if self.on or self.parallel or self.deadlines or self.compensation:
                msg = ("a terminal state (with 'outcome') has no 'on', 'parallel', 'deadlines' or "
                       "'compensation'")
                raise ValueError(msg)
            if self.compensate and self.outcome == "completed":
                raise ValueError("'compensate: true' makes no sense on a 'completed' outcome")
        elif self.parallel is not None:
            if self.then is None:
                raise ValueError("a parallel state needs 'then': the state entered when all "
                                 "branches are done")
            if any(b.failed for b in self.parallel.values()) and self.on_failure is None:
                raise ValueError("a parallel state with 'failed' events needs 'on_failure': "
                                 "where a failed branch goes")
        elif self.then is not None or self.on_failure is not None:
            raise ValueError("'then' and 'on_failure' belong to parallel states only; "
                             "use 'on' here")
        return self

    @property
    def is_terminal(self) -> bool:
        return self.outcome is not None

    @property
    def compensates(self) -> bool:
        """Whether entering this terminal state undoes the completed steps."""
        if self.compensate is not None:
            return self.compensate
        return self.outcome in ("failed", "cancelled", "timed_out")

    def targets(self) -> list[str]:
        """Every state this one can move to."""
        found = list(self.on.values()) + [d.goto for d in self.deadlines if d.goto]
        return found + [t for t in (self.then, self.on_failure) if t]


class StateMachine(_Calendared):
    """A workflow as a state machine (the default mode)."""

    workflow: Name
    mode: Literal["state_machine"] = "state_machine"
    version: int = Field(ge=1)
    description: str = ""
    instance_id: InstanceIdRule = InstanceIdRule()
    naive_time_zone: str | None = None
    accept_times: AcceptTimes | None = None
    start: list[Name] = Field(min_length=1, max_length=20)
    initial: Name
    ignore: list[Name] = Field(default_factory=list, max_length=100)
    states: dict[Name, State] = Field(min_length=1, max_length=200)
    compensation_timeout: Duration = "1h"
    retention: Duration = "1h"

    def calendar_names(self) -> set[str]:
        """Every calendar the definition names (on itself, a state or a deadline)."""
        names = {self.calendar} | {s.calendar for s in self.states.values()}
        names |= {d.calendar for s in self.states.values() for d in s.deadlines}
        return {n for n in names if n is not None}

    def calendar_of(self, state: str, deadline: Deadline) -> str | None:
        """The calendar a deadline counts business time in: its own, its state's, the
        definition's."""
        return deadline.calendar or self.states[state].calendar or self.calendar

    def due_ms(self, state: str, index: int, base_ms: int) -> int:
        """When deadline `index` of `state`, counted from `base_ms`, is due (absolute UTC ms)."""
        wall = self.wall_afters.get((state, index))
        if wall is not None:  # the common case, on every state entered: one lookup
            return base_ms + wall
        deadline = self.states[state].deadlines[index]
        return self.due_after(base_ms, deadline.after, self.calendar_of(state, deadline))

    @cached_property
    def wall_afters(self) -> dict[tuple[str, int], int]:
        """(state, index) -> ms of every deadline in wall time."""
        return {(name, i): d.after_ms for name, state in self.states.items()
                for i, d in enumerate(state.deadlines) if d.business is None}

    def state_calendar(self, state: str) -> str | None:
        """The calendar a state's time is counted in (its own, else the definition's)."""
        return self.states[state].calendar or self.calendar

    @cached_property
    def state_calendars(self) -> dict[str, str]:
        """State -> the calendar its time is counted in, for the states that have one (empty for
        a definition in wall time only: no business durations to compute)."""
        return {name: calendar for name in self.states
                if (calendar := self.state_calendar(name)) is not None}

    @cached_property
    def arming(self) -> dict[str, tuple[tuple[int, str | None, int | None, str], ...]]:
        """State -> (index, `from` type, ms in wall time or None for business time, name) of
        each of its deadlines in order: what entering the state arms, read once per definition
        (a deadline in wall time is then one addition)."""
        return {name: tuple((i, d.from_event, self.wall_afters.get((name, i)), d.label)
                            for i, d in enumerate(state.deadlines))
                for name, state in self.states.items()}

    @cached_property
    def deadline_sources(self) -> frozenset[str]:
        """Event types a deadline counts from (`from`): instances keep first times of these only."""
        return frozenset(d.from_event for state in self.states.values() for d in state.deadlines
                         if d.from_event)

    def event_types(self) -> set[str]:
        """Every event type this workflow consumes."""
        types = set(self.start) | set(self.ignore)
        for state in self.states.values():
            types |= set(state.on)
            for branch in (state.parallel or {}).values():
                types |= {branch.done} | ({branch.failed} if branch.failed else set())
                if branch.compensation:
                    types.add(branch.compensation.ack)
            if state.compensation:
                types.add(state.compensation.ack)
        return types


class SlaRule(_Strict):
    """One case-tracking rule; exactly one of the three forms.

    - `within` + `from` + `to`: the first `to` at or after the first `from` must come within the
      limit (without `from`: within the limit of the case's first event); `to` may list several
      event types, and then the first of any of them counts ("an application to any decision");
    - `complete_within`: the case must end within this long of its first event;
    - `stuck_after`: no event for this long makes the case stuck (an anomaly, once).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Name | None = None
    within: DeadlineDuration | None = None
    from_event: Name | None = Field(default=None, alias="from")
    to: Name | Annotated[list[Name], Field(min_length=1, max_length=50)] | None = None
    complete_within: DeadlineDuration | None = None
    stuck_after: DeadlineDuration | None = None
    calendar: Name | None = None

    @property
    def limit(self) -> str:
        """The rule's duration as written (wall or business time)."""
        found = self.within or self.complete_within or self.stuck_after
        assert found is not None
        return found

    @property
    def business(self) -> bool:
        """Whether the rule counts business time."""
        return parse_business(self.limit) is not None

    @model_validator(mode="after")
    def _one_form(self) -> SlaRule:
        forms = [self.within is not None, self.complete_within is not None,
                 self.stuck_after is not None]
        if sum(forms) != 1:
            raise ValueError("write exactly one of 'within' (with 'from' and 'to'), "
                             "'complete_within', 'stuck_after'")
        if self.within is not None and not self.targets:
            raise ValueError("a 'within' rule needs a 'to' event type (and 'from', or none to "
                             "measure from the case's first event)")
        return self

    @cached_property
    def targets(self) -> frozenset[str]:
        """The `to` event types: the first of any of them ends the measured span."""
        if self.to is None:
            return frozenset()
        return frozenset([self.to] if isinstance(self.to, str) else self.to)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.within is not None:
            to = self.to if isinstance(self.to, str) else "|".join(self.to or ())
            return f"{self.from_event or 'case start'} -> {to} within {self.within}"
        if self.complete_within is not None:
            return f"complete within {self.complete_within}"
        return f"stuck after {self.stuck_after}"


class CaseTracking(_Calendared):
    """A workflow tracked as cases: activity sequences and SLA rules, no state machine."""

    workflow: Name
    mode: Literal["case_tracking"]
    version: int = Field(ge=1)
    description: str = ""
    instance_id: InstanceIdRule = InstanceIdRule()
    naive_time_zone: str | None = None
    accept_times: AcceptTimes | None = None
    events: Literal["any"] | list[Name] = "any"
    end_on: list[Name] = Field(default_factory=list, max_length=100)
    close_after_idle: Duration = "30d"
    rules: list[SlaRule] = Field(default_factory=list, max_length=50)
    retention: Duration = "1h"

    def calendar_names(self) -> set[str]:
        """Every calendar the definition names (on itself or a rule)."""
        names = {self.calendar} | {rule.calendar for rule in self.rules}
        return {n for n in names if n is not None}

    def rule_calendar(self, index: int) -> str | None:
        """The calendar a rule counts business time in: its own, else the definition's."""
        return self.rules[index].calendar or self.calendar

    def rule_due_ms(self, index: int, base_ms: int) -> int:
        """When rule `index`'s limit, counted from `base_ms`, runs out (absolute UTC ms)."""
        return self.due_after(base_ms, self.rules[index].limit, self.rule_calendar(index))

    def event_types(self) -> set[str]:
        """The event types listed (empty when the definition accepts any type)."""
        if self.events == "any":
            return set()
        rule_types = {t for r in self.rules for t in (r.from_event, *r.targets) if t}
        return set(self.events) | set(self.end_on) | rule_types


Definition = StateMachine | CaseTracking

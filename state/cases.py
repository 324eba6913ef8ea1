"""One case of a case-tracking definition: activity sequence and SLA rules, no state machine.

For streams with no declared process (process-mining logs, new integrations). A case closes when
no event came for `close_after_idle` (or when a bounded input ends); its outcome is `completed`
if it saw an `end_on` activity (or none are declared), else `timed_out`. Its duration is last event
minus first event, so it matches what process-mining tools report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.event import Event
from state.definition import CaseTracking
from state.durations import parse_duration_ms
from state.machine import (
    APPLIED,
    NO_COUNTS,
    Counts,
    DeadlineRef,
    InstanceBase,
    anomaly_row,
    deadline_ref,
)
from state.output import Out

NEVER_STALE = -1


@dataclass(slots=True)
class CaseInstance(InstanceBase):
    """What one case remembers; plain data."""

    definition: CaseTracking
    key: str  # "<workflow type>/<instance id>", as the shard knows it
    started_ms: int
    last_ms: int = 0
    visit: int = 0  # events so far: numbers the transitions, tells stale idle timers
    trace_id: str | None = None
    activities: list[str] = field(default_factory=list)
    end_seen: bool = False
    # within-rule index -> the first `from` time, and the last `to` before that `from`
    rule_from: dict[int, int] = field(default_factory=dict)
    rule_last_to: dict[int, int] = field(default_factory=dict)
    rule_done: tuple[int, ...] = ()
    outcome: str | None = None
    ended_ms: int | None = None
    counts: Counts = NO_COUNTS
    armed: tuple[tuple[int, DeadlineRef], ...] = ()  # taken (and emptied) by the shard

    def start(self, event: Event, out: Out) -> None:
        """A case starts with its first event, which is then applied like any other."""
        self.trace_id = event.trace_id
        self.last_ms = event.time_ms
        for index, rule in enumerate(self.definition.rules):
            if rule.complete_within is not None:
                due = self.definition.rule_due_ms(index, event.time_ms)
                self.armed += ((due, deadline_ref(NEVER_STALE, "complete", index)),)
        out.fact(self.workflow_type, event.time_ms, "started")

    def apply(self, event: Event, out: Out) -> str:
        """Record the activity, check the rules, re-arm the idle timers."""
        if self.ended:
            out.row("anomalies", anomaly_row(self.workflow_type, self.instance_id, "after_terminal",
                                             self._current(), event, event.time_ms,
                                             "case already closed", self.trace_id))
            return "anomalous"
        previous = self._current()
        gap = event.time_ms - self.last_ms if self.activities else None
        self.activities.append(event.type)
        self.last_ms = event.time_ms
        self.visit += 1
        out.row("transitions", {
            "row_id": f"{self.key}/t{self.visit}",
            "workflow_type": self.workflow_type, "definition_version": self.definition.version,
            "instance_id": self.instance_id, "seq": self.visit, "from_state": previous,
            "to_state": event.type, "trigger": "event", "event_type": event.type,
            "event_id": event.event_id, "at": event.time_ms, "state_duration_ms": gap,
            "trace_id": self.trace_id, "deadlines": None,
            "business_duration_ms": None if gap is None else self.definition.business_ms(
                self.definition.calendar, self.last_ms - gap, event.time_ms),
        })
        if gap is not None:
            out.fact(self.workflow_type, event.time_ms, "step_latency", float(gap))
        if event.type in self.definition.end_on:
            self.end_seen = True
        self._check_within(event, out)
        for index, rule in enumerate(self.definition.rules):
            if rule.stuck_after is not None:
                due = self.definition.rule_due_ms(index, event.time_ms)
                self.armed += ((due, deadline_ref(self.visit, "stuck", index)),)
        close = event.time_ms + parse_duration_ms(self.definition.close_after_idle)
        self.armed += ((close, deadline_ref(self.visit, "close", 0)),)
        return APPLIED

    def fire(self, ref: DeadlineRef, due_ms: int, out: Out) -> None:
        """Idle, overdue and SLA timers; stale idle timers (an event came since) do nothing."""
        visit, kind, index = ref
        if self.ended or (visit != NEVER_STALE and visit != self.visit):
            return
        if kind == "close":
            ended_well = self.end_seen or not self.definition.end_on
            self.outcome = "completed" if ended_well else "timed_out"
            self.ended_ms = self.last_ms
            out.fact(self.workflow_type, due_ms, f"outcome:{self.outcome}")
            return
        if self.end_seen:
            return  # a case that reached its end activity is neither stuck nor overdue
        rule = self.definition.rules[index]
        if kind == "stuck":
            self._rule_anomaly("stuck", rule.label, due_ms, out, key=f"{rule.label}/{self.last_ms}")
        elif kind == "complete":
            self._rule_anomaly("case_overdue", rule.label, due_ms, out)
        elif kind == "within" and index not in self.rule_done:
            self._rule_anomaly("sla_overdue", rule.label, due_ms, out)

    def _check_within(self, event: Event, out: Out) -> None:
        for index, rule in enumerate(self.definition.rules):
            if rule.within is None or index in self.rule_done:
                continue
            starts = rule.from_event is None or event.type == rule.from_event
            if starts and index not in self.rule_from:
                self.rule_from[index] = event.time_ms
                if self.rule_last_to.get(index) == event.time_ms:  # a tie counts as "at or after"
                    self.rule_done += (index,)
                    continue
                due = self.definition.rule_due_ms(index, event.time_ms)
                self.armed += ((due, deadline_ref(NEVER_STALE, "within", index)),)
                if rule.from_event is not None:
                    continue
            if event.type in rule.targets:  # a case's first event may end a `from`-less rule
                if index not in self.rule_from:
                    self.rule_last_to[index] = event.time_ms
                    continue
                self.rule_done += (index,)
                took = event.time_ms - self.rule_from[index]
                if event.time_ms > self.definition.rule_due_ms(index, self.rule_from[index]):
                    business = self.definition.business_ms(self.definition.rule_calendar(index),
                                                           self.rule_from[index], event.time_ms)
                    detail = f"{rule.label}: took {took} ms" + (
                        f" ({business} ms of business time)" if rule.business else "")
                    out.row("anomalies", anomaly_row(self.workflow_type, self.instance_id,
                                                     "sla_breached", self._current(), event,
                                                     event.time_ms, detail, self.trace_id,
                                                     key=rule.label))

    def _rule_anomaly(self, kind: str, label: str, at_ms: int, out: Out,
                      key: str | None = None) -> None:
        out.row("anomalies", anomaly_row(self.workflow_type, self.instance_id, kind,
                                         self._current(), None, at_ms, label, self.trace_id,
                                         key=key or label))

    def _current(self) -> str | None:
        return self.activities[-1] if self.activities else None

    @property
    def state(self) -> str:
        return self._current() or ""

    def outcome_row(self) -> dict[str, Any]:
        """The `outcomes` row of a closed case: its last activity, and its activities as the
        variant (cases have no steps to time)."""
        return self.finished_row(self._current(), [], None, self.activities)

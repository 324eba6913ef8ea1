"""`flowkeeper inspect`: the life of one workflow instance, from the outputs and the input archive.

Every input record of the instance (event time and arrival time, disposition), every transition,
every deadline armed and what became of it, every command, anomaly and correction, and the
outcome, in event-time order. Deadlines are not output rows: they are derived from the
transitions (when a state was entered), the `step_deadlines` table (the run's definitions) and
the commands and transitions a firing leaves (reason / trigger `deadline`).

The ledger has no event types, so types come from the transitions, anomalies and corrections, and
from the archive when there is one: its raw records are decoded again, which also finds the
records of the instance that were dead-lettered (records are keyed by instance id). Without an
archive those are missing and some types read `?`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.compute as pc
import pyarrow.dataset as ds

from analysis.formatting import DASH, deadline_action, human_ms, json_ready, utc
from analysis.outputs import Row, rows
from analysis.pending import pending_of
from connectors.archive_format import records_of
from schemas.decode import DecodeRules, decode
from schemas.errors import ConfigError
from schemas.event import DeadLetter
from schemas.tables import ARCHIVE

# Order of entries at one instant: what caused something before what it caused.
RANK = {"event": 0, "deadline_fired": 1, "command:deadline": 2, "transition": 3,
        "deadline_armed": 4, "command:compensation": 5, "anomaly": 6, "correction": 7,
        "outcome": 8, "dead_letter": 9}


@dataclass(frozen=True)
class Entry:
    """One line of the timeline; `at` is event time (arrival time for a dead letter)."""

    at: datetime
    kind: str
    text: str
    arrived: datetime | None = None
    detail: Row = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return RANK.get(f"{self.kind}:{self.detail.get('reason')}", RANK.get(self.kind, 99))


@dataclass(frozen=True)
class Timeline:
    """One instance: what is known about it, and its entries in event-time order."""

    workflow_type: str
    instance_id: str
    summary: Row
    entries: list[Entry]
    archive: Path | None

    def to_json(self) -> Row:
        """Plain data for `--json` (times as ISO 8601 strings)."""
        data: Row = json_ready({
            "workflow_type": self.workflow_type, "instance_id": self.instance_id,
            **self.summary, "archive": str(self.archive) if self.archive else None,
            "timeline": [{"at": e.at, "kind": e.kind, "text": e.text, "arrived": e.arrived,
                          **e.detail} for e in self.entries],
        })
        return data

    def render(self) -> str:
        """The terminal view: a header, then one line per entry."""
        s = self.summary
        outcome = s.get("outcome")
        lines = [f"{self.workflow_type} {self.instance_id}  (definition "
                 f"v{s.get('definition_version')}, shard {s.get('shard')}, "
                 f"trace {s.get('trace_id') or DASH})"]
        if outcome:
            lines.append(f"  outcome {outcome['outcome']} in {outcome['final_state']} after "
                         f"{human_ms(outcome['duration_ms'])}; variant {outcome['variant']}")
        else:
            lines.append(f"  still open in {s.get('state') or DASH}")
        for d in s.get("pending_deadlines") or ():
            lines.append(f"  pending deadline {d['deadline']}: due {utc(d['due_at'])}, "
                         f"{_remaining(d['remaining_ms'])} as of the partition's watermark "
                         f"{utc(d['watermark'])}")
        if self.archive is None:
            lines.append("  (no input archive found: event types may read ?, dead letters are "
                         "not shown)")
        lines += ["", f"  {'event time (UTC)':<23}  {'arrived':>9}  {'':<15} what", ""]
        for e in self.entries:
            arrived = "" if e.arrived is None else "+" + human_ms((e.arrived - e.at) / _MS)
            kind = e.kind.replace("_", " ")
            lines.append(f"  {utc(e.at):<23}  {arrived:>9}  {kind:<15} {e.text}")
        return "\n".join(lines)


_MS = timedelta(milliseconds=1)


def _remaining(ms: int | None) -> str:
    """`3h 5m left`, or `due 2m ago` once the watermark passed it."""
    if ms is None:
        return "time left unknown"
    return f"{human_ms(ms)} left" if ms >= 0 else f"due {human_ms(-ms)} ago"


def find_workflow(conn: duckdb.DuckDBPyConnection, instance_id: str, workflow: str | None) -> str:
    """The workflow type of the instance; instance ids are unique per type only."""
    found = sorted(r["workflow_type"] for r in rows(conn, """
        SELECT workflow_type FROM ledger WHERE instance_id = $1 UNION
        SELECT workflow_type FROM transitions WHERE instance_id = $1 UNION
        SELECT workflow_type FROM anomalies WHERE instance_id = $1""", [instance_id]))
    if workflow is not None:
        found = [w for w in found if w == workflow]
    if not found:
        of = f" of {workflow}" if workflow else ""
        raise ConfigError(f"no instance {instance_id!r}{of} in these outputs; list some with: "
                          "SELECT instance_id FROM outcomes LIMIT 10")
    if len(found) > 1:
        raise ConfigError(f"{instance_id!r} is an instance of {', '.join(found)}; choose one "
                          "with --workflow")
    return str(found[0])


def instance_timeline(conn: duckdb.DuckDBPyConnection, instance_id: str, *, workflow: str | None,
                      archive: Path | None, rules: DecodeRules) -> Timeline:
    """Gather everything about one instance; `archive` may be None or missing on disk."""
    workflow_type = find_workflow(conn, instance_id, workflow)
    key = [workflow_type, instance_id]

    def table(sql: str) -> list[Row]:
        return rows(conn, sql, key)

    where = "WHERE workflow_type = $1 AND instance_id = $2"
    ledger = table('SELECT row_id, source, partition, "offset", event_id, disposition, '
                   f"event_time, arrived_at FROM ledger {where}")
    transitions = table(f"SELECT * FROM transitions {where} ORDER BY seq")
    commands = table(f"SELECT * FROM commands {where} ORDER BY due_at, row_id")
    anomalies = table(f"SELECT * FROM anomalies {where} ORDER BY detected_at, row_id")
    corrections = table(f"SELECT * FROM corrections {where} ORDER BY detected_at, row_id")
    outcome = next(iter(table(f"SELECT * FROM outcomes {where}")), None)
    deadlines = rows(conn, "SELECT * FROM step_deadlines WHERE workflow_type = $1 "
                      "ORDER BY state, kind, position", [workflow_type])
    archive = archive if archive is not None and archive.is_dir() else None
    raw = _archived(archive, ledger, instance_id, rules) if archive else {}
    rejected = [row_id for row_id, found in raw.items() if isinstance(found, DeadLetter)]
    dead = rows(conn, "SELECT * FROM dead_letters WHERE list_contains($1::VARCHAR[], row_id)",
                 [rejected])
    types = {r["event_id"]: r["event_type"] for r in [*transitions, *anomalies] if r["event_type"]}
    types |= {c["late_event_id"]: c["late_event_type"] for c in corrections}
    events = [_event_entry(r, raw.get(r["row_id"]), types) for r in ledger]
    entries = [*events, *(_dead_letter_entry(d) for d in dead),
               *(_transition_entry(t) for t in transitions),
               *_deadline_entries(transitions, deadlines, commands, outcome, events),
               *(_command_entry(c) for c in commands), *(_anomaly_entry(a) for a in anomalies),
               *(_correction_entry(c) for c in corrections),
               *([_outcome_entry(outcome)] if outcome else [])]
    entries.sort(key=lambda e: (e.at, e.rank, e.arrived or e.at))
    last = transitions[-1] if transitions else {}
    summary = {"pending_deadlines": [] if outcome else pending_of(conn, workflow_type,
                                                                  instance_id),
               "definition_version": last.get("definition_version"), "shard": last.get("shard"),
               "trace_id": last.get("trace_id"), "state": last.get("to_state"), "outcome": outcome}
    return Timeline(workflow_type, instance_id, summary, entries, archive)


def _archived(archive: Path, ledger: list[Row], instance_id: str,
              rules: DecodeRules) -> dict[str, Any]:
    """The instance's archived records, decoded again: row_id -> Event or DeadLetter. Reads only
    the archive partitions its records went to; records keyed by the instance id are included."""
    partitions = {r["partition"] for r in ledger}
    files = [str(path) for part in sorted(partitions)
             for path in archive.glob(f"date=*/partition={part}/*.parquet")]
    if not files:
        return {}
    dataset = ds.dataset(files, format="parquet", schema=ARCHIVE)
    wanted = pc.field("row_id").isin([r["row_id"] for r in ledger]) | (
        pc.field("key") == instance_id.encode())
    return {f"{r.source}/{r.partition}/{r.offset}": decode(r, rules)
            for r in records_of(dataset.to_table(filter=wanted))}


def _event_entry(row: Row, decoded: Any, types: dict[str, str]) -> Entry:
    event_type = getattr(decoded, "type", None) or types.get(row["event_id"]) or "?"
    disposition = row["disposition"]
    lag = row["arrived_at"] - row["event_time"]
    note = {"late": f"  LATE: arrived {human_ms(lag / _MS)} after its event time, never applied",
            "duplicate": "  (a redelivery: counted, not applied again)"}.get(disposition, "")
    detail = {"event_id": row["event_id"], "type": event_type, "disposition": disposition,
              "event_time": row["event_time"], "arrived_at": row["arrived_at"],
              "arrival_lag_ms": lag // _MS, "source": row["source"], "partition": row["partition"],
              "offset": row["offset"], "trace_id": getattr(decoded, "trace_id", None)}
    text = f"{event_type:<24} {disposition}{note}  [{row['event_id']}]"
    return Entry(row["event_time"], "event", text, row["arrived_at"], detail)


def _dead_letter_entry(row: Row) -> Entry:
    detail = {k: row[k] for k in ("reason", "message", "event_id", "event_type", "partition",
                                  "offset")}
    return Entry(row["arrived_at"], "dead_letter",
                 f"{row['reason']}: {row['message']}  (at arrival time; never an event)", None,
                 detail)


def _transition_entry(t: Row) -> Entry:
    cause = t["event_type"] if t["trigger"] == "event" else "deadline"
    stay = (f", after {human_ms(t['state_duration_ms'])} in {t['from_state']}"
            if t["from_state"] else "")
    detail = {k: t[k] for k in ("seq", "from_state", "to_state", "trigger", "event_type",
                                "event_id")}
    return Entry(t["at"], "transition", f"{t['from_state'] or 'start'} → {t['to_state']}  "
                 f"(on {cause}{stay})", None, detail)


def _command_entry(c: Row) -> Entry:
    detail = {k: c[k] for k in ("command", "step", "reason", "idempotency_key")}
    return Entry(c["due_at"], "command", f"{c['command']}  ({c['reason']}, step {c['step']}; "
                 f"key {c['idempotency_key']})", None, detail)


def _anomaly_entry(a: Row) -> Entry:
    detail = {"anomaly": a["kind"],
              **{k: a[k] for k in ("state", "event_id", "event_type", "event_time", "detail")}}
    event = f"; event {a['event_type']} [{a['event_id']}]" if a["event_id"] else ""
    return Entry(a["detected_at"], "anomaly",
                 f"{a['kind']}: {a['detail']} (state {a['state'] or DASH}{event})", None, detail)


def _correction_entry(c: Row) -> Entry:
    detail = {k: c[k] for k in ("original_outcome", "corrected_outcome", "corrected_state",
                                "late_event_id", "late_event_type", "late_event_time",
                                "corrects_row_id")}
    before = c["original_outcome"] or "no outcome yet"
    after = c["corrected_outcome"] or "no outcome yet"
    return Entry(c["detected_at"], "correction",
                 f"the late {c['late_event_type']} of {utc(c['late_event_time'])} would have "
                 f"changed the verdict: {before} → {after} "
                 f"(state {c['corrected_state'] or DASH})",
                 None, detail)


def _outcome_entry(o: Row) -> Entry:
    timed_out = f", timed out in {o['timed_out_step']}" if o["timed_out_step"] else ""
    detail = {k: o[k] for k in ("outcome", "final_state", "duration_ms", "timed_out_step",
                                "variant", "events", "applied", "duplicates", "late", "ignored",
                                "anomalies")}
    return Entry(o["ended_at"], "outcome", f"{o['outcome']} in {o['final_state']} after "
                 f"{human_ms(o['duration_ms'])}{timed_out}; {o['events']} events: "
                 f"{o['applied']} applied, {o['late']} late, {o['duplicates']} duplicates, "
                 f"{o['ignored']} ignored, {o['anomalies']} anomalous", None, detail)


def _deadline_entries(transitions: list[Row], deadlines: list[Row], commands: list[Row],
                      outcome: Row | None, events: list[Entry]) -> Iterable[Entry]:
    """Armed (on entering a state) and fired deadlines, as the engine's `fire` would have done."""
    first_seen: dict[str, datetime] = {}
    for e in sorted(events, key=lambda e: e.at):
        if e.detail["disposition"] in ("applied", "ignored", "anomalous"):
            first_seen.setdefault(e.detail["type"], e.at)
    sent = {(c["step"], c["due_at"], c["reason"]) for c in commands}
    for i, entered in enumerate(transitions):
        state, at = entered["to_state"], entered["at"]
        left = transitions[i + 1] if i + 1 < len(transitions) else None
        dues: dict[str, list[datetime]] = {}
        for armed in entered.get("deadlines") or ():
            dues.setdefault(armed["name"], []).append(armed["due_at"])
        for d in (d for d in deadlines if (d["state"], d["definition_version"]) ==
                  (state, entered["definition_version"])):
            if d["kind"] == "compensation":
                yield from _compensation_timer(d, state, at, sent, outcome)
                continue
            due = _due(d, entered, at, first_seen, dues)
            if due is None:
                continue
            moved = left is not None and left["trigger"] == "deadline" and left["at"] == due
            fired = (state, due, "deadline") in sent or moved
            action = deadline_action(d["command"], d["goto"])
            status = ("fired" if fired else f"cancelled: left {state} first" if left is not None
                      else "pending")
            name = d.get("name") or action
            detail = {"state": state, "name": name, "due_at": due, "after_ms": d["after_ms"],
                      "after": _after(d), "from_event": d["from_event"], "command": d["command"],
                      "goto": d["goto"], "status": status}
            since = f" from {d['from_event']}" if d["from_event"] else ""
            named = f"{name}: " if name not in (d["command"], d["goto"]) else ""
            yield Entry(at, "deadline_armed", f"{named}{action} due {utc(due)} (+{_after(d)}"
                        f"{since}) in {state}: {status}", None, detail)
            if fired:
                yield Entry(due, "deadline_fired",
                            f"{named}{state} +{_after(d)}{since}: {action}", None, detail)


def _after(d: Row) -> str:
    """A deadline's duration: wall time readable, business time as written."""
    return human_ms(d["after_ms"]) if d["after_ms"] is not None else str(d.get("after") or "?")


def _due(d: Row, entered: Row, at: datetime, first_seen: dict[str, datetime],
         dues: dict[str, list[datetime]]) -> datetime | None:
    """When a deadline of the state `entered` was due: as the engine armed it (`deadlines` of the
    transition, in the state's order per name), else (outputs of an older version) from its wall
    duration; None when it was not armed."""
    if entered.get("deadlines") is not None:
        queue = dues.get(d.get("name") or "")
        return queue.pop(0) if queue else None
    base = first_seen.get(d["from_event"]) if d["from_event"] else at
    if base is None or d["after_ms"] is None:
        return None
    due: datetime = base + d["after_ms"] * _MS
    return due


def _compensation_timer(d: Row, state: str, at: datetime, sent: set[tuple[str, Any, str]],
                        outcome: Row | None) -> Iterable[Entry]:
    """The compensation timeout armed when a compensating terminal state is entered with steps to
    undo (then compensation commands were sent at that instant)."""
    if not any(due == at and reason == "compensation" for _, due, reason in sent):
        return
    due = at + d["after_ms"] * _MS
    ended = (outcome["outcome"], outcome["ended_at"]) if outcome is not None else (None, None)
    fired = ended == ("compensation_failed", due)
    status = ("fired" if fired else "every acknowledgement came in time"
              if ended[0] == "compensated" else "pending")
    detail = {"state": state, "due_at": due, "after_ms": d["after_ms"], "status": status}
    yield Entry(at, "deadline_armed", f"compensation timeout due {utc(due)} "
                f"(+{human_ms(d['after_ms'])}) in {state}: {status}", None, detail)
    if fired:
        yield Entry(due, "deadline_fired", f"{state}: compensation timed out", None, detail)

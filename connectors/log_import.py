"""A process-mining log as an input archive of CloudEvents, ready for `flowkeeper replay`.

Each log event becomes one structured-mode CloudEvent: `type` = activity, `subject` = case id,
`time` = the timestamp with its offset (naive stamps in the stated zone), `sequence` = its position
in the file, `data` = lifecycle, resource and the other attributes. The `id` is a hash of the
event's whole content, so an exact duplicate in the log shares its id (the pipeline counts it as a
`duplicate`), while two events that differ in any attribute (a lab value) do not. A duplicate also
carries its first copy's `sequence`, so its bytes are identical too (same id, different bytes would
be a *conflicting* duplicate).

Logs are grouped case by case; the archive merges every case by (timestamp, file position), keys
records by case id and spreads cases over `partitions` by a stable hash, with offsets in that
order and arrival time = event time (so `--max-future-skew` never rejects an old log).
The merge sorts the events in memory (compact encoded records: about 1 KB per event).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from connectors.archive_format import archive_table
from connectors.event_logs import LogEvent
from connectors.parquet_sink import ParquetWriter
from schemas.decode import MAX_TIME_MS, MIN_TIME_MS
from schemas.event import RawRecord
from state.durations import parse_deadline_duration

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_DAY_MS = 86_400_000
LIFECYCLE, RESOURCE = "lifecycle:transition", "org:resource"


@dataclass(frozen=True)
class ImportSummary:
    """What an import wrote."""

    events: int
    cases: int
    partitions: int
    duplicates: int
    first_ms: int
    last_ms: int
    archive: Path
    activities: frozenset[str] = frozenset()
    outside_default_times: int = 0  # events before 2000 or from 2200 on: `accept_times` needed


def event_id(event: LogEvent) -> str:
    """A hash of the event's whole content (not its position): equal events, equal ids."""
    content = [event.case_id, event.activity, event.time.isoformat(),
               sorted(event.attributes.items())]
    return hashlib.sha256(json.dumps(content, ensure_ascii=False).encode()).hexdigest()[:32]


def cloudevent(event: LogEvent, source: str, event_id: str, sequence: int) -> bytes:
    """The structured-mode CloudEvent of one log event."""
    attributes = dict(event.attributes)
    data: dict[str, object] = {}
    for name, key in ((LIFECYCLE, "lifecycle"), (RESOURCE, "resource")):
        if name in attributes:
            data[key] = attributes.pop(name)
    data["attributes"] = attributes
    envelope = {
        "specversion": "1.0", "id": event_id, "source": source, "type": event.activity,
        "subject": event.case_id, "time": event.time.isoformat(timespec="milliseconds"),
        "sequence": str(sequence), "datacontenttype": "application/json", "data": data,
    }
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()


def partition_of(case_id: str, partitions: int) -> int:
    """A stable partition per case (not crc32, which the shard buckets already use)."""
    return int.from_bytes(hashlib.blake2b(case_id.encode(), digest_size=4).digest()) % partitions


def import_events(events: Iterable[LogEvent], out: Path, *, source: str, partitions: int = 4,
                  batch_rows: int = 50_000,
                  progress: Callable[[int], None] | None = None) -> ImportSummary:
    """Write the events as an archive under `out/archive/` (atomic files, schema `ARCHIVE`)."""
    first_position: dict[str, int] = {}
    encoded: list[tuple[int, int, str, bytes]] = []
    activities: set[str] = set()
    for event in events:
        activities.add(event.activity)
        eid = event_id(event)
        sequence = first_position.setdefault(eid, event.position)
        time_ms = (event.time - _EPOCH) // _MS
        value = cloudevent(event, source, eid, sequence)
        encoded.append((time_ms, event.position, event.case_id, value))
        if progress is not None and len(encoded) % 10_000 == 0:
            progress(len(encoded))
    encoded.sort(key=lambda e: (e[0], e[1]))
    offsets = [0] * partitions
    sink = ParquetWriter.standalone(out, batch_rows)
    cases: set[str] = set()
    for start in range(0, len(encoded), batch_rows):
        records = []
        for time_ms, _, case_id, value in encoded[start:start + batch_rows]:
            partition = partition_of(case_id, partitions)
            record = RawRecord(source, partition, offsets[partition], value, case_id.encode(),
                               arrived_ms=time_ms)
            offsets[partition] += 1
            cases.add(case_id)
            records.append(record)
        sink.write_batch([("archive", archive_table(records))])
    sink.close()
    return ImportSummary(
        events=len(encoded), cases=len(cases), partitions=partitions,
        duplicates=len(encoded) - len(first_position),
        first_ms=encoded[0][0] if encoded else 0, last_ms=encoded[-1][0] if encoded else 0,
        archive=out / "archive", activities=frozenset(activities),
        outside_default_times=sum(1 for e in encoded if not MIN_TIME_MS <= e[0] < MAX_TIME_MS),
    )


@dataclass(frozen=True)
class StepSla:
    """`FROM->TO<=LIMIT`: the first TO at or after the first FROM within LIMIT (FROM `*`: the
    case's first event; TO may be `B|C|D`: the first of any of them)."""

    from_activity: str | None
    to_activities: tuple[str, ...]
    limit: str

    @classmethod
    def parse(cls, text: str) -> StepSla:
        """Read `"ER Registration->IV Antibiotics<=1h"`, `"*->Closed<=7d"` or
        `"Application->Accepted|Rejected<=720h"`."""
        head, sep, limit = text.rpartition("<=")
        origin, arrow, target = head.partition("->")
        targets = tuple(t.strip() for t in target.split("|"))
        if not sep or not arrow or not all(targets):
            raise ValueError(f"--sla {text!r}: write FROM->TO<=LIMIT, e.g. "
                             "'Registered->Approved<=2d' (FROM '*' measures from the case's "
                             "first event; TO 'B|C|D' stops at the first of them)")
        try:
            parse_deadline_duration(limit.strip())
        except ValueError as e:
            raise ValueError(f"--sla {text!r}: the limit {e}") from e
        origin = origin.strip()
        return cls(None if origin in ("", "*") else origin, targets, limit.strip())

    @property
    def text(self) -> str:
        """The rule as `--sla` writes it."""
        return f"{self.from_activity or '*'}->{'|'.join(self.to_activities)}<={self.limit}"

    def unknown_activities(self, activities: Collection[str]) -> list[str]:
        """The rule's activities that never occur among `activities` (a rule that cannot hold)."""
        named = [self.from_activity] if self.from_activity else []
        return [a for a in [*named, *self.to_activities] if a not in activities]


def accepted_days(first_ms: int, last_ms: int) -> dict[str, str] | None:
    """`accept_times` widening the default range (2000 to 2200) just enough to take in every day
    of a log that reaches outside it, else None: the decoder would dead-letter those events."""
    bounds = {}
    if first_ms < MIN_TIME_MS:
        bounds["from"] = (_EPOCH + first_ms // _DAY_MS * timedelta(days=1)).date().isoformat()
    if last_ms >= MAX_TIME_MS:
        until = _EPOCH + (last_ms // _DAY_MS + 1) * timedelta(days=1)
        bounds["until"] = until.date().isoformat()
    return bounds or None


def write_definition(path: Path, *, workflow: str, log_name: str, span_ms: int,
                     slas: list[StepSla], complete_within: str | None = None,
                     stuck_after: str | None = None,
                     accept_times: dict[str, str] | None = None,
                     calendar: str | None = None) -> None:
    """A case-tracking definition for the imported log: any activity, the SLA rules, the log's
    own range of event times where it needs one, and cases that close only at the end of the
    replay (idle longer than the whole log)."""
    rules: list[dict[str, object]] = [
        {"within": s.limit, **({"from": s.from_activity} if s.from_activity else {}),
         "to": s.to_activities[0] if len(s.to_activities) == 1 else list(s.to_activities)}
        for s in slas]
    if complete_within is not None:
        rules.append({"complete_within": complete_within})
    if stuck_after is not None:
        rules.append({"stuck_after": stuck_after})
    document = {
        "workflow": workflow, "mode": "case_tracking", "version": 1,
        "description": f"Cases of the event log {log_name}, imported by flowkeeper import-log.",
        "events": "any",
        **({"accept_times": accept_times} if accept_times else {}),
        **({"calendar": calendar} if calendar else {}),
        "close_after_idle": f"{span_ms // _DAY_MS + 2}d",
        "rules": rules,
    }
    header = (f"# Case tracking for {log_name}: no state machine, the activity sequence of each\n"
              "# case and its SLA rules. close_after_idle is longer than the whole log, so every\n"
              "# case closes at the end of the replay, with duration = last event - first event.\n")
    path.write_text(header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True))

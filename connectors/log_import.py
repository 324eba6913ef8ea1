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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from connectors.archive_format import archive_row
from connectors.arrow_rows import rows_to_table
from connectors.event_logs import LogEvent
from connectors.parquet_sink import ParquetWriter
from schemas.event import RawRecord
from state.durations import parse_duration_ms

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
    for event in events:
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
        rows = []
        for time_ms, _, case_id, value in encoded[start:start + batch_rows]:
            partition = partition_of(case_id, partitions)
            record = RawRecord(source, partition, offsets[partition], value, case_id.encode(),
                               arrived_ms=time_ms)
            offsets[partition] += 1
            cases.add(case_id)
            rows.append(archive_row(record))
        sink.write_batch([("archive", rows_to_table("archive", rows))])
    sink.close()
    return ImportSummary(
        events=len(encoded), cases=len(cases), partitions=partitions,
        duplicates=len(encoded) - len(first_position),
        first_ms=encoded[0][0] if encoded else 0, last_ms=encoded[-1][0] if encoded else 0,
        archive=out / "archive",
    )


@dataclass(frozen=True)
class StepSla:
    """`FROM->TO<=LIMIT`: the first TO at or after the first FROM within LIMIT (FROM `*`: the
    case's first event)."""

    from_activity: str | None
    to_activity: str
    limit: str

    @classmethod
    def parse(cls, text: str) -> StepSla:
        """Read `"ER Registration->IV Antibiotics<=1h"` (or `"*->Closed<=7d"`)."""
        head, sep, limit = text.rpartition("<=")
        origin, arrow, target = head.partition("->")
        if not sep or not arrow or not target.strip():
            raise ValueError(f"--sla {text!r}: write FROM->TO<=LIMIT, e.g. "
                             "'Registered->Approved<=2d' (FROM '*' measures from the case's "
                             "first event)")
        try:
            parse_duration_ms(limit.strip())
        except ValueError as e:
            raise ValueError(f"--sla {text!r}: the limit {e}") from e
        origin = origin.strip()
        return cls(None if origin in ("", "*") else origin, target.strip(), limit.strip())


def write_definition(path: Path, *, workflow: str, log_name: str, span_ms: int,
                     slas: list[StepSla]) -> None:
    """A case-tracking definition for the imported log: any activity, the SLA rules, and cases
    that close only at the end of the replay (idle longer than the whole log)."""
    rules = [{"within": s.limit, **({"from": s.from_activity} if s.from_activity else {}),
              "to": s.to_activity} for s in slas]
    document = {
        "workflow": workflow, "mode": "case_tracking", "version": 1,
        "description": f"Cases of the event log {log_name}, imported by flowkeeper import-log.",
        "events": "any",
        "close_after_idle": f"{span_ms // _DAY_MS + 2}d",
        "rules": rules,
    }
    header = (f"# Case tracking for {log_name}: no state machine, the activity sequence of each\n"
              "# case and its SLA rules. close_after_idle is longer than the whole log, so every\n"
              "# case closes at the end of the replay, with duration = last event - first event.\n")
    path.write_text(header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True))

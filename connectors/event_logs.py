"""Process-mining event logs (XES, `.xes.gz`, CSV) read as a stream of `LogEvent`s in file order.

XES is parsed with the standard library's streaming parser (`iterparse`), never as a whole-file
DOM: each trace is cleared once read, so memory holds one trace at a time. Only an event's own
attributes are kept (string, date, int, float, boolean, id; nested `list`/`container` values and
trace-level attributes other than the case id are left out). CSV columns are found by their usual
names (`case:concept:name`, `Case ID`, ...) unless named explicitly.

Timestamps without a UTC offset get the zone the caller states; every error names the file, the
position of the event and what to do.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import BinaryIO

from schemas.errors import FlowkeeperError

CASE, ACTIVITY, TIMESTAMP = "case:concept:name", "concept:name", "time:timestamp"
_CSV_NAMES = {
    CASE: ("case:concept:name", "Case ID", "case_id", "CaseID", "case id", "Case", "case"),
    ACTIVITY: ("concept:name", "Activity", "activity", "Activity Name", "event"),
    TIMESTAMP: ("time:timestamp", "Complete Timestamp", "Timestamp", "timestamp", "time",
                "Start Timestamp"),
}
_VALUE_TAGS = {"string", "date", "int", "float", "boolean", "id"}
_SLASHED_DATE = re.compile(r"^(\d{4})/(\d{2})/(\d{2})")


class EventLogError(FlowkeeperError):
    """An event log cannot be read; the message names the file, where in it, and the fix."""


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One event of a log: its case, activity, aware time, position in the file and attributes."""

    case_id: str
    activity: str
    time: datetime
    position: int
    attributes: dict[str, str]


def read_log(path: Path, zone: tzinfo, *, time_format: str | None = None,
             columns: dict[str, str] | None = None,
             delimiter: str | None = None) -> Iterator[LogEvent]:
    """The events of an XES or CSV log in file order; `zone` is for offset-less timestamps."""
    name = path.name.lower()
    if not path.is_file():
        raise EventLogError(f"{path}: no such file; pass an .xes, .xes.gz or .csv event log")
    if name.endswith((".xes", ".xes.gz")):
        return _read_xes(path, zone, time_format)
    if name.endswith((".csv", ".csv.gz")):
        return _read_csv(path, zone, time_format, columns or {}, delimiter)
    raise EventLogError(f"{path}: unknown log format; name it *.xes, *.xes.gz, *.csv or *.csv.gz")


def _open(path: Path) -> BinaryIO:
    if path.name.lower().endswith(".gz"):
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]  # a BinaryIO in all but name
    return path.open("rb")


def parse_time(text: str, zone: tzinfo, time_format: str | None = None) -> datetime:
    """ISO 8601 (also `YYYY/MM/DD ...`) or `time_format`; naive stamps are taken in `zone`."""
    if time_format is not None:
        stamp = datetime.strptime(text, time_format)  # noqa: DTZ007  # a naive one gets `zone` below
    else:
        stamp = datetime.fromisoformat(_SLASHED_DATE.sub(r"\1-\2-\3", text.strip()))
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=zone)


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """A broken file (bad gzip, cut short, not UTF-8, not XML) becomes an error naming it."""
    try:
        yield
    except ET.ParseError as e:
        msg = f"{path}: not well-formed XES ({e}); check that the file is complete"
        raise EventLogError(msg) from e
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
        msg = f"{path}: cannot be read ({e}); check that it is a complete UTF-8 event log"
        raise EventLogError(msg) from e


def _read_xes(path: Path, zone: tzinfo, time_format: str | None) -> Iterator[LogEvent]:
    position, depth, root = 0, 0, None
    trace: list[tuple[int, dict[str, str]]] = []
    with _reading(path), _open(path) as stream:
        for action, element in ET.iterparse(stream, events=("start", "end")):
            tag = element.tag.rpartition("}")[2]
            if action == "start":
                depth += 1
                root = element if root is None else root
                continue
            depth -= 1
            if tag == "event" and depth == 2:
                trace.append((position, _attributes(element)))
                position += 1
                element.clear()
            elif tag == "trace" and depth == 1:
                case_id = _attributes(element).get(ACTIVITY)
                yield from _trace_events(path, case_id, trace, zone, time_format)
                trace = []
                assert root is not None
                root.clear()  # drop every element read so far: memory holds one trace


def _attributes(element: ET.Element) -> dict[str, str]:
    """The element's own typed attributes (`<string key=... value=...>` children), by key."""
    found = {}
    for child in element:
        key, value = child.get("key"), child.get("value")
        if child.tag.rpartition("}")[2] in _VALUE_TAGS and key is not None and value is not None:
            found[key] = value
    return found


def _trace_events(path: Path, case_id: str | None, trace: list[tuple[int, dict[str, str]]],
                  zone: tzinfo, time_format: str | None) -> Iterator[LogEvent]:
    if case_id is None and trace:
        msg = (f"{path}: the trace holding event #{trace[0][0]} has no 'concept:name' "
               "(the case id); add one to every trace")
        raise EventLogError(msg)
    for position, attributes in trace:
        yield _event(path, str(case_id), attributes, position, zone, time_format)


def _event(path: Path, case_id: str, attributes: dict[str, str], position: int, zone: tzinfo,
           time_format: str | None) -> LogEvent:
    """A `LogEvent` from a row's or an XES event's attributes; errors name the event."""
    activity = attributes.pop(ACTIVITY, None)
    stamp = attributes.pop(TIMESTAMP, None)
    if not activity or not stamp:
        missing = "the activity" if not activity else "the timestamp"
        msg = (f"{path}: event #{position} (case {case_id!r}) has no {missing}; "
               "every event needs one")
        raise EventLogError(msg)
    try:
        time = parse_time(stamp, zone, time_format)
    except ValueError as e:
        hint = f"--time-format {time_format!r} does not match" if time_format else \
            "not ISO 8601; pass --time-format (a strptime pattern such as '%d-%m-%Y %H:%M:%S')"
        msg = f"{path}: event #{position} (case {case_id!r}): timestamp {stamp!r}: {hint}"
        raise EventLogError(msg) from e
    return LogEvent(case_id, activity, time, position, attributes)


def _read_csv(path: Path, zone: tzinfo, time_format: str | None, columns: dict[str, str],
              delimiter: str | None) -> Iterator[LogEvent]:
    with _reading(path), _open(path) as raw, \
            io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
        header_line = text.readline()
        sep = delimiter or max(";,\t|", key=header_line.count)
        reader = csv.reader(text, delimiter=sep)
        header = next(csv.reader([header_line], delimiter=sep), [])
        where = {role: _column(path, header, role, columns.get(role)) for role in _CSV_NAMES}
        for position, row in enumerate(reader):
            if not row:
                continue
            values = {name: value for name, value in zip(header, row, strict=False) if value != ""}
            case_id = values.pop(where[CASE], "")
            if not case_id:
                msg = f"{path}: row #{position} has an empty {where[CASE]!r} (the case id)"
                raise EventLogError(msg)
            attributes = {ACTIVITY: values.pop(where[ACTIVITY], ""),
                          TIMESTAMP: values.pop(where[TIMESTAMP], ""), **values}
            yield _event(path, case_id, attributes, position, zone, time_format)


def _column(path: Path, header: list[str], role: str, given: str | None) -> str:
    """The header name playing `role` (case, activity, timestamp)."""
    candidates = (given,) if given else _CSV_NAMES[role]
    for name in candidates:
        if name in header:
            return name
    option = {CASE: "--case-column", ACTIVITY: "--activity-column",
              TIMESTAMP: "--time-column"}[role]
    msg = (f"{path}: no {' or '.join(repr(c) for c in candidates[:3])} column among "
           f"{header[:12]}; name the {role} column with {option}")
    raise EventLogError(msg)

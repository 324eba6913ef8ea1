"""Load business calendars from YAML files (a `calendars/` folder beside the definitions).

One calendar per file:

    calendar: claims_de
    time_zone: Europe/Berlin
    extends: de_office                  # optional: inherit zone, weekdays and holidays
    working_hours:
      mon: [08:00-12:00, 13:00-17:00]   # several intervals a day; 24:00 ends a day
      sat: []                           # no working time (overrides what `extends` gives)
    holidays: [2026-12-24, 2026-12-25]  # local dates
    holiday_files: [de_holidays.ics]    # iCalendar files, relative to this file

Files are untrusted input like definitions: safe YAML, size-bounded, unknown keys refused. Every
error names the file and the line, and what to write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import icalendar
import yaml

from schemas.bounded_read import read_bounded
from schemas.errors import DefinitionError
from state.calendar import WEEKDAYS, Calendar, Interval

MAX_FILE_BYTES = 256 * 1024
MAX_ICS_BYTES = 4 * 1024 * 1024
MAX_HOLIDAY_SPAN_DAYS = 31  # one .ics event marks at most this many days as holidays
_KEYS = ("calendar", "time_zone", "extends", "working_hours", "holidays", "holiday_files")
_INTERVAL = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass
class _Raw:
    """One calendar file, read and checked on its own (before `extends` is resolved)."""

    file: Path
    name: str
    node: yaml.Node
    zone: ZoneInfo | None
    extends: str | None
    hours: dict[int, tuple[Interval, ...]]
    holidays: frozenset[date]


def load_calendars(folder: Path | None) -> dict[str, Calendar]:
    """Every calendar in `folder` (`*.yaml`, `*.yml`), by name; none if there is no folder."""
    if folder is None or not folder.is_dir():
        return {}
    raws: dict[str, _Raw] = {}
    for file in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
        raw = _read(file)
        if raw.name in raws:
            raise DefinitionError(f"{file}: at {_line(raw.node, ['calendar'])}: calendar "
                                  f"{raw.name!r} is also defined in {raws[raw.name].file}; "
                                  "rename one of them")
        raws[raw.name] = raw
    return {name: _resolve(name, raws, ()) for name in raws}


def _resolve(name: str, raws: dict[str, _Raw], chain: tuple[str, ...]) -> Calendar:
    raw = raws[name]
    parent: Calendar | None = None
    if raw.extends is not None:
        where = f"{raw.file}: at {_line(raw.node, ['extends'])}"
        if raw.extends not in raws:
            known = ", ".join(sorted(raws)) or "none"
            raise DefinitionError(f"{where}: 'extends: {raw.extends}' names no calendar of this "
                                  f"folder (calendars: {known})")
        if raw.extends in (*chain, name):
            loop = " -> ".join((*chain, name, raw.extends))
            raise DefinitionError(f"{where}: calendars extend each other in a loop ({loop}); "
                                  "remove one 'extends'")
        parent = _resolve(raw.extends, raws, (*chain, name))
    zone = raw.zone or (parent.zone if parent else None)
    if zone is None:
        raise DefinitionError(f"{raw.file}: at {_line(raw.node, [])}: required key 'time_zone' "
                              "is missing; add an IANA zone such as 'Europe/Berlin'")
    hours = tuple(raw.hours.get(i, parent.hours[i] if parent else ()) for i in range(7))
    calendar = Calendar(name=name, zone=zone, hours=hours,
                        holidays=raw.holidays | (parent.holidays if parent else frozenset()))
    if not calendar.has_working_time:
        raise DefinitionError(f"{raw.file}: at {_line(raw.node, ['working_hours'])}: calendar "
                              f"{name!r} has no working time (no weekday has an interval); "
                              "add e.g. 'mon: [09:00-17:00]' under 'working_hours'")
    return calendar


def _read(file: Path) -> _Raw:
    data = read_bounded(file, MAX_FILE_BYTES, ", the limit for a calendar")
    try:
        node = yaml.compose(data, Loader=yaml.SafeLoader)
        document = yaml.safe_load(data)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(unknown line)"
        raise DefinitionError(f"{file}: at {where}: not valid YAML: {e.problem}") from e
    except yaml.YAMLError as e:
        raise DefinitionError(f"{file}: not valid YAML (write UTF-8 text): {e}") from e
    if not isinstance(document, dict) or node is None:
        raise DefinitionError(f"{file}: at line 1: expected a mapping with 'calendar', "
                              "'time_zone', 'working_hours'")

    def fail(path: list[str | int], problem: str) -> DefinitionError:
        return DefinitionError(f"{file}: at {_line(node, path)}: {problem}")

    for key in document:
        if key not in _KEYS:
            raise fail([str(key)], f"unknown key {key!r}; allowed keys here: {', '.join(_KEYS)}")
    name = document.get("calendar")
    if not isinstance(name, str) or not name.strip():
        raise fail(["calendar"] if "calendar" in document else [],
                   "'calendar' must name the calendar (definitions refer to it by this name)")
    zone: ZoneInfo | None = None
    if "time_zone" in document:
        try:
            zone = ZoneInfo(str(document["time_zone"]))
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise fail(["time_zone"], f"{document['time_zone']!r} is not an IANA time zone; "
                       "write e.g. 'Europe/Berlin' or 'America/New_York'") from e
    extends = document.get("extends")
    if extends is not None and not isinstance(extends, str):
        raise fail(["extends"], "'extends' names one other calendar")
    hours = _hours(document.get("working_hours", {}), fail)
    holidays = set(_dates(document.get("holidays", []), fail))
    files = document.get("holiday_files", [])
    if not isinstance(files, list):
        raise fail(["holiday_files"], "'holiday_files' is a list of .ics file names")
    for i, name_of_file in enumerate(files):
        holidays |= _ics_dates(file.parent / str(name_of_file), zone,
                               partial(_fail_at, fail, ["holiday_files", i]))
    return _Raw(file, name, node, zone, extends, hours, frozenset(holidays))


def _fail_at(fail: Any, path: list[str | int], problem: str) -> DefinitionError:
    """`fail` bound to one place of the document."""
    return fail(path, problem)  # type: ignore[no-any-return]


def _hours(value: Any, fail: Any) -> dict[int, tuple[Interval, ...]]:
    if not isinstance(value, dict):
        raise fail(["working_hours"], "'working_hours' maps weekdays (mon..sun) to lists of "
                   "intervals such as [08:00-12:00, 13:00-17:00]")
    hours: dict[int, tuple[Interval, ...]] = {}
    for day, intervals in value.items():
        if day not in WEEKDAYS:
            raise fail(["working_hours", str(day)], f"{day!r} is no weekday; write one of "
                       f"{', '.join(WEEKDAYS)}")
        if not isinstance(intervals, list):
            intervals = [intervals]
        parsed = [_interval(text, partial(_fail_at, fail, ["working_hours", day, i]))
                  for i, text in enumerate(intervals)]
        parsed.sort()
        for (_, end), (start, _) in pairwise(parsed):
            if start < end:
                raise fail(["working_hours", day], f"the intervals of {day} overlap; merge them")
        hours[WEEKDAYS.index(day)] = tuple(parsed)
    return hours


def _interval(text: Any, fail: Any) -> Interval:
    match = _INTERVAL.match(str(text))
    if not match:
        raise fail(f"{text!r} is no interval; write HH:MM-HH:MM, e.g. 08:00-12:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = (h1 * 60 + m1) * 60_000, (h2 * 60 + m2) * 60_000
    if m1 > 59 or m2 > 59 or h1 > 23 or end > 24 * 3_600_000 or start >= end:
        raise fail(f"{text!r}: an interval runs forward within one day (end at most 24:00)")
    return start, end


def _dates(value: Any, fail: Any) -> list[date]:
    if not isinstance(value, list):
        raise fail(["holidays"], "'holidays' is a list of dates such as 2026-12-25")
    found = []
    for i, item in enumerate(value):
        if isinstance(item, date) and not isinstance(item, datetime):
            found.append(item)
            continue
        try:
            found.append(date.fromisoformat(str(item)))
        except ValueError as e:
            raise fail(["holidays", i], f"{item!r} is no date; write YYYY-MM-DD") from e
    return found


def _ics_dates(path: Path, zone: ZoneInfo | None, fail: Any) -> set[date]:
    """The dates every VEVENT of an .ics file covers (DTEND exclusive, as RFC 5545 says);
    recurring events are refused rather than silently read as one day."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_ICS_BYTES + 1)
    except OSError as e:
        raise fail(f"cannot read the holiday file {path}: {e.strerror or e}") from e
    if len(data) > MAX_ICS_BYTES:
        raise fail(f"the holiday file {path} has more than {MAX_ICS_BYTES} bytes")
    try:
        calendars = icalendar.Calendar.from_ical(data, multiple=True)
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise fail(f"the holiday file {path} is not a readable iCalendar file: {e}") from e
    found: set[date] = set()
    for calendar in calendars:
        for event in calendar.walk("VEVENT"):
            summary = str(event.get("SUMMARY", "(no summary)"))
            if event.get("RRULE") is not None or event.get("RDATE") is not None:
                raise fail(f"the holiday file {path}: the event {summary!r} repeats (RRULE); "
                           "list each holiday as its own dated event")
            start = event.get("DTSTART")
            if start is None:
                raise fail(f"the holiday file {path}: the event {summary!r} has no DTSTART")
            first = _as_date(start.dt, zone)
            end = event.get("DTEND")
            last = _as_date(end.dt, zone) if end is not None else first + timedelta(days=1)
            if isinstance(start.dt, datetime) and end is not None and isinstance(end.dt, datetime):
                last = _as_date(end.dt - timedelta(microseconds=1), zone) + timedelta(days=1)
            span = max(1, (last - first).days)
            if span > MAX_HOLIDAY_SPAN_DAYS:
                raise fail(f"the holiday file {path}: the event {summary!r} spans {span} days "
                           f"(at most {MAX_HOLIDAY_SPAN_DAYS})")
            found |= {first + timedelta(days=n) for n in range(span)}
    return found


def _as_date(moment: date, zone: ZoneInfo | None) -> date:
    if isinstance(moment, datetime):
        if moment.tzinfo is not None and zone is not None:
            return moment.astimezone(zone).date()
        return moment.date()
    return moment


def _line(node: yaml.Node, path: list[str | int]) -> str:
    """"line N" of the key (or list item) deepest along `path` in the document."""
    line = node.start_mark.line
    for step in path:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(step)), None)
            if match is None:
                break
            line, node = match[0].start_mark.line, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) \
                and step < len(node.value):
            node = node.value[step]
            line = node.start_mark.line
        else:
            break
    return f"line {line + 1}"

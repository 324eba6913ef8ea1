"""Business calendars: working hours in a time zone, minus holidays; deadlines in business time.

A calendar is plain data (`Calendar`): an IANA zone, for each weekday a few local wall-clock
intervals, and a set of holiday dates. Working time is the set of instants whose *local* wall time
lies in an interval of its local date's weekday, on a date that is no holiday. So a DST night
counts the real elapsed time: an interval 01:00-05:00 holds 3 hours on the spring night and 5 on
the autumn night (the repeated hour counts twice), and an interval inside the skipped hour is
empty.

Two kinds of business duration (`state.durations.BusinessDuration`):
- minutes and hours count working time: the due instant is where that much working time has
  passed since the start (an event outside working hours starts the clock at the next opening);
- days count business days (local dates with working time): the due instant is the same
  position, in working time elapsed since that day's opening, on the Nth business day after the
  day the clock started (the close of that day if it is shorter).

The due time is computed once, when a deadline is armed, and kept as an absolute instant; only
`zoneinfo` (the bundled tz database) is read, so the result is the same wherever it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from state.durations import BusinessDuration

DAY_MS = 86_400_000
Interval = tuple[int, int]  # [start, end) in ms after local midnight; end may be 24:00
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_EPOCH = date(1970, 1, 1)
_MARGIN_MS = 15 * 3_600_000  # more than any UTC offset: the UTC span a local date can cover
_SEARCH_DAYS = 366 * 30  # a calendar with working time finds it within this many days


class NoWorkingTimeError(ValueError):
    """A calendar had no working time within decades of an instant (holidays cover it all)."""


@dataclass(frozen=True, eq=False)
class Calendar:
    """Working hours per weekday (Monday first) in `zone`, minus `holidays` (local dates)."""

    name: str
    zone: ZoneInfo
    hours: tuple[tuple[Interval, ...], ...]  # seven entries, Monday first
    holidays: frozenset[date] = frozenset()
    _days: dict[date, tuple[Interval, ...]] = field(default_factory=dict, repr=False)

    @property
    def has_working_time(self) -> bool:
        """Whether any weekday has an interval of positive length."""
        return any(end > start for day in self.hours for start, end in day)

    def pieces(self, day: date) -> tuple[Interval, ...]:
        """The working time of one local date as UTC ms intervals, in time order (cached: open
        instances of one workflow arm deadlines on the same few dates)."""
        found = self._days.get(day)
        if found is None:
            found = self._compute_pieces(day)
            if len(self._days) > 20_000:
                self._days.clear()
            self._days[day] = found
        return found

    def due_ms(self, start_ms: int, duration: BusinessDuration) -> int:
        """The instant `duration` of business time after `start_ms` (see the module docstring)."""
        if duration.unit == "days":
            return self._add_days(start_ms, duration.amount)
        return self._add_working(start_ms, duration.ms)

    def working_ms_between(self, start_ms: int, end_ms: int) -> int:
        """Working time in `[start_ms, end_ms)`: a span's business duration."""
        total, day = 0, self._local_date(start_ms) - timedelta(days=1)
        while self._day_start_utc(day) - _MARGIN_MS < end_ms:
            for lo, hi in self.pieces(day):
                total += max(0, min(hi, end_ms) - max(lo, start_ms))
            day += timedelta(days=1)
        return total

    # -- internals -------------------------------------------------------------------------

    def _add_working(self, start_ms: int, amount_ms: int) -> int:
        left = amount_ms
        for _, lo, hi in self._pieces_from(start_ms):
            lo = max(lo, start_ms)
            if left <= hi - lo:
                return lo + left
            left -= hi - lo
        raise AssertionError("unreachable: _pieces_from raises first")  # pragma: no cover

    def _add_days(self, start_ms: int, amount: int) -> int:
        pieces = self._pieces_from(start_ms)
        day, lo, _ = next(pieces)
        opened = max(lo, start_ms)  # the clock starts here
        elapsed = sum(max(0, min(hi, opened) - p_lo) for p_lo, hi in self.pieces(day))
        target, seen = day, 0
        for next_day, _, _ in pieces if amount else ():
            if next_day != target:
                target, seen = next_day, seen + 1
                if seen == amount:
                    break
        for p_lo, hi in self.pieces(target):
            if elapsed < hi - p_lo:
                return p_lo + elapsed
            elapsed -= hi - p_lo
        return self.pieces(target)[-1][1]

    def _pieces_from(self, start_ms: int) -> Iterator[tuple[date, int, int]]:
        """(local date, start, end) of each working piece that ends after `start_ms`, in order."""
        day = self._local_date(start_ms) - timedelta(days=1)
        for _ in range(_SEARCH_DAYS):
            for lo, hi in self.pieces(day):
                if hi > start_ms:
                    yield day, lo, hi
            day += timedelta(days=1)
        msg = (f"calendar {self.name!r} has no working time within {_SEARCH_DAYS} days of "
               f"{datetime.fromtimestamp(start_ms / 1000, UTC).isoformat()}")
        raise NoWorkingTimeError(msg)

    def _compute_pieces(self, day: date) -> tuple[Interval, ...]:
        if day in self.holidays:
            return ()
        local_midnight = (day - _EPOCH).days * DAY_MS  # local wall time as if it were UTC
        found: list[Interval] = []
        for start, end in self.hours[day.weekday()]:
            wall_lo, wall_hi = local_midnight + start, local_midnight + end
            for seg_lo, seg_hi, offset in self._segments(wall_lo - _MARGIN_MS,
                                                         wall_hi + _MARGIN_MS):
                lo, hi = max(wall_lo - offset, seg_lo), min(wall_hi - offset, seg_hi)
                if lo < hi:
                    found.append((lo, hi))
        return tuple(sorted(found))

    def _segments(self, lo: int, hi: int) -> list[tuple[int, int, int]]:
        """`[lo, hi)` in UTC ms cut where the zone's UTC offset changes: (start, end, offset)."""
        out: list[tuple[int, int, int]] = []
        while True:
            offset = self._offset(lo)
            if self._offset(hi) == offset:
                out.append((lo, hi, offset))
                return out
            a, b = lo, hi  # offset(a) == offset, offset(b) != offset: find the first change
            while b - a > 1:
                mid = (a + b) // 2
                if self._offset(mid) == offset:
                    a = mid
                else:
                    b = mid
            out.append((lo, b, offset))
            lo = b

    def _offset(self, utc_ms: int) -> int:
        moment = datetime.fromtimestamp(utc_ms // 1000, UTC).astimezone(self.zone)
        delta = moment.utcoffset()
        return int(delta.total_seconds() * 1000) if delta is not None else 0

    def _local_date(self, utc_ms: int) -> date:
        return datetime.fromtimestamp(utc_ms // 1000, UTC).astimezone(self.zone).date()

    def _day_start_utc(self, day: date) -> int:
        return (day - _EPOCH).days * DAY_MS

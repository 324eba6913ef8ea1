"""Business calendars: due times in business time against a minute-by-minute oracle, DST nights,
holidays, and the calendar files' checks."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from state.calendar import Calendar
from state.durations import BusinessDuration, parse_business
from tests.strategies import CALENDAR_ZONES, week_hours

MINUTE = 60_000
HOUR = 3_600_000


def _ms(text: str, zone: str) -> int:
    """A local wall time in `zone` as UTC ms."""
    moment = datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))
    return int(moment.timestamp() * 1000)


def _business(text: str) -> BusinessDuration:
    """A business duration as written in a definition."""
    found = parse_business(text)
    assert found is not None, text
    return found


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _office(zone: str = "Europe/Berlin", holidays: frozenset[date] = frozenset()) -> Calendar:
    """Mon-Fri 08:00-12:00 and 13:00-17:00."""
    day = ((8 * HOUR, 12 * HOUR), (13 * HOUR, 17 * HOUR))
    return Calendar("office", ZoneInfo(zone), (day,) * 5 + ((), ()), holidays)


class MinuteOracle:
    """Steps through UTC minutes and asks zoneinfo for each one's local wall time: independent of
    `Calendar`'s offset segments (valid where starts, intervals and zone changes are on whole
    minutes)."""

    def __init__(self, calendar: Calendar) -> None:
        self.calendar = calendar

    def local_day(self, minute_ms: int) -> date | None:
        """The local date of a working minute, None for a minute off work."""
        local = datetime.fromtimestamp(minute_ms / 1000, UTC).astimezone(self.calendar.zone)
        if local.date() in self.calendar.holidays:
            return None
        since_midnight = (local.hour * 60 + local.minute) * MINUTE
        for start, end in self.calendar.hours[local.weekday()]:
            if start <= since_midnight < end:
                return local.date()
        return None

    def due_ms(self, start_ms: int, duration: BusinessDuration) -> int:
        """Count working minutes (hours), or working days and minutes into the day (days)."""
        minute = start_ms
        while self.local_day(minute) is None:
            minute += MINUTE
        if duration.unit != "days":
            left = duration.ms // MINUTE
            if left == 0:
                return minute
            while True:
                if self.local_day(minute) is not None:
                    left -= 1
                    if left == 0:
                        return minute + MINUTE
                minute += MINUTE
        day0 = self.local_day(minute)
        if duration.amount == 0:
            return minute
        elapsed, back = 0, minute - MINUTE
        while back > minute - 2 * 86_400_000:  # working minutes of day 0 before the start
            if self.local_day(back) == day0:
                elapsed += 1
            back -= MINUTE
        seen, day, cursor = 0, day0, minute
        while seen < duration.amount:
            cursor += MINUTE
            found = self.local_day(cursor)
            if found is not None and found != day:
                seen, day = seen + 1, found
        last = cursor
        while True:  # minutes of the target day, from its first one
            found = self.local_day(cursor)
            if found == day:
                if elapsed == 0:
                    return cursor
                elapsed -= 1
                last = cursor
            elif found is not None or cursor - last > 86_400_000:
                return last + MINUTE
            cursor += MINUTE


@st.composite
def calendars(draw: st.DrawFn) -> Calendar:
    """A random calendar: zone, weekly intervals, a few holidays near the DST changes of 2026."""
    zone = draw(st.sampled_from(CALENDAR_ZONES))
    near = [date(2026, 3, 8), date(2026, 3, 29), date(2026, 4, 5), date(2026, 10, 4),
            date(2026, 10, 25), date(2026, 11, 1)]
    holidays = draw(st.sets(st.builds(lambda d, n: d + timedelta(days=n),
                                      st.sampled_from(near), st.integers(-3, 3)), max_size=4))
    return Calendar("random", ZoneInfo(zone), draw(week_hours()), frozenset(holidays))


STARTS = st.sampled_from([date(2026, 3, 6), date(2026, 3, 27), date(2026, 4, 3),
                          date(2026, 10, 2), date(2026, 10, 23), date(2026, 10, 30)]).flatmap(
    lambda d: st.integers(0, 4 * 24 * 60).map(
        lambda m: int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)
        + m * MINUTE))


@settings(max_examples=300, deadline=None)
@given(calendars(), STARTS, st.integers(0, 30 * 60))
def test_business_minutes_match_the_minute_oracle(calendar: Calendar, start_ms: int,
                                                  minutes: int) -> None:
    """For random calendars, zones, starts around DST changes and working-time amounts, the due
    time equals the one found by counting working minutes one by one."""
    duration = BusinessDuration(minutes, "minutes")
    assert _utc(calendar.due_ms(start_ms, duration)) == _utc(
        MinuteOracle(calendar).due_ms(start_ms, duration))


@settings(max_examples=100, deadline=None)
@given(calendars(), STARTS, st.integers(0, 4))
def test_business_days_match_the_minute_oracle(calendar: Calendar, start_ms: int,
                                               days: int) -> None:
    """For random calendars, zones and starts, N business days land where the oracle counting
    working dates minute by minute lands."""
    duration = BusinessDuration(days, "days")
    assert _utc(calendar.due_ms(start_ms, duration)) == _utc(
        MinuteOracle(calendar).due_ms(start_ms, duration))


@settings(max_examples=100, deadline=None)
@given(calendars(), STARTS, st.integers(0, 3 * 24 * 60))
def test_working_time_between_counts_working_minutes(calendar: Calendar, start_ms: int,
                                                     minutes: int) -> None:
    """The working time of a span equals its count of working minutes."""
    oracle = MinuteOracle(calendar)
    end_ms = start_ms + minutes * MINUTE
    expected = sum(oracle.local_day(m) is not None for m in range(start_ms, end_ms, MINUTE))
    assert calendar.working_ms_between(start_ms, end_ms) == expected * MINUTE


def test_friday_evening_starts_at_monday_opening() -> None:
    """An event after Friday's close starts the clock at Monday 08:00: 8 business hours end
    Monday 17:00, 2 business days end Wednesday 08:00."""
    calendar = _office()
    friday_evening = _ms("2026-05-08T18:30", "Europe/Berlin")
    assert calendar.due_ms(friday_evening, _business("8 business hours")) == _ms(
        "2026-05-11T17:00", "Europe/Berlin")
    assert calendar.due_ms(friday_evening, _business("2 business days")) == _ms(
        "2026-05-13T08:00", "Europe/Berlin")


def test_hours_skip_lunch_and_the_night() -> None:
    """Friday 15:00 + 3 business hours: 2 hours on Friday, one on Monday, so Monday 09:00."""
    calendar = _office()
    assert calendar.due_ms(_ms("2026-05-08T15:00", "Europe/Berlin"),
                           _business("3 business hours")) == _ms("2026-05-11T09:00",
                                                                      "Europe/Berlin")


def test_armed_on_a_holiday_starts_the_next_working_day() -> None:
    """Armed on a holiday (Christmas Day, a Friday), 1 business day is due at the same position on
    the working day after the first working day: Tuesday 08:00 (Monday opens the clock)."""
    calendar = _office(holidays=frozenset({date(2026, 12, 25)}))
    christmas = _ms("2026-12-25T10:00", "Europe/Berlin")
    assert calendar.due_ms(christmas, _business("1 business days")) == _ms(
        "2026-12-29T08:00", "Europe/Berlin")
    assert calendar.due_ms(christmas, _business("4 business hours")) == _ms(
        "2026-12-28T12:00", "Europe/Berlin")


def test_a_day_at_2359_local() -> None:
    """At 23:59 local (off work), the clock starts at the next opening; inside a night shift
    that runs to 24:00, one working minute ends exactly at local midnight."""
    assert _office("America/New_York").due_ms(
        _ms("2026-05-12T23:59", "America/New_York"),
        _business("30 business minutes")) == _ms("2026-05-13T08:30", "America/New_York")
    night = (((22 * HOUR, 24 * HOUR),),) * 7
    calendar = Calendar("night", ZoneInfo("America/New_York"), night)
    assert calendar.due_ms(_ms("2026-05-12T23:59", "America/New_York"),
                           _business("1 business minutes")) == _ms(
        "2026-05-13T00:00", "America/New_York")


def test_dst_nights_count_real_time() -> None:
    """A night interval 01:00-05:00 holds 3 real hours on the spring night and 5 on the autumn
    night in Berlin; Lord Howe's spring night loses 30 minutes."""
    night = (((HOUR, 5 * HOUR),),) * 7
    berlin = Calendar("night", ZoneInfo("Europe/Berlin"), night)
    spring, autumn = _ms("2026-03-29T01:00", "Europe/Berlin"), _ms("2026-10-25T01:00",
                                                                   "Europe/Berlin")
    assert berlin.working_ms_between(spring, spring + 86_400_000 // 2) == 3 * HOUR
    assert berlin.working_ms_between(autumn, autumn + 86_400_000 // 2) == 5 * HOUR
    assert berlin.due_ms(spring, _business("3 business hours")) == spring + 3 * HOUR
    lord_howe = Calendar("night", ZoneInfo("Australia/Lord_Howe"), night)
    start = _ms("2026-10-04T01:00", "Australia/Lord_Howe")
    assert lord_howe.working_ms_between(start, start + 86_400_000 // 2) == 3 * HOUR + HOUR // 2


def test_days_keep_the_wall_time_across_a_dst_change() -> None:
    """Friday 10:00 before the spring change + 1 business day is Monday 10:00 local, 71 real
    hours later instead of 72."""
    start = _ms("2026-03-27T10:00", "Europe/Berlin")
    due = _office().due_ms(start, _business("1 business days"))
    assert due == _ms("2026-03-30T10:00", "Europe/Berlin")
    assert due - start == 71 * HOUR


def test_a_shorter_target_day_ends_at_its_close() -> None:
    """Thursday 16:00 (7 working hours into a long day) + 1 business day on a 4-hour Friday is due
    at Friday's close."""
    long_day, short_day = ((8 * HOUR, 17 * HOUR),), ((8 * HOUR, 12 * HOUR),)
    calendar = Calendar("short friday", ZoneInfo("UTC"), (long_day,) * 4 + (short_day, (), ()))
    assert calendar.due_ms(_ms("2026-05-07T16:00", "UTC"),
                           _business("1 business days")) == _ms("2026-05-08T12:00", "UTC")


def test_boundaries_as_the_readme_states_them() -> None:
    """Hours that end exactly at a close are due at the close (Monday 08:00 + 4 business hours is
    12:00, not 13:00); a business-day position at a break is the next opening (Monday 13:00 + 1
    business day is Tuesday 13:00); zero business hours off work is the next opening."""
    calendar = _office()
    monday = "2026-05-11T"
    assert calendar.due_ms(_ms(monday + "08:00", "Europe/Berlin"),
                           _business("4 business hours")) == _ms(monday + "12:00",
                                                                      "Europe/Berlin")
    assert calendar.due_ms(_ms(monday + "13:00", "Europe/Berlin"),
                           _business("1 business days")) == _ms("2026-05-12T13:00",
                                                                     "Europe/Berlin")
    assert calendar.due_ms(_ms(monday + "12:30", "Europe/Berlin"),
                           _business("0 business hours")) == _ms(monday + "13:00",
                                                                      "Europe/Berlin")

"""The `time` attribute's edges: which stamps `schemas.decode` accepts (and as which UTC ms) and
which it refuses, now that the usual stamp is read by `datetime`'s C parser.

`datetime.fromisoformat` takes more than RFC 3339 (a comma before the fraction, no seconds, any
date-time separator, `+hhmm`, basic format) and less (a lower-case `z`), so the RFC 3339 pattern
still decides what is a stamp. Every case here was checked against the decoder before the C
parser (regular expressions and cached minutes) with the same verdict.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.decode import decode
from schemas.event import DeadLetter, Event, RawRecord
from tests.test_decode import closed, dead, event, record, rules, utc_ms

HOUR_MS, MINUTE_MS = 3_600_000, 60_000


@pytest.mark.parametrize(("stamp", "expected"), [
    pytest.param("2024-03-05T09:20:30.123Z", utc_ms(2024, 3, 5, 9, 20, 30, 123), id="usual"),
    pytest.param("2024-03-05T09:20:30.9999999Z", utc_ms(2024, 3, 5, 9, 20, 30, 999),
                 id="seven_fraction_digits_truncated"),
    pytest.param("2024-03-05T09:20:30.123456789012+05:30",
                 utc_ms(2024, 3, 5, 3, 50, 30, 123), id="twelve_fraction_digits_with_offset"),
    pytest.param("2024-03-05T09:20:30.5Z", utc_ms(2024, 3, 5, 9, 20, 30, 500),
                 id="one_fraction_digit"),
    pytest.param("2024-03-05t09:20:30Z", utc_ms(2024, 3, 5, 9, 20, 30), id="lower_case_t"),
    pytest.param("2024-03-05T09:20:30z", utc_ms(2024, 3, 5, 9, 20, 30), id="lower_case_z"),
    pytest.param("2024-03-05T09:20:30.123z", utc_ms(2024, 3, 5, 9, 20, 30, 123),
                 id="lower_case_z_with_fraction"),
    pytest.param("2024-03-05 09:20:30+01:00", utc_ms(2024, 3, 5, 8, 20, 30), id="space"),
    pytest.param("2024-03-05T09:20:30-00:00", utc_ms(2024, 3, 5, 9, 20, 30), id="minus_zero"),
    pytest.param("2024-03-05T09:20:30+23:59", utc_ms(2024, 3, 5, 9, 20, 30) - 1439 * MINUTE_MS,
                 id="largest_offset"),
    pytest.param("2024-03-05T09:20:30.5-23:59",
                 utc_ms(2024, 3, 5, 9, 20, 30, 500) + 1439 * MINUTE_MS, id="smallest_offset"),
    # Not RFC 3339 (minutes up to 59), but accepted before as now: the offset reads as +02:00.
    pytest.param("2024-03-05T09:20:30+01:60", utc_ms(2024, 3, 5, 7, 20, 30),
                 id="offset_minute_60"),
    pytest.param("2024-02-29T23:59:59.999Z", utc_ms(2024, 2, 29, 23, 59, 59, 999),
                 id="leap_day"),
])
def test_accepted_stamp_edges(stamp: str, expected: int) -> None:
    """Each accepted form gives its exact UTC millisecond."""
    assert event(closed(time=stamp)).time_ms == expected


@pytest.mark.parametrize("stamp", [
    pytest.param("2024-03-05T09:20:30,123Z", id="comma_fraction"),
    pytest.param("2024-03-05T09:20Z", id="no_seconds"),
    pytest.param("2024-03-05T09:20:30.Z", id="empty_fraction"),
    pytest.param("2024-03-05X09:20:30Z", id="other_separator"),
    pytest.param("2024-03-05T24:00:00Z", id="hour_24"),
    pytest.param("2024-03-05T23:59:60Z", id="leap_second"),
    pytest.param("2023-02-29T09:20:30Z", id="no_leap_day"),
    pytest.param("2024-03-05T09:20:30+24:00", id="offset_hour_24"),
    pytest.param("2024-03-05T09:20:30+01:00:30", id="offset_with_seconds"),
    pytest.param("2024-03-05T09:20:30+01", id="offset_hours_only"),
    pytest.param("2024-03-05T09:20:30+0100", id="offset_without_colon"),
    pytest.param("2024-03-05T09:20:30ZZ", id="two_zones"),
    pytest.param("2024-03-05T09:20:30Z\n", id="trailing_newline"),
    pytest.param(" 2024-03-05T09:20:30Z", id="leading_space"),
    pytest.param("2024-03-05T09:20:30.12a3Z", id="letter_in_fraction"),
])
def test_refused_stamp_edges(stamp: str) -> None:
    """Each form the C parser takes, or cannot take, that is not an RFC 3339 stamp is
    `invalid_attribute`, with the message that shows a valid one."""
    out = dead(closed(time=stamp), "invalid_attribute")
    assert out.message == (f"attribute 'time' is {stamp!r}, not an RFC 3339 timestamp; write one "
                           "such as '2024-05-01T12:00:00Z'")


def test_year_zero_after_the_offset_is_out_of_range_not_an_error() -> None:
    """A stamp whose UTC instant falls before year 1 (it overflows `datetime`) is out of range."""
    dead(closed(time="0001-01-01T00:30:00+01:00"), "time_out_of_range")


DIGITS = st.integers(0, 99).map(lambda n: f"{n:02}")
FRACTIONS = st.sampled_from(["", ".", ","]).flatmap(
    lambda mark: st.just(mark) if not mark else st.text("0123456789", max_size=12).map(
        lambda digits: mark + digits))
ZONES = st.sampled_from(["", "Z", "z", "+01", "+0100", "+01:00:30"]) | st.builds(
    lambda sign, hours, minutes: f"{sign}{hours}:{minutes}", st.sampled_from("+-"), DIGITS,
    DIGITS)
STAMPS = st.builds(
    lambda year, month, day, separator, hour, minute, second, fraction, zone:
        f"{year:04}-{month}-{day}{separator}{hour}:{minute}:{second}{fraction}{zone}",
    st.integers(1999, 2201), DIGITS, DIGITS, st.sampled_from("Tt X"), DIGITS, DIGITS, DIGITS,
    FRACTIONS, ZONES)


def _general_time(the_record: RawRecord) -> Event | DeadLetter:
    """What `decode` gives when the C parser's shortcut is switched off (every stamp read by the
    general way: the pattern, then `fromisoformat` on the normalised text)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("schemas.decode._stamp_ms", lambda text: None)
        return decode(the_record, rules())


@given(stamp=STAMPS, arrived_h=st.integers(0, 3))
@settings(derandomize=True, database=None, deadline=None, max_examples=600)
def test_c_parser_shortcut_agrees_with_the_general_time_parser(stamp: str, arrived_h: int) -> None:
    """Near-stamps of every shape (any fraction, offset, separator, impossible fields) reach the
    same event or dead letter with and without the shortcut."""
    arrived = utc_ms(2024, 3, 5) + arrived_h * HOUR_MS if arrived_h else 0
    the_record = record(json.dumps(closed(time=stamp)).encode(), arrived_ms=arrived)
    assert decode(the_record, rules()) == _general_time(the_record)

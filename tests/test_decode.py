"""`schemas.decode.decode`: bytes in, an `Event` or a `DeadLetter` out, and never an exception.

Most tests use small rules built here (a `support` workflow with a two-version `TicketOpened`
payload and its upcaster), so they depend on nothing but the decoder; a few at the end run against
the bundled definitions.
"""

from __future__ import annotations

import calendar
import dataclasses
import json
import zlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field

from connectors.arrow_rows import rows_to_table
from schemas.decode import MAX_TIME_MS, MIN_TIME_MS, DecodeRules, Route, decode
from schemas.event import DeadLetter, Event, RawRecord
from schemas.payloads.bundled import bundled_registry
from schemas.payloads.registry import PayloadRegistry
from schemas.tables import DEAD_LETTERS
from state.catalog import load_catalog
from state.output import Out

# The reasons the decoder documents (module docstring of `schemas.decode`); `decoder_error`, its
# last-resort catch, is deliberately not among them: no input may reach it.
REASONS = frozenset({
    "too_large", "malformed_json", "not_cloudevent", "missing_attribute", "invalid_attribute",
    "unknown_type", "unknown_version", "payload_invalid", "source_error", "time_out_of_range",
})
AMSTERDAM = ZoneInfo("Europe/Amsterdam")
HOUR_MS = 3_600_000
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
DEFINITIONS = Path(__file__).resolve().parent.parent / "definitions"


def utc_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
           millis: int = 0) -> int:
    """UTC milliseconds by integer arithmetic, independent of the decoder's own conversion."""
    return calendar.timegm((year, month, day, hour, minute, second)) * 1000 + millis


# -- payload models of the test workflow -------------------------------------------------------


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TicketOpenedV1(_Payload):
    """The legacy shape: the id was called `ticket` and priority was a number from 1 to 5."""

    ticket: str = Field(min_length=1)
    priority: int = Field(ge=1, le=5)


class TicketOpenedV2(_Payload):
    ticket_id: str = Field(min_length=1)
    priority: Literal["low", "high"]
    channel: str


class TicketClosed(_Payload):
    resolution: str


def ticket_opened_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Renames the id field, so a v1 event only finds its instance if it really was upcast."""
    return {"ticket_id": data["ticket"], "priority": "high" if data["priority"] >= 3 else "low",
            "channel": "email"}


def registry() -> PayloadRegistry:
    reg = PayloadRegistry()
    reg.register("TicketOpened", 1, TicketOpenedV1)
    reg.register("TicketOpened", 2, TicketOpenedV2)
    reg.register_upcaster("TicketOpened", 1, ticket_opened_v1_to_v2)
    reg.register("TicketClosed", 1, TicketClosed)
    return reg


SUPPORT_BY_DATA = Route("support", id_field="ticket_id")
SUPPORT_BY_SUBJECT = Route("support")


def rules(*, catch_all: Route | None = None, max_bytes: int = 4096,
          max_future_skew_ms: int | None = HOUR_MS) -> DecodeRules:
    """`TicketOpened` finds its instance in data, `TicketClosed` in the subject; `Escalated` has
    no payload model (its data is not validated) and `TillSale` stamps local Amsterdam time."""
    return DecodeRules(
        routes={
            "TicketOpened": SUPPORT_BY_DATA,
            "TicketClosed": SUPPORT_BY_SUBJECT,
            "Escalated": Route("support", id_field="ticket_id"),
            "TillSale": Route("till", assume_zone=AMSTERDAM),
        },
        registry=registry(),
        catch_all=catch_all,
        max_bytes=max_bytes,
        max_future_skew_ms=max_future_skew_ms,
    )


def closed(**changes: Any) -> dict[str, Any]:
    """A valid `TicketClosed` CloudEvent (instance id in `subject`); `None` removes a key."""
    body = {"specversion": "1.0", "id": "evt-1", "source": "/helpdesk", "type": "TicketClosed",
            "time": "2024-03-05T10:20:30.456+01:00", "subject": "T-7",
            "data": {"resolution": "fixed"}}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def opened(data: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """A valid v2 `TicketOpened` CloudEvent (instance id in `data.ticket_id`)."""
    payload = data if data is not None else {"ticket_id": "T-9", "priority": "high",
                                             "channel": "chat"}
    return closed(**{"type": "TicketOpened", "subject": None, "dataversion": "2", "data": payload,
                     **changes})


def record(body: dict[str, Any] | bytes, *, headers: tuple[tuple[str, bytes], ...] = (),
           arrived_ms: int = 0, offset: int = 17) -> RawRecord:
    value = body if isinstance(body, bytes) else json.dumps(body).encode()
    return RawRecord(source="tickets", partition=3, offset=offset, value=value, key=b"k-1",
                     headers=headers, arrived_ms=arrived_ms)


def event(body: dict[str, Any] | bytes, the_rules: DecodeRules | None = None, **kw: Any) -> Event:
    out = decode(record(body, **kw), the_rules or rules())
    assert isinstance(out, Event), out
    return out


def dead(body: dict[str, Any] | bytes, reason: str, the_rules: DecodeRules | None = None,
         **kw: Any) -> DeadLetter:
    rec = record(body, **kw)
    out = decode(rec, the_rules or rules())
    assert isinstance(out, DeadLetter), out
    assert out.reason == reason, out
    assert out.record is rec
    return out


# -- valid events ------------------------------------------------------------------------------


def test_structured_event_becomes_an_event_with_every_field() -> None:
    """A valid structured-mode CloudEvent yields its id, type, UTC time, workflow, subject as
    instance id, and the record's coordinates."""
    out = event(closed(), arrived_ms=utc_ms(2024, 3, 5, 9, 21))
    assert out == Event(
        event_id="evt-1", type="TicketClosed", time_ms=utc_ms(2024, 3, 5, 9, 20, 30, 456),
        workflow_type="support", instance_id="T-7", source="tickets", partition=3, offset=17,
        arrived_ms=utc_ms(2024, 3, 5, 9, 21), body_crc=out.body_crc, sequence=None, trace_id=None,
    )
    assert out.instance_key == "support/T-7"


def test_instance_id_comes_from_the_data_field_the_route_names() -> None:
    """A route with `id_field` takes the instance id from that payload field, not the subject."""
    out = event(opened(subject="not-this"))
    assert (out.workflow_type, out.instance_id) == ("support", "T-9")


@pytest.mark.parametrize(("stamp", "expected"), [
    ("2024-03-05T09:20:30Z", utc_ms(2024, 3, 5, 9, 20, 30)),
    ("2024-03-05T09:20:30.1Z", utc_ms(2024, 3, 5, 9, 20, 30, 100)),
    ("2024-03-05T09:20:30.123456789Z", utc_ms(2024, 3, 5, 9, 20, 30, 123)),
    ("2024-03-05T04:20:30-05:00", utc_ms(2024, 3, 5, 9, 20, 30)),
    ("2024-03-05t09:20:30z", utc_ms(2024, 3, 5, 9, 20, 30)),
    ("2024-03-05 09:20:30Z", utc_ms(2024, 3, 5, 9, 20, 30)),
    # `int(dt.timestamp() * 1000)` made this 2191831821034: float rounding lost a millisecond.
    ("2039-06-16T10:10:21.035Z", utc_ms(2039, 6, 16, 10, 10, 21, 35)),
])
def test_rfc3339_time_becomes_exact_utc_milliseconds(stamp: str, expected: int) -> None:
    """Every RFC 3339 form (offsets, fractions, lower-case t/z, space) gives the exact UTC ms."""
    assert event(closed(time=stamp)).time_ms == expected


@given(millis=st.integers(MIN_TIME_MS, MAX_TIME_MS - 1),
       offset_min=st.integers(-23 * 60 - 59, 23 * 60 + 59))
@settings(derandomize=True, database=None, deadline=None, max_examples=300)
def test_time_ms_round_trips_every_millisecond(millis: int, offset_min: int) -> None:
    """Any instant in range, written with any UTC offset, decodes to exactly its millisecond."""
    zone = timezone(timedelta(minutes=offset_min))
    stamp = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)).astimezone(zone)
    text = stamp.isoformat(timespec="milliseconds")
    assert event(closed(time=text)).time_ms == millis


@pytest.mark.parametrize(("local", "expected"), [
    ("2024-01-15T09:30:00", utc_ms(2024, 1, 15, 8, 30)),  # CET, UTC+1
    ("2024-07-15T09:30:00.250", utc_ms(2024, 7, 15, 7, 30, 0, 250)),  # CEST, UTC+2
])
def test_naive_time_is_read_in_the_routes_zone(local: str, expected: int) -> None:
    """A stamp without offset on a route with `assume_zone` is local time there, DST included."""
    out = event(closed(type="TillSale", time=local, data=None))
    assert (out.workflow_type, out.time_ms) == ("till", expected)


def test_valid_traceparent_gives_its_trace_id() -> None:
    """The trace id of a well-formed W3C `traceparent` is carried on the event."""
    assert event(closed(traceparent=TRACEPARENT)).trace_id == TRACE_ID


@pytest.mark.parametrize("traceparent", [
    "garbage",
    f"00-{TRACE_ID[:-1]}-00f067aa0ba902b7-01",  # trace id one digit short
    f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01",  # upper case is not allowed
    f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id is invalid
    f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id is invalid
    f"ff-{TRACE_ID}-00f067aa0ba902b7-01",  # version ff is invalid
    TRACEPARENT + "\n",
    "",
    42,
    4.5,
    True,
    [TRACEPARENT],
    {"trace": TRACE_ID},
])
def test_malformed_traceparent_is_dropped_not_dead_lettered(traceparent: object) -> None:
    """A broken `traceparent`, even one that is not text, gives `trace_id=None`, not a dead
    letter."""
    assert event(closed(traceparent=traceparent)).trace_id is None


@pytest.mark.parametrize(("sequence", "expected"), [("42", 42), (7, 7), ("-3", -3), ("0", 0)])
def test_sequence_becomes_an_int(sequence: object, expected: int) -> None:
    """The `sequence` extension, decimal string or JSON integer, becomes an int."""
    assert event(closed(sequence=sequence)).sequence == expected


def test_body_crc_tells_identical_bytes_from_a_different_body() -> None:
    """Identical bytes give the same `body_crc` (a redelivery); a different body another one."""
    first = event(closed(), offset=1)
    again = event(closed(), offset=2)
    other = event(closed(data={"resolution": "wont_fix"}), offset=3)
    assert first.body_crc == again.body_crc == zlib.crc32(json.dumps(closed()).encode())
    assert other.body_crc != first.body_crc
    assert other.event_id == first.event_id


# -- upcasting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", 1, None])
def test_v1_payload_is_validated_as_v1_and_upcast(version: object) -> None:
    """A v1 payload (`dataversion` "1", 1 or absent) validates as v1 and is upcast: the renamed
    id field of v2 finds the instance."""
    out = event(opened({"ticket": "T-1", "priority": 4}, dataversion=version))
    assert out.instance_id == "T-1"


def test_v1_payload_is_not_validated_as_v2() -> None:
    """A v2-shaped payload labelled v1 is refused by the v1 model, naming the v1 field."""
    out = dead(opened(dataversion="1"), "payload_invalid")
    assert out.message.startswith("data.ticket: ")
    assert "TicketOpened v1" in out.message


def test_v2_payload_is_validated_directly() -> None:
    """A v2 payload validates against the newest model without upcasting."""
    assert event(opened(dataversion="2")).instance_id == "T-9"


# -- binary content mode -----------------------------------------------------------------------


def _as_headers(body: dict[str, Any]) -> tuple[tuple[str, bytes], ...]:
    attrs = [(f"ce_{k}", str(v).encode()) for k, v in body.items() if k != "data"]
    return (("content-type", b"application/json"), *attrs, ("x-other", b"\xff\x00"))


def test_binary_mode_decodes_like_structured_mode() -> None:
    """The same event as `ce_*` headers plus JSON data equals the structured one but for
    `body_crc`."""
    body = opened(sequence="5", traceparent=TRACEPARENT)
    structured = event(body)
    binary = event(json.dumps(body["data"]).encode(), headers=_as_headers(body))
    assert binary.body_crc != structured.body_crc
    assert dataclasses.replace(binary, body_crc=structured.body_crc) == structured
    assert (binary.sequence, binary.trace_id, binary.instance_id) == (5, TRACE_ID, "T-9")


def test_binary_mode_header_that_is_not_utf8_is_a_dead_letter() -> None:
    """Invalid UTF-8 in a `ce_` header is an `invalid_attribute` dead letter naming the header."""
    headers = (*_as_headers(closed())[:-1], ("ce_id", b"\xff\xfe\x80"))
    out = dead(b'{"resolution": "fixed"}', "invalid_attribute", headers=headers)
    assert "'ce_id'" in out.message
    assert "UTF-8 text" in out.message


def test_binary_mode_header_without_value_counts_as_absent() -> None:
    """A `ce_` header with a null value (Kafka allows it) is an absent attribute, not a crash."""
    headers: Any = (*_as_headers(closed(id=None)), ("ce_id", None))
    out = dead(b'{"resolution": "fixed"}', "missing_attribute", headers=headers)
    assert "'id'" in out.message


@pytest.mark.parametrize("value", [b'{"resolution": ', b"\xff\xfe{}", b'{"r": "\\ud800"}',
                                   b"[" * 1000])
def test_binary_mode_bad_data_is_malformed_json(value: bytes) -> None:
    """Binary-mode data that the structured parser would refuse (truncated, not UTF-8, a lone
    surrogate, nested too deep) is `malformed_json`."""
    out = dead(value, "malformed_json", headers=_as_headers(closed()))
    assert "binary-mode data is not valid JSON" in out.message
    assert "send the data as one UTF-8 JSON object" in out.message


# -- dead letters, reason by reason ------------------------------------------------------------


def test_too_large_is_checked_before_parsing() -> None:
    """A value over `max_bytes` is `too_large` even when it is not JSON; at the limit it is read."""
    out = dead(b"\xff" * 4097, "too_large")
    assert out.message == "value is 4097 bytes; the limit is 4096 (--max-event-bytes)"
    body = closed(data={"resolution": ""})
    padding = 4096 - len(json.dumps(body).encode())
    assert isinstance(decode(record(closed(data={"resolution": "x" * padding})), rules()), Event)


@pytest.mark.parametrize("value", [b'{"specversion": "1.0", "id": "e', b'{"id": "\xff\xfe"}', b"",
                                   b"{} {}", b"{'id': 'e'}"])
def test_unparseable_value_is_malformed_json(value: bytes) -> None:
    """Truncated JSON, non-UTF-8 bytes, an empty value and trailing garbage are
    `malformed_json`."""
    out = dead(value, "malformed_json")
    assert out.message.startswith("not valid JSON: ")
    assert "send one UTF-8 JSON object" in out.message
    assert (out.event_id, out.event_type) == (None, None)


@pytest.mark.parametrize(("body", "fragment"), [
    (b"[1, 2]", "send a JSON object with 'specversion': '1.0'"),
    (b'"TicketClosed"', "send a JSON object with 'specversion': '1.0'"),
    (closed(specversion=None), "add \"specversion\": \"1.0\""),
    (closed(specversion="0.3"), "specversion is '0.3'"),
    (closed(specversion="0.3", time=None), "specversion is '0.3'"),  # not "add 'time'"
    (closed(specversion=1.0), "it must be the string \"1.0\""),
])
def test_json_that_is_not_a_cloudevent(body: dict[str, Any] | bytes, fragment: str) -> None:
    """An array, a string, no `specversion`, or another CloudEvents version is `not_cloudevent`."""
    out = dead(body, "not_cloudevent")
    assert fragment in out.message


@pytest.mark.parametrize("attribute", ["id", "source", "type", "time"])
def test_missing_required_attribute(attribute: str) -> None:
    """Each required attribute, when missing, is `missing_attribute` naming it and saying add
    it."""
    out = dead(closed(**{attribute: None}), "missing_attribute")
    expected = f"required CloudEvents attribute {attribute!r} is missing; add it"
    assert out.message.startswith(expected)


def test_missing_subject_when_the_instance_id_comes_from_it() -> None:
    """No `subject` on a subject-keyed route is `missing_attribute` naming the definition."""
    out = dead(closed(subject=None), "missing_attribute")
    assert out.message == ("attribute 'subject' is missing; add it: the 'support' definition "
                           "takes the instance id from it")
    assert (out.event_id, out.event_type) == ("evt-1", "TicketClosed")


@pytest.mark.parametrize("data", [{"reason": "vip"}, {"ticket_id": ""}, None])
def test_missing_data_field_when_the_instance_id_comes_from_it(data: dict[str, Any] | None) -> None:
    """No (or an empty) id field in the data of a data-keyed route is `missing_attribute`."""
    out = dead(closed(type="Escalated", data=data), "missing_attribute")
    assert out.message.startswith("data.ticket_id is missing; add it: the 'support' definition")


@pytest.mark.parametrize("value", [True, 1.5, ["T-1"], {"id": "T-1"}, "T" * 513])
def test_instance_id_from_unvalidated_data_must_be_text_or_integer(value: object) -> None:
    """An id field that is no short string or integer (possible without a payload model) is
    `invalid_attribute`."""
    out = dead(closed(type="Escalated", data={"ticket_id": value}), "invalid_attribute")
    assert out.message.startswith("data.ticket_id is ")
    assert "must be a string of at most 512 characters or a whole number" in out.message


def test_integer_instance_id_from_unvalidated_data_is_accepted() -> None:
    """A whole-number id field becomes its decimal text."""
    assert event(closed(type="Escalated", data={"ticket_id": 1234})).instance_id == "1234"


@pytest.mark.parametrize("stamp", [
    "yesterday", "2024-03-05", "2024-03-05T09", "2024-W10-2T09:00:00Z", "20240305T092030Z",
    "2024-03-05T09:20:30+0100", "2024-03-05T09:20:30Z ", "2024-13-05T09:20:30Z",
    "\uff12\uff10\uff12\uff14-03-05T09:20:30Z",  # full-width digits
])
def test_time_that_is_not_rfc3339_is_invalid(stamp: str) -> None:
    """Dates alone, week dates, basic ISO 8601, bad offsets, impossible dates and non-ASCII
    digits are `invalid_attribute`."""
    out = dead(closed(time=stamp), "invalid_attribute")
    assert out.message == (f"attribute 'time' is {stamp!r}, not an RFC 3339 timestamp; write one "
                           "such as '2024-05-01T12:00:00Z'")


def test_naive_time_without_assumed_zone_is_invalid() -> None:
    """A stamp without offset on a route without `assume_zone` is refused, pointing at the fix."""
    out = dead(closed(time="2024-03-05T09:20:30"), "invalid_attribute")
    assert out.message == ("attribute 'time' '2024-03-05T09:20:30' has no UTC offset; add one, or "
                           "set 'naive_time_zone' in the 'support' definition")


@pytest.mark.parametrize("sequence", ["abc", "1.5", "", " 7", "1_000", "\u0663", "9" * 20])
def test_sequence_that_is_not_decimal_is_invalid(sequence: str) -> None:
    """A `sequence` that is not plain ASCII decimal text is `invalid_attribute`."""
    out = dead(closed(sequence=sequence), "invalid_attribute")
    assert out.message.startswith(f"extension 'sequence' is {sequence!r}")
    assert "send a decimal string such as \"42\"" in out.message


@pytest.mark.parametrize("sequence", [True, 2.0, [1]])
def test_sequence_of_wrong_json_type_is_invalid(sequence: object) -> None:
    """A `sequence` that is a JSON boolean, float or list is `invalid_attribute` naming it."""
    out = dead(closed(sequence=sequence), "invalid_attribute")
    assert out.message.startswith("attribute 'sequence': ")
    assert out.message.endswith("it must be a decimal string such as \"42\"")


@pytest.mark.parametrize(("attribute", "value", "expected"), [
    ("id", "", "a non-empty string of at most 512 characters"),
    ("id", 17, "a non-empty string of at most 512 characters"),
    ("source", "", "a non-empty string of at most 1024 characters"),
    ("subject", ["T-7"], "a string of at most 512 characters"),
    ("data", [1, 2], "a JSON object"),
    ("data", "{\"resolution\": \"fixed\"}", "a JSON object"),
])
def test_attribute_of_wrong_shape_is_invalid(attribute: str, value: object, expected: str) -> None:
    """An attribute of the wrong type or length is `invalid_attribute` naming it and its shape."""
    out = dead(closed(**{attribute: value}), "invalid_attribute")
    assert out.message.startswith(f"attribute {attribute!r}: ")
    assert f"; it must be {expected}" in out.message


def test_unknown_type() -> None:
    """A type no route knows (and no catch-all) is `unknown_type`, keeping id and type."""
    out = dead(closed(type="TicketReopened"), "unknown_type")
    assert out.message == ("type 'TicketReopened' belongs to no loaded workflow definition; add it "
                           "to a definition, or stop sending it to this input")
    assert (out.event_id, out.event_type) == ("evt-1", "TicketReopened")


def test_unregistered_payload_version_is_unknown_version() -> None:
    """`dataversion` "9" of a known type is `unknown_version`, listing the known versions."""
    out = dead(opened(dataversion="9"), "unknown_version")
    assert out.message.startswith("TicketOpened has no payload version 9; known versions: [1, 2]")
    assert "send one of those as 'dataversion'" in out.message


@pytest.mark.parametrize("version", ["abc", "2.0", "", "\u0662", True])
def test_dataversion_that_is_no_whole_number(version: object) -> None:
    """A `dataversion` that is not a whole number is refused naming the attribute (a boolean as an
    `invalid_attribute`, text as an `unknown_version`)."""
    out = decode(record(opened(dataversion=version)), rules())
    assert isinstance(out, DeadLetter)
    assert "'dataversion'" in out.message
    if isinstance(version, str):
        assert out.reason == "unknown_version"
        assert "it must be a whole number such as \"2\"" in out.message
    else:
        assert out.reason == "invalid_attribute"


@pytest.mark.parametrize(("data", "where"), [
    ({"ticket_id": "T-9", "priority": "urgent", "channel": "chat"}, "data.priority: "),
    ({"ticket_id": "T-9", "priority": "low"}, "data.channel: "),
    ({"ticket_id": "T-9", "priority": "low", "channel": "chat", "x": 1}, "data.x: "),
])
def test_payload_that_fails_its_model_is_payload_invalid(data: dict[str, Any], where: str) -> None:
    """A payload its model refuses is `payload_invalid`, naming `data.<field>` and the fix."""
    out = dead(opened(data), "payload_invalid")
    assert out.message.startswith(where)
    assert "(payload TicketOpened v2); fix the producer" in out.message
    assert (out.event_id, out.event_type) == ("evt-1", "TicketOpened")


@pytest.mark.parametrize("stamp", ["1970-01-01T00:00:00Z", "1999-12-31T23:59:59.999Z",
                                   "2200-01-01T00:00:00Z", "2300-06-01T12:00:00+02:00",
                                   "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59"])
def test_time_outside_2000_to_2200_is_out_of_range(stamp: str) -> None:
    """Stamps before 2000 or from 2200 on (clock bugs) are `time_out_of_range`."""
    out = dead(closed(time=stamp), "time_out_of_range")
    assert out.message == (f"attribute 'time' {stamp!r} is outside the accepted range (2000-01-01 "
                           "to 2200-01-01); check the producer's clock, or widen the range: "
                           "`accept_times` in the workflow definition, or --accept-times-from / "
                           "--accept-times-until")


def test_naive_time_far_out_of_range_in_a_zone_is_out_of_range() -> None:
    """Naive year-1 and year-9999 stamps in an assumed zone are out of range, not a crash."""
    for stamp in ("0001-01-01T00:00:00", "9999-12-31T23:59:59"):
        dead(closed(type="TillSale", time=stamp, data=None), "time_out_of_range")


def test_time_far_ahead_of_arrival_is_out_of_range() -> None:
    """An event stamped 3 h after its record arrived is refused under a 1 h bound."""
    arrived = utc_ms(2024, 3, 5, 6, 20, 30, 456)  # the event says 09:20:30.456Z
    out = dead(closed(), "time_out_of_range", arrived_ms=arrived)
    assert out.message == ("attribute 'time' '2024-03-05T10:20:30.456+01:00' is 10800 s ahead of "
                           "the record's arrival; the bound is 3600 s (--max-future-skew)")


def test_time_ahead_of_arrival_is_fine_when_arrival_is_unknown_or_the_bound_off() -> None:
    """The same event passes with `arrived_ms=0` (unknown arrival), with the bound off, and just
    inside the bound."""
    stamp = utc_ms(2024, 3, 5, 9, 20, 30, 456)
    assert event(closed(), arrived_ms=0).time_ms == stamp
    off = rules(max_future_skew_ms=None)
    assert event(closed(), off, arrived_ms=stamp - 3 * HOUR_MS).time_ms == stamp
    assert event(closed(), arrived_ms=stamp - HOUR_MS).time_ms == stamp


def test_record_the_source_could_not_read_is_a_source_error() -> None:
    """A record carrying a source error is dead-lettered as `source_error` with that error."""
    rec = dataclasses.replace(record(closed()), error="broker: message checksum mismatch")
    out = decode(rec, rules())
    assert isinstance(out, DeadLetter)
    assert (out.reason, out.message, out.record) == ("source_error", rec.error, rec)


# -- the dead letter record ----------------------------------------------------------------------


def test_dead_letter_keeps_raw_bytes_coordinates_and_fits_its_table() -> None:
    """A dead letter keeps the raw key, value, headers and coordinates, and its row has exactly
    the `dead_letters` columns (the engine stamps `shard`)."""
    headers = (("trace", b"\x00\xff"),)
    raw = b'{"specversion": "1.0", "id": "evt-1", "broken'
    rec = RawRecord(source="tickets", partition=3, offset=99, value=raw, key=b"\xfe",
                    headers=headers, arrived_ms=utc_ms(2024, 3, 5))
    out = decode(rec, rules())
    assert isinstance(out, DeadLetter)
    assert out.record == rec
    row = out.to_row()
    assert list(row) == [name for name in DEAD_LETTERS.names if name != "shard"]
    assert row == {
        "row_id": "tickets/3/99", "source": "tickets", "partition": 3, "offset": 99,
        "reason": "malformed_json", "message": out.message, "event_id": None, "event_type": None,
        "raw_key": b"\xfe", "raw_value": raw, "headers": [{"key": "trace", "value": b"\x00\xff"}],
        "arrived_at": utc_ms(2024, 3, 5),
    }
    sink = Out("eu-1")
    sink.row("dead_letters", row)
    table = rows_to_table("dead_letters", [r for _, r in sink.rows])
    assert table.schema.equals(DEAD_LETTERS)
    assert table.column("raw_value").to_pylist() == [raw]


# -- catch-all -----------------------------------------------------------------------------------


def test_catch_all_route_takes_unknown_types() -> None:
    """With a case-tracking catch-all, an unrouted type goes to it; routed types keep theirs."""
    the_rules = rules(catch_all=Route("cases"))
    stray = event(closed(type="SomethingElse", data={"anything": [1, 2]}), the_rules)
    assert (stray.workflow_type, stray.instance_id, stray.type) == ("cases", "T-7", "SomethingElse")
    assert event(closed(), the_rules).workflow_type == "support"


def test_catch_all_from_a_loaded_case_tracking_definition(tmp_path: Path) -> None:
    """A case-tracking definition with `events: any` becomes the catch-all of the decode rules."""
    (tmp_path / "cases.yaml").write_text(
        "workflow: cases\nmode: case_tracking\nversion: 1\nevents: any\n"
        "instance_id: {data_field: case}\n", encoding="utf-8")
    the_rules = load_catalog(tmp_path).decode_rules(PayloadRegistry())
    out = event(closed(type="Whatever", subject=None, data={"case": "C-1"}), the_rules)
    assert (out.workflow_type, out.instance_id) == ("cases", "C-1")


# -- never raises --------------------------------------------------------------------------------

JSON_LEAVES = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
               | st.text(max_size=20))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
OFFSETS = st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-1439, 1439))
# Hypothesis takes naive bounds; `timezones=` below adds the offsets.
NAIVE_BOUNDS = {"min_value": datetime(1, 1, 2), "max_value": datetime(9999, 12, 30)}  # noqa: DTZ001
STAMPS = (st.datetimes(**NAIVE_BOUNDS, timezones=st.none() | OFFSETS).map(lambda d: d.isoformat())
          | st.text(alphabet="0123456789-:TZtz+. ", max_size=30))
TYPES = st.sampled_from(["TicketOpened", "TicketClosed", "Escalated", "TillSale", "Other"])
TEXT_OR_ANY = st.text(max_size=10) | JSON_VALUES
CE_FIELDS = {
    "specversion": st.sampled_from(["1.0", "0.3", "1"]) | JSON_VALUES,
    "id": TEXT_OR_ANY, "source": TEXT_OR_ANY, "type": TYPES | JSON_VALUES,
    "time": STAMPS | JSON_VALUES, "subject": TEXT_OR_ANY,
    "dataversion": st.sampled_from(["1", "2", "9", 2, "x"]) | JSON_VALUES,
    "sequence": st.integers().map(str) | JSON_VALUES,
    "traceparent": st.just(TRACEPARENT) | TEXT_OR_ANY,
    "data": st.fixed_dictionaries({}, optional={
        "ticket_id": TEXT_OR_ANY, "ticket": TEXT_OR_ANY,
        "priority": st.sampled_from(["low", "high", 3]) | JSON_VALUES,
        "channel": TEXT_OR_ANY, "resolution": TEXT_OR_ANY}) | JSON_VALUES,
}
CLOUDEVENT_LIKE = st.fixed_dictionaries({}, optional={**CE_FIELDS, "extra": JSON_VALUES})
VALID_BODIES = [closed(), opened(), opened({"ticket": "T-1", "priority": 2}, dataversion=None),
                closed(type="Escalated", data={"ticket_id": "E-1"}, sequence="3"),
                closed(type="TillSale", time="2024-01-15T09:30:00", traceparent=TRACEPARENT)]


@st.composite
def near_cloudevents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with up to three attributes removed or replaced by anything, so the fuzzing
    reaches the checks after the envelope (time, version, payload, instance id)."""
    body = dict(draw(st.sampled_from(VALID_BODIES)))
    for key in draw(st.lists(st.sampled_from(sorted(CE_FIELDS)), max_size=3, unique=True)):
        if draw(st.booleans()):
            body.pop(key, None)
        else:
            body[key] = draw(CE_FIELDS[key])
    return body


FUZZ_RULES = [rules(), rules(catch_all=Route("cases", id_field="ticket_id"))]


def _check(rec: RawRecord) -> None:
    for the_rules in FUZZ_RULES:
        out = decode(rec, the_rules)
        if isinstance(out, DeadLetter):
            assert out.reason in REASONS, out
            assert out.record is rec
            assert out.message
        else:
            assert isinstance(out, Event)
            assert MIN_TIME_MS <= out.time_ms < MAX_TIME_MS


FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=400)


@given(value=st.binary(max_size=300), arrived_ms=st.integers(0, MAX_TIME_MS))
@FUZZ
def test_arbitrary_bytes_never_raise(value: bytes, arrived_ms: int) -> None:
    """Any bytes give an Event or a dead letter with a documented reason, never an exception."""
    _check(RawRecord("fuzz", 0, 0, value, arrived_ms=arrived_ms))


@given(body=CLOUDEVENT_LIKE | JSON_VALUES, arrived_ms=st.integers(0, MAX_TIME_MS))
@FUZZ
def test_arbitrary_json_never_raises(body: Any, arrived_ms: int) -> None:
    """Any JSON value, CloudEvents-like objects included, gives an Event or a documented dead
    letter."""
    _check(RawRecord("fuzz", 0, 0, json.dumps(body).encode(), arrived_ms=arrived_ms))


@given(body=near_cloudevents(), arrived_ms=st.just(0) | st.integers(0, MAX_TIME_MS))
@FUZZ
def test_nearly_valid_events_never_raise_in_either_mode(body: dict[str, Any],
                                                        arrived_ms: int) -> None:
    """Valid events with attributes dropped or replaced by any JSON give an Event or a
    documented dead letter, in structured and in binary mode."""
    _check(RawRecord("fuzz", 0, 0, json.dumps(body).encode(), arrived_ms=arrived_ms))
    headers = tuple((f"ce_{k}", str(v).encode("utf-8", "surrogatepass")) for k, v in body.items()
                    if k != "data")
    value = json.dumps(body["data"]).encode() if "data" in body else b""
    _check(RawRecord("fuzz", 0, 0, value, headers=(("ce_specversion", b"1.0"), *headers),
                     arrived_ms=arrived_ms))


HEADER_KEYS = st.sampled_from([f"ce_{k}" for k in CE_FIELDS if k != "data"]
                              + ["content-type", "other"]) | st.text(max_size=8)
HEADER_VALUES = (st.binary(max_size=20) | st.text(max_size=20).map(str.encode)
                 | st.sampled_from([b"1.0", b"TicketClosed", b"2024-03-05T09:20:30Z"]))


@given(headers=st.lists(st.tuples(HEADER_KEYS, HEADER_VALUES), max_size=10),
       value=st.binary(max_size=100) | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
@FUZZ
def test_arbitrary_binary_mode_records_never_raise(headers: list[tuple[str, bytes]],
                                                   value: bytes) -> None:
    """Any `ce_*` headers with any value give an Event or a documented dead letter."""
    _check(RawRecord("fuzz", 0, 0, value, headers=(("ce_specversion", b"1.0"), *headers)))


# -- the bundled definitions ---------------------------------------------------------------------

ORDER_V1 = {"order_id": "ord-1001", "customer_id": "cus-77", "total": 59.9,
            "items": ["SKU-RED-M", "SKU-RED-M", "MUG-01"]}


@pytest.fixture(scope="module")
def bundled() -> DecodeRules:
    if not any(DEFINITIONS.glob("*.yaml")):
        pytest.skip("no bundled definitions yet")
    return load_catalog(DEFINITIONS).decode_rules(bundled_registry(), max_bytes=1_048_576,
                                                  max_future_skew_ms=HOUR_MS)


def test_bundled_v1_order_is_upcast_and_routed(bundled: DecodeRules) -> None:
    """A v1 OrderPlaced without `dataversion` decodes into order_fulfilment, keyed by order_id."""
    body = {"specversion": "1.0", "id": "o-1", "source": "shop", "type": "OrderPlaced",
            "time": "2024-05-01T10:00:00Z", "data": ORDER_V1}
    out = event(body, bundled)
    assert (out.workflow_type, out.instance_id, out.time_ms) == (
        "order_fulfilment", "ord-1001", utc_ms(2024, 5, 1, 10))


def test_bundled_invalid_payload_and_unknown_type(bundled: DecodeRules) -> None:
    """Against the bundled catalog a bad v1 total is `payload_invalid` and a foreign type
    `unknown_type`."""
    body = {"specversion": "1.0", "id": "o-2", "source": "shop", "type": "OrderPlaced",
            "time": "2024-05-01T10:00:00Z", "dataversion": "1", "data": {**ORDER_V1, "total": -1}}
    assert dead(body, "payload_invalid", bundled).message.startswith("data.total: ")
    dead({**body, "type": "TicketClosed"}, "unknown_type", bundled)


# -- the one-pass fast path ----------------------------------------------------------------


def _general(record: RawRecord, the_rules: DecodeRules) -> Event | DeadLetter:
    """What `decode` gives when the one-pass path is switched off."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("schemas.decode._typed_event", lambda record, rules: None)
        return decode(record, the_rules)


def test_fast_path_agrees_with_the_general_path_on_simulated_traffic() -> None:
    """Every record of simulated traffic (all bundled workflows, every fault: old versions,
    invalid payloads, malformed JSON, unknown types, duplicates) decodes to the same event or
    dead letter both ways, and most of them take the one-pass path."""
    from connectors.simulator import Faults, SimulatorConfig, simulate
    from schemas.decode import _Reject, _typed_event

    def fast_path(record: RawRecord) -> bool:
        try:
            return _typed_event(record, the_rules) is not None
        except _Reject:
            return True  # validated in one pass, then judged (e.g. a time out of range)

    catalog = load_catalog(DEFINITIONS)
    the_rules = catalog.decode_rules(bundled_registry(), 1_048_576, HOUR_MS)
    faults = Faults(duplicate=0.2, malformed_json=0.1, payload_invalid=0.1, unknown_type=0.1,
                    old_version=0.2, future_stamped=0.05)
    records = simulate(SimulatorConfig(seed=5, instances=300, partitions=2, faults=faults),
                       catalog).records()
    fast = sum(fast_path(r) for r in records if not r.headers)
    assert fast > len(records) // 2
    for r in records:
        assert decode(r, the_rules) == _general(r, the_rules)


@pytest.mark.parametrize("body", [
    # `type` inside data comes first: the guess is wrong, the general path decodes it
    b'{"data":{"ticket_id":"T-9","priority":"high","channel":"chat","type":"TicketClosed"},'
    b'"specversion":"1.0","id":"e","source":"/s","type":"TicketOpened","time":"2024-03-05T10:20:30Z",'
    b'"dataversion":"2"}',
    # an older version: validated as v1 and upcast by the general path
    json.dumps(opened({"ticket": "T-1", "priority": 4}, dataversion="1")).encode(),
    # no data at all, and data of the wrong shape: payload_invalid either way
    json.dumps(opened(data=None) | {"data": None}).encode(),
    json.dumps(opened({"ticket_id": "T-9", "priority": "high", "channel": 5})).encode(),
    # a duplicated key: the last value wins in both parsers
    b'{"specversion":"1.0","id":"e","source":"/s","type":"TicketClosed","type":"TicketOpened",'
    b'"time":"2024-03-05T10:20:30Z","dataversion":"2",'
    b'"data":{"ticket_id":"T-9","priority":"high","channel":"chat"}}',
], ids=["type_in_data_first", "old_version", "null_data", "bad_payload", "duplicate_key"])
def test_fast_path_and_general_path_agree_on_edge_cases(body: bytes) -> None:
    """Where the type guess or the pinned model does not fit, the result is still the general
    path's, event or dead letter alike."""
    assert decode(record(body), rules()) == _general(record(body), rules())


def _general_time(record: RawRecord, the_rules: DecodeRules) -> Event | DeadLetter:
    """What `decode` gives when the millisecond-UTC shortcut for `time` is switched off."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("schemas.decode._stamp_ms", lambda text: None)
        return decode(record, the_rules)


@given(year=st.integers(1999, 2201), month=st.integers(0, 13), day=st.integers(0, 32),
       hour=st.integers(0, 25), minute=st.integers(0, 61), second=st.integers(0, 61),
       millis=st.integers(0, 999), t=st.sampled_from("Tt "), z=st.sampled_from("Zz"))
@settings(derandomize=True, database=None, deadline=None, max_examples=400)
def test_millisecond_utc_shortcut_agrees_with_the_general_time_parser(
        year: int, month: int, day: int, hour: int, minute: int, second: int, millis: int,
        t: str, z: str) -> None:
    """`2024-05-01T12:00:00.123Z` stamps, possible or not (month 13, 30 February, 24:00, a
    61st second, years outside the range), decode to the same event or dead letter with and
    without the shortcut."""
    stamp = f"{year:04}-{month:02}-{day:02}{t}{hour:02}:{minute:02}:{second:02}.{millis:03}{z}"
    the_record = record(json.dumps(closed(time=stamp)).encode())
    assert decode(the_record, rules()) == _general_time(the_record, rules())

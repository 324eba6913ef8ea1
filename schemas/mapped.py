"""What a non-CloudEvents format hands the decoder: the event's attributes, read from wherever
that format keeps them (`schemas.mapping`), before any validation.

The decoder (`schemas.decode`) then judges a `Mapped` exactly as it judges a CloudEvent: the same
route, time range, payload registry and instance-id checks, so both forms of one event become the
same `Event` or dead letters of the same kind.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from schemas.errors import InputError
from schemas.event import RawRecord


@dataclass(slots=True)
class Mapped:
    """One record's attributes as its format gave them; `time` is RFC 3339 text (judged as a
    CloudEvents `time`) or UTC milliseconds already."""

    event_id: str
    event_type: str
    time: str | int
    data: dict[str, Any]
    instance_id: Any = None  # None: where the type's definition says (subject-less: a data field)
    sequence: Any = None
    trace_id: str | None = None  # a W3C traceparent or a bare 32-hex trace id
    data_version: Any = None  # None: version 1


class MappingFailed(InputError):
    """The format could not read one record: `reason` is the dead letter's (`mapping_failed`,
    `unknown_schema`, ...), the message names the path that failed."""

    def __init__(self, reason: str, message: str, event_id: str | None = None) -> None:
        super().__init__(message)
        self.reason, self.message, self.event_id = reason, message, event_id


@dataclass(frozen=True, slots=True)
class FlatLayout:
    """Where a format keeps every attribute when each one is a top-level key of the value (and the
    payload a key of its own): what the decoder's one-call path (`schemas.decode`) validates the
    value against, instead of reading it into a `Mapped` first."""

    keys: tuple[str | None, ...]  # id, type, time, instance id, sequence, trace id, data version
    payload: str
    names: dict[str, str]  # the format's type names -> definition types
    to_time: Callable[[Any], str | int]  # raw time -> RFC 3339 text or UTC ms; ValueError
    type_guess: re.Pattern[bytes]  # finds the raw type in JSON bytes (only picks the model)
    avro_value: Callable[[bytes], Any] | None  # Avro: the decoded value (`MappingFailed`)


class RecordReader(Protocol):
    """A format: reads a record into `Mapped`, or raises `MappingFailed`."""

    name: str
    layout: FlatLayout | None  # None: every record is read by `read`

    def read(self, record: RawRecord) -> Mapped:
        """The attributes of one record."""
        ...

    def read_object(self, value: Any) -> Mapped:
        """The attributes of an already parsed value with no key, headers or timestamp (an event
        file's row, to key it by instance id)."""
        ...

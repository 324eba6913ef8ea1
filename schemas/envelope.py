"""The CloudEvents 1.0 envelope (structured JSON mode, and binary mode from Kafka headers).

Required: `specversion` ("1.0"), `id` (the deduplication key), `source`, `type`, `time` (RFC 3339).
Extensions we honour: `sequence` (per-instance order among equal times, a decimal string),
`traceparent` (W3C trace context, its trace id is carried to every output row) and `dataversion`
(the payload version, a decimal string; absent means "1"). Other extensions are kept.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt
from pydantic_core import from_json

from schemas.errors import HeaderError


class CloudEventEnvelope(BaseModel):
    """Envelope attributes; `data` is validated separately by the payload registry."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: str
    id: str = Field(min_length=1, max_length=512)
    source: str = Field(min_length=1, max_length=1024)
    type: str = Field(min_length=1, max_length=256)
    time: str = Field(min_length=1, max_length=64)
    subject: str | None = Field(default=None, max_length=512)
    datacontenttype: str | None = None
    dataschema: str | None = None
    # Strict ints: JSON `true` or `2.0` is no version or sequence number.
    dataversion: str | StrictInt | None = None
    sequence: str | StrictInt | None = None
    # Any value: a broken trace context is dropped, never fatal (the decoder reads text only;
    # a validator turning the rest into None cost a Python call per event).
    traceparent: Any = None
    data: dict[str, Any] | None = None


def envelope_from_headers(headers: tuple[tuple[str, bytes], ...], value: bytes) -> dict[str, Any]:
    """Binary content mode of the Kafka binding: attributes in `ce_*` headers, data in the value.

    Raises `HeaderError` (a header that is not UTF-8 text) or ValueError (bad JSON data), which the
    decoder dead-letters. Data is parsed by the same parser as structured mode (pydantic's), so
    both modes accept the same JSON: UTF-8 only, no lone surrogates, nesting depth bounded. A
    header without a value (Kafka allows null header values) counts as absent.
    """
    attrs: dict[str, Any] = {}
    for key, raw in headers:
        if raw is None or not (key.startswith("ce_") or key == "content-type"):
            continue
        try:
            text = raw.decode("utf-8")
        except (UnicodeDecodeError, AttributeError) as e:
            raise HeaderError(key, f"not UTF-8 text ({e})") from e
        attrs["datacontenttype" if key == "content-type" else key[3:]] = text
    if value:
        attrs["data"] = from_json(value)
    return attrs


def is_binary_mode(headers: tuple[tuple[str, bytes], ...]) -> bool:
    """A record is in binary mode when it carries the `ce_specversion` header."""
    return any(k == "ce_specversion" for k, _ in headers)

"""Structured-mode CloudEvents to binary mode (Kafka protocol binding): attributes as `ce_*`
headers, `datacontenttype` as `content-type`, the data alone as the value.

The inverse of `schemas.envelope.envelope_from_headers`, for `flowkeeper produce --binary-mode`
and the tests that show both modes give the same verdicts.
"""

from __future__ import annotations

import json

Headers = list[tuple[str, bytes]]


def to_binary_mode(value: bytes) -> tuple[Headers, bytes] | None:
    """Headers and value of one structured event; None when `value` is no JSON object (malformed
    input is sent as it is, so it is rejected for the same reason in both modes)."""
    try:
        envelope = json.loads(value)
    except ValueError:
        return None
    if not isinstance(envelope, dict):
        return None
    headers: Headers = []
    for name, attr in envelope.items():
        if name == "data":
            continue
        text = attr if isinstance(attr, str) else json.dumps(attr)
        header = "content-type" if name == "datacontenttype" else f"ce_{name}"
        headers.append((header, text.encode("utf-8", "surrogatepass")))
    data = envelope.get("data")
    return headers, b"" if data is None else json.dumps(data, separators=(",", ":")).encode()

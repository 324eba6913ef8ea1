"""Reading a configuration file (definitions, calendars, formats) that may be untrusted input:
never more than its limit, so a huge file cannot exhaust memory before it is refused."""

from __future__ import annotations

from pathlib import Path

from schemas.errors import DefinitionError


def read_bounded(file: Path, limit: int, too_large: str) -> bytes:
    """The bytes of `file`; a `DefinitionError` "`file`: more than `limit` bytes`too_large`"
    when it holds more."""
    with file.open("rb") as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise DefinitionError(f"{file}: more than {limit} bytes{too_large}")
    return data

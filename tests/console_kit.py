"""The console under test: an app over a run's outputs, and a run made of hostile input."""

from __future__ import annotations

import contextlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
from starlette.testclient import TestClient

from connectors.archive_format import archive_table
from console.app import create_app
from console.reader import Choice, RunReader
from dataflows.cli import main
from dataflows.settings import BUNDLED_DEFINITIONS
from schemas.event import RawRecord
from schemas.payloads.bundled import bundled_registry
from state.catalog import load_catalog
from tests.engine_kit import CASES

# Markup that would run if any page let it through: each sets `window.pwned`.
SCRIPT = "<script>window.pwned=1</script>"
IMG = '"><img src=x onerror="window.pwned=1">'
HOSTILE_ID = f"{SCRIPT}{IMG}/../x?y=1#z"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def client(out: Path, source: Choice = "auto", token: str | None = None,
           definitions: Path = BUNDLED_DEFINITIONS) -> TestClient:
    """A test client of the console over `out`."""
    catalog = load_catalog(definitions)
    app = create_app(RunReader(out, catalog, source), catalog.decode_rules(bundled_registry()),
                     token=token)
    return TestClient(app, follow_redirects=False)


def _record(offset: int, value: bytes, key: bytes) -> RawRecord:
    return RawRecord("hostile", 0, offset, value, key,
                     ((IMG, SCRIPT.encode()),), int(T0.timestamp() * 1000) + offset * 1000)


def hostile_run(folder: Path) -> Path:
    """A finished run whose ids, payloads, headers and dead letters carry markup and invalid
    UTF-8: a case opened under a hostile id (its SLA is overdue at the end of input), a record
    that is not UTF-8, an event of a hostile type (its state), and one with a hostile time.
    The case-tracking definition is written to `folder/defs`."""
    def event(event_id: str, event_type: str) -> bytes:
        return json.dumps({"specversion": "1.0", "id": event_id, "source": SCRIPT,
                           "type": event_type, "time": T0.isoformat(), "subject": HOSTILE_ID,
                           "data": {"note": SCRIPT, "who": IMG}}).encode()

    records = [_record(0, event(f"e-{IMG}", "Opened"), HOSTILE_ID.encode()),
               _record(1, b"\xff\xfe" + SCRIPT.encode() + b"\xc3", b"\xff" + IMG.encode()),
               _record(2, event("e-2", IMG), HOSTILE_ID.encode()),
               _record(3, json.dumps({"specversion": "1.0", "id": SCRIPT, "source": IMG,
                                      "type": "Opened", "time": IMG}).encode(), b"")]
    archive = folder / "input" / "date=2026-01-01" / "partition=0"
    archive.mkdir(parents=True)
    pq.write_table(archive_table(records),
                   archive / "part-0.parquet")
    (folder / "defs").mkdir()
    (folder / "defs" / "tickets.yaml").write_text(CASES)
    out = folder / "out"
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["run", "--source", "archive", "--archive-path", str(folder / "input"),
                     "--definitions", str(folder / "defs"), "--out", str(out)])
    assert code == 0
    return out

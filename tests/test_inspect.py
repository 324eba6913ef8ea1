"""`flowkeeper inspect`: the whole life of one instance, from the outputs and the archive."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dataflows.cli import main
from tests.demo_kit import truth


def inspect(out: Path, *args: str) -> tuple[int, str, str]:
    with contextlib.redirect_stdout(io.StringIO()) as printed, \
            contextlib.redirect_stderr(io.StringIO()) as errors:
        code = main(["inspect", *args, "--out", str(out)])
    return code, printed.getvalue(), errors.getvalue()


def pick(out: Path, where: str) -> tuple[str, str]:
    """(workflow, instance) of the first ground-truth instance matching `where`."""
    ((workflow, instance),) = duckdb.sql(
        f"SELECT workflow_type, instance_id FROM {truth(out, 'instances')} WHERE {where} "
        "ORDER BY instance_id LIMIT 1").fetchall()
    return workflow, instance


@pytest.fixture(scope="module")
def corrected(out: Path) -> tuple[str, dict[str, Any]]:
    """An instance that timed out, then was contradicted by a late event: its id and timeline."""
    _, instance = pick(out, "scenario = 'late_after_timeout' AND expected_outcome = 'timed_out'")
    code, printed, _ = inspect(out, instance, "--json")
    assert code == 0
    return instance, json.loads(printed)


def test_json_shows_the_timeout_and_the_correction_by_a_late_event(
        corrected: tuple[str, dict[str, Any]]) -> None:
    """The timeline holds the events with arrival and event time, the deadline armed and fired, the
    timeout transition, the outcome, then the late event's anomaly and its correction, in order."""
    instance, data = corrected
    entries = data["timeline"]
    kinds = [e["kind"] for e in entries]
    assert data["instance_id"] == instance and data["outcome"]["outcome"] == "timed_out"
    assert data["archive"] is not None
    for kind in ("event", "transition", "deadline_armed", "deadline_fired", "outcome", "anomaly",
                 "correction"):
        assert kind in kinds, kind
    late = [e for e in entries if e["kind"] == "event" and e["disposition"] == "late"]
    assert len(late) == 1 and late[0]["arrived_at"] > late[0]["event_time"]
    assert late[0]["type"] != "?"
    fired = next(e for e in entries if e["kind"] == "deadline_fired")
    timeout = next(e for e in entries if e["kind"] == "transition" and e["trigger"] == "deadline")
    armed = [e for e in entries if e["kind"] == "deadline_armed" and e["status"] == "fired"]
    assert fired["at"] == timeout["at"] == armed[-1]["due_at"]
    assert fired["goto"] == timeout["to_state"]
    correction = next(e for e in entries if e["kind"] == "correction")
    assert correction["late_event_id"] == late[0]["event_id"]
    assert correction["original_outcome"] == "timed_out"
    assert kinds.index("deadline_fired") < kinds.index("outcome") < kinds.index("correction")
    assert [e["at"] for e in entries] == sorted(e["at"] for e in entries)


def test_text_timeline_reads_as_a_story(out: Path, corrected: tuple[str, dict[str, Any]]) -> None:
    """The terminal view has a header with the outcome and one line per entry, the late event
    flagged and the correction spelled out."""
    instance, data = corrected
    code, printed, _ = inspect(out, instance)
    assert code == 0
    lines = printed.splitlines()
    assert instance in lines[0] and "outcome timed_out" in lines[1]
    assert any("LATE: arrived" in line for line in lines)
    assert any("deadline fired" in line for line in lines)
    assert any("correction" in line and "would have changed the verdict: timed_out" in line
               for line in lines)
    assert len([line for line in lines if line.startswith("  20")]) == len(data["timeline"])


def test_dead_lettered_records_of_the_instance_come_from_the_archive(out: Path) -> None:
    """A record of the instance that was dead-lettered appears with its reason."""
    ((workflow, instance, reason),) = duckdb.sql(
        f"""SELECT workflow_type, instance_id, expected_reason FROM {truth(out, 'records')}
            WHERE expected_disposition = 'dead_lettered' ORDER BY instance_id LIMIT 1""").fetchall()
    code, printed, _ = inspect(out, instance, "--workflow", workflow, "--json")
    dead = [e for e in json.loads(printed)["timeline"] if e["kind"] == "dead_letter"]
    assert code == 0 and [e["reason"] for e in dead] == [reason]


def test_without_the_archive_it_says_so_and_shows_the_rest(
        out: Path, tmp_path: Path, corrected: tuple[str, dict[str, Any]]) -> None:
    """With only the DuckDB file, the timeline is the same but for dead letters and event types,
    and the header says the archive is missing."""
    instance, data = corrected
    shutil.copy(out / "flowkeeper.duckdb", tmp_path / "flowkeeper.duckdb")
    code, printed, _ = inspect(tmp_path, instance)
    assert code == 0 and "no input archive found" in printed
    code, printed, _ = inspect(tmp_path, instance, "--json")
    bare = json.loads(printed)
    assert bare["archive"] is None
    assert [e["kind"] for e in bare["timeline"]] == [e["kind"] for e in data["timeline"]
                                                     if e["kind"] != "dead_letter"]


def test_an_unknown_instance_is_a_clear_error(out: Path) -> None:
    """An id that is not in the outputs exits 2 and says how to list some."""
    code, _, errors = inspect(out, "no-such-instance")
    assert code == 2 and "no instance 'no-such-instance'" in errors

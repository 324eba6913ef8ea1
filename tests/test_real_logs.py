"""Real process-mining logs imported, replayed in case-tracking mode and measured in DuckDB: every
figure equals the independently computed `reference_stats.json` (durations to the millisecond).

The logs live in `../shared/datasets/` (never copied into the repository); without that folder
these tests skip.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from datetime import UTC
from pathlib import Path
from typing import Any

import duckdb
import pytest
from bytewax.testing import TestingSink, run_main

from analysis.duckdb_views import create_views
from connectors.archive_source import ArchiveSource
from connectors.duckdb_database import insert_rows, open_database
from connectors.event_logs import read_log
from connectors.log_import import StepSla, import_events, write_definition
from dataflows.cli import main as cli_main
from dataflows.pipeline import build_flow
from dataflows.settings import Settings

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
LOGS = {"running_example": "running-example.xes", "receipt_wabo": "receipt.xes.gz",
        "helpdesk": "helpdesk.xes.gz", "sepsis": "sepsis.csv"}
_RULE = re.compile(r"first of \['(?P<to>[^']+)'\] at/after first '(?P<from>[^']+)' later than "
                   r"(?P<hours>[0-9.]+) h")

pytestmark = pytest.mark.skipif(not DATASETS.is_dir(), reason=f"no shared datasets at {DATASETS}")


def reference(name: str) -> dict[str, Any]:
    return json.loads((DATASETS / name / "reference_stats.json").read_text())


def step_sla(rule: str) -> str:
    """The reference's SLA rule as an `import-log --sla` spec (`__CASE_START__`: FROM `*`)."""
    match = _RULE.fullmatch(rule)
    assert match is not None, rule
    hours = float(match["hours"])
    assert hours.is_integer()
    origin = "*" if match["from"] == "__CASE_START__" else match["from"]
    return f"{origin}->{match['to']}<={int(hours)}h"


def figures(conn: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """The reference figures, from the DuckDB output tables through the analysis views."""
    def one(sql: str) -> Any:
        return conn.sql(sql).fetchall()[0]

    cases, *durations = one("SELECT cases, min_ms, median_ms, p95_ms, max_ms FROM case_durations")
    breached, not_reached = one("SELECT breached, not_reached FROM sla_rule_breaches")
    return {
        "cases": cases, "durations_ms": durations,
        "events": one("SELECT count(*) FROM ledger")[0],
        "duplicates": one("SELECT count(*) FROM ledger WHERE disposition = 'duplicate'")[0],
        "variants": one("SELECT count(*) FROM received_variants")[0],
        "distinct_variants": one("SELECT count(*) FROM variants")[0],
        "violating": breached, "from_without_to": not_reached,
    }


def assert_matches(found: dict[str, Any], ref: dict[str, Any]) -> None:
    durations = [ref["case_duration_s"][k] * 1000 for k in ("min", "median", "p95", "max")]
    assert found["durations_ms"] == pytest.approx(durations, abs=0.5)  # to the millisecond
    sla = ref["sla_step"]
    assert (found["cases"], found["events"], found["variants"], found["duplicates"],
            found["violating"], found["from_without_to"]) == (
        ref["cases"], ref["events"], ref["variants"], ref["dup_exact"],
        sla["violating"], sla["from_without_to"])
    assert found["distinct_variants"] <= found["variants"]  # exact duplicates removed


def replay_into_duckdb(archive: Path, definition: Path, db: Path) -> duckdb.DuckDBPyConnection:
    """Run the pipeline on the archive and load every output row into DuckDB (no Parquet: only
    the DuckDB figures are checked here; the CLI test below writes both)."""
    rows: list[tuple[str, dict[str, Any]]] = []
    settings = Settings.from_flags(source="archive", archive_path=archive, definitions=definition,
                        out=db.parent)
    run_main(build_flow(settings, source=ArchiveSource(archive), sink=TestingSink(rows)))
    by_table: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for table, row in rows:
        by_table[table].append(row)
    conn = open_database(db, create_views)
    insert_rows(conn, by_table)
    return conn


@pytest.mark.parametrize("name", ["receipt_wabo", "helpdesk", "sepsis"])
def test_imported_log_replays_to_the_reference_figures(name: str, tmp_path: Path) -> None:
    """Case count, event count, duration min/median/p95/max, variant count, exact duplicates and
    the step-SLA violations equal the reference; same-timestamp events are told apart."""
    ref = reference(name)
    archive = tmp_path / "log"
    summary = import_events(read_log(DATASETS / name / LOGS[name], UTC), archive, source=name,
                            partitions=1)  # fewer, larger files: the figures do not depend on it
    definition = archive / "definition.yaml"
    write_definition(definition, workflow=name, log_name=LOGS[name],
                     span_ms=summary.last_ms - summary.first_ms,
                     slas=[StepSla.parse(step_sla(ref["sla_step"]["rule"]))])
    conn = replay_into_duckdb(archive, definition, tmp_path / "out.duckdb")
    assert_matches(figures(conn), ref)


def test_cli_import_and_replay_of_the_running_example(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`flowkeeper import-log` then `flowkeeper replay` (which picks up the written definition)
    give the reference figures in the DuckDB file, and the import summary counts the log."""
    ref = reference("running_example")
    log, out = tmp_path / "log", tmp_path / "results"
    assert cli_main(["import-log", str(DATASETS / "running_example" / LOGS["running_example"]),
                     "--out", str(log), "--sla", step_sla(ref["sla_step"]["rule"])]) == 0
    assert "imported 42 events of 6 cases" in capsys.readouterr().out
    assert cli_main(["replay", str(log), "--out", str(out)]) == 0
    assert "running-example" in capsys.readouterr().out
    conn = duckdb.connect(str(out / "flowkeeper.duckdb"), read_only=True)
    assert_matches(figures(conn), ref)

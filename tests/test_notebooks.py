"""The notebooks: committed without outputs, and executed against a small run so they cannot rot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import nbformat
import pytest
from nbclient import NotebookClient

from dataflows.cli import parser
from dataflows.settings import REPO_ROOT
from tests.demo_kit import Conn, pairs, rows, scalar

NOTEBOOKS = REPO_ROOT / "notebooks"


def execute(name: str, parameters: str) -> Any:
    """Run a notebook from its folder with its `parameters` cell replaced; returns the JSON its
    `key-numbers` cell printed."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    tagged = {tag: cell for cell in notebook.cells for tag in cell.metadata.get("tags", [])}
    tagged["parameters"].source = parameters
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    images = [o for cell in notebook.cells for o in cell.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert images, f"{name} drew no figure"
    printed = "".join(o.get("text", "") for o in tagged["key-numbers"].outputs)
    return json.loads(printed)


def test_committed_notebooks_have_no_outputs() -> None:
    """Every notebook in git is stripped: no outputs, no execution counts."""
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert {p.name for p in notebooks} >= {"analysis.ipynb", "replay.ipynb"}
    for path in notebooks:
        cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        assert all(c.outputs == [] and c.execution_count is None for c in cells), (
            f"{path.name} has outputs: clear them before committing (Jupyter: Clear All Outputs)")


def test_analysis_notebook_runs_and_its_numbers_are_the_views(out: Path, conn: Conn) -> None:
    """The analysis notebook runs on a fresh run, and its key numbers equal the views'."""
    got = execute("analysis.ipynb", f"OUT = {str(out)!r}")
    assert got["outcomes"] == pairs(conn, "SELECT outcome, count(*) FROM outcomes GROUP BY ALL")
    assert got["p95_ms"] == {f"{w}/{s}": v for w, s, v in rows(
        conn, "SELECT workflow_type, step, p95_ms FROM step_latency_percentiles")}
    assert got["slowest"] == list(rows(conn, "SELECT instance_id, duration_ms FROM outcomes "
                                       "ORDER BY duration_ms DESC LIMIT 1")[0])
    assert got["dead_letters"] == pairs(conn, "SELECT reason, count(*) FROM dead_letters "
                                        "GROUP BY ALL")


def test_replay_notebook_compares_a_what_if_replay(out: Path, tmp_path: Path) -> None:
    """The replay notebook replays the archive with a 5-minute payment deadline; its numbers are
    those of the two runs' DuckDB files, and the tighter deadline times more orders out."""
    commands = set(parser()[1])
    if not {"replay", "verify"} <= commands:
        pytest.skip("`flowkeeper replay` and `flowkeeper verify` are not in this build yet")
    parameters = f"RUN = {str(out)!r}\nWORK = {str(tmp_path)!r}\nNEW_DEADLINE = '5m'"
    got = execute("replay.ipynb", parameters)
    query = ("SELECT outcome, count(*) FROM {}.outcomes WHERE workflow_type = 'order_fulfilment' "
             "GROUP BY ALL")
    conn = duckdb.connect()
    conn.execute(f"ATTACH '{out / 'flowkeeper.duckdb'}' AS recorded (READ_ONLY)")
    conn.execute(f"ATTACH '{tmp_path / 'replay' / 'flowkeeper.duckdb'}' AS replayed (READ_ONLY)")
    recorded, replayed = (pairs(conn, query.format(db)) for db in ("recorded", "replayed"))
    assert {k: v for k, v in got["recorded"].items() if v} == recorded
    assert {k: v for k, v in got["replayed"].items() if v} == replayed
    assert replayed["timed_out"] > recorded.get("timed_out", 0) and got["verify_exit"] == 1
    changed = scalar(conn, """SELECT count(*) FROM recorded.outcomes r JOIN replayed.outcomes p
                              USING (workflow_type, instance_id) WHERE r.outcome <> p.outcome""")
    assert got["changed_outcomes"] == changed > 0

"""The end-of-run summary: outcomes, input accounting, dead letters, accuracy against ground
truth."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb

from state.admission import span


@dataclass(frozen=True)
class Accuracy:
    """How many instances got exactly the outcome and the commands the simulator intended."""

    instances: int
    outcome_ok: int
    commands_ok: int

    @property
    def all_ok(self) -> bool:
        return self.instances == self.outcome_ok == self.commands_ok


def accuracy(conn: duckdb.DuckDBPyConnection, truth_dir: Path) -> Accuracy:
    """Compare the outcomes and commands tables with `ground_truth/instances.parquet`."""
    truth = str(truth_dir / "instances.parquet")
    row = conn.execute(
        """
        WITH truth AS (SELECT * FROM read_parquet(?)),
        got_commands AS (
            SELECT workflow_type, instance_id, list_sort(list(idempotency_key)) AS keys
            FROM commands GROUP BY ALL)
        SELECT count(*),
               count(*) FILTER (WHERE o.outcome = t.expected_outcome),
               count(*) FILTER (WHERE coalesce(c.keys, []) = list_sort(t.expected_commands))
        FROM truth t
        LEFT JOIN outcomes o USING (workflow_type, instance_id)
        LEFT JOIN got_commands c USING (workflow_type, instance_id)
        """,
        [truth],
    ).fetchone()
    assert row is not None
    return Accuracy(*row)


def jump_lines(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Per partition, where its event time jumped and what was refused as a broken clock."""
    lines = []
    for partition, kind, records, ahead_ms, first, late_after in conn.sql(
            "SELECT partition, kind, records, max_ahead_ms, first_record, late_after "
            "FROM event_time_jumps_per_partition").fetchall():
        if kind == "refused":
            lines.append(f"  partition {partition}: {records:,} records stamped up to "
                         f"{span(ahead_ms)} ahead of its event time were dead-lettered "
                         f"(time_out_of_range), the first at {first}")
        else:
            lines.append(f"  partition {partition}: event time jumped {records:,} times (up to "
                         f"{span(ahead_ms)} at once), the first at {first}; {late_after:,} "
                         "records late after it")
    return ["event time:", *lines] if lines else []


def processed_line(records: int, seconds: float, moved: int) -> str:
    """`processed N records in S s (R/s), M moved to another worker`."""
    rate = records / max(seconds, 1e-9)
    return (f"processed {records:,} records in {seconds:.1f} s ({rate:,.0f}/s), "
            f"{moved:,} moved to another worker")


def render(db_path: Path, parquet_dir: Path, truth_dir: Path | None, seconds: float,
           records: int, moved: int) -> str:
    """A plain-text summary of one finished run; `moved`: records run on another worker than the
    one that read them (0 unless a resumed run keeps shards where an earlier run put them)."""
    conn = duckdb.connect(str(db_path), read_only=True)
    try:
        lines = [processed_line(records, seconds, moved), ""]
        lines.append("instances by outcome:")
        for workflow, outcome, n in conn.sql(
            "SELECT workflow_type, outcome, count(*) FROM outcomes GROUP BY ALL ORDER BY 1, 3 DESC"
        ).fetchall():
            lines.append(f"  {workflow:<22} {outcome:<20} {n:>8,}")
        (open_count,) = conn.sql("SELECT count(*) FROM open_instances").fetchall()[0]
        lines.append(f"  still open: {open_count:,}")
        lines.append("input accounting:")
        for disposition, n in conn.sql("SELECT * FROM input_accounting").fetchall():
            lines.append(f"  {disposition:<14} {n:>8,}")
        dead = conn.sql("SELECT reason, records FROM dead_letters_by_reason").fetchall()
        if dead:
            lines.append("dead letters: " + ", ".join(f"{r} {n}" for r, n in dead))
        lines += jump_lines(conn)
        if truth_dir is not None and (truth_dir / "instances.parquet").exists():
            acc = accuracy(conn, truth_dir)
            lines.append(
                f"accuracy vs ground truth: outcomes {acc.outcome_ok:,}/{acc.instances:,}, "
                f"commands {acc.commands_ok:,}/{acc.instances:,}" + ("  ✓" if acc.all_ok else "  ✗")
            )
    finally:
        conn.close()
    lines += [
        "",
        f"Parquet: {parquet_dir}/<table>/date=YYYY-MM-DD/*.parquet",
        f"DuckDB:  {db_path}",
        f"try:     {sys.executable} -c \"import duckdb; print(duckdb.connect('{db_path}', "
        "read_only=True).sql('SELECT * FROM sla_breach_rate_per_step'))\"",
        "more:    flowkeeper report, flowkeeper inspect INSTANCE_ID, the notebooks in notebooks/",
    ]
    return "\n".join(lines)

"""Documented analysis views over the DuckDB output tables (the tables are the source of truth;
the Parquet datasets hold the same rows). Each view: a name, a one-line description, its SQL.
"""

from __future__ import annotations

import duckdb

VIEWS: list[tuple[str, str, str]] = [
    (
        "outcomes_per_hour",
        "finished instances per workflow type, hour of event time and outcome",
        """SELECT workflow_type, date_trunc('hour', ended_at) AS hour, outcome, count(*) AS instances
           FROM outcomes GROUP BY ALL ORDER BY hour, workflow_type, outcome""",
    ),
    (
        "sla_breach_rate_per_step",
        "per workflow step: instances that entered it, that hit one of its deadlines, and the rate",
        """WITH entered AS (
               SELECT workflow_type, to_state AS step, count(DISTINCT instance_id) AS entered
               FROM transitions GROUP BY ALL),
           breached AS (
               SELECT workflow_type, step, count(DISTINCT instance_id) AS breached FROM (
                   SELECT workflow_type, step, instance_id FROM commands WHERE reason = 'deadline'
                   UNION ALL
                   SELECT workflow_type, from_state, instance_id FROM transitions WHERE trigger = 'deadline'
               ) GROUP BY ALL)
           SELECT e.workflow_type, e.step, e.entered, coalesce(b.breached, 0) AS breached,
                  round(coalesce(b.breached, 0) / e.entered, 4) AS breach_rate
           FROM entered e LEFT JOIN breached b USING (workflow_type, step)
           ORDER BY e.workflow_type, breach_rate DESC""",
    ),
    (
        "step_latency_percentiles",
        "time spent in each state (event time): count, p50, p95, p99 and max in milliseconds",
        """SELECT workflow_type, from_state AS step, count(*) AS exits,
                  quantile_cont(state_duration_ms, 0.5) AS p50_ms,
                  quantile_cont(state_duration_ms, 0.95) AS p95_ms,
                  quantile_cont(state_duration_ms, 0.99) AS p99_ms,
                  max(state_duration_ms) AS max_ms
           FROM transitions WHERE from_state IS NOT NULL GROUP BY ALL ORDER BY workflow_type, step""",
    ),
    (
        "open_instances",
        "instances with no outcome yet: current state, when they entered it, transitions so far",
        """SELECT t.workflow_type, t.instance_id, arg_max(t.to_state, t.seq) AS state,
                  max(t.at) AS since, count(*) AS transitions
           FROM transitions t ANTI JOIN outcomes o USING (workflow_type, instance_id)
           GROUP BY ALL ORDER BY since""",
    ),
    (
        "dead_letters_by_reason",
        "rejected input records per reason, with an example message",
        """SELECT reason, count(*) AS records, any_value(message) AS example
           FROM dead_letters GROUP BY ALL ORDER BY records DESC""",
    ),
    (
        "input_accounting",
        "every input record by disposition: applied, ignored, anomalous, duplicate, late, dead_lettered",
        """SELECT disposition, count(*) AS records FROM ledger GROUP BY ALL ORDER BY records DESC""",
    ),
    (
        "metrics_per_minute",
        "the windowed metrics summed over shards, per workflow type and minute of event time",
        """SELECT workflow_type, window_start, sum(events_in) AS events_in, sum(started) AS started,
                  sum(completed) AS completed, sum(failed) AS failed, sum(cancelled) AS cancelled,
                  sum(timed_out) AS timed_out, sum(compensated) AS compensated,
                  sum(compensation_failed) AS compensation_failed, sum(duplicates) AS duplicates,
                  sum(late) AS late, sum(anomalies) AS anomalies, sum(dead_letters) AS dead_letters
           FROM metrics GROUP BY ALL ORDER BY window_start, workflow_type""",
    ),
]


def create_views(conn: duckdb.DuckDBPyConnection) -> None:
    """(Re)create every view; safe to call on every start."""
    for name, description, sql in VIEWS:
        conn.execute(f'CREATE OR REPLACE VIEW "{name}" AS {sql}')
        conn.execute(f"COMMENT ON VIEW \"{name}\" IS '{description}'")

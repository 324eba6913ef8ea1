"""Documented analysis views over the DuckDB output tables (the tables are the source of truth;
the Parquet datasets hold the same rows). Each view: a name, a one-line description, its SQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import duckdb

from analysis.parquet_relations import create_parquet_relations
from analysis.pending import PENDING_SQL
from analysis.step_deadlines import create_step_deadlines
from state.catalog import Catalog

VIEWS: list[tuple[str, str, str]] = [
    (
        "outcomes_per_hour",
        "finished instances per workflow type, hour of event time and outcome",
        """SELECT workflow_type, date_trunc('hour', ended_at) AS hour, outcome,
                  count(*) AS instances
           FROM outcomes GROUP BY ALL ORDER BY hour, workflow_type, outcome""",
    ),
    (
        "sla_breach_rate_per_step",
        "per workflow step: instances that entered it, that hit one of its deadlines, and the "
        "rate",
        """WITH entered AS (
               SELECT workflow_type, to_state AS step, count(DISTINCT instance_id) AS entered
               FROM transitions GROUP BY ALL),
           breached AS (
               SELECT workflow_type, step, count(DISTINCT instance_id) AS breached FROM (
                   SELECT workflow_type, step, instance_id FROM commands WHERE reason = 'deadline'
                   UNION ALL
                   SELECT workflow_type, from_state, instance_id FROM transitions
                   WHERE trigger = 'deadline'
               ) GROUP BY ALL)
           SELECT e.workflow_type, e.step, e.entered, coalesce(b.breached, 0) AS breached,
                  round(coalesce(b.breached, 0) / e.entered, 4) AS breach_rate
           FROM entered e LEFT JOIN breached b USING (workflow_type, step)
           ORDER BY e.workflow_type, breach_rate DESC, e.step""",
    ),
    (
        "step_latency_percentiles",
        "time spent in each state (event time): count, p50, p95, p99 and max in milliseconds",
        """SELECT workflow_type, from_state AS step, count(*) AS exits,
                  quantile_cont(state_duration_ms, 0.5) AS p50_ms,
                  quantile_cont(state_duration_ms, 0.95) AS p95_ms,
                  quantile_cont(state_duration_ms, 0.99) AS p99_ms,
                  max(state_duration_ms) AS max_ms
           FROM transitions WHERE from_state IS NOT NULL
           GROUP BY ALL ORDER BY workflow_type, step""",
    ),
    (
        "business_step_latency",
        "time spent in each state counted in its calendar's business time (states a calendar "
        "applies to): count, p50, p95 and max in milliseconds, beside the wall-time p50",
        """SELECT workflow_type, from_state AS step, count(*) AS exits,
                  quantile_cont(business_duration_ms, 0.5) AS business_p50_ms,
                  quantile_cont(business_duration_ms, 0.95) AS business_p95_ms,
                  max(business_duration_ms) AS business_max_ms,
                  quantile_cont(state_duration_ms, 0.5) AS wall_p50_ms
           FROM transitions WHERE from_state IS NOT NULL AND business_duration_ms IS NOT NULL
           GROUP BY ALL ORDER BY workflow_type, step""",
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
        "pending_deadlines",
        "each deadline of an open instance that has not fired: its name, due time, and the time "
        "remaining as of its input partition's watermark (the newest event time read on that "
        "partition; negative: due, it fires when the watermark passes it)",
        PENDING_SQL,
    ),
    (
        "dead_letters_by_reason",
        "rejected input records per reason, with an example message",
        """SELECT reason, count(*) AS records, min(message) AS example
           FROM dead_letters GROUP BY ALL ORDER BY records DESC, reason""",
    ),
    (
        "event_time_jumps_per_partition",
        "per input partition: records stamped more than --max-future-skew ahead of its event "
        "time, admitted (jumped) or dead-lettered (refused), the first of them, and how many "
        "records were late after the first jump",
        """WITH firsts AS (
               SELECT "partition", kind, count(*) AS records, max(ahead_ms) AS max_ahead_ms,
                      min(from_time) AS since,
                      arg_min(source, (from_time, source, "offset")) AS source,
                      arg_min("offset", (from_time, source, "offset")) AS first_offset
               FROM event_time_jumps GROUP BY ALL)
           SELECT f."partition", f.kind, f.records, f.max_ahead_ms, f.since,
                  f.source || '/' || f.first_offset AS first_record,
                  CASE WHEN f.kind = 'jumped' THEN (
                      SELECT count(*) FROM ledger l
                      WHERE l."partition" = f."partition" AND l.disposition = 'late'
                        AND (l.source > f.source
                             OR (l.source = f.source AND l."offset" > f.first_offset)))
                  ELSE 0 END AS late_after
           FROM firsts f ORDER BY f."partition", f.kind""",
    ),
    (
        "input_accounting",
        "every input record by disposition: applied, ignored, anomalous, duplicate, late, "
        "dead_lettered",
        """SELECT disposition, count(*) AS records FROM ledger
           GROUP BY ALL ORDER BY records DESC, disposition""",
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
    (
        "case_durations",
        "per workflow type: finished instances and their duration (last minus first event) in ms",
        """SELECT workflow_type, count(*) AS cases, min(duration_ms) AS min_ms,
                  quantile_cont(duration_ms, 0.5) AS median_ms,
                  quantile_cont(duration_ms, 0.95) AS p95_ms, max(duration_ms) AS max_ms
           FROM outcomes GROUP BY ALL ORDER BY workflow_type""",
    ),
    (
        "variants",
        "per workflow type: each variant (step sequence, duplicates removed), its cases and share",
        """SELECT workflow_type, variant, count(*) AS cases,
                  round(count(*) / sum(count(*)) OVER (PARTITION BY workflow_type), 4) AS share,
                  quantile_cont(duration_ms, 0.5) AS median_duration_ms
           FROM outcomes GROUP BY workflow_type, variant
           ORDER BY workflow_type, cases DESC, variant""",
    ),
    (
        "received_variants",
        "case tracking: variants of every event received, redelivered duplicates included, as "
        "process-mining tools count a raw log",
        """WITH activity AS (
               SELECT DISTINCT workflow_type, instance_id, event_id, event_type
               FROM transitions WHERE trigger = 'event'),
           received AS (
               SELECT l.workflow_type, l.instance_id,
                      string_agg(a.event_type, ' > ' ORDER BY l.event_time, l.source,
                                 l.partition, l."offset") AS variant
               FROM ledger l JOIN activity a USING (workflow_type, instance_id, event_id)
               WHERE l.disposition IN ('applied', 'duplicate') GROUP BY ALL)
           SELECT workflow_type, variant, count(*) AS cases
           FROM received GROUP BY ALL ORDER BY workflow_type, cases DESC, variant""",
    ),
    (
        "sla_rule_breaches",
        "case tracking: per SLA rule, cases that breached it and cases whose limit passed with no "
        "`to` event yet (at the end of a replay: cases that never reached it)",
        """WITH hits AS (
               SELECT workflow_type, instance_id, kind,
                      CASE kind WHEN 'sla_breached'
                                THEN regexp_replace(detail, ': took -?[0-9]+ ms$', '')
                                ELSE detail END AS rule
               FROM anomalies WHERE kind IN ('sla_breached', 'sla_overdue')),
           per_case AS (
               SELECT workflow_type, rule, instance_id, bool_or(kind = 'sla_breached') AS breached
               FROM hits GROUP BY ALL)
           SELECT workflow_type, rule, count(*) FILTER (WHERE breached) AS breached,
                  count(*) FILTER (WHERE NOT breached) AS not_reached
           FROM per_case GROUP BY ALL ORDER BY workflow_type, rule""",
    ),
    (
        "sla_breaches_per_hour",
        "deadlines that fired, per workflow step and hour of event time: firings, the commands "
        "they sent, the timeouts they forced, and the instances hit",
        """WITH firings AS (
               SELECT workflow_type, instance_id, step, due_at AS fired_at, true AS sent,
                      false AS moved
               FROM commands WHERE reason = 'deadline'
               UNION ALL
               SELECT workflow_type, instance_id, from_state, "at", false, true
               FROM transitions WHERE trigger = 'deadline'),
           fired AS (
               SELECT workflow_type, instance_id, step, fired_at, bool_or(sent) AS sent,
                      bool_or(moved) AS moved
               FROM firings GROUP BY ALL)
           SELECT workflow_type, step, date_trunc('hour', fired_at) AS hour,
                  count(*) AS deadlines_fired, count(*) FILTER (WHERE sent) AS commands,
                  count(*) FILTER (WHERE moved) AS timeouts,
                  count(DISTINCT instance_id) AS instances
           FROM fired GROUP BY ALL ORDER BY hour, workflow_type, step""",
    ),
    (
        "outcome_mix_per_minute",
        "instances by the minute (event time) they started in and how they ended: count and share "
        "of the instances that started in that minute",
        """WITH counted AS (
               SELECT workflow_type, date_trunc('minute', started_at) AS minute, outcome,
                      count(*) AS instances
               FROM outcomes GROUP BY ALL)
           SELECT *,
                  round(instances / sum(instances) OVER (PARTITION BY workflow_type, minute), 4)
                      AS share
           FROM counted ORDER BY minute, workflow_type, outcome""",
    ),
    (
        "stuck_instances",
        "open instances with every deadline (or compensation timeout) of their state behind the "
        "newest event time seen: a quiet shard without --idle-grace, or a lost deadline",
        """WITH now AS (SELECT max(event_time) AS now FROM ledger),
           current AS (
               SELECT workflow_type, instance_id,
                      arg_max(definition_version, seq) AS definition_version,
                      arg_max(to_state, seq) AS state, max("at") AS since,
                      any_value(shard) AS shard, arg_max(deadlines, seq) AS armed
               FROM transitions ANTI JOIN outcomes USING (workflow_type, instance_id) GROUP BY ALL),
           first_seen AS (
               SELECT workflow_type, instance_id, event_type, min("at") AS first_at
               FROM transitions WHERE event_type IS NOT NULL GROUP BY ALL),
           due AS (
               SELECT c.workflow_type, c.instance_id,
                      coalesce(any_value(list_max(list_transform(c.armed, lambda a: a.due_at))),
                               max(coalesce(f.first_at, c.since) + to_milliseconds(d.after_ms)))
                          AS last_due
               FROM current c
               JOIN step_deadlines d ON d.workflow_type = c.workflow_type
                    AND d.definition_version = c.definition_version AND d.state = c.state
               LEFT JOIN first_seen f ON f.workflow_type = c.workflow_type
                    AND f.instance_id = c.instance_id AND f.event_type = d.from_event
               GROUP BY ALL)
           SELECT c.workflow_type, c.instance_id, c.state, c.since, d.last_due,
                  n.now AS event_time_now, n.now - d.last_due AS overdue_by, c.shard
           FROM current c JOIN due d USING (workflow_type, instance_id) CROSS JOIN now n
           WHERE d.last_due < n.now ORDER BY overdue_by DESC, workflow_type, instance_id""",
    ),
    (
        "slowest_instances",
        "finished instances by duration, longest first, with the step that timed out and the "
        "variant",
        """SELECT workflow_type, instance_id, outcome, started_at, ended_at, duration_ms,
                  timed_out_step, variant
           FROM outcomes ORDER BY duration_ms DESC, workflow_type, instance_id""",
    ),
    (
        "compensation_success_rate",
        "per workflow type: instances that had to undo completed steps, how many got every "
        "acknowledgement in time (compensated), and the compensation commands sent",
        """WITH ended AS (
               SELECT workflow_type, count(*) FILTER (WHERE outcome = 'compensated') AS compensated,
                      count(*) FILTER (WHERE outcome = 'compensation_failed') AS compensation_failed
               FROM outcomes GROUP BY ALL),
           sent AS (
               SELECT workflow_type, count(*) AS commands FROM commands
               WHERE reason = 'compensation' GROUP BY ALL)
           SELECT workflow_type, compensated + compensation_failed AS compensations, compensated,
                  compensation_failed, coalesce(commands, 0) AS commands,
                  round(compensated / nullif(compensated + compensation_failed, 0), 4)
                      AS success_rate
           FROM ended LEFT JOIN sent USING (workflow_type) ORDER BY workflow_type""",
    ),
    (
        "throughput_per_minute",
        "input records per minute of arrival time, by what became of them",
        """SELECT date_trunc('minute', arrived_at) AS minute, count(*) AS records,
                  count(*) FILTER (WHERE disposition = 'applied') AS applied,
                  count(*) FILTER (WHERE disposition = 'ignored') AS ignored,
                  count(*) FILTER (WHERE disposition = 'anomalous') AS anomalous,
                  count(*) FILTER (WHERE disposition = 'duplicate') AS duplicates,
                  count(*) FILTER (WHERE disposition = 'late') AS late,
                  count(*) FILTER (WHERE disposition = 'dead_lettered') AS dead_letters
           FROM ledger GROUP BY ALL ORDER BY minute""",
    ),
]


def create_views(conn: duckdb.DuckDBPyConnection, source: Literal["duckdb", "parquet"] = "duckdb",
                 root: Path | None = None, catalog: Catalog | None = None) -> None:
    """(Re)create every view; safe to call on every start.

    `source="parquet"` first defines each output table as a relation over the Parquet datasets
    under `root` (on a connection without those tables, e.g. `duckdb.connect()`), so the same
    view SQL reads either. `catalog` (re)fills the `step_deadlines` table the views read.
    """
    if source == "parquet":
        if root is None:
            raise ValueError("views over Parquet need root: the run's parquet folder")
        create_parquet_relations(conn, root)
    create_step_deadlines(conn, catalog)
    for name, description, sql in VIEWS:
        conn.execute(f'CREATE OR REPLACE VIEW "{name}" AS {sql}')
        quoted = description.replace("'", "''")
        conn.execute(f"COMMENT ON VIEW \"{name}\" IS '{quoted}'")

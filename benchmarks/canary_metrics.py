"""Time the canary's per-unit, per-segment SQL aggregate on 10 M tasks in PostgreSQL (target <= 2 s).

    .venv/bin/python -m benchmarks.canary_metrics [--tasks 10000000] [--repeat 5] [--no-write]

Creates a scratch database (dropped at the end), fills it with generate_series INSERT ... SELECT:
one agent's prompt history of ``--tasks`` tasks over a year, the last 14 days being an experiment
(active 90 % / candidate 10 %); about 30 % of tasks get feedback in Bindu's shapes (ratings,
thumbs as booleans and strings, some revised, some malformed). Then times ``experiment_metrics``
(the controller's own call), prints the PostgreSQL plan and writes benchmarks/results/canary_metrics.txt. Tasks use the index ``ix_tasks_prompt_id``
(prompt_id, created_at) INCLUDE (id); feedback ``idx_task_feedback_task_id`` or a scan of task_feedback.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from benchmarks._common import scratch_postgres_database, write_results
from bindu_pipelines.canary.metrics import POSTGRES_SETTINGS, TrafficSegment, _aggregate_sql, experiment_metrics
from bindu_runtime import make_engine, upgrade

NOW = datetime(2026, 6, 1, tzinfo=UTC)
EXPERIMENT_DAYS = 14


def fill(engine: sa.Engine, n_tasks: int) -> dict[str, int]:
    start = NOW - timedelta(days=365)
    experiment_start = NOW - timedelta(days=EXPERIMENT_DAYS)
    with engine.begin() as connection:
        connection.execute(sa.text("""
            INSERT INTO agent_prompts (id, agent_id, prompt_text, status, traffic, source, created_at, updated_at) VALUES
              ('old-active', 'bench', 'old', 'active', 0.9, 'bootstrap', :start, :start),
              ('candidate', 'bench', 'new', 'candidate', 0.1, 'simba', :exp, :exp)
        """), {"start": start, "exp": experiment_start})  # fmt: skip
        # Tasks spread evenly over the year; those in the experiment window split 90/10.
        connection.execute(sa.text("""
            INSERT INTO tasks (id, context_id, kind, state, state_timestamp, history, prompt_id, created_at, updated_at)
            SELECT md5(i::text || 't')::uuid, md5(i::text || 'c')::uuid, 'task', 'completed', ts, '[]'::jsonb,
                   CASE WHEN ts >= :exp AND i % 10 = 0 THEN 'candidate' ELSE 'old-active' END, ts, ts
              FROM (SELECT i, :start + (i * (:span / :n)) * interval '1 second' AS ts
                      FROM generate_series(1, :n) AS i) AS s
        """), {"start": start, "exp": experiment_start, "n": n_tasks, "span": 365 * 86400.0})  # fmt: skip
        # ~30 % of tasks get feedback; 3 % of those a revised second row; 1 % malformed rows.
        connection.execute(sa.text("""
            INSERT INTO task_feedback (task_id, feedback_data, created_at)
            SELECT md5(i::text || 't')::uuid,
                   CASE i % 7
                     WHEN 0 THEN jsonb_build_object('thumbs_up', (i % 3) > 0)
                     WHEN 1 THEN jsonb_build_object('thumbs_up', CASE WHEN i % 3 > 0 THEN 'yes' ELSE 'no' END)
                     ELSE jsonb_build_object('task_id', md5(i::text || 't'), 'rating', 1 + ((i / 10 + i / 7) % 5), 'feedback', 'ok',
                                             'metadata', '{}'::jsonb, 'timestamp', '2026-01-01T00:00:00')
                   END,
                   :start + (i * (:span / :n)) * interval '1 second' + interval '3 minutes'
              FROM generate_series(1, :n) AS i
             WHERE i % 10 IN (0, 3, 7)
            UNION ALL
            SELECT md5(i::text || 't')::uuid, jsonb_build_object('rating', 5),
                   :start + (i * (:span / :n)) * interval '1 second' + interval '9 minutes'
              FROM generate_series(1, :n) AS i WHERE i % 100 = 3
            UNION ALL
            SELECT md5(i::text || 't')::uuid, jsonb_build_object('rating', 'five'),
                   :start + (i * (:span / :n)) * interval '1 second' + interval '5 minutes'
              FROM generate_series(1, :n) AS i WHERE i % 100 = 7
        """), {"start": start, "n": n_tasks, "span": 365 * 86400.0})  # fmt: skip
        counts = connection.execute(sa.text("""
            SELECT (SELECT count(*) FROM tasks) AS tasks, (SELECT count(*) FROM task_feedback) AS feedback_rows,
                   (SELECT count(*) FROM tasks WHERE created_at >= :exp) AS experiment_tasks
        """), {"exp": experiment_start}).mappings().one()  # fmt: skip
    return dict(counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only, do not write the results file")
    args = parser.parse_args(argv)

    with scratch_postgres_database("bindu_bench_canary") as url:
        engine = make_engine(url)
        try:
            lines = measure(engine, args.tasks, args.repeat)
        finally:
            engine.dispose()
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        print(f"\nwritten to {write_results('canary_metrics', text)}")
    return 0


MATURITY_HOURS = 24.0  # the controller's fallback window: tasks 24 h old, feedback within 24 h


def measure(engine: sa.Engine, n_tasks: int, repeat: int) -> list[str]:
    upgrade(engine)
    began = time.perf_counter()
    counts = fill(engine, n_tasks)
    # What autovacuum does to a live table: statistics, and the visibility map for index-only scans.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE tasks")
        connection.exec_driver_sql("VACUUM ANALYZE task_feedback")
    lines = [
        f"filled in {time.perf_counter() - began:.0f} s: {counts['tasks']:,} tasks, {counts['feedback_rows']:,} feedback rows, "
        f"{counts['experiment_tasks']:,} tasks in the {EXPERIMENT_DAYS}-day experiment window"
    ]
    segments = [TrafficSegment(NOW - timedelta(days=EXPERIMENT_DAYS), 0.1)]
    timings, metrics = [], None
    for _ in range(repeat + 1):  # the first run warms the cache and is not counted
        began = time.perf_counter()
        metrics = experiment_metrics(
            engine, active_id="old-active", candidate_id="candidate", segments=segments, as_of=NOW, maturity_hours=MATURITY_HOURS
        )
        timings.append(time.perf_counter() - began)
    timings = timings[1:]
    lines.append(
        f"experiment_metrics: median {statistics.median(timings):.3f} s, max {max(timings):.3f} s over {repeat} runs "
        f"(target <= 2 s)"
    )
    for arm in (metrics.active, metrics.candidate):
        lines.append(
            f"  {arm.prompt_id}: {arm.stats.n:,} mature tasks with valid feedback in {arm.clusters.units:,} units, "
            f"mean score {arm.stats.mean:.4f}"
        )
    with engine.connect() as connection:  # the plan under the settings experiment_metrics applies
        for setting in POSTGRES_SETTINGS:
            connection.exec_driver_sql(setting)
        plan = connection.execute(
            sa.text("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + _aggregate_sql(connection, None, 1)),
            {
                "active_id": "old-active", "candidate_id": "candidate", "since": segments[0].start, "as_of": NOW,
                "cutoff": NOW - timedelta(hours=MATURITY_HOURS), "maturity_seconds": MATURITY_HOURS * 3600.0,
            },  # fmt: skip
        ).scalars().all()
    return [*lines, "", "EXPLAIN (ANALYZE, BUFFERS) of the aggregate:", *plan]


if __name__ == "__main__":
    raise SystemExit(main())

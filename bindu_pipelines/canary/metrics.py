"""Per-arm feedback since the experiment started, aggregated by the database.

One query returns, for the active and the candidate prompt and for each traffic segment of the
experiment, how many tasks have feedback, the sum of their scores and the sum of squared scores.
No task or feedback row is loaded into Python.

The feedback scale is applied in SQL (``bindu_runtime.feedback_sql``), on SQLite JSON and PostgreSQL
JSONB alike, with the rule the golden dataset applies in Python (``bindu_pipelines.golden_dataset.feedback``):

- a rating r in 1..5 (a JSON number equal to such an integer, or a string holding one in plain
  decimal notation: "4", "4.0", " +4 ") scores (r-1)/4; anything else is not a rating;
- thumbs_up true / 1 / "true" / "yes" / "1" scores 1 and false / 0 / "false" / "no" / "0" scores 0
  (strings case-insensitive, surrounding whitespace ignored);
- a valid rating wins over thumbs in the same row;
- a task counts once: its latest valid row by (created_at, id) wins.

Known difference from Python's ``float()``: rating strings in exponent notation ("4e0") or with
underscores are not ratings here. Bindu writes integers, so this only matters for hand-made rows.

A task belongs to the arm of its ``prompt_id`` and to the traffic segment of its ``created_at``
(when it was routed). Only tasks created since the experiment started and before ``as_of`` count,
and only feedback written up to ``as_of``, so the same numbers can be recomputed for any past hour.
The index ``ix_tasks_prompt_id`` (prompt_id, created_at) INCLUDE (id) makes the task side an
index-only range scan per arm; ``benchmarks/canary_metrics.py`` times the whole query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa

from bindu_pipelines.canary.policy import ArmStats, SplitCounts
from bindu_runtime.feedback_sql import feedback_score_sql
from bindu_runtime.schema import Timestamp

__all__ = ["ArmMetrics", "ExperimentMetrics", "TrafficSegment", "experiment_metrics", "feedback_score_sql"]

@dataclass(frozen=True)
class TrafficSegment:
    """From ``start`` on (until the next segment), the candidate was configured at ``share``."""

    start: datetime
    share: float


@dataclass(frozen=True)
class ArmMetrics:
    prompt_id: str
    stats: ArmStats
    tasks_by_segment: tuple[int, ...]  # tasks with valid feedback routed during each segment


@dataclass(frozen=True)
class ExperimentMetrics:
    active: ArmMetrics
    candidate: ArmMetrics
    segments: tuple[TrafficSegment, ...]

    def split(self) -> SplitCounts:
        """Observed vs configured split of the tasks the comparison is computed on."""
        return SplitCounts.from_segments(
            (a, c, segment.share)
            for a, c, segment in zip(
                self.active.tasks_by_segment, self.candidate.tasks_by_segment, self.segments, strict=True
            )
        )


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _aggregate_sql(dialect_name: str, segment_count: int) -> str:
    segment_case = " ".join(
        f"WHEN t.created_at >= :segment_{index} THEN {index}" for index in reversed(range(1, segment_count))
    )
    segment_expr = f"CASE {segment_case} ELSE 0 END" if segment_count > 1 else "0"
    if dialect_name == "postgresql":
        # A join the planner may run in parallel: a hash of the window's tasks probed by a scan of
        # task_feedback, or a probe of idx_task_feedback_task_id per task, whichever it costs lower.
        # Each task's latest valid row is first in DISTINCT ON's order (valid rows before invalid,
        # then newest); validity is tested after the pick, so the score is computed on joined rows
        # only and never pushed down into a scan of the whole feedback table.
        return f"""
        SELECT prompt_id, segment, COUNT(*) AS tasks, SUM(score) AS total, SUM(score * score) AS total_sq
          FROM (
            SELECT DISTINCT ON (task_id) prompt_id, segment, score
              FROM (
                SELECT t.prompt_id AS prompt_id, {segment_expr} AS segment, f.task_id AS task_id,
                       f.created_at AS feedback_at, f.id AS feedback_id, {feedback_score_sql(dialect_name)} AS score
                  FROM tasks AS t
                  JOIN task_feedback AS f ON f.task_id = t.id
                 WHERE t.prompt_id IN (:active_id, :candidate_id)
                   AND t.created_at >= :since AND t.created_at < :as_of
                   AND f.created_at <= :as_of
              ) AS scored
             ORDER BY task_id, score IS NULL, feedback_at DESC, feedback_id DESC
          ) AS latest
         WHERE score IS NOT NULL
         GROUP BY prompt_id, segment
        """
    return f"""
        WITH scored AS (
            SELECT t.prompt_id AS prompt_id,
                   {segment_expr} AS segment,
                   f.task_id AS task_id,
                   f.created_at AS feedback_at,
                   f.id AS feedback_id,
                   {feedback_score_sql(dialect_name)} AS score
              FROM tasks AS t
              JOIN task_feedback AS f ON f.task_id = t.id
             WHERE t.prompt_id IN (:active_id, :candidate_id)
               AND t.created_at >= :since AND t.created_at < :as_of
               AND f.created_at <= :as_of
        ),
        latest AS (
            SELECT prompt_id, segment, score,
                   ROW_NUMBER() OVER (PARTITION BY task_id ORDER BY feedback_at DESC, feedback_id DESC) AS position
              FROM scored
             WHERE score IS NOT NULL
        )
        SELECT prompt_id, segment, COUNT(*) AS tasks, SUM(score) AS total, SUM(score * score) AS total_sq
          FROM latest
         WHERE position = 1
         GROUP BY prompt_id, segment
    """


# The hash of the experiment window's tasks (28 MB for 383 k tasks) must fit in memory: at the
# default 4 MB the parallel hash join splits into batches and writes the whole feedback side to disk.
# SET LOCAL in a savepoint rolled back after the read, so no caller's transaction keeps it.
POSTGRES_SETTINGS = ("SET LOCAL work_mem = '32MB'",)


def _fetch(connection: sa.Connection, statement: sa.TextClause, params: dict[str, object]) -> list[sa.RowMapping]:
    if connection.dialect.name != "postgresql":
        return list(connection.execute(statement, params).mappings().all())
    with connection.begin_nested() as savepoint:
        for setting in POSTGRES_SETTINGS:
            connection.exec_driver_sql(setting)
        rows = list(connection.execute(statement, params).mappings().all())
        savepoint.rollback()
    return rows


def experiment_metrics(
    connection: sa.Connection | sa.Engine,
    *,
    active_id: str,
    candidate_id: str,
    segments: Sequence[TrafficSegment],
    as_of: datetime,
) -> ExperimentMetrics:
    """Both arms' feedback since ``segments[0].start`` (the experiment's start) up to ``as_of``."""
    if not segments:
        raise ValueError("an experiment has at least one traffic segment (its start)")
    starts = [_utc(segment.start) for segment in segments]
    if starts != sorted(starts):
        raise ValueError("traffic segments must be in time order")
    dialect_name = connection.dialect.name
    params: dict[str, object] = {"active_id": active_id, "candidate_id": candidate_id, "since": starts[0], "as_of": _utc(as_of)}
    params.update({f"segment_{index}": start for index, start in enumerate(starts) if index})
    statement = sa.text(_aggregate_sql(dialect_name, len(segments))).bindparams(
        *(sa.bindparam(name, type_=Timestamp) for name in params if name not in ("active_id", "candidate_id"))
    )
    if isinstance(connection, sa.Engine):
        with connection.connect() as conn:
            rows = _fetch(conn, statement, params)
    else:
        rows = _fetch(connection, statement, params)

    per_arm = {active_id: [0, 0.0, 0.0, [0] * len(segments)], candidate_id: [0, 0.0, 0.0, [0] * len(segments)]}
    for row in rows:
        arm = per_arm[row["prompt_id"]]
        arm[0] += int(row["tasks"])
        arm[1] += float(Decimal(str(row["total"])))
        arm[2] += float(Decimal(str(row["total_sq"])))
        arm[3][int(row["segment"])] += int(row["tasks"])

    def arm(prompt_id: str) -> ArmMetrics:
        n, total, total_sq, by_segment = per_arm[prompt_id]
        # Float sums of exact quarter scores stay exact; clamp guards the ArmStats invariants anyway.
        total = min(total, float(n))
        return ArmMetrics(prompt_id, ArmStats(n, total, min(total_sq, total)), tuple(by_segment))

    return ExperimentMetrics(arm(active_id), arm(candidate_id), tuple(segments))

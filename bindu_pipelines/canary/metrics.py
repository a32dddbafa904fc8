"""Per-unit, per-segment feedback of both arms, aggregated by the database.

One query returns, for the active and the candidate prompt and for each traffic segment of the
experiment, the randomisation units' sums the policy needs (units, events, score sum and the second
moments Σn², Σn·y, Σy² over units, plus Σ score² over events for the seed API's view), and the
units counted once each for the sample-ratio check. No task or feedback row is loaded into Python.

* **Unit** = ``COALESCE(tasks.prompt_unit, task id)``: the hashed router key the stamp wrote, or the
  task itself when it was stamped without a key.
* **Cluster** = (arm, unit, segment): a unit's tasks in one arm within one traffic segment. A
  returning user who spans segments (or whom a ramp step moved to the candidate) is a cluster in
  each; the covariance of one user's clusters across segments is not in the variance (docs/CANARY.md).
  For the sample-ratio check each unit counts once, in the arm and segment of its first counted task.
* **Maturity**: only tasks at least ``maturity_hours`` old at ``as_of`` count, each with the feedback
  written within ``maturity_hours`` of the task (and by ``as_of``); 0 = no window, every row as it
  arrives (the seed's rule). Every counted task has had the
  same time to collect feedback, whichever arm it is in and whenever it was routed (docs/CANARY.md).
* A task counts once: its latest valid feedback row by ``task_feedback.id`` (insertion order).

The feedback scale is applied in SQL (``bindu_runtime.feedback_sql``), with the rule the golden
dataset applies in Python. Table names go through ``layout.qualified_table``, so an agent whose
tables live in its DID schema is read there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from bindu_pipelines.canary.policy import ArmClusters, ArmStats, Stratum
from bindu_runtime.feedback_sql import feedback_score_sql
from bindu_runtime.layout import qualified_name, qualified_table, shared_schema
from bindu_runtime.schema import Timestamp

__all__ = ["ArmMetrics", "ExperimentMetrics", "TrafficSegment", "experiment_metrics", "feedback_delays", "feedback_score_sql"]


@dataclass(frozen=True)
class TrafficSegment:
    """From ``start`` on (until the next segment), the candidate was configured at ``share``."""

    start: datetime
    share: float


@dataclass(frozen=True)
class ArmMetrics:
    prompt_id: str
    clusters: ArmClusters
    stats: ArmStats  # event-level view (every task its own unit), for the seed API and status


@dataclass(frozen=True)
class ExperimentMetrics:
    active: ArmMetrics
    candidate: ArmMetrics
    segments: tuple[TrafficSegment, ...]
    first_units: tuple[tuple[int, int], ...]  # (active, candidate) units counted once, per segment
    maturity_hours: float


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _table(connection, agent_id: str | None, name: str) -> str:
    if agent_id is None:  # no agent named: the shared namespace (public, or the URL's search_path)
        return qualified_name(connection, shared_schema(connection) if connection.dialect.name == "postgresql" else None, name)
    return qualified_table(connection, agent_id, name)


def _within_window(dialect_name: str) -> str:
    if dialect_name == "postgresql":
        return "f.created_at <= t.created_at + :maturity_seconds * interval '1 second'"
    return "julianday(f.created_at) <= julianday(t.created_at) + :maturity_seconds / 86400.0"


def _aggregate_sql(connection, agent_id: str | None, segment_count: int, windowed: bool = True) -> str:
    dialect_name = connection.dialect.name
    segment_case = " ".join(
        f"WHEN t.created_at >= :segment_{index} THEN {index}" for index in reversed(range(1, segment_count))
    )
    segment_expr = f"CASE {segment_case} ELSE 0 END" if segment_count > 1 else "0"
    tasks, feedback = _table(connection, agent_id, "tasks"), _table(connection, agent_id, "task_feedback")
    return f"""
        WITH scored AS (
            SELECT t.id AS task_id, t.prompt_id AS prompt_id, t.created_at AS task_at,
                   COALESCE(t.prompt_unit, CAST(t.id AS TEXT)) AS unit,
                   {segment_expr} AS segment, f.id AS feedback_id,
                   {feedback_score_sql(dialect_name)} AS score
              FROM {tasks} AS t
              JOIN {feedback} AS f ON f.task_id = t.id
             WHERE t.prompt_id IN (:active_id, :candidate_id)
               AND t.created_at >= :since AND t.created_at < :cutoff
               AND f.created_at <= :as_of{" AND " + _within_window(dialect_name) if windowed else ""}
        ),
        latest AS (
            SELECT prompt_id, unit, task_at, segment, score,
                   ROW_NUMBER() OVER (PARTITION BY task_id ORDER BY feedback_id DESC) AS position
              FROM scored
             WHERE score IS NOT NULL
        ),
        per_unit AS (
            SELECT prompt_id, unit, segment, MIN(task_at) AS first_at,
                   COUNT(*) AS n, SUM(score) AS y, SUM(score * score) AS ss
              FROM latest
             WHERE position = 1
             GROUP BY prompt_id, unit, segment
        ),
        first_arm AS (
            SELECT prompt_id, segment,
                   ROW_NUMBER() OVER (PARTITION BY unit ORDER BY first_at, prompt_id) AS position
              FROM per_unit
        )
        SELECT 'cluster' AS kind, prompt_id, segment, COUNT(*) AS units, SUM(n) AS n, SUM(y) AS y,
               SUM(n * n) AS nn, SUM(n * y) AS ny, SUM(y * y) AS yy, SUM(ss) AS ss
          FROM per_unit GROUP BY prompt_id, segment
        UNION ALL
        SELECT 'first' AS kind, prompt_id, segment, COUNT(*) AS units, 0, 0, 0, 0, 0, 0
          FROM first_arm WHERE position = 1 GROUP BY prompt_id, segment
    """


# The window's tasks must fit in memory for the hash join and the sorts of the window functions;
# SET LOCAL in a savepoint rolled back after the read, so no caller's transaction keeps it.
POSTGRES_SETTINGS = ("SET LOCAL work_mem = '32MB'",)


def _fetch(connection: sa.Connection, statement, params: dict[str, object]) -> list[sa.RowMapping]:
    if connection.dialect.name != "postgresql":
        return list(connection.execute(statement, params).mappings().all())
    with connection.begin_nested() as savepoint:
        for setting in POSTGRES_SETTINGS:
            connection.exec_driver_sql(setting)
        rows = list(connection.execute(statement, params).mappings().all())
        savepoint.rollback()
    return rows


def _number(value) -> float:
    return float(Decimal(str(value))) if value is not None else 0.0


def experiment_metrics(
    connection: sa.Connection | sa.Engine,
    *,
    active_id: str,
    candidate_id: str,
    segments: Sequence[TrafficSegment],
    as_of: datetime,
    agent_id: str | None = None,
    maturity_hours: float = 0.0,
) -> ExperimentMetrics:
    """Both arms' mature feedback per unit and segment, since ``segments[0].start`` up to ``as_of``."""
    if not segments:
        raise ValueError("an experiment has at least one traffic segment (its start)")
    starts = [_utc(segment.start) for segment in segments]
    if starts != sorted(starts):
        raise ValueError("traffic segments must be in time order")
    if not maturity_hours >= 0:
        raise ValueError(f"maturity_hours must be >= 0, got {maturity_hours}")
    if isinstance(connection, sa.Engine):
        with connection.connect() as conn:
            return experiment_metrics(
                conn, active_id=active_id, candidate_id=candidate_id, segments=segments, as_of=as_of,
                agent_id=agent_id, maturity_hours=maturity_hours,
            )  # fmt: skip
    now = _utc(as_of)
    params: dict[str, object] = {
        "active_id": active_id, "candidate_id": candidate_id, "since": starts[0], "as_of": now,
        "cutoff": now - timedelta(hours=maturity_hours), "maturity_seconds": float(maturity_hours) * 3600.0,
    }  # fmt: skip
    params.update({f"segment_{index}": start for index, start in enumerate(starts) if index})
    timestamps = [name for name in params if name in ("since", "as_of", "cutoff") or name.startswith("segment_")]
    statement = sa.text(_aggregate_sql(connection, agent_id, len(segments), windowed=maturity_hours > 0)).bindparams(
        *(sa.bindparam(name, type_=Timestamp) for name in timestamps)
    )
    rows = _fetch(connection, statement, params)

    count = len(segments)
    strata = {pid: [Stratum()] * count for pid in (active_id, candidate_id)}
    squares = {active_id: 0.0, candidate_id: 0.0}
    first = {pid: [0] * count for pid in (active_id, candidate_id)}
    for row in rows:
        pid, segment = row["prompt_id"], int(row["segment"])
        if row["kind"] == "first":
            first[pid][segment] = int(row["units"])
            continue
        n, y = _number(row["n"]), _number(row["y"])
        strata[pid][segment] = Stratum(
            int(row["units"]), n, min(y, n), _number(row["nn"]), _number(row["ny"]), _number(row["yy"])
        )
        squares[pid] += _number(row["ss"])

    def arm(pid: str) -> ArmMetrics:
        clusters = ArmClusters(tuple(strata[pid]))
        n = int(clusters.n)
        total = min(sum(s.y for s in clusters.strata), float(n))
        return ArmMetrics(pid, clusters, ArmStats(n, total, min(squares[pid], total)))

    return ExperimentMetrics(
        arm(active_id), arm(candidate_id), tuple(segments),
        tuple(zip(first[active_id], first[candidate_id], strict=True)), float(maturity_hours),
    )  # fmt: skip


def feedback_delays(
    connection: sa.Connection | sa.Engine,
    *,
    prompt_ids: Sequence[str],
    as_of: datetime,
    agent_id: str | None = None,
    lookback_hours: float = 336.0,
    limit: int = 20000,
) -> list[list[float]]:
    """Observed delays (hours from task to its feedback row), grouped by (prompt, happy/unhappy),
    for the prompts' tasks of the last ``lookback_hours`` — the input of ``maturity_from_delays``."""
    if isinstance(connection, sa.Engine):
        with connection.connect() as conn:
            return feedback_delays(conn, prompt_ids=prompt_ids, as_of=as_of, agent_id=agent_id, lookback_hours=lookback_hours, limit=limit)
    dialect_name = connection.dialect.name
    tasks, feedback = _table(connection, agent_id, "tasks"), _table(connection, agent_id, "task_feedback")
    names = ", ".join(f":prompt_{i}" for i in range(len(prompt_ids)))
    statement = sa.text(f"""
        SELECT t.prompt_id AS prompt_id, t.created_at AS task_at, f.created_at AS feedback_at,
               {feedback_score_sql(dialect_name)} AS score
          FROM {tasks} AS t JOIN {feedback} AS f ON f.task_id = t.id
         WHERE t.prompt_id IN ({names}) AND t.created_at >= :since AND f.created_at <= :as_of
         ORDER BY f.id DESC
         LIMIT :limit
    """).bindparams(sa.bindparam("since", type_=Timestamp), sa.bindparam("as_of", type_=Timestamp))
    now = _utc(as_of)
    params = {f"prompt_{i}": pid for i, pid in enumerate(prompt_ids)}
    params.update(since=now - timedelta(hours=lookback_hours), as_of=now, limit=int(limit))
    groups: dict[tuple[str, bool], list[float]] = {}
    result = connection.execute(statement.columns(
        sa.column("prompt_id"), sa.column("task_at", Timestamp), sa.column("feedback_at", Timestamp), sa.column("score")
    ), params)  # fmt: skip
    for row in result.mappings():
        if row["score"] is None:
            continue
        delay = (_utc(row["feedback_at"]) - _utc(row["task_at"])).total_seconds() / 3600.0
        groups.setdefault((row["prompt_id"], _number(row["score"]) >= 0.5), []).append(max(delay, 0.0))
    return list(groups.values())

"""When the canary decides: on enough new feedback (sensor) and every hour (the seed's cron)."""

import json
from datetime import UTC, datetime

import dagster as dg

from bindu_pipelines.canary.assets import CANARY_AGENT_TAG, canary_job
from bindu_pipelines.canary.controller import traffic_segments
from bindu_pipelines.canary.metrics import experiment_metrics
from bindu_pipelines.partitions import agent_partitions
from bindu_pipelines.resources import BinduDatabase
from bindu_runtime import PromptStore

MIN_NEW_FEEDBACK = 50  # about an hour of feedback at the design's 50 events/h


def running_experiments(store: PromptStore) -> dict[str, str]:
    """Agent id -> running candidate id, for every agent with an experiment."""
    running = {}
    for agent_id in store.list_agents():
        candidate = store.get_candidate_prompt(agent_id)
        if candidate is not None:
            running[agent_id] = candidate.id
    return running


def experiment_feedback_count(store: PromptStore, agent_id: str, now: datetime) -> tuple[str, int] | None:
    """(candidate id, tasks with valid feedback in both arms since the start), or None."""
    state = store.serving_state(agent_id)
    if state.active is None or state.candidate is None:
        return None
    segments, _ = traffic_segments(store, agent_id, state.candidate, now)
    metrics = experiment_metrics(
        store.engine, active_id=state.active.id, candidate_id=state.candidate.id, segments=segments, as_of=now,
        agent_id=agent_id,
    )  # fmt: skip
    return state.candidate.id, metrics.active.stats.n + metrics.candidate.stats.n


def _run_request(agent_id: str, run_key: str | None) -> dg.RunRequest:
    return dg.RunRequest(run_key=run_key, partition_key=agent_id, tags={CANARY_AGENT_TAG: agent_id})


@dg.sensor(
    job=canary_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,  # acts only while an experiment is live
    description=f"Runs the canary for an agent whose experiment has at least {MIN_NEW_FEEDBACK} new feedback events since its last run.",
)
def canary_sensor(context: dg.SensorEvaluationContext, bindu_db: BinduDatabase) -> dg.SensorResult | dg.SkipReason:
    # Cursor: {agent_id: [candidate_id, feedback count when its last run was requested]}.
    cursor: dict[str, list] = json.loads(context.cursor) if context.cursor else {}
    store = bindu_db.store()
    now = datetime.now(UTC)
    requests, new_cursor, waiting = [], {}, []
    known = set(context.instance.get_dynamic_partitions(agent_partitions.name))
    for agent_id in running_experiments(store):
        counted = experiment_feedback_count(store, agent_id, now)
        if counted is None:
            continue
        candidate_id, count = counted
        last_candidate, last_count = cursor.get(agent_id, [None, 0])
        since_last = count - (last_count if last_candidate == candidate_id else 0)
        if since_last >= MIN_NEW_FEEDBACK:
            requests.append(_run_request(agent_id, run_key=f"{agent_id}:{candidate_id}:{count}"))
            new_cursor[agent_id] = [candidate_id, count]
        else:
            waiting.append(f"{agent_id} ({since_last} new)")
            new_cursor[agent_id] = [last_candidate, last_count] if last_candidate == candidate_id else [candidate_id, 0]
    if not requests:
        return dg.SkipReason(
            "no experiment has enough new feedback: " + ", ".join(waiting) if waiting else "no running experiments"
        )
    missing = [r.partition_key for r in requests if r.partition_key not in known]
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps(new_cursor, sort_keys=True),
        dynamic_partitions_requests=[agent_partitions.build_add_request(missing)] if missing else [],
    )


@dg.schedule(
    cron_schedule="0 * * * *",  # the seed's hourly canary cron
    job=canary_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Every hour, one canary iteration for each agent with a running experiment.",
)
def hourly_canary_schedule(context: dg.ScheduleEvaluationContext, bindu_db: BinduDatabase):
    agents = running_experiments(bindu_db.store())
    if not agents:
        return dg.SkipReason("no running experiments")
    known = set(context.instance.get_dynamic_partitions(agent_partitions.name))
    missing = [agent for agent in agents if agent not in known]
    if missing:
        context.instance.add_dynamic_partitions(agent_partitions.name, missing)
    return [_run_request(agent_id, run_key=None) for agent_id in agents]

"""Training runs: the job, its per-agent tag, and the seed's daily 2 AM schedule."""


import dagster as dg

from bindu_pipelines.launch import ensure_agent_partition
from bindu_pipelines.resources import BinduDatabase

from .training import experiment_running

TRAINING_JOB = "training_job"
# dagster_home/dagster.yaml limits runs with this tag to one per value: one training run per agent.
TRAINING_AGENT_TAG = "bindu/training-agent"

training_job = dg.define_asset_job(
    name=TRAINING_JOB,
    selection=dg.AssetSelection.assets("candidate_prompt").upstream(),
    description="Golden dataset and candidate prompt for one agent (tag runs with bindu/training-agent).",
)


def training_tags(agent_id: str) -> dict[str, str]:
    return {TRAINING_AGENT_TAG: agent_id}


@dg.schedule(job=training_job, cron_schedule="0 2 * * *", name="daily_training_schedule", execution_timezone="UTC")
def daily_training_schedule(context: dg.ScheduleEvaluationContext, bindu_db: BinduDatabase):
    """The seed's daily 2 AM training, for every agent with no experiment running."""
    store = bindu_db.store()
    requests, skipped = [], []
    for agent_id in store.list_agents():
        if experiment_running(store, agent_id):
            skipped.append(agent_id)
            continue
        ensure_agent_partition(context.instance, store, agent_id)
        stamp = context.scheduled_execution_time.strftime("%Y-%m-%d") if context.scheduled_execution_time else "manual"
        requests.append(
            dg.RunRequest(run_key=f"{agent_id}:{stamp}", partition_key=agent_id, tags=training_tags(agent_id))
        )
    if not requests:
        return dg.SkipReason(f"no agent to train (experiment running for: {', '.join(skipped) or 'none'})")
    return requests

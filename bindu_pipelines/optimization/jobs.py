"""Training runs: the job, its per-agent tag, and the seed's daily 2 AM schedule."""


import dagster as dg

from bindu_pipelines.errors import NO_LANGUAGE_MODEL
from bindu_pipelines.names import CANDIDATE_PROMPT, DAILY_TRAINING_SCHEDULE, TRAINING_AGENT_TAG, TRAINING_JOB
from bindu_pipelines.partitions import ensure_agent_partition
from bindu_pipelines.resources import BinduDatabase

from .lm import LanguageModel
from .training import experiment_running

__all__ = ["TRAINING_AGENT_TAG", "TRAINING_JOB", "daily_training_schedule", "training_job", "training_tags"]

training_job = dg.define_asset_job(
    name=TRAINING_JOB,
    selection=dg.AssetSelection.assets(CANDIDATE_PROMPT).upstream(),
    description=f"Golden dataset and candidate prompt for one agent (tag runs with {TRAINING_AGENT_TAG}).",
)


def training_tags(agent_id: str) -> dict[str, str]:
    return {TRAINING_AGENT_TAG: agent_id}


@dg.schedule(job=training_job, cron_schedule="0 2 * * *", name=DAILY_TRAINING_SCHEDULE, execution_timezone="UTC")
def daily_training_schedule(context: dg.ScheduleEvaluationContext, bindu_db: BinduDatabase, language_model: LanguageModel):
    """The seed's daily 2 AM training, for every agent with no experiment running.

    Without a named language model it starts nothing and says what to set (the offline demo
    model is never a silent default)."""
    if not language_model.is_configured():
        return dg.SkipReason(NO_LANGUAGE_MODEL)
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

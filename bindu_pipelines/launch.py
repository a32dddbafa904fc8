"""Run a job for one agent through Dagster, from the CLI or Python.

Runs go to the instance at ``DAGSTER_HOME`` so they show in the UI's run history, exactly like
the runs the schedules and sensors start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from bindu_pipelines.errors import RunInProgress, UnknownAgent
from bindu_pipelines.instance import CLAIM_TAG, RunClaimed, claim_agent_run, dead_reason, fail_dead_run, open_instance
from bindu_pipelines.names import BINDU_DB, CANARY_JOB, TRAINING_JOB
from bindu_pipelines.partitions import ensure_agent_partition
from bindu_pipelines.resources import BinduDatabase
from bindu_runtime import PromptStore, make_engine

__all__ = [
    "RunInProgress", "UnknownAgent", "ensure_agent_partition", "in_progress_runs", "run_job_for_agent", "step_failure_reason",
]  # fmt: skip

# Dagster's tag for a run's partition: every run of a job for one agent, however it was started.
PARTITION_TAG = "dagster/partition"


def in_progress_runs(
    instance: dg.DagsterInstance, job_name: str, tags: Mapping[str, str], *, held_claim: str | None = None
) -> list[dg.DagsterRun]:
    """Runs of ``job_name`` with these tags that are queued or running right now.

    A run recorded as in progress whose process is gone (``bindu_pipelines.instance.dead_reason``:
    killed, out of memory) is marked failed with the reason on the way, and not returned: it blocks nothing.
    """
    recorded = list(
        instance.get_runs(
            filters=dg.RunsFilter(
                job_name=job_name,
                tags=dict(tags),
                statuses=[
                    dg.DagsterRunStatus.QUEUED,
                    dg.DagsterRunStatus.NOT_STARTED,
                    dg.DagsterRunStatus.STARTING,
                    dg.DagsterRunStatus.STARTED,
                ],
            )
        )
    )
    alive = []
    for run in recorded:
        reason = dead_reason(instance, run, held_claim=held_claim)
        if reason is None:
            alive.append(run)
        else:
            fail_dead_run(instance, run, reason)
    return alive


def _refuse_in_progress(job_name: str, agent_id: str, where: str) -> RunInProgress:
    kind = {TRAINING_JOB: "training", CANARY_JOB: "canary"}.get(job_name, job_name)
    return RunInProgress(f"a {kind} run for {agent_id!r} is already in progress ({where})")


def run_job_for_agent(
    job_name: str,
    agent_id: str,
    *,
    run_config: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    instance: dg.DagsterInstance | None = None,
    definitions: dg.Definitions | None = None,
) -> dg.ExecuteInProcessResult:
    """Execute ``job_name`` for the agent's partition in this process, recorded in the instance.

    Raises UnknownAgent for an agent without prompts, RunInProgress when a run of this job for
    the agent is live (a process here holds its claim, or a live run is recorded). The result is
    returned whether the run succeeded or not (``raise_on_error=False``); callers report
    ``result.success``. The run records the host, pid and claim it runs under (``bindu/…`` tags).
    """
    if definitions is None:
        from bindu_pipelines.definitions import defs as definitions
    instance = instance or open_instance()
    database = definitions.resources.get(BINDU_DB) if definitions.resources else None
    configured = database if isinstance(database, BinduDatabase) else BinduDatabase()
    # A fresh engine: the definitions' resource object is shared by every run in this process, and
    # an engine cached on it would outlive a change of BINDU_DATABASE_URL.
    engine = make_engine(configured.url, connect_timeout=configured.connect_timeout)
    try:
        ensure_agent_partition(instance, PromptStore(engine), agent_id)
    finally:
        engine.dispose()
    job = definitions.resolve_job_def(job_name)
    with _claim(instance, job_name, agent_id) as claim_tags:
        # Under the claim, checked again: runs of the daemon or of another machine count too, and
        # a recorded run under this very claim is a dead one (its process released the claim).
        running = in_progress_runs(instance, job_name, {PARTITION_TAG: agent_id}, held_claim=claim_tags[CLAIM_TAG])
        if running:
            raise _refuse_in_progress(job_name, agent_id, f"run {running[0].run_id}")
        return job.execute_in_process(
            run_config=dict(run_config or {}),
            instance=instance,
            partition_key=agent_id,
            tags={**(tags or {}), **claim_tags},
            raise_on_error=False,
        )


@contextlib.contextmanager
def _claim(instance: dg.DagsterInstance, job_name: str, agent_id: str) -> Iterator[dict[str, str]]:
    try:
        with claim_agent_run(instance, job_name, agent_id) as claim_tags:
            yield claim_tags
    except RunClaimed:
        raise _refuse_in_progress(job_name, agent_id, "another process on this machine holds its claim") from None


def step_failure_reason(result: dg.ExecuteInProcessResult, *, default: str = "the run failed") -> str:
    """The first failed step's reason in one line, as a person should read it.

    A ``dg.Failure`` raised by our assets carries the reason as its description; Dagster prefixes
    the message with the exception's dotted class name, which is noise to a user.
    """
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE":
            continue
        error = event.event_specific_data.error
        # Dagster wraps an unexpected exception; the user's error is its cause.
        while error.cls_name == "DagsterExecutionStepExecutionError" and error.cause is not None:
            error = error.cause
        lines = (getattr(error, "message", "") or "").strip().splitlines()
        text = lines[0] if lines else ""
        if error.cls_name == "Failure" and text:
            return text.split("Failure: ", 1)[-1]
        return f"{event.step_key or 'a step'} failed: {text or error.cls_name}"
    return default

"""Run a job for one agent through Dagster, from the CLI or Python.

Runs go to the instance at ``DAGSTER_HOME`` so they show in the UI's run history, exactly like
the runs the schedules and sensors start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from bindu_pipelines.errors import UnknownAgent
from bindu_pipelines.names import BINDU_DB
from bindu_pipelines.partitions import ensure_agent_partition
from bindu_pipelines.resources import BinduDatabase
from bindu_runtime import PromptStore, make_engine

__all__ = ["UnknownAgent", "ensure_agent_partition", "in_progress_runs", "run_job_for_agent", "step_failure_reason"]


def in_progress_runs(instance: dg.DagsterInstance, job_name: str, tags: Mapping[str, str]) -> list[dg.DagsterRun]:
    """Runs of ``job_name`` with these tags that are queued or running right now."""
    return list(
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

    Raises UnknownAgent for an agent without prompts. The result is returned whether the run
    succeeded or not (``raise_on_error=False``); callers report ``result.success``.
    """
    if definitions is None:
        from bindu_pipelines.definitions import defs as definitions
    instance = instance or dg.DagsterInstance.get()
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
    return job.execute_in_process(
        run_config=dict(run_config or {}),
        instance=instance,
        partition_key=agent_id,
        tags=dict(tags or {}),
        raise_on_error=False,
    )


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

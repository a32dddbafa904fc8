"""What an agent is serving and what its prompts have been used for, as plain data."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from bindu_runtime import PromptStore, layout
from bindu_runtime.schema import task_feedback, tasks


def prompt_usage(engine: sa.Engine, agent_id: str, prompt_ids: list[str]) -> dict[str, dict[str, int]]:
    """Tasks served by each of the agent's prompts (in its namespace) and how many of them have
    any feedback row."""
    if not prompt_ids:
        return {}
    has_feedback = sa.exists().where(task_feedback.c.task_id == tasks.c.id)
    query = (
        sa.select(
            tasks.c.prompt_id,
            sa.func.count().label("tasks"),
            sa.func.count().filter(has_feedback).label("tasks_with_feedback"),
        )
        .where(tasks.c.prompt_id.in_(prompt_ids))
        .group_by(tasks.c.prompt_id)
    )
    with layout.for_agent(engine, agent_id).connect() as connection:
        rows = connection.execute(query).mappings().all()
    usage = {prompt_id: {"tasks": 0, "tasks_with_feedback": 0} for prompt_id in prompt_ids}
    for row in rows:
        usage[row["prompt_id"]] = {"tasks": row["tasks"], "tasks_with_feedback": row["tasks_with_feedback"]}
    return usage


def historic_tasks(engine: sa.Engine, agent_id: str) -> int | None:
    """The agent's tasks without a prompt stamp (written before its router) that training counts
    as its history, or None when its namespace is shared so they cannot be attributed to it."""
    with layout.for_agent(engine, agent_id).connect() as connection:
        if not layout.owns_namespace(connection, agent_id):
            return None
        return connection.execute(sa.select(sa.func.count()).select_from(tasks).where(tasks.c.prompt_id.is_(None))).scalar_one()


def agent_status(engine: sa.Engine, agent_id: str) -> dict[str, Any]:
    """The agent's prompts (newest first) with status, traffic and usage. LookupError if unknown
    (neither prompts nor a `db upgrade --agent` record in its namespace)."""
    store = PromptStore(engine, agent_id=agent_id)
    prompts = store.list_prompts(agent_id)
    if not prompts and agent_id not in store.list_agents():
        raise LookupError(f"unknown agent {agent_id!r}: no prompts in the database (has its router bootstrapped?)")
    usage = prompt_usage(engine, agent_id, [prompt.id for prompt in prompts])
    from bindu_pipelines.canary.controller import experiment_state  # canary (issue 5): live experiment
    from bindu_pipelines.canary.settings import canary_settings

    return {
        "agent_id": agent_id,
        "experiment_running": any(prompt.status == "candidate" for prompt in prompts),
        "experiment": experiment_state(engine, agent_id) if prompts else None,
        "canary_settings": canary_settings(agent_id),  # canary (issue 15): the policy this agent runs with
        "historic_tasks": historic_tasks(engine, agent_id),
        "prompts": [
            {**prompt.as_dict(), **usage[prompt.id]}
            for prompt in prompts
        ],
    }

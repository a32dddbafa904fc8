"""What an agent is serving and what its prompts have been used for, as plain data."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from bindu_runtime import PromptStore
from bindu_runtime.schema import task_feedback, tasks


def prompt_usage(engine: sa.Engine, prompt_ids: list[str]) -> dict[str, dict[str, int]]:
    """Tasks served by each prompt and how many of them have any feedback row."""
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
    with engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    usage = {prompt_id: {"tasks": 0, "tasks_with_feedback": 0} for prompt_id in prompt_ids}
    for row in rows:
        usage[row["prompt_id"]] = {"tasks": row["tasks"], "tasks_with_feedback": row["tasks_with_feedback"]}
    return usage


def agent_status(engine: sa.Engine, agent_id: str) -> dict[str, Any]:
    """The agent's prompts (newest first) with status, traffic and usage. LookupError if unknown."""
    store = PromptStore(engine)
    prompts = store.list_prompts(agent_id)
    if not prompts:
        raise LookupError(f"unknown agent {agent_id!r}: no prompts in the database")
    usage = prompt_usage(engine, [prompt.id for prompt in prompts])
    from bindu_pipelines.canary.controller import experiment_state  # canary (issue 5): live experiment

    return {
        "agent_id": agent_id,
        "experiment_running": any(prompt.status == "candidate" for prompt in prompts),
        "experiment": experiment_state(engine, agent_id),
        "prompts": [
            {**prompt.as_dict(), **usage[prompt.id]}
            for prompt in prompts
        ],
    }

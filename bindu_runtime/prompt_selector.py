"""The seed's ``select_prompt_with_canary``, kept for code written against the original.

It works the way the original did — it reads the prompts from the database on every call and
draws by the traffic weights — and returns the dict the original documents. New code should hold a
``PromptRouter`` instead: in-memory, sticky, and it keeps serving when the database is down.
"""

from __future__ import annotations

import random
from typing import Any

import sqlalchemy as sa

from .db import make_engine
from .feedback_sql import feedback_score_sql
from .layout import qualified_table
from .store import PromptStore


def prompt_feedback_stats(engine: sa.Engine, agent_id: str, prompt_ids: list[str]) -> dict[str, tuple[int, float | None]]:
    """For each of the agent's prompts: tasks it served, and the mean normalised feedback of those
    tasks (each task's latest valid feedback row counts once, latest by insertion order, the
    database's, never the writer's clock; None without any)."""
    if not prompt_ids:
        return {}
    tasks_table = qualified_table(engine, agent_id, "tasks")
    feedback_table = qualified_table(engine, agent_id, "task_feedback")
    names = {f"p{index}": prompt_id for index, prompt_id in enumerate(prompt_ids)}
    in_list = ", ".join(f":{name}" for name in names)
    statement = sa.text(
        f"""
        WITH scored AS (
            SELECT t.prompt_id AS prompt_id, t.id AS task_id, f.id AS feedback_id,
                   {feedback_score_sql(engine.dialect.name)} AS score
              FROM {tasks_table} AS t JOIN {feedback_table} AS f ON f.task_id = t.id
             WHERE t.prompt_id IN ({in_list})
        ),
        latest AS (
            SELECT prompt_id, score,
                   ROW_NUMBER() OVER (PARTITION BY task_id ORDER BY feedback_id DESC) AS position
              FROM scored WHERE score IS NOT NULL
        )
        SELECT prompt_id, AVG(score) AS mean_score FROM latest WHERE position = 1 GROUP BY prompt_id
        """
    )
    counts = sa.text(f"SELECT prompt_id, COUNT(*) AS served FROM {tasks_table} WHERE prompt_id IN ({in_list}) GROUP BY prompt_id")
    with engine.connect() as connection:
        means = {row.prompt_id: float(row.mean_score) for row in connection.execute(statement, names)}
        served = {row.prompt_id: int(row.served) for row in connection.execute(counts, names)}
    return {prompt_id: (served.get(prompt_id, 0), means.get(prompt_id)) for prompt_id in prompt_ids}


async def select_prompt_with_canary(
    agent_id: str,
    *,
    database_url: str | None = None,
    engine: sa.Engine | None = None,
    rng: random.Random | None = None,
) -> dict[str, Any] | None:
    """The seed's traffic-weighted draw between the active and the candidate prompt.

    Returns ``{"id", "prompt_text", "status", "traffic", "num_interactions",
    "average_feedback_score"}``, or None when the agent has no active prompt.
    """
    owned = engine is None
    engine = engine or make_engine(database_url)
    try:
        state = PromptStore(engine).serving_state(agent_id)
        if state.active is None:
            return None
        chosen = state.active
        if state.candidate is not None and (rng or random).random() < float(state.candidate.traffic):
            chosen = state.candidate
        served, mean = prompt_feedback_stats(engine, agent_id, [chosen.id])[chosen.id]
        return {
            "id": chosen.id,
            "prompt_text": chosen.prompt_text,
            "status": chosen.status,
            "traffic": float(chosen.traffic),
            "num_interactions": served,
            "average_feedback_score": mean,
        }
    finally:
        if owned:
            engine.dispose()

"""Helpers for the canary tests: write an experiment's tasks and feedback at chosen times."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from bindu_runtime import PromptStore
from bindu_runtime.schema import task_feedback, tasks

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def write_thumbs(engine: sa.Engine, prompt_id: str, at: datetime, thumbs: Iterable[bool]) -> int:
    """One task per value, routed to ``prompt_id`` at ``at``, each with one thumbs feedback row."""
    task_rows, feedback_rows = [], []
    for value in thumbs:
        task_id = uuid.uuid4()
        task_rows.append({
            "id": task_id, "context_id": uuid.uuid4(), "kind": "task", "state": "completed",
            "state_timestamp": at, "history": [], "prompt_id": prompt_id, "created_at": at, "updated_at": at,
        })  # fmt: skip
        feedback_rows.append({"task_id": task_id, "feedback_data": {"thumbs_up": bool(value)}, "created_at": at})
    if task_rows:
        with engine.begin() as connection:
            connection.execute(tasks.insert(), task_rows)
            connection.execute(task_feedback.insert(), feedback_rows)
    return len(task_rows)


def write_rate(engine, prompt_id: str, at: datetime, n: int, rate: float) -> None:
    ones = round(n * rate)
    write_thumbs(engine, prompt_id, at, [True] * ones + [False] * (n - ones))


def start_experiment(engine: sa.Engine, agent_id: str = "bot", at: datetime = T0):
    store = PromptStore(engine, clock=lambda: at - timedelta(days=1))
    active = store.bootstrap(agent_id, "You are helpful.")
    candidate = PromptStore(engine, clock=lambda: at).start_experiment(agent_id, "You are helpful and brief.", source="test")
    return active, candidate


@pytest.fixture
def t0() -> datetime:
    return T0

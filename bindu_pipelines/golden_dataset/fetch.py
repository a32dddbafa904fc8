"""Reading an agent's tasks and their feedback from the Bindu database, in bounded chunks.

An agent's tasks are those whose ``prompt_id`` is one of the agent's prompts. Tasks are read
newest first (so a ``limit`` keeps the most recent ones, as the seed did) through a server-side
cursor on PostgreSQL (``stream_results`` + ``yield_per``): memory holds one chunk, however many
tasks there are. Each chunk's feedback rows come from one indexed ``task_id IN (...)`` query.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from bindu_runtime.schema import agent_prompts, task_feedback, tasks

from .feedback import FeedbackRow
from .history import join_context_histories

DEFAULT_CHUNK_SIZE = 5_000

# JSON columns are read as the driver gives them, without SQLAlchemy's JSON decoding: text that
# is not valid JSON (possible on SQLite) must become a counted drop later, not an exception here.
_history = sa.type_coerce(tasks.c.history, sa.Text).label("history")
_feedback_data = sa.type_coerce(task_feedback.c.feedback_data, sa.Text).label("feedback_data")


@dataclass(slots=True)
class RawTask:
    """One task as read: the history is whatever the database holds (validated later)."""

    id: str
    context_id: str | None
    prompt_id: str | None
    created_at: Any
    history: Any
    feedback: list[FeedbackRow] = field(default_factory=list)


def _agent_filter(agent_id: str, since: datetime | None, until: datetime | None) -> list:
    agent_prompt_ids = sa.select(agent_prompts.c.id).where(agent_prompts.c.agent_id == agent_id)
    conditions = [tasks.c.prompt_id.in_(agent_prompt_ids.scalar_subquery())]
    if since is not None:
        conditions.append(tasks.c.created_at >= since)
    if until is not None:
        conditions.append(tasks.c.created_at < until)
    return conditions


def count_agent_tasks(
    connectable: sa.Engine | sa.Connection, agent_id: str, *, since: datetime | None = None, until: datetime | None = None
) -> int:
    """How many tasks of the agent fall in the window (before any limit)."""
    query = sa.select(sa.func.count()).select_from(tasks).where(*_agent_filter(agent_id, since, until))
    if isinstance(connectable, sa.Engine):
        with connectable.connect() as conn:
            return int(conn.execute(query).scalar_one())
    return int(connectable.execute(query).scalar_one())


def count_orphan_feedback(engine: sa.Engine) -> int:
    """Feedback rows whose task does not exist (possible where foreign keys are not enforced)."""
    query = (
        sa.select(sa.func.count())
        .select_from(task_feedback.outerjoin(tasks, task_feedback.c.task_id == tasks.c.id))
        .where(tasks.c.id.is_(None))
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _feedback_by_task(conn: sa.Connection, task_ids: list) -> dict[Any, list[FeedbackRow]]:
    rows = conn.execute(
        sa.select(task_feedback.c.task_id, task_feedback.c.id, task_feedback.c.created_at, _feedback_data)
        .where(task_feedback.c.task_id.in_(task_ids))
    )
    grouped: dict[Any, list[FeedbackRow]] = defaultdict(list)
    for task_id, row_id, created_at, data in rows:
        grouped[task_id].append(FeedbackRow(row_id, created_at, data))
    return grouped


def _context_conversations(conn: sa.Connection, chunk: list) -> dict[Any, list]:
    """For each task in the chunk: the histories of its context's tasks up to and including it."""
    context_ids = list({row.context_id for row in chunk if row.context_id is not None})
    if not context_ids:
        return {}
    rows = conn.execute(
        sa.select(tasks.c.context_id, tasks.c.id, tasks.c.created_at, _history)
        .where(tasks.c.context_id.in_(context_ids))
        .order_by(tasks.c.context_id, tasks.c.created_at, tasks.c.id)
    ).all()
    by_context: dict[Any, list] = defaultdict(list)
    for context_id, task_id, created_at, history in rows:
        by_context[context_id].append((task_id, history))
    conversations = {}
    for row in chunk:
        histories = []
        for task_id, history in by_context.get(row.context_id, []):
            histories.append(history)
            if task_id == row.id:
                break
        conversations[row.id] = join_context_histories(histories)
    return conversations


def iter_agent_task_chunks(
    engine: sa.Engine,
    agent_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    rebuild_context: bool = False,
) -> Iterator[list[RawTask]]:
    """The agent's tasks (newest first) with their feedback rows, ``chunk_size`` tasks at a time.

    ``rebuild_context`` replaces each task's history by the conversation across the tasks of its
    ``context_id`` up to that task (what the agent actually saw).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size!r}")
    query = (
        sa.select(tasks.c.id, tasks.c.context_id, tasks.c.prompt_id, tasks.c.created_at, _history)
        .where(*_agent_filter(agent_id, since, until))
        .order_by(tasks.c.created_at.desc(), tasks.c.id)
    )
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk_size).execute(query)
        # A second connection for the per-chunk lookups keeps the streaming cursor undisturbed.
        with engine.connect() as lookup:
            for chunk in result.partitions():
                feedback = _feedback_by_task(lookup, [row.id for row in chunk])
                conversations = _context_conversations(lookup, chunk) if rebuild_context else {}
                yield [
                    RawTask(
                        id=str(row.id),
                        context_id=str(row.context_id) if row.context_id is not None else None,
                        prompt_id=row.prompt_id,
                        created_at=row.created_at,
                        history=conversations[row.id] if rebuild_context else row.history,
                        feedback=feedback.get(row.id, []),
                    )
                    for row in chunk
                ]

"""Reading an agent's tasks and their feedback from the Bindu database, in bounded chunks.

An agent's tasks are those whose ``prompt_id`` is one of the agent's prompts. Tasks are read
newest first (so a ``limit`` keeps the most recent ones, as the seed did) through a server-side
cursor on PostgreSQL (``stream_results`` + ``yield_per``): memory holds one chunk, however many
tasks there are. Each task's feedback rows come along in the same row, aggregated by an indexed
correlated subquery, so one streamed query does all the reading.

JSON arrives as text and is decoded here (with orjson when it is installed): text that is not
valid JSON (possible on SQLite) becomes a counted drop later, never an exception in the driver.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from bindu_runtime.schema import agent_prompts, task_feedback, tasks

from .history import join_context_histories, loads

DEFAULT_CHUNK_SIZE = 5_000

# A LIMIT no table reaches. PostgreSQL's planner postpones expensive output columns (the
# history and feedback subqueries) past the sort only when the query has a LIMIT; without it,
# every task's history and feedback JSON is built and sorted (spilled to disk) before the first
# row streams.
_POSTPONE_WIDE_COLUMNS = 2**63 - 1


@dataclass(slots=True)
class RawTask:
    """One task as read: history and feedback are whatever the database holds (validated later).

    ``feedback`` holds ``(id, created_at, feedback_data)`` rows, or the database's JSON text of
    them (decoded by ``decode_feedback_rows`` where the rows are used, so that worker processes,
    not the reading process, pay for it).
    """

    id: str
    context_id: str | None
    prompt_id: str | None
    created_at: Any
    history: Any
    feedback: list = field(default_factory=list)


def _agent_filter(agent_id: str, since: datetime | None, until: datetime | None) -> list:
    agent_prompt_ids = sa.select(agent_prompts.c.id).where(agent_prompts.c.agent_id == agent_id)
    conditions = [tasks.c.prompt_id.in_(agent_prompt_ids.scalar_subquery())]
    if since is not None:
        conditions.append(tasks.c.created_at >= since)
    if until is not None:
        conditions.append(tasks.c.created_at < until)
    return conditions


def _task_columns(dialect: str) -> list:
    """id, context_id, prompt_id, created_at, history (text), feedback (JSON text of [id, at, data] rows)."""
    feedback_of_task = task_feedback.c.task_id == tasks.c.id
    if dialect == "postgresql":
        # Text UUIDs (canonical form) and JSON text: no per-row uuid.UUID objects or driver-side decoding.
        ids = [sa.cast(tasks.c.id, sa.Text).label("id"), sa.cast(tasks.c.context_id, sa.Text).label("context_id")]
        # History by primary key in a scalar subquery: with a LIMIT on the query, PostgreSQL
        # evaluates such expensive columns after the sort, so the sort carries narrow rows (not
        # the history JSON) and rows stream as soon as it is done (see ``_POSTPONE_WIDE_COLUMNS``).
        task_history = tasks.alias("task_history")
        history = (
            sa.select(sa.cast(task_history.c.history, sa.Text)).where(task_history.c.id == tasks.c.id).scalar_subquery()
        ).label("history")
        feedback = (
            sa.select(sa.cast(sa.func.json_agg(sa.func.json_build_array(
                task_feedback.c.id, task_feedback.c.created_at, task_feedback.c.feedback_data)), sa.Text))
            .where(feedback_of_task)
            .scalar_subquery()
        )
    else:
        # SQLite keeps UUIDs as 32 hex digits: let the column type turn them into uuid.UUID.
        ids = [tasks.c.id, tasks.c.context_id]
        history = sa.type_coerce(tasks.c.history, sa.Text).label("history")
        feedback = (
            sa.select(sa.func.json_group_array(sa.func.json_array(
                task_feedback.c.id, task_feedback.c.created_at, sa.type_coerce(task_feedback.c.feedback_data, sa.Text))))
            .where(feedback_of_task)
            .scalar_subquery()
        )
    return [*ids, tasks.c.prompt_id, tasks.c.created_at, history, feedback.label("feedback")]


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


def decode_feedback_rows(value: Any) -> list:
    """A task's aggregated feedback as ``[id, created_at, feedback_data]`` rows (text is decoded)."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        try:
            value = loads(value)
        except ValueError:
            return []
    if not isinstance(value, list):
        return []
    return [row for row in value if isinstance(row, (list, tuple)) and len(row) == 3]


def _context_conversations(conn: sa.Connection, chunk: list[RawTask]) -> dict[str, list]:
    """For each task in the chunk: the histories of its context's tasks up to and including it."""
    context_ids = list({uuid.UUID(task.context_id) for task in chunk if task.context_id})
    if not context_ids:
        return {}
    rows = conn.execute(
        sa.select(tasks.c.context_id, tasks.c.id, sa.type_coerce(tasks.c.history, sa.Text))
        .where(tasks.c.context_id.in_(context_ids))
        .order_by(tasks.c.context_id, tasks.c.created_at, tasks.c.id)
    ).all()
    by_context: dict[str, list] = defaultdict(list)
    for context_id, task_id, history in rows:
        by_context[str(context_id)].append((str(task_id), history))
    conversations = {}
    for task in chunk:
        histories = []
        for task_id, history in by_context.get(task.context_id or "", []):
            histories.append(history)
            if task_id == task.id:
                break
        conversations[task.id] = join_context_histories(histories)
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
        sa.select(*_task_columns(engine.dialect.name))
        .where(*_agent_filter(agent_id, since, until))
        .order_by(tasks.c.created_at.desc(), tasks.c.id)
    )
    if limit is not None:
        query = query.limit(limit)
    elif engine.dialect.name == "postgresql":
        query = query.limit(_POSTPONE_WIDE_COLUMNS)
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk_size).execute(query)
        lookup = engine.connect() if rebuild_context else None
        try:
            for rows in result.partitions():
                chunk = [
                    RawTask(str(task_id), str(context_id) if context_id is not None else None, prompt_id, created_at,
                            history, feedback if feedback is not None else [])
                    for task_id, context_id, prompt_id, created_at, history, feedback in rows
                ]
                if lookup is not None:
                    conversations = _context_conversations(lookup, chunk)
                    for task in chunk:
                        task.history = conversations.get(task.id, task.history)
                yield chunk
        finally:
            if lookup is not None:
                lookup.close()


_END = object()


def read_ahead(chunks: Iterator[list[RawTask]], depth: int = 1) -> Iterator[list[RawTask]]:
    """``chunks``, read by a background thread up to ``depth`` chunks ahead.

    The database driver releases the GIL while it waits for rows, so PostgreSQL produces the next
    chunk while this process works on the current one. Errors reach the consumer; a consumer that
    stops early stops the reader (and its connection closes with it).
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    break
        except BaseException as error:  # handed to the consumer, which re-raises it
            put(error)
        else:
            put(_END)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=reader, name="golden-dataset-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()

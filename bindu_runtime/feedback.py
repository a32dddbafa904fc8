"""Feedback from users, written in the shape Bindu itself writes.

``feedback_data`` = ``{"task_id", "rating"?, "thumbs_up"?, "feedback"?, "metadata", "timestamp"}``.
Validation happens before anything is written; a refused call writes nothing.

One contract for hostile input, the same on SQLite and PostgreSQL: text containing NUL or a lone
surrogate (PostgreSQL cannot store either in text or JSONB; SQLite would) is refused with
FeedbackError, in the feedback text and in every metadata key and string; metadata nests at most
MAX_METADATA_DEPTH levels and serialises to at most MAX_METADATA_BYTES of JSON; feedback text is at
most MAX_FEEDBACK_CHARS characters. Database failures surface as DatabaseFailure, a task that is
not in the agent's schema as UnknownTask: no driver error, RecursionError or UnicodeEncodeError
escapes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from .db import write_transaction
from .errors import DatabaseFailure, FeedbackError, UnknownTask
from .layout import for_agent
from .schema import task_feedback, tasks
from .stamps import StampBatch, as_task_uuid, write_stamps

MAX_FEEDBACK_CHARS = 10_000
MAX_METADATA_DEPTH = 32  # nesting levels of mappings and lists below the metadata mapping itself
MAX_METADATA_BYTES = 65_536  # of the metadata as UTF-8 JSON


def _safe_repr(value: Any, limit: int = 60) -> str:
    try:
        return repr(value)[:limit]
    except Exception:
        return f"<{type(value).__name__}>"


def parse_task_id(task_id: uuid.UUID | str) -> uuid.UUID:
    task_uuid = as_task_uuid(task_id)
    if task_uuid is None:
        raise FeedbackError(f"task_id must be a UUID, got {type(task_id).__name__} {_safe_repr(task_id)}")
    return task_uuid


def unstorable_text_reason(text: str) -> str | None:
    """Why ``text`` cannot be stored identically on both backends, or None when it can."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode text)"
    return None


def _check_metadata_tree(metadata: Mapping) -> None:
    """Depth and text of every key and string, walked without recursion (a 100 000-deep value
    must be refused, not overflow the stack)."""
    stack: list[tuple[Any, int]] = [(metadata, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            reason = unstorable_text_reason(value)
            if reason:
                raise FeedbackError(f"metadata text {reason}")
        elif isinstance(value, Mapping) or isinstance(value, (list, tuple)):
            if depth > MAX_METADATA_DEPTH:
                raise FeedbackError(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels")
            if isinstance(value, Mapping):
                for key, item in value.items():
                    if isinstance(key, str):
                        reason = unstorable_text_reason(key)
                        if reason:
                            raise FeedbackError(f"metadata key {reason}")
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)


def build_feedback_data(
    task_id: uuid.UUID,
    *,
    rating: Any = None,
    thumbs_up: Any = None,
    feedback: Any = None,
    metadata: Any = None,
    timestamp: datetime,
) -> dict[str, Any]:
    """Validate one piece of feedback and return the row Bindu would store. Raises FeedbackError."""
    if rating is None and thumbs_up is None and feedback is None:
        raise FeedbackError("nothing to record: give rating (1-5), thumbs_up (True/False) or feedback text")
    data: dict[str, Any] = {"task_id": str(task_id)}
    if rating is not None:
        if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
            raise FeedbackError(f"rating must be an integer from 1 to 5, got {rating!r}")
        data["rating"] = rating
    if thumbs_up is not None:
        if not isinstance(thumbs_up, bool):
            raise FeedbackError(f"thumbs_up must be True or False, got {thumbs_up!r}")
        data["thumbs_up"] = thumbs_up
    if feedback is not None:
        if not isinstance(feedback, str):
            raise FeedbackError(f"feedback must be text, got {type(feedback).__name__}")
        if len(feedback) > MAX_FEEDBACK_CHARS:
            raise FeedbackError(f"feedback is {len(feedback)} characters; the limit is {MAX_FEEDBACK_CHARS}")
        reason = unstorable_text_reason(feedback)
        if reason:
            raise FeedbackError(f"feedback text {reason}")
        if rating is None and thumbs_up is None and not feedback.strip():
            raise FeedbackError("feedback text is empty and there is no rating or thumbs_up")
        data["feedback"] = feedback
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise FeedbackError(f"metadata must be a mapping, got {type(metadata).__name__}")
    _check_metadata_tree(metadata)
    try:
        encoded = json.dumps(dict(metadata), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise FeedbackError(f"metadata must be JSON-serialisable: {str(exc)[:200]}") from None
    if len(encoded) > MAX_METADATA_BYTES:  # ASCII JSON (ensure_ascii): characters are bytes
        raise FeedbackError(f"metadata is {len(encoded)} bytes of JSON; the limit is {MAX_METADATA_BYTES}")
    data["metadata"] = json.loads(encoded)
    data["timestamp"] = timestamp.isoformat()
    return data


def database_failure(what: str, exc: sa.exc.SQLAlchemyError) -> DatabaseFailure:
    """The package's error for a failed statement: the call and the driver's first line, never
    the statement or its parameters (feedback text and user data)."""
    original = getattr(exc, "orig", None)
    text = str(original if original is not None else type(exc).__name__).strip()
    return DatabaseFailure(f"{what}: {text.splitlines()[0] if text else type(exc).__name__}")


class FeedbackCollector:
    """Records user feedback on one agent's tasks and which prompt served each task.

    Every statement goes to the agent's schema (``layout.for_agent``). Without ``agent_id`` it
    uses the namespace the engine's connections see (SQLite's one file); stamping needs the
    agent, since a stamp must name one of the agent's own prompts.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        agent_id: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.engine = engine
        self.agent_id = agent_id
        self._agent_engine = engine if agent_id is None else for_agent(engine, agent_id)
        self._clock = clock

    def record_feedback(
        self,
        task_id: uuid.UUID | str,
        *,
        rating: int | None = None,
        thumbs_up: bool | None = None,
        feedback: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Store one feedback row for ``task_id``; returns its id.
        Raises FeedbackError (bad input), UnknownTask, DatabaseFailure (nothing was written)."""
        task_uuid = parse_task_id(task_id)
        now = self._clock()
        data = build_feedback_data(
            task_uuid, rating=rating, thumbs_up=thumbs_up, feedback=feedback, metadata=metadata, timestamp=now
        )
        try:
            with write_transaction(self._agent_engine) as connection:
                exists = connection.execute(sa.select(tasks.c.id).where(tasks.c.id == task_uuid)).first()
                if exists is None:
                    raise UnknownTask(f"no task {task_uuid} to attach feedback to")
                return connection.execute(
                    task_feedback.insert().values(task_id=task_uuid, feedback_data=data, created_at=now)
                    .returning(task_feedback.c.id)
                ).scalar_one()
        except sa.exc.IntegrityError:  # the task was deleted between the check and the insert
            raise UnknownTask(f"no task {task_uuid} to attach feedback to") from None
        except sa.exc.SQLAlchemyError as exc:
            raise database_failure(f"could not record feedback for task {task_uuid}", exc) from exc

    def stamp_task_prompt(self, task_id: uuid.UUID | str, prompt_id: str, *, key: Any = None) -> None:
        """Record now that ``prompt_id`` served ``task_id`` (with the key's randomisation unit).

        The synchronous, validating form of the router's queued ``stamp_task``: raises
        FeedbackError when the prompt is not this agent's, UnknownTask when the task is not in
        the agent's schema, DatabaseFailure when the database fails (nothing was written).
        """
        task_uuid = parse_task_id(task_id)
        if self.agent_id is None:
            raise FeedbackError("stamping needs the collector's agent_id: FeedbackCollector(engine, agent_id=...)")
        if not isinstance(prompt_id, str):
            raise FeedbackError(f"prompt_id must be text, got {type(prompt_id).__name__}")
        try:
            with write_transaction(self._agent_engine) as connection:
                outcome = write_stamps(connection, self.agent_id, StampBatch([task_uuid], [prompt_id], [key]), now=self._clock())
        except sa.exc.SQLAlchemyError as exc:
            raise database_failure(f"could not stamp task {task_uuid}", exc) from exc
        if outcome.foreign_prompt:
            raise FeedbackError(f"no prompt {prompt_id[:80]!r} of agent {self.agent_id!r} to stamp task {task_uuid} with")
        if outcome.unknown_task:
            raise UnknownTask(f"no task {task_uuid} of agent {self.agent_id!r} to stamp with prompt {prompt_id}")

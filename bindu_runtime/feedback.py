"""Feedback from users, written in the shape Bindu itself writes.

``feedback_data`` = ``{"task_id", "rating"?, "thumbs_up"?, "feedback"?, "metadata", "timestamp"}``.
Validation happens before anything is written; a refused call writes nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from .db import write_transaction
from .errors import FeedbackError, UnknownTask
from .schema import agent_prompts, task_feedback, tasks

MAX_FEEDBACK_CHARS = 10_000


def parse_task_id(task_id: uuid.UUID | str) -> uuid.UUID:
    if isinstance(task_id, uuid.UUID):
        return task_id
    if isinstance(task_id, str):
        try:
            return uuid.UUID(task_id)
        except ValueError:
            pass
    raise FeedbackError(f"task_id must be a UUID, got {type(task_id).__name__} {str(task_id)[:60]!r}")


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
        if rating is None and thumbs_up is None and not feedback.strip():
            raise FeedbackError("feedback text is empty and there is no rating or thumbs_up")
        data["feedback"] = feedback
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise FeedbackError(f"metadata must be a mapping, got {type(metadata).__name__}")
    try:
        data["metadata"] = json.loads(json.dumps(dict(metadata), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise FeedbackError(f"metadata must be JSON-serialisable: {exc}") from None
    data["timestamp"] = timestamp.isoformat()
    return data


class FeedbackCollector:
    """Records user feedback on tasks and which prompt served each task."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.engine = engine
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
        """Store one feedback row for ``task_id``; returns its id. Raises FeedbackError / UnknownTask."""
        task_uuid = parse_task_id(task_id)
        now = self._clock()
        data = build_feedback_data(
            task_uuid, rating=rating, thumbs_up=thumbs_up, feedback=feedback, metadata=metadata, timestamp=now
        )
        with write_transaction(self.engine) as connection:
            exists = connection.execute(sa.select(tasks.c.id).where(tasks.c.id == task_uuid)).first()
            if exists is None:
                raise UnknownTask(f"no task {task_uuid} to attach feedback to")
            return connection.execute(
                task_feedback.insert().values(task_id=task_uuid, feedback_data=data, created_at=now)
                .returning(task_feedback.c.id)
            ).scalar_one()

    def stamp_task_prompt(self, task_id: uuid.UUID | str, prompt_id: str) -> None:
        """Record that ``prompt_id`` served ``task_id``; the canary compares prompts by these stamps."""
        task_uuid = parse_task_id(task_id)
        with write_transaction(self.engine) as connection:
            known = connection.execute(sa.select(agent_prompts.c.id).where(agent_prompts.c.id == prompt_id)).first()
            if known is None:
                raise FeedbackError(f"no prompt {prompt_id!r} to stamp task {task_uuid} with")
            updated = connection.execute(
                tasks.update().where(tasks.c.id == task_uuid).values(prompt_id=prompt_id, updated_at=self._clock())
            )
            if updated.rowcount == 0:
                raise UnknownTask(f"no task {task_uuid} to stamp with prompt {prompt_id}")

"""The feedback collector: Bindu's feedback_data shape, strict validation, nothing partial."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from bindu_runtime import FeedbackCollector, FeedbackError, PromptRouter, PromptStore, UnknownTask
from bindu_runtime.schema import task_feedback, tasks


def make_task(engine, **overrides) -> uuid.UUID:
    task_id = uuid.uuid4()
    now = datetime.now(UTC)
    row = {
        "id": task_id, "context_id": uuid.uuid4(), "kind": "task", "state": "completed", "state_timestamp": now,
        "history": [{"kind": "message", "role": "user", "parts": [{"kind": "text", "text": "hi"}]}],
        "artifacts": [], "metadata_": {}, "created_at": now, "updated_at": now, **overrides,
    }
    with engine.begin() as connection:
        connection.execute(tasks.insert().values(**row))
    return task_id


def feedback_rows(engine) -> list[dict]:
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(sa.select(task_feedback).order_by(task_feedback.c.id)).mappings()]


def test_feedback_is_written_in_binds_shape(engine):
    task_id = make_task(engine)
    moment = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    collector = FeedbackCollector(engine, clock=lambda: moment)
    collector.record_feedback(task_id, rating=4, feedback="good", metadata={"channel": "web"})
    collector.record_feedback(str(task_id), thumbs_up=False)
    first, second = feedback_rows(engine)
    assert first["task_id"] == task_id
    assert first["feedback_data"] == {
        "task_id": str(task_id), "rating": 4, "feedback": "good", "metadata": {"channel": "web"},
        "timestamp": moment.isoformat(),
    }
    assert second["feedback_data"]["thumbs_up"] is False and "rating" not in second["feedback_data"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "nothing to record"),
        ({"rating": 0}, "rating must be an integer from 1 to 5"),
        ({"rating": 6}, "rating must be an integer from 1 to 5"),
        ({"rating": 4.5}, "rating must be an integer from 1 to 5"),
        ({"rating": "5"}, "rating must be an integer from 1 to 5"),
        ({"rating": True}, "rating must be an integer from 1 to 5"),
        ({"thumbs_up": "maybe"}, "thumbs_up must be True or False"),
        ({"thumbs_up": 1}, "thumbs_up must be True or False"),
        ({"feedback": 42}, "feedback must be text"),
        ({"feedback": "   "}, "feedback text is empty"),
        ({"rating": 3, "metadata": ["not", "a", "mapping"]}, "metadata must be a mapping"),
        ({"rating": 3, "metadata": {"when": datetime.now()}}, "JSON-serialisable"),
        ({"rating": 3, "metadata": {"x": float("nan")}}, "JSON-serialisable"),
    ],
)
def test_bad_feedback_is_refused_and_writes_nothing(engine, kwargs, message):
    task_id = make_task(engine)
    with pytest.raises(FeedbackError, match=message):
        FeedbackCollector(engine).record_feedback(task_id, **kwargs)
    assert feedback_rows(engine) == []


def test_feedback_on_unknown_or_malformed_task_id_is_refused(engine):
    collector = FeedbackCollector(engine)
    with pytest.raises(UnknownTask):
        collector.record_feedback(uuid.uuid4(), rating=5)
    with pytest.raises(FeedbackError, match="task_id must be a UUID"):
        collector.record_feedback("'; DROP TABLE tasks; --", rating=5)
    assert feedback_rows(engine) == []
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(tasks)).scalar() == 0


def test_router_stamps_tasks_with_the_prompt_that_served_them(engine):
    task_id = make_task(engine)
    with PromptRouter(engine, agent_id="bot", default_prompt="code prompt", start=False) as router:
        router.refresh()
        choice = router.select(task_id)
        router.stamp_task(task_id, choice)
        router.record_feedback(task_id, thumbs_up=True)
    with engine.connect() as connection:
        assert connection.execute(sa.select(tasks.c.prompt_id).where(tasks.c.id == task_id)).scalar() == choice.prompt_id
    assert feedback_rows(engine)[0]["feedback_data"]["thumbs_up"] is True


def test_stamping_refuses_unknown_prompt_or_task(engine):
    task_id = make_task(engine)
    prompt = PromptStore(engine).bootstrap("bot", "v1")
    collector = FeedbackCollector(engine)
    with pytest.raises(FeedbackError, match="no prompt"):
        collector.stamp_task_prompt(task_id, "missing-prompt")
    with pytest.raises(UnknownTask):
        collector.stamp_task_prompt(uuid.uuid4(), prompt.id)
    with engine.connect() as connection:
        assert connection.execute(sa.select(tasks.c.prompt_id)).scalar() is None

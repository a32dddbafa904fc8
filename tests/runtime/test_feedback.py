"""The feedback collector: Bindu's feedback_data shape, strict validation, nothing partial."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from bindu_runtime import FeedbackCollector, FeedbackError, PromptChoice, PromptRouter, PromptStore, UnknownTask
from bindu_runtime.feedback import MAX_METADATA_BYTES, MAX_METADATA_DEPTH
from bindu_runtime.router import unit_of
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
    collector = FeedbackCollector(engine, agent_id="bot")
    with pytest.raises(FeedbackError, match="no prompt"):
        collector.stamp_task_prompt(task_id, "missing-prompt")
    with pytest.raises(UnknownTask):
        collector.stamp_task_prompt(uuid.uuid4(), prompt.id)
    with pytest.raises(FeedbackError, match="agent_id"):
        FeedbackCollector(engine).stamp_task_prompt(task_id, prompt.id)
    with engine.connect() as connection:
        assert connection.execute(sa.select(tasks.c.prompt_id)).scalar() is None


def stamp_of(engine, task_id) -> tuple[str | None, str | None]:
    with engine.connect() as connection:
        row = connection.execute(sa.select(tasks.c.prompt_id, tasks.c.prompt_unit).where(tasks.c.id == task_id)).one()
    return row.prompt_id, row.prompt_unit


def test_stamp_with_a_key_records_its_randomisation_unit(engine):
    keyed, keyless = make_task(engine), make_task(engine)
    prompt = PromptStore(engine).bootstrap("bot", "v1")
    collector = FeedbackCollector(engine, agent_id="bot")
    collector.stamp_task_prompt(keyed, prompt.id, key="context-7")
    collector.stamp_task_prompt(keyless, prompt.id)
    assert stamp_of(engine, keyed) == (prompt.id, unit_of("context-7"))
    assert stamp_of(engine, keyless) == (prompt.id, None)


def test_stamp_refuses_a_prompt_of_another_agent(engine):
    # Issue 16: stamp_task accepted another agent's prompt id, moving the task into that agent's data.
    task_id = make_task(engine)
    store = PromptStore(engine)
    store.bootstrap("bot", "mine")
    theirs = store.bootstrap("other-bot", "theirs")
    with pytest.raises(FeedbackError, match="no prompt"):
        FeedbackCollector(engine, agent_id="bot").stamp_task_prompt(task_id, theirs.id)
    with PromptRouter(engine, agent_id="bot", default_prompt="code prompt", start=False) as router:
        router.stamp_task(task_id, PromptChoice(prompt_id=theirs.id, text="theirs", status="active"))
        assert router.flush_stamps()
        assert router.status()["stamps_refused_foreign_prompt"] == 1 and router.status()["stamps_written"] == 0
    assert stamp_of(engine, task_id) == (None, None)


HOSTILE_FEEDBACK = [
    ({"rating": 3, "feedback": "nul \x00 inside"}, "feedback text contains a NUL"),
    ({"rating": 3, "feedback": "lone \ud800 surrogate"}, "feedback text contains a lone surrogate"),
    ({"rating": 3, "metadata": {"note": "a\x00b"}}, "metadata text contains a NUL"),
    ({"rating": 3, "metadata": {"deep": [{"x": "\udfff"}]}}, "metadata text contains a lone surrogate"),
    ({"rating": 3, "metadata": {"k\x00": 1}}, "metadata key contains a NUL"),
    ({"rating": 3, "metadata": {"\ud83d": 1}}, "metadata key contains a lone surrogate"),
]


@pytest.mark.parametrize("kwargs, message", HOSTILE_FEEDBACK)
def test_nul_and_lone_surrogates_are_refused_the_same_on_both_backends(engine, kwargs, message):
    # Issue 16: PostgreSQL raised sqlalchemy's DataError for these while SQLite stored them.
    task_id = make_task(engine)
    with pytest.raises(FeedbackError, match=message):
        FeedbackCollector(engine).record_feedback(task_id, **kwargs)
    assert feedback_rows(engine) == []


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def test_metadata_depth_limit_is_stated_and_enforced(engine):
    task_id = make_task(engine)
    collector = FeedbackCollector(engine)
    # Issue 16: 100 000-deep metadata raised RecursionError.
    with pytest.raises(FeedbackError, match=f"deeper than {MAX_METADATA_DEPTH} levels"):
        collector.record_feedback(task_id, rating=3, metadata=nested(100_000))
    with pytest.raises(FeedbackError, match="deeper than"):
        collector.record_feedback(task_id, rating=3, metadata=nested(MAX_METADATA_DEPTH + 1))
    collector.record_feedback(task_id, rating=3, metadata=nested(MAX_METADATA_DEPTH))
    cyclic: dict = {}
    cyclic["self"] = cyclic
    with pytest.raises(FeedbackError):
        collector.record_feedback(task_id, rating=3, metadata=cyclic)
    assert len(feedback_rows(engine)) == 1


def test_metadata_size_limit_is_stated_and_enforced(engine):
    task_id = make_task(engine)
    collector = FeedbackCollector(engine)
    # Issue 16: 10 MB of metadata was accepted while feedback text is capped at 10 000 characters.
    with pytest.raises(FeedbackError, match=f"the limit is {MAX_METADATA_BYTES}"):
        collector.record_feedback(task_id, rating=3, metadata={"blob": "x" * 10_000_000})
    fits = {"blob": "x" * (MAX_METADATA_BYTES - len('{"blob": ""}'))}
    collector.record_feedback(task_id, rating=3, metadata=fits)
    with pytest.raises(FeedbackError, match="the limit is"):
        collector.record_feedback(task_id, rating=3, metadata={"blob": fits["blob"] + "x"})
    assert [row["feedback_data"]["metadata"] for row in feedback_rows(engine)] == [fits]


def test_a_task_id_whose_str_raises_is_refused_cleanly(engine):
    class Hostile:
        def __str__(self):
            raise RuntimeError("no")

        __repr__ = __str__

    with pytest.raises(FeedbackError, match="task_id must be a UUID"):
        FeedbackCollector(engine).record_feedback(Hostile(), rating=3)

"""Deterministic, Bindu-shaped demo data: tasks with histories, feedback, and the malformed rows
real databases hold.

Per agent: conversations of one or two tasks sharing a ``context_id``; ``user`` and ``assistant``
turns (some ``agent``, as A2A names them); file and data parts; ratings, thumbs (as booleans and
as strings), several feedback rows on some tasks, tasks without feedback; and about 4 % of rows
malformed in the ways listed in ``MALFORMED_TASK_KINDS`` and ``MALFORMED_FEEDBACK_KINDS``.
The same ``seed`` always yields the same rows (ids included), so re-seeding is a no-op.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa

from bindu_runtime import PromptStore
from bindu_runtime.db import write_transaction
from bindu_runtime.schema import task_feedback, tasks

from .catalog import AGENTS, QUESTION_TEMPLATES, VAGUE_REPLIES, DemoAgent, follow_up_reply, good_reply, rambling_reply

HISTORY_DAYS = 30
DEMO_NAMESPACE = uuid.UUID("6f1c1d3e-2b7a-4a47-9a51-0d6b9f6c2e10")

MALFORMED_TASK_KINDS = (
    "history_not_a_list",
    "history_is_text",
    "message_without_role",
    "message_without_parts",
    "parts_not_a_list",
    "text_not_a_string",
    "only_file_parts",
    "enormous_message",
    "empty_history",
)
MALFORMED_FEEDBACK_KINDS = (
    'rating "five"',
    "rating 0",
    "rating 6",
    "rating 4.5",
    'thumbs "maybe"',
    "feedback_data not an object",
    "empty feedback_data",
)
PII_SNIPPETS = (
    " My email is {name}@example.com.",
    " You can call me at +1 415 555 01{n:02d}.",
    " My card is 4111 1111 1111 1111 if you need it.",
    " my api key is sk-demo{n:02d}a8f3K9qLm2Xv7RtY0pWc4",
)
FIRST_NAMES = ("jane", "omar", "li", "sofia", "raj", "emma", "tomas", "aiko")


class DemoTask(NamedTuple):
    task: dict
    feedback: list[dict]
    malformed_task: bool
    malformed_feedback: int


@dataclass
class SeedSummary:
    agents: list[str] = field(default_factory=list)
    tasks: int = 0
    feedback_rows: int = 0
    malformed_tasks: int = 0
    malformed_feedback_rows: int = 0
    already_seeded: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _message(role: str, text: str, context_id: uuid.UUID, task_id: uuid.UUID, rng: random.Random, extra_parts=()) -> dict:
    return {
        "kind": "message",
        "role": role,
        "message_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "context_id": str(context_id),
        "task_id": str(task_id),
        "parts": [{"kind": "text", "text": text}, *extra_parts],
    }


def _agent_role(rng: random.Random) -> str:
    return "agent" if rng.random() < 0.15 else "assistant"


def _reply_and_rating(agent: DemoAgent, topic, rng: random.Random) -> tuple[str, int]:
    draw = rng.random()
    if draw < 0.45:
        return good_reply(topic), rng.choice((4, 5, 5))
    if draw < 0.75:
        return rambling_reply(topic), rng.choice((2, 3, 3, 4))
    return rng.choice(VAGUE_REPLIES), rng.choice((1, 1, 2))


def _feedback_rows(task_id: uuid.UUID, rating: int, created: datetime, rng: random.Random) -> list[dict]:
    """0..3 feedback rows in the shapes Bindu and other clients write."""
    draw = rng.random()
    if draw < 0.25:
        return []
    when = created + timedelta(minutes=rng.randint(1, 240))
    base = {"task_id": str(task_id), "metadata": {"source": "demo"}, "timestamp": when.isoformat()}
    thumbs = rating >= 4
    if draw < 0.62:
        data = {**base, "rating": rating}
        if rng.random() < 0.4:
            data["feedback"] = "Clear and helpful, thanks!" if rating >= 4 else "Not what I needed."
        rows = [data]
    elif draw < 0.82:
        rows = [{**base, "thumbs_up": thumbs}]
    elif draw < 0.88:
        rows = [{**base, "thumbs_up": rng.choice(("yes", "true", "1")) if thumbs else rng.choice(("no", "false", "0"))}]
    else:
        # A quick thumb, then a considered rating: the latest row is the user's final word.
        rows = [{**base, "thumbs_up": not thumbs}, {**base, "rating": rating, "timestamp": (when + timedelta(minutes=5)).isoformat()}]
    return [{"task_id": task_id, "feedback_data": row, "created_at": datetime.fromisoformat(row["timestamp"])} for row in rows]


def _malformed_history(kind: str, context_id: uuid.UUID, task_id: uuid.UUID, rng: random.Random) -> Any:
    user = _message("user", "How do I do the thing?", context_id, task_id, rng)
    reply = _message("assistant", "Like this.", context_id, task_id, rng)
    if kind == "history_not_a_list":
        return {"messages": [user, reply]}
    if kind == "history_is_text":
        return "user: hello\nassistant: hi"
    if kind == "message_without_role":
        return [{k: v for k, v in user.items() if k != "role"}, reply]
    if kind == "message_without_parts":
        return [{k: v for k, v in user.items() if k != "parts"}, reply]
    if kind == "parts_not_a_list":
        return [{**user, "parts": "How do I do the thing?"}, reply]
    if kind == "text_not_a_string":
        return [{**user, "parts": [{"kind": "text", "text": 12345}]}, reply]
    if kind == "only_file_parts":
        file_part = {"kind": "file", "file": {"name": "scan.png", "mimeType": "image/png", "uri": "file:///tmp/scan.png"}}
        return [{**user, "parts": [file_part]}, {**reply, "parts": [file_part]}]
    if kind == "enormous_message":
        return [user, {**reply, "parts": [{"kind": "text", "text": "spam " * 60_000}]}]
    return []


def _malformed_feedback(kind: str, task_id: uuid.UUID, when: datetime) -> dict:
    base = {"task_id": str(task_id), "timestamp": when.isoformat()}
    data: Any = {
        'rating "five"': {**base, "rating": "five"},
        "rating 0": {**base, "rating": 0},
        "rating 6": {**base, "rating": 6},
        "rating 4.5": {**base, "rating": 4.5},
        'thumbs "maybe"': {**base, "thumbs_up": "maybe"},
        "feedback_data not an object": ["rating", 5],
        "empty feedback_data": {},
    }[kind]
    return {"task_id": task_id, "feedback_data": data, "created_at": when}


def generate_agent_rows(
    agent: DemoAgent,
    prompt_id: str | None,
    *,
    tasks_count: int,
    seed: int,
    now: datetime,
    days: int = HISTORY_DAYS,
) -> Iterator[DemoTask]:
    """Yield one agent's demo tasks with their feedback rows, deterministically."""
    rng = random.Random(f"{seed}:{agent.agent_id}")
    produced = 0
    conversation = 0
    while produced < tasks_count:
        context_id = uuid.uuid5(DEMO_NAMESPACE, f"{seed}:{agent.agent_id}:context:{conversation}")
        conversation += 1
        topic = rng.choice(agent.topics)
        started = now - timedelta(days=days) + timedelta(seconds=rng.randint(0, days * 86_400 - 7_200))
        turns = 2 if rng.random() < 0.25 else 1
        for turn in range(turns):
            if produced >= tasks_count:
                break
            task_id = uuid.uuid5(DEMO_NAMESPACE, f"{seed}:{agent.agent_id}:task:{produced}")
            created = started + timedelta(minutes=10 * turn)
            malformed = rng.random() < 0.04
            if malformed:
                kind = MALFORMED_TASK_KINDS[produced % len(MALFORMED_TASK_KINDS)]
                history = _malformed_history(kind, context_id, task_id, rng)
                rating = rng.randint(1, 5)
            elif turn == 0:
                question = rng.choice(QUESTION_TEMPLATES).format(subject=topic.subject)
                if rng.random() < 0.12:
                    question += rng.choice(PII_SNIPPETS).format(name=rng.choice(FIRST_NAMES), n=rng.randint(0, 99))
                extra = []
                if rng.random() < 0.1:
                    extra = [{"kind": "file", "file": {"name": "screenshot.png", "mimeType": "image/png", "uri": f"file:///uploads/{task_id}.png"}}]
                reply, rating = _reply_and_rating(agent, topic, rng)
                reply_parts = [{"kind": "data", "data": {"topic": topic.subject}}] if rng.random() < 0.1 else []
                history = [
                    _message("user", question, context_id, task_id, rng, extra),
                    _message(_agent_role(rng), reply, context_id, task_id, rng, reply_parts),
                ]
            else:
                history = [
                    _message("user", f"Thanks! And what if {topic.follow_up}?", context_id, task_id, rng),
                    _message(_agent_role(rng), follow_up_reply(topic), context_id, task_id, rng),
                ]
                rating = rng.choice((3, 4, 5))
            task_row = {
                "id": task_id,
                "context_id": context_id,
                "kind": "task",
                "state": "completed" if rng.random() < 0.95 else rng.choice(("failed", "input-required")),
                "state_timestamp": created + timedelta(seconds=5),
                "history": history,
                "artifacts": [],
                "metadata_": {"demo": True, "agent_id": agent.agent_id},
                "prompt_id": prompt_id,
                "created_at": created,
                "updated_at": created + timedelta(seconds=5),
            }
            feedback = _feedback_rows(task_id, rating, created, rng)
            malformed_feedback = 0
            if rng.random() < 0.03:
                kind = MALFORMED_FEEDBACK_KINDS[produced % len(MALFORMED_FEEDBACK_KINDS)]
                feedback.append(_malformed_feedback(kind, task_id, created + timedelta(hours=1)))
                malformed_feedback = 1
            yield DemoTask(task_row, feedback, malformed, malformed_feedback)
            produced += 1


def demo_agents(count: int) -> list[DemoAgent]:
    """``count`` demo agents: the catalogue's, then numbered copies of them."""
    if count < 1:
        raise ValueError("at least one agent")
    agents = []
    for index in range(count):
        base = AGENTS[index % len(AGENTS)]
        suffix = "" if index < len(AGENTS) else f"-{index // len(AGENTS) + 1}"
        agents.append(DemoAgent(agent_id=base.agent_id + suffix, code_prompt=base.code_prompt, topics=base.topics))
    return agents


def seed_demo_data(
    engine: sa.Engine,
    *,
    agents: int = 3,
    tasks_per_agent: int = 200,
    seed: int = 7,
    now: datetime | None = None,
    batch_size: int = 1_000,
) -> dict[str, Any]:
    """Bootstrap each demo agent's code prompt and write its tasks and feedback.

    Idempotent for a given ``seed``: an agent whose first demo task exists is skipped.
    """
    if tasks_per_agent < 0:
        raise ValueError("tasks_per_agent must be >= 0")
    now = now or datetime.now(UTC)
    # The code prompt was bootstrapped when the history begins, not when the demo runs.
    store = PromptStore(engine, clock=lambda: now - timedelta(days=HISTORY_DAYS))
    summary = SeedSummary()
    for agent in demo_agents(agents):
        summary.agents.append(agent.agent_id)
        prompt = store.bootstrap(agent.agent_id, agent.code_prompt)
        first_id = uuid.uuid5(DEMO_NAMESPACE, f"{seed}:{agent.agent_id}:task:0")
        with engine.connect() as connection:
            if connection.execute(sa.select(tasks.c.id).where(tasks.c.id == first_id)).first() is not None:
                summary.already_seeded.append(agent.agent_id)
                continue
        task_batch: list[dict] = []
        feedback_batch: list[dict] = []
        for demo_task in generate_agent_rows(agent, prompt.id, tasks_count=tasks_per_agent, seed=seed, now=now):
            task_batch.append(demo_task.task)
            feedback_batch.extend(demo_task.feedback)
            summary.tasks += 1
            summary.malformed_tasks += demo_task.malformed_task
            summary.feedback_rows += len(demo_task.feedback)
            summary.malformed_feedback_rows += demo_task.malformed_feedback
            if len(task_batch) >= batch_size:
                _write(engine, task_batch, feedback_batch)
                task_batch, feedback_batch = [], []
        _write(engine, task_batch, feedback_batch)
    return summary.as_dict()


def _write(engine: sa.Engine, task_rows: list[dict], feedback_rows: list[dict]) -> None:
    if not task_rows:
        return
    with write_transaction(engine) as connection:
        connection.execute(tasks.insert(), task_rows)
        if feedback_rows:
            connection.execute(task_feedback.insert(), feedback_rows)

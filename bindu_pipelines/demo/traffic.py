"""Simulated live traffic for the demo: users served through the real PromptRouter, their feedback
written through the real FeedbackCollector, in simulated time.

The simulated users have a taste: they like replies laid out as numbered steps that end by offering
more help — the style of the highly rated replies in the demo history. A prompt that tells the agent
to answer that way (what the optimizer learns from the data) therefore really earns better ratings.
The agent itself is the offline demo model answering with whatever system prompt the router served.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from bindu_pipelines.demo.catalog import QUESTION_TEMPLATES, DemoAgent
from bindu_runtime import FeedbackCollector, PromptRouter
from bindu_runtime.db import write_transaction
from bindu_runtime.schema import tasks

NUMBERED_STEP = re.compile(r"^\s*\d+[.)]\s", re.MULTILINE)
HELP_OFFER = re.compile(r"anything else i can help with\??\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class UserTaste:
    """Probability that a user likes a reply, from what the reply looks like."""

    base: float = 0.30
    numbered_steps: float = 0.30
    help_offer: float = 0.25
    feedback_rate: float = 0.8

    def like_probability(self, reply: str) -> float:
        probability = self.base
        if len(NUMBERED_STEP.findall(reply)) >= 2:
            probability += self.numbered_steps
        if HELP_OFFER.search(reply):
            probability += self.help_offer
        return min(probability, 0.95)

    def rating(self, reply: str, rng: random.Random) -> int:
        if rng.random() < self.like_probability(reply):
            return rng.choice((4, 5, 5))
        return rng.choice((1, 2, 2, 3))


@dataclass
class ArmTally:
    served: int = 0
    rated: int = 0
    score_sum: float = 0.0  # feedback scores on 0..1: a rating r of 1-5 scores (r-1)/4

    @property
    def mean_score(self) -> float | None:
        return self.score_sum / self.rated if self.rated else None


@dataclass
class HourTally:
    by_prompt: dict[str, ArmTally] = field(default_factory=dict)

    def arm(self, prompt_id: str) -> ArmTally:
        return self.by_prompt.setdefault(prompt_id, ArmTally())


def play_hour(
    engine: sa.Engine,
    router: PromptRouter,
    agent: DemoAgent,
    *,
    start: datetime,
    requests: int,
    reply: Callable[[str, str], str],
    taste: UserTaste,
    rng: random.Random,
) -> HourTally:
    """``requests`` conversations during the hour from ``start``: route, answer, stamp, rate.
    Every timestamp (tasks and feedback) lies within the hour."""
    router.refresh()  # what the background refresh would have loaded by now
    tally = HourTally()
    hour_end = start + timedelta(hours=1)
    planned = []
    for index in range(requests):
        moment = start + timedelta(seconds=int(3600 * index / max(requests, 1)))
        context_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        task_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        topic = rng.choice(agent.topics)
        question = rng.choice(QUESTION_TEMPLATES).format(subject=topic.subject)
        choice = router.select(context_id)
        answer = reply(choice.text, question)
        planned.append((task_id, context_id, moment, question, answer, choice))
    with write_transaction(engine) as connection:
        connection.execute(tasks.insert(), [_task_row(*plan[:5]) for plan in planned])
    for task_id, context_id, moment, _question, answer, choice in planned:
        router.stamp_task(task_id, choice, key=context_id)
        arm = tally.arm(choice.prompt_id)
        arm.served += 1
        if rng.random() < taste.feedback_rate:
            rating = taste.rating(answer, rng)
            rated_at = min(moment + timedelta(minutes=2), hour_end)
            FeedbackCollector(engine, clock=lambda rated_at=rated_at: rated_at).record_feedback(
                task_id, rating=rating, metadata={"source": "demo-traffic"}
            )
            arm.rated += 1
            arm.score_sum += (rating - 1) / 4
    # The canary decides right after this hour: the stamps a live agent's writer would have
    # written by then must be in the database (the demo's router runs without its threads).
    if not router.flush_stamps():
        raise RuntimeError(f"the demo could not write the stamps of {agent.agent_id}'s hour from {start:%H:%M}")
    return tally


def _task_row(task_id, context_id, moment, question, answer) -> dict:
    def message(role: str, text: str) -> dict:
        return {
            "kind": "message", "role": role, "message_id": str(uuid.uuid4()), "context_id": str(context_id),
            "task_id": str(task_id), "parts": [{"kind": "text", "text": text}],
        }  # fmt: skip

    return {
        "id": task_id,
        "context_id": context_id,
        "kind": "task",
        "state": "completed",
        "state_timestamp": moment,
        "history": [message("user", question), message("assistant", answer)],
        "artifacts": [],
        "metadata_": {"demo": "live-traffic"},
        "prompt_id": None,  # stamped by the router after routing, as an agent would
        "created_at": moment,
        "updated_at": moment,
    }

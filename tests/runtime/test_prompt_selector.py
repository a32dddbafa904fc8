"""The seed's select_prompt_with_canary: the documented dict, weights, and per-prompt feedback."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

from bindu_runtime import FeedbackCollector, PromptStore, select_prompt_with_canary
from tests.runtime.test_feedback import make_task


def test_returns_the_seed_dict_with_usage_and_mean_feedback(engine):
    store = PromptStore(engine)
    active = store.bootstrap("bot", "v1")
    assert asyncio.run(select_prompt_with_canary("nobody", engine=engine)) is None
    moments = iter(datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=i) for i in range(100))
    collector = FeedbackCollector(engine, clock=lambda: next(moments))
    rated = [make_task(engine, prompt_id=active.id) for _ in range(3)]
    make_task(engine, prompt_id=active.id)  # served, never rated
    collector.record_feedback(rated[0], rating=5)  # 1.0
    collector.record_feedback(rated[1], thumbs_up=True)  # superseded by the later rating below
    collector.record_feedback(rated[1], rating=1)  # 0.0
    collector.record_feedback(rated[2], feedback="text only, no score")
    chosen = asyncio.run(select_prompt_with_canary("bot", engine=engine))
    assert chosen == {
        "id": active.id, "prompt_text": "v1", "status": "active", "traffic": 1.0,
        "num_interactions": 4, "average_feedback_score": 0.5,
    }


def test_draws_by_traffic_weights(engine):
    store = PromptStore(engine)
    store.bootstrap("bot", "v1")
    store.start_experiment("bot", "v2", source="simba", candidate_traffic="0.3")
    rng = random.Random(5)
    draws = [asyncio.run(select_prompt_with_canary("bot", engine=engine, rng=rng))["status"] for _ in range(400)]
    assert 0.22 < draws.count("candidate") / len(draws) < 0.38

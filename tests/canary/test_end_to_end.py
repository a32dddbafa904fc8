"""End to end on PostgreSQL, hour by simulated hour: the real router assigns users (sticky by key),
stamps each task with its prompt and unit, the real feedback collector records the users' thumbs
(several per user, correlated within a user), and the controller decides after each hour."""

from __future__ import annotations

import math
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from bindu_pipelines.canary import SequentialPolicy, run_controller_once
from bindu_runtime import FeedbackCollector, PromptRouter, PromptStore, make_engine, upgrade
from bindu_runtime.schema import tasks

T0 = datetime(2026, 4, 6, 0, 0, tzinfo=UTC)
ACTIVE_RATE = 0.6
TASKS_PER_HOUR = 60
CORRELATION = 0.4  # intra-user correlation of thumbs
# The production policy with shorter stages and horizon, so each experiment ends within three days.
POLICY = SequentialPolicy(min_stage_hours=6, max_hours=60, holdback_hours=12)


def _run_experiment(postgres_url: str, candidate_rate: float, seed: int, hours: int):
    engine = make_engine(postgres_url)
    upgrade(engine)
    router = PromptRouter(engine, agent_id="e2e", default_prompt="You are the active prompt.", start=False)
    rng = random.Random(seed)
    strength = 1 / CORRELATION - 1
    users = [f"user-{i}" for i in range(250)]
    # A user's own propensity on each prompt (Beta around the prompt's rate): several correlated events.
    propensity = {
        (user, arm): rng.betavariate(rate * strength, (1 - rate) * strength)
        for user in users for arm, rate in (("active", ACTIVE_RATE), ("candidate", candidate_rate))
    }  # fmt: skip
    outcomes = []
    try:
        assert router.refresh()  # bootstraps the code's prompt as active
        candidate = PromptStore(engine, clock=lambda: T0).start_experiment("e2e", "You are the candidate.", source="test")
        for hour in range(hours):
            now = T0 + timedelta(hours=hour)
            assert router.refresh()
            rows, served = [], []
            for minute in sorted(rng.randrange(60) for _ in range(TASKS_PER_HOUR)):
                user = rng.choice(users)
                at = now + timedelta(minutes=minute)
                task_id = uuid.uuid4()
                rows.append({
                    "id": task_id, "context_id": uuid.uuid4(), "kind": "task", "state": "completed",
                    "state_timestamp": at, "history": [], "created_at": at, "updated_at": at,
                })  # fmt: skip
                served.append((task_id, at, user, router.select(key=user)))
            with engine.begin() as connection:
                connection.execute(tasks.insert(), rows)
            for task_id, _, user, choice in served:
                router.stamp_task(task_id, choice, key=user)
            assert router.flush_stamps()
            for task_id, at, user, choice in served:
                # The canary's arm is the stamped prompt; the user's propensity on that prompt decides.
                arm = "candidate" if choice.prompt_id == candidate.id else "active"
                thumbs_up = rng.random() < propensity[(user, arm)]
                FeedbackCollector(engine, clock=lambda at=at: at + timedelta(minutes=20)).record_feedback(task_id, thumbs_up=thumbs_up)
            outcome = run_controller_once(engine, "e2e", policy=POLICY, as_of=now + timedelta(hours=1))
            outcomes.append(outcome)
            if outcome.decision and outcome.decision.action.label in ("rollback", "revert", "conclude"):
                break
        return candidate, outcomes, PromptStore(engine)
    finally:
        router.close()
        engine.dispose()


@pytest.mark.postgres
def test_clustered_a_a_traffic_through_router_and_collector_is_not_promoted(postgres_url):
    candidate, outcomes, store = _run_experiment(postgres_url, ACTIVE_RATE, seed=11, hours=POLICY.max_hours + 1)
    assert not any(o.decision and o.decision.action.label == "promote" for o in outcomes)
    assert all(o.status in ("applied", "held") for o in outcomes)
    final = outcomes[-1]
    assert final.decision.action.label == "rollback"
    assert {p.id: p.status for p in store.list_prompts("e2e")}[candidate.id] == "rolled_back"
    # The stamps carried the users: fewer units than tasks, and the cluster-robust standard error
    # is clearly wider than the per-event one the same counts would give.
    stats = final.statistics
    assert stats["candidate_units"] < stats["candidate_n"] and stats["active_units"] < 0.6 * stats["active_n"]
    m = (stats["active_mean"] * stats["active_n"] + stats["candidate_mean"] * stats["candidate_n"]) / (stats["active_n"] + stats["candidate_n"])
    per_event = math.sqrt(m * (1 - m) * (1 / stats["active_n"] + 1 / stats["candidate_n"]))
    assert stats["standard_error"] > 1.3 * per_event
    # The maturity window was derived from the observed delays (20 minutes: the 1 h minimum).
    assert final.statistics and store.list_events("e2e")[-1]["details"]["maturity_hours"] == 1.0


@pytest.mark.postgres
def test_clearly_better_candidate_climbs_the_ramp_and_survives_its_holdback(postgres_url):
    candidate, outcomes, store = _run_experiment(postgres_url, 0.9, seed=12, hours=POLICY.max_hours + POLICY.holdback_hours + 2)
    labels = [o.decision.action.label for o in outcomes if o.status == "applied"]
    assert labels == ["step", "step", "promote", "conclude"]
    events = [e["event"] for e in store.list_events("e2e") if e["prompt_id"] == candidate.id]
    assert events == ["start_experiment", "step", "step", "promote", "holdback_conclude"]
    assert store.get_active_prompt("e2e").id == candidate.id and store.get_candidate_prompt("e2e") is None

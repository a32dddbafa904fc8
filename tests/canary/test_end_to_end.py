"""End to end on PostgreSQL, hour by simulated hour: the real router assigns users (sticky by key),
the real feedback collector records their thumbs, and the controller decides after each hour."""

from __future__ import annotations

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
# The production policy with a shorter dwell and horizon, so each experiment ends within a day or two.
POLICY = SequentialPolicy(min_stage_hours=3, max_hours=30)


def _run_experiment(postgres_url: str, candidate_rate: float, seed: int):
    engine = make_engine(postgres_url)
    upgrade(engine)
    router = PromptRouter(engine, agent_id="e2e", default_prompt="You are the active prompt.", start=False)
    rng = random.Random(seed)
    users = [f"user-{i}" for i in range(1500)]
    arm_of_user: dict[tuple[str, float], str] = {}
    outcomes = []
    try:
        assert router.refresh()  # bootstraps the code's prompt as active
        candidate = PromptStore(engine, clock=lambda: T0).start_experiment("e2e", "You are the candidate.", source="test")
        for hour in range(POLICY.max_hours + 1):
            now = T0 + timedelta(hours=hour)
            assert router.refresh()
            share = router.status()["candidate_share"]
            rows, feedback = [], []
            for minute in sorted(rng.randrange(60) for _ in range(TASKS_PER_HOUR)):
                user = rng.choice(users)
                choice = router.select(key=user)
                # Sticky: at one traffic split a user always lands on the same arm.
                assert arm_of_user.setdefault((user, share), choice.status) == choice.status
                at = now + timedelta(minutes=minute)
                task_id = uuid.uuid4()
                rows.append({
                    "id": task_id, "context_id": uuid.uuid4(), "kind": "task", "state": "completed",
                    "state_timestamp": at, "history": [], "prompt_id": choice.prompt_id, "created_at": at, "updated_at": at,
                })  # fmt: skip
                p = candidate_rate if choice.status == "candidate" else ACTIVE_RATE
                feedback.append((task_id, at + timedelta(seconds=30), rng.random() < p))
            with engine.begin() as connection:
                connection.execute(tasks.insert(), rows)
            for task_id, at, thumbs_up in feedback:
                FeedbackCollector(engine, clock=lambda at=at: at).record_feedback(task_id, thumbs_up=thumbs_up)
            outcome = run_controller_once(engine, "e2e", policy=POLICY, as_of=now + timedelta(hours=1))
            outcomes.append(outcome)
            if outcome.decision and outcome.decision.action.label in ("promote", "rollback"):
                break
        return candidate, outcomes, PromptStore(engine)
    finally:
        router.close()


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("candidate_rate", "final_status", "reason_fragment"),
    [
        (0.90, "active", "significantly better"),
        (0.30, "rolled_back", "harm"),
        (0.60, "rolled_back", ""),  # identical: never promoted; rolled back as inconclusive (or on a rare false harm alarm)
    ],
    ids=["clearly-better", "clearly-worse", "identical"],
)
def test_controller_hour_by_hour_through_router_and_collector(postgres_url, candidate_rate, final_status, reason_fragment):
    candidate, outcomes, store = _run_experiment(postgres_url, candidate_rate, seed=int(candidate_rate * 100))
    final = outcomes[-1]
    statuses = {p.id: p.status for p in store.list_prompts("e2e")}
    assert statuses[candidate.id] == final_status
    assert reason_fragment in final.decision.reason
    assert store.get_candidate_prompt("e2e") is None  # the loser is archived, the agent can train again
    assert all(o.status in ("applied", "held") for o in outcomes)
    if final_status == "active":
        # It climbed the ramp before winning: 10 % -> 25 % -> 50 % -> promoted.
        steps = [o.traffic_after for o in outcomes if o.status == "applied"]
        assert steps == [0.25, 0.5, 1.0]
        events = [e for e in store.list_events("e2e") if e["prompt_id"] == candidate.id]
        assert [e["event"] for e in events] == ["start_experiment", "step", "step", "promote"]
        assert events[-1]["details"]["lower_bound"] > 0
    if candidate_rate == 0.60:
        assert not any(o.decision and o.decision.action.label == "promote" for o in outcomes)

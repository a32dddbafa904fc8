"""Two agent replicas whose clocks are 5 minutes apart: the later-written rating wins.

Replica A's clock is right, replica B's runs 5 minutes behind. For every task A records a
thumbs-down first, then B records a rating of 5: B's row is the later one (the database gives it
the higher ``task_feedback.id``), but its ``created_at`` and payload ``timestamp`` — the writer's
clock — say 5 minutes earlier. "The latest valid feedback" must be B's, in the golden dataset and
in the canary's aggregate alike (DESIGN contract: feedback order is the database's insertion
order, never a writer's clock). Ordering by ``created_at`` made A's thumbs-down win in every task.

Run with ``-s`` for the summary line in docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from bindu_pipelines.canary.metrics import TrafficSegment, experiment_metrics
from bindu_pipelines.golden_dataset.dataset import build_golden_dataset
from bindu_runtime import PromptStore
from bindu_runtime.feedback import FeedbackCollector
from bindu_runtime.schema import task_feedback, tasks
from tests.golden_dataset.helpers import conversation

AGENT = "replica-bot"
TASKS = 100
SKEW = timedelta(minutes=5)
MATURITY = timedelta(hours=2)


def test_the_later_inserted_rating_wins_whatever_the_replicas_clocks_say(engine, capsys):
    started = datetime.now(UTC) - timedelta(hours=2)
    store = PromptStore(engine, clock=lambda: started - timedelta(days=1))
    active = store.bootstrap(AGENT, "You are helpful.")
    candidate = PromptStore(engine, clock=lambda: started).start_experiment(AGENT, "You are helpful and brief.", source="test")
    routed_at = datetime.now(UTC) - timedelta(minutes=61)
    task_ids = [uuid.uuid4() for _ in range(TASKS)]
    with engine.begin() as connection:
        connection.execute(tasks.insert(), [
            {"id": task_id, "context_id": uuid.uuid4(), "kind": "task", "state": "completed",
             "state_timestamp": routed_at, "prompt_id": candidate.id, "created_at": routed_at, "updated_at": routed_at,
             "history": conversation((f"How do I reset the password of account number {i}?",
                                      f"Open settings, choose security, then reset password for account {i}."))}
            for i, task_id in enumerate(task_ids)
        ])  # fmt: skip

    replica_a = FeedbackCollector(engine, agent_id=AGENT)  # the right time
    replica_b = FeedbackCollector(engine, agent_id=AGENT, clock=lambda: datetime.now(UTC) - SKEW)
    for task_id in task_ids:
        first = replica_a.record_feedback(task_id, thumbs_up=False)
        later = replica_b.record_feedback(task_id, rating=5)
        assert later > first
    # The canary counts a task once it is MATURITY old, with the feedback written within MATURITY
    # of it: read the aggregate at the moment every task has matured (the later rows are in).
    as_of = routed_at + MATURITY + timedelta(seconds=1)

    # The skew is real: every later row carries the earlier writer's time.
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(task_feedback.c.task_id, task_feedback.c.id, task_feedback.c.created_at).order_by(task_feedback.c.id)
        ).all()
    by_task: dict = {}
    for task_id, _, created_at in rows:
        by_task.setdefault(str(task_id), []).append(created_at)
    assert all(later < first for first, later in by_task.values())

    dataset = asyncio.run(build_golden_dataset(AGENT, engine=engine, require_feedback=True, scrub_pii=False))
    scores = {interaction.id: interaction.feedback_score for interaction in dataset}
    golden_later_wins = sum(score == 1.0 for score in scores.values())
    golden_earlier_wins = sum(score == 0.0 for score in scores.values())

    metrics = experiment_metrics(
        engine, active_id=active.id, candidate_id=candidate.id, segments=[TrafficSegment(started, 0.1)], as_of=as_of,
        agent_id=AGENT, maturity_hours=MATURITY.total_seconds() / 3600,
    )
    with capsys.disabled():
        print(f"\nREPLICA CLOCKS backend={engine.dialect.name} tasks={TASKS} skew=5min "
              f"golden_later_rating_wins={golden_later_wins} golden_earlier_thumbs_down_wins={golden_earlier_wins} "
              f"canary_tasks={metrics.candidate.stats.n} canary_mean={metrics.candidate.stats.mean}")  # fmt: skip
    assert len(scores) == TASKS and golden_later_wins == TASKS
    assert metrics.candidate.stats.n == TASKS and metrics.candidate.stats.total == TASKS * 1.0
    assert metrics.active.stats.n == 0

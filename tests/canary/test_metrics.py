"""The SQL aggregate against the golden dataset's Python feedback rule, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from bindu_pipelines.canary.metrics import TrafficSegment, experiment_metrics
from bindu_pipelines.golden_dataset.feedback import combine_task_feedback
from bindu_runtime import PromptStore
from bindu_runtime.schema import task_feedback, tasks

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

# Every shape of feedback_data the scale has a rule for, valid and not.
FEEDBACK_SHAPES = [
    {"rating": 5}, {"rating": 1}, {"rating": 3}, {"rating": 4.0}, {"rating": "4"}, {"rating": " 2 "},
    {"rating": "3.0"}, {"rating": "+4"}, {"rating": "05"}, {"rating": "4."},
    {"rating": "five"}, {"rating": 0}, {"rating": 6}, {"rating": 4.5}, {"rating": "4.5"}, {"rating": True},
    {"rating": None}, {"rating": ""}, {"rating": "."},
    {"thumbs_up": True}, {"thumbs_up": False}, {"thumbs_up": "yes"}, {"thumbs_up": "NO"}, {"thumbs_up": " True "},
    {"thumbs_up": "1"}, {"thumbs_up": "0"}, {"thumbs_up": 1}, {"thumbs_up": 0}, {"thumbs_up": 1.0},
    {"thumbs_up": "maybe"}, {"thumbs_up": None}, {"thumbs_up": 2},
    {"rating": 2, "thumbs_up": True}, {"rating": "bad", "thumbs_up": False}, {"rating": 9, "thumbs_up": "yes"},
    {"feedback": "text only"}, {}, ["rating", 5], "just a string", 5,
]  # fmt: skip


def _seed(engine: sa.Engine, rng: random.Random):
    store = PromptStore(engine, clock=lambda: START - timedelta(days=3))
    active = store.bootstrap("agent-m", "You are helpful.")
    candidate = PromptStore(engine, clock=lambda: START).start_experiment("agent-m", "You are concise.", source="test")
    other = PromptStore(engine, clock=lambda: START).bootstrap("agent-other", "Other agent.")
    as_of = START + timedelta(hours=30)
    step_at = START + timedelta(hours=12)
    task_rows, feedback_rows = [], []
    for index in range(400):
        prompt_id = rng.choice([active.id, active.id, candidate.id, other.id])
        # Some tasks before the start (excluded) and after as_of (excluded).
        created = START + timedelta(minutes=rng.randint(-600, 32 * 60))
        task_id = uuid.UUID(int=rng.getrandbits(128))
        task_rows.append({
            "id": task_id, "context_id": uuid.uuid4(), "kind": "task", "state": "completed",
            "state_timestamp": created, "history": [], "prompt_id": prompt_id,
            "created_at": created, "updated_at": created,
        })  # fmt: skip
        for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
            # Equal timestamps happen (ties broken by id); some feedback arrives after as_of.
            at = created + timedelta(minutes=rng.choice([0, 5, 5, 30, 60 * 40]))
            feedback_rows.append({"task_id": task_id, "feedback_data": rng.choice(FEEDBACK_SHAPES), "created_at": at})
    with engine.begin() as connection:
        connection.execute(tasks.insert(), task_rows)
        connection.execute(task_feedback.insert(), feedback_rows)
    return active, candidate, step_at, as_of


def _python_expectation(engine, active_id, candidate_id, step_at, as_of):
    """Load everything and apply the golden dataset's Python rule: the reference answer."""
    with engine.connect() as connection:
        task_list = connection.execute(sa.select(tasks.c.id, tasks.c.prompt_id, tasks.c.created_at)).all()
        rows = connection.execute(
            sa.select(task_feedback.c.id, task_feedback.c.task_id, task_feedback.c.created_at, task_feedback.c.feedback_data)
        ).all()
    utc = lambda moment: moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # noqa: E731
    by_task = defaultdict(list)
    for row in rows:
        if utc(row.created_at) <= as_of:
            by_task[row.task_id].append((row.id, utc(row.created_at), row.feedback_data))
    expected = {active_id: [0, 0.0, 0.0, [0, 0]], candidate_id: [0, 0.0, 0.0, [0, 0]]}
    for task in task_list:
        created = utc(task.created_at)
        if task.prompt_id not in expected or not (START <= created < as_of):
            continue
        verdict = combine_task_feedback(by_task.get(task.id, []))
        if verdict.score is None:
            continue
        arm = expected[task.prompt_id]
        arm[0] += 1
        arm[1] += verdict.score
        arm[2] += verdict.score**2
        arm[3][1 if created >= step_at else 0] += 1
    return expected


@pytest.mark.parametrize("seed", [1, 2])
def test_sql_aggregate_matches_the_python_feedback_rule(engine, seed):
    active, candidate, step_at, as_of = _seed(engine, random.Random(seed))
    segments = [TrafficSegment(START, 0.1), TrafficSegment(step_at, 0.25)]
    metrics = experiment_metrics(engine, active_id=active.id, candidate_id=candidate.id, segments=segments, as_of=as_of)
    expected = _python_expectation(engine, active.id, candidate.id, step_at, as_of)
    for arm in (metrics.active, metrics.candidate):
        n, total, total_sq, by_segment = expected[arm.prompt_id]
        assert n > 20  # the seeded data really exercises the arm
        # Tasks stamped without a key are their own units: one event per unit, per segment.
        assert (arm.stats.n, [s.n for s in arm.clusters.strata], [s.units for s in arm.clusters.strata]) == (n, by_segment, by_segment)
        assert arm.stats.total == pytest.approx(total) and arm.stats.total_sq == pytest.approx(total_sq)
    assert metrics.first_units == tuple(zip(expected[active.id][3], expected[candidate.id][3]))


def test_revised_feedback_counts_once_with_the_latest_valid_row(engine):
    store = PromptStore(engine, clock=lambda: START)
    active = store.bootstrap("agent-r", "A")
    candidate = store.start_experiment("agent-r", "B", source="test")
    task_id = uuid.uuid4()
    at = START + timedelta(hours=1)
    with engine.begin() as connection:
        connection.execute(tasks.insert().values(
            id=task_id, context_id=uuid.uuid4(), kind="task", state="completed", state_timestamp=at,
            history=[], prompt_id=candidate.id, created_at=at, updated_at=at,
        ))  # fmt: skip
        connection.execute(task_feedback.insert(), [
            {"task_id": task_id, "feedback_data": {"thumbs_up": False}, "created_at": at},
            {"task_id": task_id, "feedback_data": {"rating": 5}, "created_at": at + timedelta(minutes=5)},
            {"task_id": task_id, "feedback_data": {"rating": "five"}, "created_at": at + timedelta(minutes=9)},
        ])  # fmt: skip
    metrics = experiment_metrics(
        engine, active_id=active.id, candidate_id=candidate.id,
        segments=[TrafficSegment(START, 0.1)], as_of=START + timedelta(hours=2),
    )  # fmt: skip
    assert (metrics.candidate.stats.n, metrics.candidate.stats.total) == (1, 1.0)
    earlier = experiment_metrics(
        engine, active_id=active.id, candidate_id=candidate.id,
        segments=[TrafficSegment(START, 0.1)], as_of=at + timedelta(minutes=1),
    )  # fmt: skip
    assert (earlier.candidate.stats.n, earlier.candidate.stats.total) == (1, 0.0)
    assert metrics.active.stats.n == 0


def test_segments_must_be_given_in_order(engine):
    with pytest.raises(ValueError, match="time order"):
        experiment_metrics(
            engine, active_id="a", candidate_id="c",
            segments=[TrafficSegment(START, 0.1), TrafficSegment(START - timedelta(hours=1), 0.25)], as_of=START,
        )  # fmt: skip


def test_aggregate_on_a_callers_connection_leaves_its_transaction_and_settings_as_they_were(engine):
    active, candidate, step_at, as_of = _seed(engine, random.Random(3))
    segments = [TrafficSegment(START, 0.1), TrafficSegment(step_at, 0.25)]
    expected = _python_expectation(engine, active.id, candidate.id, step_at, as_of)
    with engine.connect() as connection:
        work_mem = connection.exec_driver_sql("SHOW work_mem").scalar() if engine.dialect.name == "postgresql" else None
        metrics = experiment_metrics(connection, active_id=active.id, candidate_id=candidate.id, segments=segments, as_of=as_of)
        assert connection.in_transaction()  # the caller's transaction is still open, not committed or ended
        if work_mem is not None:  # PostgreSQL's SET LOCAL work_mem stayed inside the aggregate
            assert connection.exec_driver_sql("SHOW work_mem").scalar() == work_mem
    assert (metrics.candidate.stats.n, [s.n for s in metrics.candidate.clusters.strata]) == (expected[candidate.id][0], expected[candidate.id][3])


def _task(connection, prompt_id, at, unit, feedback):
    task_id = uuid.uuid4()
    connection.execute(tasks.insert().values(
        id=task_id, context_id=uuid.uuid4(), kind="task", state="completed", state_timestamp=at,
        history=[], prompt_id=prompt_id, prompt_unit=unit, created_at=at, updated_at=at,
    ))  # fmt: skip
    for delay_hours, data in feedback:
        connection.execute(task_feedback.insert().values(task_id=task_id, feedback_data=data, created_at=at + timedelta(hours=delay_hours)))


def test_units_clusters_segments_and_the_maturity_window(engine):
    store = PromptStore(engine, clock=lambda: START)
    active = store.bootstrap("agent-u", "A")
    candidate = store.start_experiment("agent-u", "B", source="test")
    step_at = START + timedelta(hours=10)
    up, down = {"thumbs_up": True}, {"thumbs_up": False}
    with engine.begin() as connection:
        # user-1: three candidate tasks (2 up, 1 down), the first in segment 0, one after the step.
        for hours, thumbs in ((1, up), (2, up), (11, down)):
            _task(connection, candidate.id, START + timedelta(hours=hours), "user-1", [(0.5, thumbs)])
        # user-2: active in segment 0, moved to the candidate by the ramp in segment 1.
        _task(connection, active.id, START + timedelta(hours=3), "user-2", [(0.5, up)])
        _task(connection, candidate.id, START + timedelta(hours=12), "user-2", [(0.5, down)])
        # Feedback 30 h after its task: outside a 24 h window. A task 2 h before as_of: not mature.
        _task(connection, active.id, START + timedelta(hours=4), "user-3", [(30, up)])
        _task(connection, active.id, START + timedelta(hours=46), "user-4", [(0.1, up)])
        _task(connection, active.id, START + timedelta(hours=5), None, [(0.2, down), (0.3, up)])  # latest by id: up
    segments = [TrafficSegment(START, 0.1), TrafficSegment(step_at, 0.25)]
    metrics = experiment_metrics(
        engine, active_id=active.id, candidate_id=candidate.id, segments=segments, as_of=START + timedelta(hours=48),
        agent_id="agent-u", maturity_hours=24,
    )  # fmt: skip
    cand = metrics.candidate.clusters.strata
    # user-1 is one cluster of 2 events in segment 0 and, with user-2 (moved by the ramp), one of 1 in segment 1.
    assert cand[0] == type(cand[0])(units=1, n=2, y=2, nn=4, ny=4, yy=4)
    assert cand[1] == type(cand[1])(units=2, n=2, y=0, nn=2, ny=0, yy=0)
    act = metrics.active.clusters.strata
    assert (act[0].units, act[0].n, act[0].y) == (2, 2, 2) and act[1].units == 0
    # Each unit once, at its first task: user-1 candidate, user-2 and the keyless task active, all in segment 0.
    assert metrics.first_units == ((2, 1), (0, 0)) and metrics.maturity_hours == 24
    everything = experiment_metrics(
        engine, active_id=active.id, candidate_id=candidate.id, segments=segments, as_of=START + timedelta(hours=48), agent_id="agent-u",
    )  # fmt: skip
    assert everything.active.stats.n == 4  # no window: the late feedback and the young task count too


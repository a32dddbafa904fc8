"""Prompt-state transitions and the invariants the database enforces, on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa

from bindu_runtime import (
    ExperimentRunning,
    InvariantViolation,
    NoActivePrompt,
    NoExperiment,
    PromptStore,
    StaleTransition,
)
from bindu_runtime.schema import agent_prompts, prompt_events


def serving(store: PromptStore, agent: str) -> tuple[Decimal | None, Decimal | None]:
    state = store.serving_state(agent)
    return (
        state.active.traffic if state.active else None,
        state.candidate.traffic if state.candidate else None,
    )


def assert_invariants(engine: sa.Engine, agent: str) -> None:
    with engine.connect() as connection:
        rows = connection.execute(sa.select(agent_prompts).where(agent_prompts.c.agent_id == agent)).mappings().all()
    statuses = [row["status"] for row in rows]
    assert statuses.count("active") == 1
    assert statuses.count("candidate") <= 1
    serving_total = sum(Decimal(row["traffic"]) for row in rows if row["status"] in ("active", "candidate"))
    assert serving_total == Decimal("1")
    assert all(Decimal(row["traffic"]) == 0 for row in rows if row["status"] not in ("active", "candidate"))


def test_bootstrap_creates_one_active_prompt_at_full_traffic_and_is_idempotent(engine):
    store = PromptStore(engine)
    first = store.bootstrap("bot", "You are helpful.")
    again = store.bootstrap("bot", "A different code prompt")
    assert again.id == first.id
    assert (first.status, first.traffic, first.source) == ("active", Decimal("1"), "bootstrap")
    assert [p.id for p in store.list_prompts("bot")] == [first.id]
    assert [e["event"] for e in store.list_events("bot")] == ["bootstrap"]


def test_experiment_lifecycle_promote(engine):
    store = PromptStore(engine)
    active = store.bootstrap("bot", "v1")
    candidate = store.start_experiment("bot", "v2", source="simba", details={"score": 0.7})
    assert candidate.parent_id == active.id and candidate.details == {"score": 0.7}
    assert serving(store, "bot") == (Decimal("0.9"), Decimal("0.1"))
    traffic = Decimal("0.1")
    for _ in range(8):  # ten steps of 0.1 must not drift: exact decimals
        store.step_traffic("bot", candidate_id=candidate.id, expected_traffic=traffic, new_traffic=traffic + Decimal("0.1"))
        traffic += Decimal("0.1")
        assert_invariants(engine, "bot")
    assert serving(store, "bot") == (Decimal("0.1"), Decimal("0.9"))
    state = store.step_traffic("bot", candidate_id=candidate.id, expected_traffic="0.9", new_traffic="1")
    assert state.candidate is None and state.active.id == candidate.id and state.active.traffic == 1
    assert store.get_prompt(active.id).status == "deprecated"
    assert store.get_prompt(active.id).traffic == 0
    assert_invariants(engine, "bot")
    events = store.list_events("bot")
    assert [e["event"] for e in events[-2:]] == ["promote", "promote"]
    assert {(e["prompt_id"], e["from_status"], e["to_status"]) for e in events[-2:]} == {
        (active.id, "active", "deprecated"),
        (candidate.id, "candidate", "active"),
    }


def test_rollback_restores_active_to_full_traffic(engine):
    store = PromptStore(engine)
    store.bootstrap("bot", "v1")
    candidate = store.start_experiment("bot", "v2", source="gepa")
    state = store.rollback("bot", candidate_id=candidate.id, statistics={"reason": "harm", "lcb": -0.2})
    assert state.candidate is None and state.active.traffic == 1
    rolled = store.get_prompt(candidate.id)
    assert (rolled.status, rolled.traffic) == ("rolled_back", 0)
    assert store.list_events("bot")[-1]["details"] == {"reason": "harm", "lcb": -0.2}
    # The agent is free to experiment again.
    assert store.start_experiment("bot", "v3", source="simba").status == "candidate"


def test_guard_one_experiment_at_a_time(engine):
    store = PromptStore(engine)
    store.bootstrap("bot", "v1")
    store.start_experiment("bot", "v2", source="simba")
    with pytest.raises(ExperimentRunning):
        store.start_experiment("bot", "v3", source="simba")
    assert len(store.list_prompts("bot")) == 2


def test_transitions_refuse_stale_premises_and_write_nothing(engine):
    store = PromptStore(engine)
    store.bootstrap("bot", "v1")
    candidate = store.start_experiment("bot", "v2", source="simba")
    events_before = len(store.list_events("bot"))
    with pytest.raises(StaleTransition):
        store.step_traffic("bot", candidate_id=candidate.id, expected_traffic="0.2", new_traffic="0.3")
    with pytest.raises(StaleTransition):
        store.promote("bot", candidate_id="not-the-candidate")
    store.rollback("bot", candidate_id=candidate.id)
    with pytest.raises(NoExperiment):
        store.promote("bot", candidate_id=candidate.id)
    assert len(store.list_events("bot")) == events_before + 2
    with pytest.raises(NoActivePrompt):
        store.start_experiment("ghost", "text", source="simba")


def test_database_refuses_a_second_active_prompt_and_out_of_range_traffic(engine):
    store = PromptStore(engine)
    active = store.bootstrap("bot", "v1")
    row = {
        "id": "manual", "agent_id": "bot", "prompt_text": "x", "status": "active", "traffic": Decimal("0"),
        "source": "manual", "created_at": active.created_at, "updated_at": active.created_at,
    }
    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as connection:
            connection.execute(agent_prompts.insert().values(**row))
    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as connection:
            connection.execute(agent_prompts.update().where(agent_prompts.c.id == active.id).values(traffic=Decimal("1.5")))
    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as connection:
            connection.execute(agent_prompts.insert().values(**{**row, "status": "deprecated", "traffic": Decimal("0.2")}))
    assert_invariants(engine, "bot")


@pytest.mark.postgres
def test_postgres_refuses_a_commit_where_traffic_does_not_sum_to_one(postgres_url):
    from bindu_runtime import make_engine, upgrade

    engine = make_engine(postgres_url)
    upgrade(engine)
    store = PromptStore(engine)
    store.bootstrap("bot", "v1")
    candidate = store.start_experiment("bot", "v2", source="simba")
    with pytest.raises(sa.exc.IntegrityError, match="must be 1"):
        with engine.begin() as connection:  # bypasses the store: only the database stands guard
            connection.execute(agent_prompts.update().where(agent_prompts.c.id == candidate.id).values(traffic=Decimal("0.3")))
    assert serving(store, "bot") == (Decimal("0.9"), Decimal("0.1"))
    engine.dispose()


def test_audit_table_is_append_only(engine):
    store = PromptStore(engine)
    store.bootstrap("bot", "v1")
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        with engine.begin() as connection:
            connection.execute(prompt_events.update().values(event="tampered"))
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        with engine.begin() as connection:
            connection.execute(prompt_events.delete())
    assert [e["event"] for e in store.list_events("bot")] == ["bootstrap"]


def test_seed_prompt_manager_operations(engine):
    store = PromptStore(engine)
    active_id = store.insert_prompt("bot", "v1", status="active", traffic=1.0)
    candidate_id = store.insert_prompt("bot", "v2", status="candidate", traffic=0.1)
    assert store.get_active_prompt("bot").id == active_id
    assert store.get_candidate_prompt("bot").id == candidate_id
    store.update_prompt_traffic(candidate_id, 0.3)
    assert serving(store, "bot") == (Decimal("0.7"), Decimal("0.3"))
    store.update_prompt_traffic(active_id, 0.4)  # the other arm takes the rest
    assert serving(store, "bot") == (Decimal("0.4"), Decimal("0.6"))
    with pytest.raises(InvariantViolation):
        store.zero_out_all_except("bot", [active_id])
    store.update_prompt_status(candidate_id, "active")
    assert store.get_prompt(active_id).status == "deprecated"
    assert store.zero_out_all_except("bot", [candidate_id]) == 1
    with pytest.raises(InvariantViolation):
        store.update_prompt_status(candidate_id, "deprecated")  # would leave the agent without a prompt
    with pytest.raises(InvariantViolation):
        store.update_prompt_traffic(candidate_id, 0.5)
    assert_invariants(engine, "bot")


def test_agents_are_isolated(engine):
    store = PromptStore(engine)
    store.bootstrap("a", "prompt a")
    store.bootstrap("b", "prompt b")
    store.start_experiment("a", "candidate a", source="simba")
    assert store.get_candidate_prompt("b") is None
    assert store.get_active_prompt("b").prompt_text == "prompt b"
    assert store.list_agents() == ["a", "b"]

"""Historic tasks (written by Bindu before the router, no prompt_id) are the agent's training
history where its namespace is its own, and stay out where agents share one; the latest valid
feedback is chosen by task_feedback.id; rows that point nowhere are counted, never a crash."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from bindu_pipelines.golden_dataset import GoldenDatasetOptions
from bindu_pipelines.golden_dataset.dataset import GOLDEN_COLUMNS, collect_golden_dataset
from bindu_pipelines.golden_dataset.fetch import (
    count_agent_tasks,
    count_orphan_feedback,
    decode_feedback_rows,
    decode_task_block,
    iter_agent_task_blocks,
    iter_agent_task_fields,
)
from bindu_pipelines.status import agent_status
from bindu_runtime import FeedbackCollector, PromptStore, UnknownTask, layout, make_engine, upgrade
from tests.storage.bindu_tables import bindu_feedback, bindu_task, create_bindu_tables, create_did_schema, stamp

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
OPTIONS = GoldenDatasetOptions(min_input_chars=1, min_output_chars=1, validation_fraction=0.0, scrub_pii=False)


@pytest.fixture
def bindu_db(db_url):
    """A legacy single-tenant Bindu database (Bindu's tables in the shared namespace, or SQLite's
    one), upgraded."""
    engine = make_engine(db_url)
    create_bindu_tables(engine, layout.shared_schema(engine) if engine.dialect.name == "postgresql" else None)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def did_db(postgres_url):
    """An engine and a fresh Bindu agent schema for a new DID, upgraded for that agent."""
    engine = make_engine(postgres_url)
    did = f"did:bindu:acme:history-bot:{uuid.uuid4()}"
    schema = create_did_schema(engine, did)
    upgrade(engine, agent_id=did)
    yield engine, did
    with engine.begin() as connection:
        connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    engine.dispose()


def history(engine, agent_id: str, n: int, *, rating: int = 5) -> list[uuid.UUID]:
    """``n`` rated tasks as Bindu wrote them before any router (no prompt_id)."""
    ids = []
    for i in range(n):
        task_id = bindu_task(engine, agent_id, question=f"question {i} of {agent_id}", answer=f"answer {i}",
                             created_at=T0 + timedelta(minutes=i))
        bindu_feedback(engine, agent_id, task_id, rating=rating)
        ids.append(task_id)
    return ids


def ids_read(engine, agent_id: str, **kwargs) -> set[str]:
    return {row[0] for chunk in iter_agent_task_fields(engine, agent_id, **kwargs) for row in chunk}


@pytest.mark.postgres
def test_a_freshly_upgraded_did_schema_trains_on_its_whole_rated_history(did_db):
    engine, did = did_db
    historic = history(engine, did, 6)
    prompt = PromptStore(engine).bootstrap(did, "the code prompt")
    served = bindu_task(engine, did, question="served by the router", answer="ok", created_at=T0 + timedelta(hours=1))
    stamp(engine, did, served, prompt.id)
    bindu_feedback(engine, did, served, rating=4)
    foreign = bindu_task(engine, did, question="stamped by a prompt this agent never had", answer="?")
    stamp(engine, did, foreign, "not-a-prompt-of-this-agent")
    expected = {str(task_id) for task_id in [*historic, served]}

    assert count_agent_tasks(engine, did) == 7
    assert ids_read(engine, did) == expected
    copied = {row[0] for _, block in iter_agent_task_blocks(engine, did, chunk_size=3) for row in decode_task_block(block)}
    assert copied == expected
    rows, result = collect_golden_dataset(engine, did, OPTIONS)
    assert {row[GOLDEN_COLUMNS.index("id")] for row in rows} == expected
    assert {row[GOLDEN_COLUMNS.index("prompt_id")] for row in rows} == {None, prompt.id}
    assert result.tasks_read == 7
    assert agent_status(engine, did)["historic_tasks"] == 6


@pytest.mark.postgres
def test_an_agent_with_history_but_no_prompt_yet_is_listed_and_its_status_shown(did_db):
    engine, did = did_db
    history(engine, did, 2)
    assert did in PromptStore(engine).list_agents()  # recorded by `db upgrade --agent`
    status = agent_status(engine, did)
    assert (status["prompts"], status["historic_tasks"], status["experiment"]) == ([], 2, None)


def test_several_agents_in_one_namespace_keep_unstamped_tasks_out_unless_the_operator_names_one(bindu_db):
    engine = bindu_db
    store = PromptStore(engine)
    alpha, beta = store.bootstrap("alpha", "alpha's prompt"), store.bootstrap("beta", "beta's prompt")
    historic = {str(task_id) for task_id in history(engine, "alpha", 3)}
    alpha_served, beta_served = bindu_task(engine, "alpha"), bindu_task(engine, "beta")
    stamp(engine, "alpha", alpha_served, alpha.id)
    stamp(engine, "beta", beta_served, beta.id)

    assert ids_read(engine, "alpha") == {str(alpha_served)}
    assert count_agent_tasks(engine, "alpha") == 1
    # The operator states that the namespace's unstamped tasks are alpha's: they count, beta's never.
    assert ids_read(engine, "alpha", include_unstamped=True) == historic | {str(alpha_served)}
    assert count_agent_tasks(engine, "alpha", include_unstamped=True) == 4
    assert ids_read(engine, "beta") == {str(beta_served)}
    assert agent_status(engine, "alpha")["historic_tasks"] is None  # cannot be attributed


def test_a_single_agent_legacy_database_trains_on_its_history_at_once(bindu_db):
    engine = bindu_db
    historic = {str(task_id) for task_id in history(engine, "support-bot", 4)}
    PromptStore(engine).bootstrap("support-bot", "the code prompt")
    assert ids_read(engine, "support-bot") == historic
    rows, _ = collect_golden_dataset(engine, "support-bot", OPTIONS)
    assert len(rows) == 4


def test_the_latest_valid_feedback_is_the_highest_id_whatever_the_timestamps_say(bindu_db):
    engine = bindu_db
    PromptStore(engine).bootstrap("solo", "prompt")
    task_id = bindu_task(engine, "solo", question="how was it?", answer="like this")
    # A writer whose clock is ahead wrote first; the revision inserted after it carries an older time.
    first = bindu_feedback(engine, "solo", task_id, rating=5, created_at=T0 + timedelta(days=1))
    revised = bindu_feedback(engine, "solo", task_id, rating=1, created_at=T0)
    (row,) = [row for chunk in iter_agent_task_fields(engine, "solo") for row in chunk]
    read = [feedback_row[0] for feedback_row in decode_feedback_rows(row[4])]
    # PostgreSQL aggregates in id order; SQLite 3.40 has no ORDER BY in aggregates (the choice
    # below is by id either way).
    assert read == [first, revised] if engine.dialect.name == "postgresql" else sorted(read) == [first, revised]
    rows, _ = collect_golden_dataset(engine, "solo", GoldenDatasetOptions(
        min_input_chars=1, min_output_chars=1, validation_fraction=0.0, require_feedback=False))
    assert [row[GOLDEN_COLUMNS.index("feedback_score")] for row in rows] == [0.0]


@pytest.mark.postgres
def test_feedback_that_points_at_no_task_of_the_schema_is_counted_not_crashed(did_db, postgres_url):
    engine, did = did_db
    other_did = f"did:bindu:acme:other-bot:{uuid.uuid4()}"
    other_schema = create_did_schema(engine, other_did)
    try:
        upgrade(engine, agent_id=other_did)
        history(engine, did, 2)
        elsewhere = bindu_task(engine, other_did)
        # A row naming a task of another schema (possible only with the foreign key bypassed, as
        # a restore or replication can): it is counted, and nothing else changes.
        with engine.begin() as connection:
            connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
            connection.execute(
                sa.text(f"INSERT INTO {layout.qualified_table(connection, did, 'task_feedback')} (task_id, feedback_data) "
                        "VALUES (:t, :data)"),
                {"t": str(elsewhere), "data": '{"rating": 5}'},
            )
        assert count_orphan_feedback(engine, did) == 1
        assert count_orphan_feedback(engine, other_did) == 0
        assert count_orphan_feedback(engine) >= 1
        rows, _ = collect_golden_dataset(engine, did, OPTIONS)
        assert len(rows) == 2
        with pytest.raises(UnknownTask):  # the runtime refuses to attach feedback across schemas
            FeedbackCollector(engine, agent_id=did).record_feedback(elsewhere, rating=5)
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{other_schema}" CASCADE')

"""The streaming pipeline and the seed's Python API against a real database."""

import asyncio
import math
import uuid
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from bindu_pipelines.golden_dataset import (
    GoldenDatasetOptions,
    Interaction,
    LastNTurnsStrategy,
    build_golden_dataset,
    convert_to_dspy_examples,
)
from bindu_pipelines.golden_dataset.dataset import GoldenDatasetPipeline, collect_golden_dataset, write_golden_parquet
from bindu_pipelines.golden_dataset.fetch import count_orphan_feedback, iter_agent_task_chunks
from bindu_runtime import PromptStore
from bindu_runtime.schema import task_feedback, tasks

from .helpers import agent, conversation, user

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def add_task(conn, prompt_id, history, *, feedback=(), minutes_ago=0, context_id=None, task_id=None):
    task_id = task_id or uuid.uuid4()
    created = NOW - timedelta(minutes=minutes_ago)
    conn.execute(tasks.insert().values(
        id=task_id, context_id=context_id or uuid.uuid4(), state="completed", state_timestamp=created,
        history=history, prompt_id=prompt_id, created_at=created, updated_at=created,
    ))
    for offset, data in enumerate(feedback):
        conn.execute(task_feedback.insert().values(task_id=task_id, feedback_data=data,
                                                   created_at=created + timedelta(minutes=offset + 1)))
    return str(task_id)


@pytest.fixture
def agent_db(engine):
    """Hand-written tasks for agent "a" (one per bad-input kind) and one task for agent "b"."""
    store = PromptStore(engine)
    prompt_a = store.bootstrap("a", "You help.").id
    prompt_b = store.bootstrap("b", "You also help.").id
    ids = {}
    context = uuid.uuid4()
    with engine.begin() as conn:
        ids["good"] = add_task(conn, prompt_a, conversation(("How do I reset my password?", "Use the reset link.")),
                               feedback=[{"rating": 2}, {"rating": 5}], minutes_ago=1)
        ids["thumbs"] = add_task(conn, prompt_a, conversation(("Where is my order?", "It ships today.")),
                                 feedback=[{"thumbs_up": "yes"}], minutes_ago=2)
        ids["low"] = add_task(conn, prompt_a, conversation(("Cancel my plan", "Done, it is cancelled.")),
                              feedback=[{"rating": 1}], minutes_ago=3)
        ids["no_feedback"] = add_task(conn, prompt_a, conversation(("Opening hours?", "Nine to five.")), minutes_ago=4)
        ids["bad_feedback"] = add_task(conn, prompt_a, conversation(("Price of plan B?", "Ten euros.")),
                                       feedback=[{"rating": "five"}, {"rating": 4.5}, {"thumbs_up": "maybe"}], minutes_ago=5)
        ids["not_list"] = add_task(conn, prompt_a, {"messages": []}, feedback=[{"rating": 5}], minutes_ago=6)
        ids["files_only"] = add_task(conn, prompt_a, [{"role": "user", "parts": [{"kind": "file", "file": {}}]}],
                                     feedback=[{"rating": 5}], minutes_ago=7)
        ids["huge"] = add_task(conn, prompt_a, conversation(("Summarise", "x " * 15_000)), feedback=[{"rating": 5}], minutes_ago=8)
        ids["no_reply"] = add_task(conn, prompt_a, [user("Hello?")], feedback=[{"rating": 5}], minutes_ago=9)
        ids["duplicate"] = add_task(conn, prompt_a, conversation(("how do I reset my  password?", "use the reset link.")),
                                    feedback=[{"rating": 4}], minutes_ago=10)
        ids["echo"] = add_task(conn, prompt_a, conversation(("Say hi", "say HI")), feedback=[{"rating": 5}], minutes_ago=11)
        ids["pii"] = add_task(conn, prompt_a, conversation(("Mail me at ann@example.org", "Sent to ann@example.org.")),
                              feedback=[{"rating": 5}], minutes_ago=12)
        ids["ctx1"] = add_task(conn, prompt_a, conversation(("Book a table for two", "Booked for 7pm.")),
                               feedback=[{"rating": 4}], minutes_ago=60 * 24 * 10, context_id=context)
        ids["ctx2"] = add_task(conn, prompt_a, conversation(("Make it three people", "Changed to three.")),
                               feedback=[{"rating": 5}], minutes_ago=60 * 24 * 10 - 5, context_id=context)
        ids["other_agent"] = add_task(conn, prompt_b, conversation(("B question", "B answer")), feedback=[{"rating": 5}])
    return ids


def run(engine, **options):
    rows, result = collect_golden_dataset(engine, "a", GoldenDatasetOptions(**options), chunk_size=4)
    return {r[0]: r for r in rows}, result


def test_each_stage_drops_with_reasons(engine, agent_db):
    rows, result = run(engine, min_feedback_threshold=0.5)
    ids = agent_db
    assert set(rows) == {ids["good"], ids["thumbs"], ids["pii"], ids["ctx1"], ids["ctx2"]}
    reports = result.reports
    assert result.tasks_read == 14  # agent "b"'s task is never read
    assert reports["feedback"]["dropped"] == {
        "invalid_rating": 2, "invalid_thumbs": 1, "superseded_by_later_feedback": 1,
    }
    assert reports["extract"]["dropped"] == {
        "history_not_list": 1, "no_text_messages": 1, "message_too_long": 1, "no_user_agent_turn": 1,
    }
    assert reports["extract"]["notes"] == {"messages_skipped.message_without_text": 1, "pii_scrubbed.email": 2}
    assert reports["quality"]["dropped"] == {"no_feedback": 2, "below_feedback_threshold": 1}
    assert reports["validate"]["dropped"] == {"input_equals_output": 1}
    assert reports["deduplicate"]["dropped"] == {"duplicate_normalized": 1}
    # Every row in is either out or dropped, stage by stage.
    for stage in ("extract", "quality", "validate", "deduplicate"):
        report = reports[stage]
        assert report["rows_in"] - sum(report["dropped"].values()) == report["rows_out"]
    assert rows[ids["good"]][3] == 1.0 and rows[ids["good"]][4] == "rating"  # the later rating won
    assert rows[ids["thumbs"]][3:5] == (1.0, "thumbs")
    assert rows[ids["pii"]][1:3] == ("Mail me at [EMAIL]", "Sent to [EMAIL].")


def test_require_feedback_is_honoured(engine, agent_db):
    rows, _ = run(engine, require_feedback=False)
    assert agent_db["no_feedback"] in rows and rows[agent_db["no_feedback"]][3] is None
    assert agent_db["bad_feedback"] in rows  # only invalid feedback: kept without a score


def test_limit_and_time_window(engine, agent_db):
    rows, result = run(engine, limit=3)
    assert result.tasks_read == 3 and set(rows) <= {agent_db["good"], agent_db["thumbs"], agent_db["low"]}
    rows, result = run(engine, since=NOW - timedelta(days=1))
    assert result.tasks_read == 12 and agent_db["ctx2"] not in rows


def test_rebuild_context_joins_the_tasks_of_a_conversation(engine, agent_db):
    rows, _ = run(engine, strategy="last_n:2", rebuild_context=True)
    assert rows[agent_db["ctx2"]][1] == (
        "User: Book a table for two\nAssistant: Booked for 7pm.\n\nUser: Make it three people"
    )
    rows, _ = run(engine, strategy="last_n:2")
    assert rows[agent_db["ctx2"]][1] == "Make it three people"


def test_feedback_on_a_missing_task_is_counted(sqlite_url):
    from bindu_runtime import make_engine, upgrade

    engine = make_engine(sqlite_url)
    upgrade(engine)
    # SQLite databases written without foreign keys enforced can hold feedback for no task.
    raw = engine.raw_connection()
    try:
        raw.execute("PRAGMA foreign_keys=OFF")
        raw.execute("INSERT INTO task_feedback (task_id, feedback_data, created_at) VALUES (?, ?, ?)",
                    (uuid.uuid4().hex, '{"rating": 5}', NOW.isoformat()))
        raw.commit()
    finally:
        raw.close()
    assert count_orphan_feedback(engine) == 1
    engine.dispose()


def test_build_golden_dataset_seed_api(engine, agent_db):
    interactions = asyncio.run(build_golden_dataset("a", strategy=LastNTurnsStrategy(1), engine=engine))
    assert all(isinstance(i, Interaction) for i in interactions)
    assert {i.id for i in interactions} == {agent_db[k] for k in ("good", "thumbs", "low", "pii", "ctx1", "ctx2")}
    examples = convert_to_dspy_examples(interactions)
    good = next(e for e, i in zip(examples, interactions) if i.id == agent_db["good"])
    assert good.inputs().toDict() == {"user_input": "How do I reset my password?"}
    assert (good.agent_output, good.feedback_score) == ("Use the reset link.", 1.0)


def test_convert_to_dspy_examples_from_dataframe(engine, agent_db, tmp_path):
    path = tmp_path / "golden.parquet"
    result = write_golden_parquet(engine, "a", str(path), GoldenDatasetOptions(require_feedback=False), chunk_size=5)
    frame = pq.read_table(path).to_pandas()
    assert len(frame) == result.rows and list(frame.columns)[:3] == ["id", "user_input", "agent_output"]
    examples = convert_to_dspy_examples(frame)
    assert len(examples) == len(frame)
    no_score = [e for e in examples if e.feedback_score is None]
    assert len(no_score) == int(frame["feedback_score"].isna().sum()) > 0
    assert all(not (isinstance(e.feedback_score, float) and math.isnan(e.feedback_score)) for e in examples)


def test_chunks_are_bounded(engine, agent_db):
    sizes = [len(c) for c in iter_agent_task_chunks(engine, "a", chunk_size=4)]
    assert sizes == [4, 4, 4, 2]


def test_pipeline_never_raises_on_garbage_rows():
    pipeline = GoldenDatasetPipeline(GoldenDatasetOptions(require_feedback=False))
    garbage = [None, 5, "text", [None, 3, {"role": None}], [{"role": "user", "parts": "x"}], {"a": 1}, [agent("only agent")]]
    for i, history in enumerate(garbage):
        feedback = pipeline.normalize_feedback([(1, None, {"rating": [1]}), (2, None, "{bad json")])
        assert pipeline.extract(f"t{i}", history, feedback.score, feedback.feedback_type) == []
    assert pipeline.reports["extract"].rows_in == len(garbage)
    assert sum(pipeline.reports["extract"].drops.values()) == len(garbage)
    assert pipeline.reports["feedback"].drops == {"invalid_rating": 7, "feedback_not_object": 7}


def test_parallel_workers_give_the_same_dataset(engine, agent_db):
    options = GoldenDatasetOptions(require_feedback=False)
    serial_rows, serial = collect_golden_dataset(engine, "a", options, chunk_size=3)
    parallel_rows, parallel = collect_golden_dataset(engine, "a", options, chunk_size=3, workers=2)
    assert parallel_rows == serial_rows
    assert parallel.fingerprint == serial.fingerprint
    assert parallel.reports == serial.reports

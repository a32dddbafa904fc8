"""Isolation between agents sharing one database, and hostile text treated as data.

- Routers for several agents on one database only ever serve their own agent's prompts.
- Training agent A (golden dataset from the database, candidate_prompt over HTTP to a local
  OpenAI-compatible stub) never reads agent B's tasks: text planted in B's tasks and feedback
  appears nowhere in A's golden dataset, in A's candidate or in any request sent to the model.
- The canary's metrics for A do not move when B receives a flood of feedback.
- Agent ids, prompt texts, strategy arguments and feedback carrying SQL or shell metacharacters
  are stored and read back exactly; the tables stay intact.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from bindu_pipelines.canary.controller import experiment_state
from bindu_pipelines.demo.seed import seed_demo_data
from bindu_pipelines.golden_dataset.dataset import GoldenDatasetOptions, collect_golden_dataset
from bindu_pipelines.golden_dataset.quality import normalize_text
from bindu_pipelines.golden_dataset.strategies import parse_strategy
from bindu_pipelines.optimization.lm import LanguageModel
from bindu_pipelines.partitions import agent_partitions
from bindu_runtime import FeedbackCollector, PromptRouter, PromptStore
from bindu_runtime.schema import agent_prompts, task_feedback, tasks
from tests.canary.conftest import T0, start_experiment, write_rate
from tests.optimization.openai_stub import OpenAIStub
from tests.reliability.pipeline_helpers import SMALL_SIMBA, golden_config, step_failures, stored_frame
from tests.reliability.helpers import state_violations

PLANT = "ZEBRA-PLANTED-7781"
HOSTILE = ["'; DROP TABLE tasks; --", "$(rm -rf /)", "`id`", "a\"b'c\\d", "Robert'); DELETE FROM agent_prompts; --",
           "ünï 😀 \u202e", "%s %(x)s {0}", "line\nbreak\ttab"]


def test_routers_for_several_agents_on_one_database_serve_only_their_own_prompts(engine, db_url):
    store = PromptStore(engine)
    agents = ["alpha", "beta", "gamma", "alpha-2", "ALPHA"]  # near-identical ids must not mix either
    own = {}
    for agent in agents:
        store.bootstrap(agent, f"prompt of {agent} v1")
        own[agent] = {f"prompt of {agent} v1"}
    for agent in ("beta", "ALPHA"):
        store.start_experiment(agent, f"prompt of {agent} v2", source="test", candidate_traffic="0.5")
        own[agent].add(f"prompt of {agent} v2")
    routers = {agent: PromptRouter(db_url, agent_id=agent, default_prompt="code default", refresh_interval=0.05) for agent in agents}
    try:
        served = {agent: {router.select(f"ctx-{i}").text for i in range(2_000)} for agent, router in routers.items()}
    finally:
        for router in routers.values():
            router.close()
    for agent in agents:
        assert served[agent] == own[agent], agent  # both arms seen for experiments, nothing foreign
    print(f"\nISOLATION routers={len(agents)} selections={2_000 * len(agents)} foreign_prompts_served=0")


def _plant(engine: sa.Engine, agent: str) -> int:
    """Rewrite every task of ``agent`` to carry PLANT in its messages, and add PLANT feedback."""
    prompt_ids = sa.select(agent_prompts.c.id).where(agent_prompts.c.agent_id == agent).scalar_subquery()
    with engine.begin() as connection:
        ids = connection.execute(sa.select(tasks.c.id).where(tasks.c.prompt_id.in_(prompt_ids))).scalars().all()
        for task_id in ids:
            history = [
                {"kind": "message", "role": "user", "parts": [{"kind": "text", "text": f"{PLANT} question {task_id}"}]},
                {"kind": "message", "role": "assistant", "parts": [{"kind": "text", "text": f"{PLANT} answer {task_id}"}]},
            ]
            connection.execute(tasks.update().where(tasks.c.id == task_id).values(history=history))
            connection.execute(task_feedback.insert().values(
                task_id=task_id, feedback_data={"rating": 5, "feedback": PLANT}, created_at=datetime.now(UTC)))
    return len(ids)


def test_training_agent_a_never_reads_agent_b_tasks(sqlite_url, monkeypatch, tmp_path):
    """On SQLite (the same queries run on PostgreSQL in tests/golden_dataset/test_assets.py)."""
    from bindu_pipelines.golden_dataset.assets import golden_dataset_assets
    from bindu_pipelines.io_managers import ParquetIOManager
    from bindu_pipelines.optimization.assets import candidate_prompt
    from bindu_pipelines.resources import BinduDatabase
    from bindu_runtime import make_engine, upgrade

    engine = make_engine(sqlite_url)
    upgrade(engine)
    seed_demo_data(engine, agents=2, tasks_per_agent=80, seed=3)
    a, b = "support-bot", "travel-planner"
    planted = _plant(engine, b)
    assert planted == 80
    monkeypatch.setenv("BINDU_LM_API_KEY", "sk-isolation-test")
    config = golden_config(min_examples=1)
    config["ops"]["candidate_prompt"] = {"config": SMALL_SIMBA}
    with OpenAIStub() as stub, dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(agent_partitions.name, [a])
        result = dg.materialize(
            [*golden_dataset_assets, candidate_prompt], partition_key=a, instance=instance,
            resources={"bindu_db": BinduDatabase(url=sqlite_url),
                       "parquet_io_manager": ParquetIOManager(base_dir=str(tmp_path)),
                       "language_model": LanguageModel(model="openai/stub", api_base=stub.api_base, retries=0, num_threads=1)},
            run_config=config, raise_on_error=False,
        )
        assert result.success, step_failures(result)
        golden = stored_frame(result, "golden_dataset")
        sent = json.dumps([r["body"] for r in stub.requests])
    assert len(golden) > 10 and len(stub.requests) > 10  # A trained on its own data, over the wire
    assert PLANT not in golden.to_json()
    assert PLANT not in sent
    store = PromptStore(engine)
    for prompt in store.list_prompts(a):
        assert PLANT not in prompt.prompt_text + json.dumps(prompt.details, default=str)
    # The same pipeline for B does see the planted text: the check above could fail.
    rows, _ = collect_golden_dataset(engine, b, GoldenDatasetOptions())
    assert rows and all(PLANT in row[1] for row in rows)
    print(f"\nISOLATION training agent={a} other_agent_tasks_planted={planted} lm_requests={len(stub.requests)} "
          f"golden_rows={len(golden)} planted_text_found=0")


def test_canary_metrics_for_one_agent_ignore_another_agents_feedback(engine):
    a_active, a_candidate = start_experiment(engine, "agent-a")
    b_active, b_candidate = start_experiment(engine, "agent-b")
    write_rate(engine, a_active.id, T0 + timedelta(hours=1), 200, 0.7)
    write_rate(engine, a_candidate.id, T0 + timedelta(hours=1), 40, 0.6)
    as_of = T0 + timedelta(hours=3)
    before = experiment_state(engine, "agent-a", as_of=as_of)
    write_rate(engine, b_active.id, T0 + timedelta(hours=1), 500, 0.0)  # a flood of unhappy B users…
    write_rate(engine, b_candidate.id, T0 + timedelta(hours=1), 500, 1.0)  # …and happy ones
    assert experiment_state(engine, "agent-a", as_of=as_of) == before
    b_state = experiment_state(engine, "agent-b", as_of=as_of)
    assert b_state["candidate"]["feedback_tasks"] == 500  # B's own metrics do see them


def test_hostile_ids_prompts_strategy_arguments_and_feedback_are_data(engine, db_url):
    store, feedback = PromptStore(engine), FeedbackCollector(engine)
    tables = set(sa.inspect(engine).get_table_names())
    for n, text in enumerate(HOSTILE):
        agent = f"{text}-{n}"
        active = store.bootstrap(agent, f"You are {text}")
        candidate = store.start_experiment(agent, f"Be {text}", source=text, details={"note": text}, statistics={"why": text})
        task_id = uuid.uuid4()
        with engine.begin() as connection:
            connection.execute(tasks.insert().values(
                id=task_id, context_id=uuid.uuid4(), state="completed", state_timestamp=datetime.now(UTC),
                history=[{"kind": "message", "role": "user", "parts": [{"kind": "text", "text": f"ask {text}"}]},
                         {"kind": "message", "role": "agent", "parts": [{"kind": "text", "text": f"answer {text}"}]}],
                prompt_id=candidate.id))
        feedback.record_feedback(task_id, rating=4, feedback=text, metadata={"k": text})
        # Round trips, exactly.
        assert store.get_active_prompt(agent).prompt_text == f"You are {text}" and active.agent_id == agent
        got = store.get_candidate_prompt(agent)
        assert (got.prompt_text, got.source, got.details) == (f"Be {text}", text, {"note": text})
        assert text in agent and agent in store.list_agents()
        with engine.connect() as connection:
            data = connection.execute(sa.select(task_feedback.c.feedback_data).where(task_feedback.c.task_id == task_id)).scalar_one()
        data = json.loads(data) if isinstance(data, str) else data
        assert data["feedback"] == text and data["metadata"] == {"k": text}
        # A strategy argument carrying the text (context_window's system prompt is free text).
        spec = f"context_window:1:{text}"
        assert parse_strategy(spec).system_prompt == text
        rows, _ = collect_golden_dataset(engine, agent, GoldenDatasetOptions(strategy=spec, scrub_pii=False))
        assert [(r[1], r[2]) for r in rows] == [(normalize_text(f"ask {text}"), normalize_text(f"answer {text}"))]
        assert state_violations(engine, agent) == []
    assert set(sa.inspect(engine).get_table_names()) == tables
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(agent_prompts)).scalar_one() == 2 * len(HOSTILE)
        assert connection.execute(sa.select(sa.func.count()).select_from(tasks)).scalar_one() == len(HOSTILE)


def test_nul_in_text_is_stored_exactly_on_sqlite_and_refused_cleanly_on_postgresql(engine, db_url):
    store = PromptStore(engine)
    text = "before\x00after"
    if engine.dialect.name == "sqlite":
        store.bootstrap(text, text)
        assert store.get_active_prompt(text).prompt_text == text
        return
    with pytest.raises(ValueError, match="NUL"):  # psycopg2 refuses it before anything is sent
        store.bootstrap(text, text)
    assert store.list_agents() == []  # nothing was written

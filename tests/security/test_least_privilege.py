"""The grants in docs/PRODUCTION.md are enough for each process, and no more."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from bindu_runtime import PromptRouter, PromptStore, make_engine, upgrade
from tests.runtime.test_feedback import make_task

pytestmark = pytest.mark.postgres

DOC = Path(__file__).resolve().parents[2] / "docs" / "PRODUCTION.md"


def documented_grants(role: str) -> list[str]:
    """The uncommented GRANT statements for ``role`` in the production guide."""
    sql = DOC.read_text().split("### Least-privilege roles", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    return [statement.strip() for statement in re.findall(r"^(GRANT [^;]+);", sql, flags=re.MULTILINE) if statement.strip().endswith(f"TO {role}")]


@pytest.fixture
def role_url(postgres_url):
    """Create a login role with the documented grants of a given role name; dropped afterwards."""
    created: list[tuple[str, str]] = []
    owner = make_engine(postgres_url)
    upgrade(owner)
    schema = sa.make_url(postgres_url).query["options"].split("=", 1)[1]

    def make(documented_role: str) -> str:
        name = f"{documented_role}_{uuid.uuid4().hex[:8]}"
        with owner.begin() as connection:
            connection.exec_driver_sql(f'CREATE ROLE "{name}" LOGIN')
            connection.exec_driver_sql(f'GRANT USAGE ON SCHEMA "{schema}" TO "{name}"')
            for grant in documented_grants(documented_role):
                connection.exec_driver_sql(grant.replace(f"TO {documented_role}", f'TO "{name}"'))
        created.append((name, schema))
        return sa.make_url(postgres_url).set(username=name).render_as_string(hide_password=False)

    yield owner, make
    with owner.begin() as connection:
        for name, schema in created:
            connection.exec_driver_sql(f'DROP OWNED BY "{name}"')
            connection.exec_driver_sql(f'DROP ROLE "{name}"')
    owner.dispose()


def test_agent_role_reads_prompts_stamps_tasks_and_writes_feedback_only(role_url):
    owner, make = role_url
    grants = documented_grants("bindu_agent")
    assert any("INSERT ON task_feedback" in grant for grant in grants)
    PromptStore(owner).bootstrap("bot", "from the pipelines")
    task_id = make_task(owner)
    agent_engine = make_engine(make("bindu_agent"))
    with PromptRouter(agent_engine, agent_id="bot", default_prompt="code", bootstrap=False, start=False) as router:
        assert router.refresh()
        choice = router.select(task_id)
        assert choice.text == "from the pipelines"
        router.stamp_task(task_id, choice, key="user-1")
        assert router.flush_stamps()  # the stamp is written, not dropped for want of a grant
        router.record_feedback(task_id, rating=5)
    with owner.connect() as connection:
        stamped = connection.execute(sa.text("SELECT prompt_id, prompt_unit FROM tasks WHERE id = :id"), {"id": task_id}).one()
    assert stamped.prompt_id == choice.prompt_id and stamped.prompt_unit is not None
    agent_store = PromptStore(agent_engine)
    with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
        agent_store.start_experiment("bot", "sneaky candidate", source="agent")
    with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
        with agent_engine.connect() as connection:
            connection.exec_driver_sql("SELECT history FROM tasks").all()  # no reading other users' conversations
    assert PromptStore(owner).get_candidate_prompt("bot") is None
    agent_engine.dispose()


def test_pipelines_role_trains_and_runs_the_canary_but_cannot_rewrite_history(role_url, monkeypatch):
    import dagster as dg

    from bindu_pipelines.canary.controller import run_controller_once
    from bindu_pipelines.demo.seed import seed_demo_data
    from bindu_pipelines.optimization.api import launch_training
    from bindu_runtime.schema import prompt_events

    owner, make = role_url
    seed_demo_data(owner, agents=1, tasks_per_agent=80, seed=3)
    pipelines_url = make("bindu_pipelines")
    monkeypatch.setenv("BINDU_DATABASE_URL", pipelines_url)
    monkeypatch.setenv("BINDU_LM", "bindu/offline-demo")  # the operator names the offline model explicitly
    result = launch_training("support-bot", instance=dg.DagsterInstance.ephemeral(), quiet=True, max_steps=1)
    assert result.outcome == "candidate_started", result.reason
    pipelines_engine = make_engine(pipelines_url)
    outcome = run_controller_once(pipelines_engine, "support-bot")
    assert outcome.status in {"held", "applied"}
    with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
        with pipelines_engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM agent_prompts"))
    with pytest.raises(sa.exc.DBAPIError):
        with pipelines_engine.begin() as connection:
            connection.execute(prompt_events.update().values(event="rewritten"))
    with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
        with pipelines_engine.begin() as connection:
            connection.execute(sa.text("UPDATE tasks SET history = '[]'"))
    assert result.details["candidate_prompt_id"] == PromptStore(owner).get_candidate_prompt("support-bot").id
    pipelines_engine.dispose()


# ----------------------------------------------------------------------------- per-DID schemas

# What a role needs to run one agent's router (bootstrap, select, stamp, feedback) and its prompt
# transitions, in that agent's schema only. No search_path: every statement names the schema.
AGENT_SCHEMA_GRANTS = [
    "GRANT USAGE ON SCHEMA {s} TO {r}",
    "GRANT SELECT, INSERT, UPDATE ON {s}.agent_prompts TO {r}",
    "GRANT SELECT, INSERT ON {s}.prompt_events TO {r}",
    "GRANT USAGE ON SEQUENCE {s}.prompt_events_id_seq TO {r}",
    "GRANT SELECT ON {s}.registered_agents TO {r}",
    "GRANT SELECT (id), UPDATE (prompt_id, prompt_unit, updated_at) ON {s}.tasks TO {r}",
    "GRANT SELECT (id), INSERT ON {s}.task_feedback TO {r}",
    "GRANT USAGE ON SEQUENCE {s}.task_feedback_id_seq TO {r}",
]


def test_a_role_limited_to_one_did_schema_runs_that_agent_and_is_refused_the_other(postgres_server_url):
    from tests.storage.bindu_tables import bindu_task, create_did_schema

    owner = make_engine(postgres_server_url)
    suffix = uuid.uuid4().hex[:10]
    mine, other = f"did:bindu:acme:mine:{suffix}", f"did:bindu:acme:other:{suffix}"
    schemas = [create_did_schema(owner, did) for did in (mine, other)]
    role = f"agent_{suffix}"
    try:
        upgrade(owner)
        PromptStore(owner).bootstrap(other, "the other agent's prompt")
        with owner.begin() as connection:
            connection.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
            for grant in AGENT_SCHEMA_GRANTS:
                connection.exec_driver_sql(grant.format(s=f'"{schemas[0]}"', r=f'"{role}"'))
        task_id = bindu_task(owner, mine)
        limited = make_engine(sa.make_url(postgres_server_url).set(username=role).render_as_string(hide_password=False))
        with PromptRouter(limited, agent_id=mine, default_prompt="the code prompt", start=False) as router:
            assert router.refresh()  # bootstraps the code prompt in its schema
            choice = router.select("user-1")
            assert choice.text == "the code prompt"
            router.stamp_task(task_id, choice, key="user-1")
            assert router.flush_stamps()
            router.record_feedback(task_id, rating=5)
        store = PromptStore(limited)
        candidate = store.start_experiment(mine, "a better prompt", source="pipelines")
        store.step_traffic(mine, candidate_id=candidate.id, expected_traffic=candidate.traffic, new_traffic="0.5")
        store.promote(mine, candidate_id=candidate.id)
        assert store.get_active_prompt(mine).prompt_text == "a better prompt"
        assert store.list_agents() == [mine]  # it sees its own schema only
        with owner.connect() as connection:
            stamped = connection.execute(sa.text(f'SELECT prompt_id, prompt_unit FROM "{schemas[0]}".tasks')).one()
        assert stamped.prompt_id == choice.prompt_id and stamped.prompt_unit is not None
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied for schema"):
            store.bootstrap(other, "sneaky")
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied for schema"):
            store.get_active_prompt(other)
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            with limited.connect() as connection:
                connection.exec_driver_sql(f'SELECT history FROM "{schemas[0]}".tasks').all()
        assert PromptStore(owner).get_active_prompt(other).prompt_text == "the other agent's prompt"
        limited.dispose()
    finally:
        with owner.begin() as connection:
            for schema in schemas:
                connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            if _role_exists(connection, role):
                connection.exec_driver_sql(f'DROP OWNED BY "{role}"')
                connection.exec_driver_sql(f'DROP ROLE "{role}"')
        owner.dispose()


def _role_exists(connection: sa.Connection, role: str) -> bool:
    return connection.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first() is not None

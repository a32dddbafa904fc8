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
        router.stamp_task(task_id, choice)
        router.record_feedback(task_id, rating=5)
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

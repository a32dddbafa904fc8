"""run_job_for_agent follows the configured database from one call to the next."""

from __future__ import annotations

import dagster as dg
import pytest

from bindu_pipelines.launch import UnknownAgent, run_job_for_agent
from bindu_runtime import PromptStore, make_engine, upgrade


def bootstrapped(url: str, agent: str) -> None:
    engine = make_engine(url)
    upgrade(engine)
    PromptStore(engine).bootstrap(agent, f"prompt of {agent}")
    engine.dispose()


def test_each_launch_reads_the_database_configured_at_that_moment(tmp_path, monkeypatch):
    first, second = (f"sqlite:///{tmp_path / name}.sqlite" for name in ("first", "second"))
    bootstrapped(first, "agent-a")
    bootstrapped(second, "agent-b")
    instance = dg.DagsterInstance.ephemeral()
    monkeypatch.setenv("BINDU_DATABASE_URL", first)
    assert run_job_for_agent("canary_job", "agent-a", instance=instance).success
    monkeypatch.setenv("BINDU_DATABASE_URL", second)
    assert run_job_for_agent("canary_job", "agent-b", instance=instance).success
    with pytest.raises(UnknownAgent):
        run_job_for_agent("canary_job", "agent-a", instance=instance)
    assert instance.get_dynamic_partitions("agents") == ["agent-a", "agent-b"]

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


def test_a_failed_run_reads_as_its_one_line_reason(tmp_path, monkeypatch):
    from bindu_pipelines.launch import step_failure_reason
    from bindu_pipelines.partitions import agent_partitions
    from bindu_pipelines.resources import BinduDatabase

    url = f"sqlite:///{tmp_path / 'bindu.sqlite'}"
    bootstrapped(url, "agent-a")
    monkeypatch.setenv("BINDU_DATABASE_URL", url)

    @dg.asset(partitions_def=agent_partitions)
    def refuses() -> None:
        raise dg.Failure(description="agent 'agent-a': the model is unreachable")

    @dg.asset(partitions_def=agent_partitions)
    def crashes() -> None:
        raise KeyError("boom")

    defs = dg.Definitions(
        assets=[refuses, crashes],
        jobs=[dg.define_asset_job("refusing", [refuses]), dg.define_asset_job("crashing", [crashes])],
        resources={"bindu_db": BinduDatabase()},
    )
    instance = dg.DagsterInstance.ephemeral()
    refused = run_job_for_agent("refusing", "agent-a", instance=instance, definitions=defs)
    assert step_failure_reason(refused) == "agent 'agent-a': the model is unreachable"
    crashed = run_job_for_agent("crashing", "agent-a", instance=instance, definitions=defs)
    assert step_failure_reason(crashed).startswith("crashes failed: KeyError")

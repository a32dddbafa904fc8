"""The canary's Dagster layer on an ephemeral instance: asset, job, sensor, schedule, CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from bindu_pipelines.canary.assets import CANARY_AGENT_TAG, traffic_decision
from bindu_pipelines.canary.definitions import defs as canary_defs
from bindu_pipelines.canary.sensors import MIN_NEW_FEEDBACK, canary_sensor, hourly_canary_schedule
from bindu_pipelines.cli import main
from bindu_pipelines.partitions import agent_partitions
from bindu_pipelines.resources import BinduDatabase
from bindu_runtime import PromptStore, make_engine, upgrade
from tests.canary.conftest import T0, start_experiment, write_rate


@pytest.fixture
def sqlite_engine(sqlite_url):
    engine = make_engine(sqlite_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def _instance_with(agent_id: str) -> dg.DagsterInstance:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(agent_partitions.name, [agent_id])
    return instance


def test_materialization_records_the_decision_as_plottable_metadata(sqlite_url, sqlite_engine):
    active, candidate = start_experiment(sqlite_engine)
    write_rate(sqlite_engine, active.id, T0 + timedelta(hours=1), 1000, 0.80)
    write_rate(sqlite_engine, candidate.id, T0 + timedelta(hours=1), 110, 0.40)
    result = dg.materialize(
        [traffic_decision],
        instance=_instance_with("bot"),
        partition_key="bot",
        resources={"bindu_db": BinduDatabase(url=sqlite_url)},
        run_config={"ops": {"traffic_decision": {"config": {"as_of": (T0 + timedelta(hours=3)).isoformat()}}}},
    )
    assert result.success
    metadata = result.asset_materializations_for_node("traffic_decision")[0].metadata
    assert metadata["decision"].value == "rollback" and metadata["status"].value == "applied"
    assert isinstance(metadata["candidate_mean_score"], dg.FloatMetadataValue)
    assert metadata["candidate_mean_score"].value == pytest.approx(44 / 110)
    assert metadata["active_feedback_tasks"].value == 1000
    assert (metadata["traffic_before"].value, metadata["traffic_after"].value) == (0.1, 0.0)
    assert metadata["upper_bound"].value < 0 and "Decision: rollback" in metadata["summary"].value
    assert PromptStore(sqlite_engine).get_candidate_prompt("bot") is None


def test_unknown_agent_fails_the_run_with_a_clear_message(sqlite_url, sqlite_engine):
    result = dg.materialize(
        [traffic_decision], instance=_instance_with("ghost"), partition_key="ghost",
        resources={"bindu_db": BinduDatabase(url=sqlite_url)}, raise_on_error=False,
    )  # fmt: skip
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    assert "unknown agent 'ghost'" in failure.user_failure_data.description


def test_sensor_requests_a_run_only_after_enough_new_feedback(sqlite_url, sqlite_engine):
    active, candidate = start_experiment(sqlite_engine, at=T0)
    instance = _instance_with("bot")
    resources = {"bindu_db": BinduDatabase(url=sqlite_url)}
    write_rate(sqlite_engine, active.id, T0 + timedelta(minutes=5), MIN_NEW_FEEDBACK - 10, 0.7)
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        skipped = canary_sensor(context)
    assert isinstance(skipped, dg.SkipReason) and f"bot ({MIN_NEW_FEEDBACK - 10} new)" in skipped.skip_message
    write_rate(sqlite_engine, candidate.id, T0 + timedelta(minutes=6), 10, 0.7)
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        result = canary_sensor(context)
    assert [(r.partition_key, r.tags[CANARY_AGENT_TAG]) for r in result.run_requests] == [("bot", "bot")]
    cursor = result.cursor
    assert json.loads(cursor) == {"bot": [candidate.id, MIN_NEW_FEEDBACK]}
    # Nothing new since that request: the next tick skips.
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
        assert isinstance(canary_sensor(context), dg.SkipReason)


def test_hourly_schedule_targets_agents_with_experiments(sqlite_url, sqlite_engine):
    start_experiment(sqlite_engine, agent_id="bot")
    PromptStore(sqlite_engine).bootstrap("calm", "No experiment here.")
    assert hourly_canary_schedule.cron_schedule == "0 * * * *"
    with dg.instance_for_test() as instance:
        with dg.build_schedule_context(instance=instance, resources={"bindu_db": BinduDatabase(url=sqlite_url)}) as context:
            requests = hourly_canary_schedule(context)
        assert [(r.partition_key, r.tags[CANARY_AGENT_TAG]) for r in requests] == [("bot", "bot")]
        assert instance.has_dynamic_partition(agent_partitions.name, "bot")


def test_canary_definitions_load_with_the_project():
    from bindu_pipelines.definitions import defs

    assert defs.resolve_job_def("canary_job").name == "canary_job"
    assert {s.name for s in canary_defs.sensors} == {"canary_sensor"}
    assert defs.resolve_assets_def("traffic_decision").group_names_by_key[dg.AssetKey("traffic_decision")] == "canary"


def test_cli_canary_runs_through_dagster_and_reports(sqlite_url, sqlite_engine, monkeypatch, capsys):
    monkeypatch.setenv("BINDU_DATABASE_URL", sqlite_url)
    start_experiment(sqlite_engine, at=datetime.now(UTC) - timedelta(hours=1))  # the CLI decides as of now
    assert main(["canary", "--agent", "bot", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "held" and printed["decision"] == "hold" and printed["run_id"]
    run = dg.DagsterInstance.get().get_run_by_id(printed["run_id"])
    assert run.job_name == "canary_job" and run.tags[CANARY_AGENT_TAG] == "bot"
    assert main(["canary", "--agent", "ghost"]) == 1
    assert "unknown agent 'ghost'" in capsys.readouterr().err


def test_status_shows_the_live_experiment(sqlite_url, sqlite_engine, monkeypatch, capsys):
    monkeypatch.setenv("BINDU_DATABASE_URL", sqlite_url)
    active, candidate = start_experiment(sqlite_engine, at=datetime.now(UTC) - timedelta(hours=2))
    write_rate(sqlite_engine, candidate.id, datetime.now(UTC) - timedelta(hours=1), 40, 0.75)
    assert main(["status", "--agent", "bot", "--json"]) == 0
    experiment = json.loads(capsys.readouterr().out)["experiment"]
    assert experiment["candidate"]["feedback_tasks"] == 40 and experiment["candidate"]["mean_score"] == 0.75
    assert 1.9 < experiment["hours_running"] < 2.5 and experiment["next_action"] == "hold"
    assert main(["status", "--agent", "bot"]) == 0
    assert "vs candidate 0.750 (n=40)" in capsys.readouterr().out


def test_the_trajectory_follows_one_rollout_through_its_holdback(sqlite_url, sqlite_engine):
    """Ramp, promotion and holdback are one rollout in the chart: every point is about the promoted
    prompt, its hours run on from the promotion, and "candidate" stays the new prompt (its traffic
    90 % while the old one is held back at 10 %)."""
    store = PromptStore(sqlite_engine, clock=lambda: T0 - timedelta(days=1))
    active = store.bootstrap("bot", "You are helpful.")
    candidate = PromptStore(sqlite_engine, clock=lambda: T0).start_experiment("bot", "Better.", source="test", candidate_traffic="0.5")
    write_rate(sqlite_engine, active.id, T0 + timedelta(hours=3), 1000, 0.60)
    write_rate(sqlite_engine, candidate.id, T0 + timedelta(hours=3), 1000, 0.80)
    instance = _instance_with("bot")

    def decide(hours: float):
        result = dg.materialize(
            [traffic_decision], instance=instance, partition_key="bot", resources={"bindu_db": BinduDatabase(url=sqlite_url)},
            run_config={"ops": {"traffic_decision": {"config": {"as_of": (T0 + timedelta(hours=hours)).isoformat()}}}},
        )  # fmt: skip
        return result.asset_materializations_for_node("traffic_decision")[0].metadata

    promoted = decide(30)
    assert (promoted["decision"].value, promoted["phase"].value, promoted["experiment_id"].value) == ("promote", "experiment", candidate.id)
    write_rate(sqlite_engine, candidate.id, T0 + timedelta(hours=32), 900, 0.70)
    write_rate(sqlite_engine, active.id, T0 + timedelta(hours=32), 100, 0.60)
    held = decide(40)
    assert (held["phase"].value, held["experiment_id"].value, held["candidate_id"].value) == ("holdback", candidate.id, active.id)
    concluded = decide(30 + 169)
    assert concluded["decision"].value == "conclude"
    table = [line for line in concluded["trajectory"].value.splitlines() if line.startswith("| ") and "---" not in line][1:]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    assert [row[0] for row in cells] == ["30.0", "40.0", "199.0"]  # 30 h ramp, then 10 h and 169 h of holdback
    assert [row[1] for row in cells] == ["50% → 90%", "90%", "90% → 100%"]  # the new prompt's share
    assert [row[5] for row in cells] == ["promote", "hold (holdback)", "conclude (holdback)"]
    # The new prompt's mean score stays in the candidate column, the old one's in the active column.
    assert cells[1][3].startswith("0.7") and cells[1][2].startswith("0.6")

"""Training through Dagster the way operators start it: the CLI, ``train()`` and the daily schedule,
on the demo seeder's data and the real golden-dataset assets."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from bindu_pipelines.cli import main
from bindu_pipelines.demo.seed import seed_demo_data
from bindu_pipelines.errors import NO_LANGUAGE_MODEL
from bindu_pipelines.optimization import train
from bindu_pipelines.optimization.api import TrainingRunFailed
from bindu_pipelines.names import OFFLINE_MODEL, TRAINING_AGENT_TAG, TRAINING_JOB
from bindu_pipelines.optimization.jobs import daily_training_schedule
from bindu_pipelines.optimization.lm import LanguageModel
from bindu_pipelines.resources import BinduDatabase
from bindu_runtime import PromptStore, make_engine, upgrade


@pytest.fixture
def demo_db(sqlite_url, monkeypatch, tmp_path):
    monkeypatch.setenv("BINDU_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("BINDU_LM", OFFLINE_MODEL)  # the operator's explicit choice of the offline model
    (tmp_path / "dagster").mkdir()
    (tmp_path / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    engine = make_engine(sqlite_url)
    upgrade(engine)
    seed_demo_data(engine, agents=2, tasks_per_agent=80, seed=7)
    yield PromptStore(engine)
    engine.dispose()


def test_cli_train_runs_through_dagster_and_prints_the_outcome(demo_db, capsys):
    assert main(["train", "--agent", "support-bot", "--max-steps", "1", "--strategy", "last_turn"]) == 0
    out = capsys.readouterr().out
    assert "support-bot: candidate_started" in out and "offline scores (0-1): active" in out
    candidate = demo_db.get_candidate_prompt("support-bot")
    assert candidate is not None and candidate.id in out
    [run] = dg.DagsterInstance.get().get_runs(dg.RunsFilter(job_name=TRAINING_JOB, tags={TRAINING_AGENT_TAG: "support-bot"}))
    assert run.status == dg.DagsterRunStatus.SUCCESS and run.run_id in out

    # The guard: a second run is refused while the experiment is on, in one line saying why.
    assert main(["train", "--agent", "support-bot", "--max-steps", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert "an experiment is running for 'support-bot'" in err and len(err.splitlines()) == 1
    assert demo_db.get_candidate_prompt("support-bot").id == candidate.id


def test_cli_refuses_while_a_training_run_for_the_agent_is_in_progress(demo_db, capsys):
    from bindu_pipelines.definitions import defs

    instance = dg.DagsterInstance.get()
    instance.create_run_for_job(
        defs.resolve_job_def(TRAINING_JOB), status=dg.DagsterRunStatus.STARTED,
        tags={TRAINING_AGENT_TAG: "travel-planner"},
    )
    assert main(["train", "--agent", "travel-planner"]) == 1
    err = capsys.readouterr().err.strip()
    assert "already in progress" in err and len(err.splitlines()) == 1
    assert demo_db.get_candidate_prompt("travel-planner") is None


def test_cli_rejects_unknown_agents_and_bad_flags(demo_db, capsys):
    assert main(["train", "--agent", "nobody"]) == 1
    assert "unknown agent 'nobody'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--agent", "support-bot", "--optimizer", "adam"])


def test_seed_train_api_with_an_optimizer_instance(demo_db):
    import dspy

    simba_like = dspy.SIMBA(metric=lambda *a: 0.0)  # only its kind matters: the seed passed SIMBA()
    result = train(optimizer=simba_like, strategy="last_turn", require_feedback=True, agent_id="travel-planner", max_steps=1)
    assert result.outcome == "candidate_started"
    assert demo_db.get_candidate_prompt("travel-planner").source == "simba"


def test_daily_schedule_requests_one_tagged_run_per_agent_without_experiment(demo_db, sqlite_url):
    demo_db.start_experiment("support-bot", "An experiment already running.", source="test")
    with dg.instance_for_test() as instance:
        with dg.build_schedule_context(
            instance=instance,
            resources={"bindu_db": BinduDatabase(url=sqlite_url), "language_model": LanguageModel()},
            scheduled_execution_time=datetime(2026, 11, 27, 2, 0, tzinfo=UTC),
        ) as context:
            requests = list(daily_training_schedule(context))
        assert [r.partition_key for r in requests] == ["travel-planner"]
        assert requests[0].tags[TRAINING_AGENT_TAG] == "travel-planner"
        assert instance.has_dynamic_partition("agents", "travel-planner")
    assert daily_training_schedule.cron_schedule == "0 2 * * *"


def test_without_a_language_model_the_schedule_starts_nothing_and_says_what_to_set(demo_db, sqlite_url, monkeypatch):
    monkeypatch.delenv("BINDU_LM")
    with dg.instance_for_test() as instance:
        with dg.build_schedule_context(
            instance=instance,
            resources={"bindu_db": BinduDatabase(url=sqlite_url), "language_model": LanguageModel()},
            scheduled_execution_time=datetime(2026, 11, 27, 2, 0, tzinfo=UTC),
        ) as context:
            result = daily_training_schedule(context)
        assert isinstance(result, dg.SkipReason) and result.skip_message == NO_LANGUAGE_MODEL
        assert instance.get_runs() == []


def test_without_a_language_model_train_stops_with_one_line_and_writes_nothing(demo_db, monkeypatch):
    monkeypatch.delenv("BINDU_LM")
    with pytest.raises(TrainingRunFailed) as error:
        train(strategy="last_turn", agent_id="travel-planner", max_steps=1)
    assert str(error.value) == NO_LANGUAGE_MODEL
    assert demo_db.get_candidate_prompt("travel-planner") is None

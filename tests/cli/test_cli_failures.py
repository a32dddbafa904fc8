"""`bindu-dspy` as cron runs it: DAGSTER_HOME unset, every failure one line with its next step, the
exit code (0 done, 1 failed, 2 usage), no Dagster banner, log line or traceback without -v."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bindu_pipelines.demo.seed import seed_demo_data
from bindu_runtime import PromptStore, make_engine, upgrade


def cron_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """What a cron line gives: no DAGSTER_HOME, a HOME of its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "BINDU_DATABASE_URL", "STORAGE__POSTGRES_URL", "BINDU_LM")}
    return env | {"HOME": str(tmp_path / "home"), "LITELLM_LOCAL_MODEL_COST_MAP": "True"} | extra


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bindu_pipelines.cli", *args], capture_output=True, text=True, env=env, timeout=300)


def assert_one_line(result: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "DEBUG" not in result.stderr and "Telemetry" not in result.stdout + result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def runs_in(home: Path) -> int:
    import dagster as dg

    if not (home / "dagster.yaml").exists():
        return 0
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return instance.get_runs_count()


@pytest.fixture
def seeded_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'bindu.sqlite'}"
    engine = make_engine(url)
    upgrade(engine)
    seed_demo_data(engine, agents=1, tasks_per_agent=12, seed=3)
    engine.dispose()
    return url


def test_dagster_home_unset_gets_the_documented_default_with_our_dagster_yaml(tmp_path, seeded_url):
    env = cron_env(tmp_path, BINDU_DATABASE_URL=seeded_url)
    result = cli(env, "train", "--agent", "nobody")
    assert_one_line(result, 1, "bindu-dspy train:", "unknown agent 'nobody'")
    home = tmp_path / "home" / ".bindu-dspy" / "dagster_home"
    shipped = Path(__file__).resolve().parents[2] / "dagster_home" / "dagster.yaml"
    assert (home / "dagster.yaml").read_text() == shipped.read_text()
    assert "enabled: false" in (home / "dagster.yaml").read_text()  # telemetry off
    assert result.stdout == ""


def test_a_bad_strategy_is_a_usage_error_and_launches_no_run(tmp_path, seeded_url):
    env = cron_env(tmp_path, BINDU_DATABASE_URL=seeded_url, DAGSTER_HOME=str(tmp_path / "dh"))
    line = assert_one_line(cli(env, "train", "--agent", "support-bot", "--strategy", "nonsense:1:2"), 2, "unknown strategy 'nonsense'")
    assert line.endswith("(see bindu-dspy train --help)")
    assert_one_line(cli(env, "train", "--agent", "support-bot", "--strategy", "last_n:x"), 2, "n_turns must be an integer")
    assert_one_line(cli(env, "train", "--agent", "support-bot", "--optimizer", "adam"), 2, "invalid choice: 'adam'")
    assert_one_line(cli(env, "train", "--agent", "support-bot", "--max-steps", "0"), 2, "--max-steps", "at least 1")
    assert_one_line(cli(env, "demo", "run", "--hours", "-3"), 2, "--hours")
    assert_one_line(cli(env, "train"), 2, "--agent")
    assert runs_in(tmp_path / "dh") == 0


def test_a_missing_table_says_run_db_upgrade(tmp_path):
    empty = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    env = cron_env(tmp_path, BINDU_DATABASE_URL=empty)
    assert_one_line(cli(env, "train", "--agent", "support-bot"), 1, "no table agent_prompts", "run bindu-dspy db upgrade")
    assert_one_line(cli(env, "status", "--agent", "support-bot", "--database-url", empty), 1, "run bindu-dspy db upgrade")


@pytest.mark.slow
def test_too_little_data_says_how_many_examples_and_why(tmp_path, seeded_url):
    env = cron_env(tmp_path, BINDU_DATABASE_URL=seeded_url, BINDU_LM="bindu/offline-demo")
    result = cli(env, "train", "--agent", "support-bot")
    line = assert_one_line(result, 1, "golden dataset for support-bot has ", " examples, needs 10", "no feedback")
    assert "DagsterAssetCheckFailedError" not in line and "golden_dataset_golden_dataset" not in line
    assert result.stdout == ""


def test_training_while_a_canary_runs_is_refused_in_one_line(tmp_path, seeded_url):
    engine = make_engine(seeded_url)
    PromptStore(engine).start_experiment("support-bot", "Be brief.", source="test")
    engine.dispose()
    env = cron_env(tmp_path, BINDU_DATABASE_URL=seeded_url, BINDU_LM="bindu/offline-demo", DAGSTER_HOME=str(tmp_path / "dh"))
    assert_one_line(cli(env, "train", "--agent", "support-bot"), 1, "experiment is running", "bindu-dspy status --agent support-bot")
    assert runs_in(tmp_path / "dh") == 0


def test_verbose_is_accepted_after_the_subcommand_and_quiet_runs_print_only_the_outcome(tmp_path, seeded_url):
    env = cron_env(tmp_path, BINDU_DATABASE_URL=seeded_url)
    quiet = cli(env, "canary", "--agent", "support-bot")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert "DEBUG" not in quiet.stdout and "dagster" not in quiet.stdout.split("dagster run")[0].lower()
    verbose = cli(env, "canary", "--agent", "support-bot", "-v")
    assert verbose.returncode == 0, verbose.stderr
    assert verbose.stderr.strip()  # Dagster's console log, on request
    assert cli(env, "status", "--agent", "support-bot", "--database-url", seeded_url, "--verbose").returncode == 0
    assert cli(env, "db", "upgrade", "--database-url", seeded_url, "-v").returncode == 0


def test_no_database_configured_says_what_to_set(tmp_path):
    env = cron_env(tmp_path)
    for command in (["train", "--agent", "support-bot"], ["status", "--agent", "support-bot"], ["db", "upgrade"]):
        assert_one_line(cli(env, *command), 1, "BINDU_DATABASE_URL")
    assert not list(tmp_path.glob("**/*.sqlite"))  # no command creates a database it was not pointed at

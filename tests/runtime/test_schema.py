"""`db upgrade`: idempotent, and on Bindu's own `tasks` table it adds prompt_id and nothing else."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa

from bindu_runtime import layout, make_engine, upgrade
from bindu_runtime.config import normalize_database_url, resolve_database_url
from tests.storage.bindu_tables import create_bindu_tables, bindu_task

def without_namespace(changes):
    """The changes without their "schema …: " prefix (PostgreSQL names the schema of each)."""
    return {change.split(": ", 1)[-1] for change in changes}


def columns(engine, table):
    return {column["name"]: str(column["type"]) for column in sa.inspect(engine).get_columns(table)}


def test_upgrade_twice_changes_nothing_the_second_time(db_url):
    engine = make_engine(db_url)
    first = upgrade(engine)
    assert {"created table tasks", "created table task_feedback", "created table agent_prompts", "created table prompt_events"} <= without_namespace(first)
    assert upgrade(engine) == []
    assert set(sa.inspect(engine).get_table_names()) >= {"tasks", "task_feedback", "agent_prompts", "prompt_events"}
    engine.dispose()


def test_upgrade_on_binds_existing_tasks_table_adds_only_prompt_id(db_url):
    engine = make_engine(db_url)
    postgres = engine.dialect.name == "postgresql"
    shared = layout.shared_schema(engine) if postgres else None
    create_bindu_tables(engine, shared)
    bindu_task(engine, "legacy-agent")
    before = columns(engine, "tasks")
    changes = upgrade(engine)
    after = columns(engine, "tasks")
    changes = without_namespace(changes)
    assert {"added column tasks.prompt_id", "added column tasks.prompt_unit", "created index ix_tasks_prompt_id"} <= changes
    assert "created table tasks" not in changes
    assert {name: kind for name, kind in after.items() if name not in ("prompt_id", "prompt_unit")} == before
    assert "ix_tasks_prompt_id" in {index["name"] for index in sa.inspect(engine).get_indexes("tasks")}
    with engine.connect() as connection:
        row = connection.execute(sa.text("SELECT state, metadata, prompt_id, prompt_unit FROM tasks")).one()
    assert row.state == "completed" and row.prompt_id is None and row.prompt_unit is None
    assert upgrade(engine) == []
    engine.dispose()


def test_a_bindu_database_without_task_feedback_is_refused_untouched(db_url):
    engine = make_engine(db_url)
    create_bindu_tables(engine, layout.shared_schema(engine) if engine.dialect.name == "postgresql" else None, with_feedback=False)
    before = set(sa.inspect(engine).get_table_names())
    with pytest.raises(layout.NotABinduSchema, match="no task_feedback"):
        upgrade(engine)
    assert set(sa.inspect(engine).get_table_names()) == before
    assert "prompt_id" not in columns(engine, "tasks")
    engine.dispose()


def test_database_url_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("BINDU_DATABASE_URL", raising=False)
    monkeypatch.delenv("STORAGE__POSTGRES_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    from bindu_runtime import ConfigurationError

    with pytest.raises(ConfigurationError, match="BINDU_DATABASE_URL"):  # never a silent SQLite file
        resolve_database_url()
    monkeypatch.setenv("STORAGE__POSTGRES_URL", "postgresql://u:p@db:5432/bindu")
    assert resolve_database_url() == "postgresql+psycopg2://u:p@db:5432/bindu"
    monkeypatch.setenv("BINDU_DATABASE_URL", "postgresql+asyncpg://u:p@other/bindu")
    assert resolve_database_url() == "postgresql+psycopg2://u:p@other/bindu"
    assert resolve_database_url("sqlite:///x.db") == "sqlite:///x.db"
    assert normalize_database_url("postgres://u@h/d") == "postgresql+psycopg2://u@h/d"


def test_unsupported_or_invalid_urls_are_refused_without_echoing_secrets():
    from bindu_runtime import ConfigurationError
    import pytest

    with pytest.raises(ConfigurationError, match="unsupported database backend 'mysql'"):
        normalize_database_url("mysql://root:hunter2@h/d")
    with pytest.raises(ConfigurationError) as error:
        normalize_database_url("::not a url hunter2::")
    assert "hunter2" not in str(error.value)


def test_importing_the_runtime_loads_no_pipeline_libraries():
    probe = (
        "import sys, bindu_runtime\n"
        "from bindu_runtime import PromptRouter, PromptStore, FeedbackCollector\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in {'dagster', 'dspy', 'pandas', 'litellm', 'bindu_pipelines'}]\n"
        "print(','.join(sorted(heavy)))\n"
    )
    output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert output == ""

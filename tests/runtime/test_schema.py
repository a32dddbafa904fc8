"""`db upgrade`: idempotent, and on Bindu's own `tasks` table it adds prompt_id and nothing else."""

from __future__ import annotations

import subprocess
import sys
import uuid

import sqlalchemy as sa

from bindu_runtime import make_engine, upgrade
from bindu_runtime.config import normalize_database_url, resolve_database_url

# Bindu's tasks table as Bindu creates it, before the DSPy integration (no prompt_id).
BINDU_TASKS_DDL = """
CREATE TABLE tasks (
    id {uuid} PRIMARY KEY,
    context_id {uuid} NOT NULL,
    kind VARCHAR(50) NOT NULL DEFAULT 'task',
    state VARCHAR(50) NOT NULL,
    state_timestamp TIMESTAMP WITH TIME ZONE NOT NULL,
    history {json} NOT NULL,
    artifacts {json},
    metadata {json},
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP
)
"""


def columns(engine, table):
    return {column["name"]: str(column["type"]) for column in sa.inspect(engine).get_columns(table)}


def test_upgrade_twice_changes_nothing_the_second_time(db_url):
    engine = make_engine(db_url)
    first = upgrade(engine)
    assert {"created table tasks", "created table task_feedback", "created table agent_prompts", "created table prompt_events"} <= set(first)
    assert upgrade(engine) == []
    assert set(sa.inspect(engine).get_table_names()) >= {"tasks", "task_feedback", "agent_prompts", "prompt_events"}
    engine.dispose()


def test_upgrade_on_binds_existing_tasks_table_adds_only_prompt_id(db_url):
    engine = make_engine(db_url)
    postgres = engine.dialect.name == "postgresql"
    task_id = uuid.uuid4()
    with engine.begin() as connection:
        connection.exec_driver_sql(BINDU_TASKS_DDL.format(uuid="UUID" if postgres else "CHAR(32)", json="JSONB" if postgres else "JSON"))
        connection.execute(
            sa.text(
                "INSERT INTO tasks (id, context_id, state, state_timestamp, history, metadata) "
                "VALUES (:id, :ctx, 'completed', CURRENT_TIMESTAMP, :history, :metadata)"
            ),
            {"id": str(task_id) if postgres else task_id.hex, "ctx": str(uuid.uuid4()) if postgres else uuid.uuid4().hex,
             "history": '[{"role": "user", "parts": []}]', "metadata": '{"bindu": true}'},
        )
    before = columns(engine, "tasks")
    changes = upgrade(engine)
    after = columns(engine, "tasks")
    assert "added column tasks.prompt_id" in changes and "created index ix_tasks_prompt_id" in changes
    assert "created table tasks" not in changes
    assert {name: kind for name, kind in after.items() if name != "prompt_id"} == before
    assert "ix_tasks_prompt_id" in {index["name"] for index in sa.inspect(engine).get_indexes("tasks")}
    with engine.connect() as connection:
        row = connection.execute(sa.text("SELECT state, metadata, prompt_id FROM tasks")).one()
    assert row.state == "completed" and row.prompt_id is None
    assert upgrade(engine) == []
    engine.dispose()


def test_database_url_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("BINDU_DATABASE_URL", raising=False)
    monkeypatch.delenv("STORAGE__POSTGRES_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert resolve_database_url() == f"sqlite:///{tmp_path / 'bindu.sqlite'}"
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

"""Bindu's own tables, as bindu 2026.36.7's ``bindu.server.storage.schema`` creates them (contexts,
tasks with owner_did, task_feedback, webhook_configs and their indexes; no prompt_id), in a DID
schema as Bindu's ``initialize_did_schema`` makes it, or in the shared/SQLite namespace."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa

from bindu_runtime import layout


def _ddl(postgres: bool, q) -> list[str]:
    uuid_type = "UUID" if postgres else "CHAR(32)"
    json_type = "JSONB" if postgres else "JSON"
    empty_list = "'[]'::jsonb" if postgres else "'[]'"
    empty_object = "'{}'::jsonb" if postgres else "'{}'"
    serial = "SERIAL PRIMARY KEY" if postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"
    statements = [
        f"""CREATE TABLE {q('contexts')} (
            id {uuid_type} PRIMARY KEY, owner_did VARCHAR(255),
            context_data {json_type} NOT NULL DEFAULT {empty_object},
            message_history {json_type} DEFAULT {empty_list},
            created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
            updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP)""",
        f"""CREATE TABLE {q('tasks')} (
            id {uuid_type} PRIMARY KEY,
            context_id {uuid_type} NOT NULL REFERENCES {q('contexts')} (id) ON DELETE CASCADE,
            owner_did VARCHAR(255), kind VARCHAR(50) NOT NULL, state VARCHAR(50) NOT NULL,
            state_timestamp TIMESTAMP WITH TIME ZONE NOT NULL,
            history {json_type} NOT NULL DEFAULT {empty_list}, artifacts {json_type} DEFAULT {empty_list},
            metadata {json_type} DEFAULT {empty_object},
            created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
            updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP)""",
        f"""CREATE TABLE {q('task_feedback')} (
            id {serial},
            task_id {uuid_type} NOT NULL REFERENCES {q('tasks')} (id) ON DELETE CASCADE,
            feedback_data {json_type} NOT NULL,
            created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP)""",
        f"""CREATE TABLE {q('webhook_configs')} (
            task_id {uuid_type} PRIMARY KEY REFERENCES {q('tasks')} (id) ON DELETE CASCADE,
            config {json_type} NOT NULL,
            created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
            updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP)""",
    ]
    for table, column in (("tasks", "context_id"), ("tasks", "state"), ("tasks", "created_at"), ("tasks", "owner_did"),
                          ("task_feedback", "task_id"), ("task_feedback", "created_at")):
        statements.append(f"CREATE INDEX idx_{table}_{column} ON {q(table)} ({column})")
    return statements


def create_bindu_tables(engine: sa.Engine, schema: str | None, *, with_feedback: bool = True) -> None:
    """Bindu's tables in ``schema`` (created first on PostgreSQL, as Bindu does), or SQLite's one namespace."""
    postgres = engine.dialect.name == "postgresql"

    def q(table: str) -> str:
        return layout.qualified_name(engine, schema if postgres else None, table)

    with engine.begin() as connection:
        if postgres and schema is not None:
            connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {layout.quote_identifier(engine, schema)}")
        for statement in _ddl(postgres, q):
            if not with_feedback and "task_feedback" in statement:
                continue
            connection.exec_driver_sql(statement)


def create_did_schema(engine: sa.Engine, did: str, **kwargs) -> str:
    """The DID's schema with Bindu's tables, as a Bindu agent creates it when it first starts."""
    schema = layout.sanitize_did_for_schema(did)
    create_bindu_tables(engine, schema, **kwargs)
    return schema


def bindu_task(
    engine: sa.Engine, agent_id: str, *, question: str = "hello?", answer: str = "hi!",
    created_at: datetime | None = None, state: str = "completed",
) -> uuid.UUID:
    """One task as a Bindu server writes it (history with user + agent messages, the reply also in
    artifacts; no prompt_id), in the agent's namespace. Returns its id."""
    task_id, context_id = uuid.uuid4(), uuid.uuid4()
    postgres = engine.dialect.name == "postgresql"
    as_db = (lambda value: str(value)) if postgres else (lambda value: value.hex)
    message = {"task_id": str(task_id), "context_id": str(context_id)}
    history = [
        {"kind": "message", "role": "user", "parts": [{"kind": "text", "text": question}], "message_id": str(uuid.uuid4()), **message},
        {"kind": "message", "role": "agent", "parts": [{"kind": "text", "text": answer}], "message_id": str(uuid.uuid4()), **message},
    ]
    artifacts = [{"artifact_id": str(uuid.uuid4()), "name": "result", "parts": [{"kind": "text", "text": answer}]}]
    moment = created_at or datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            sa.text(f"INSERT INTO {layout.qualified_table(connection, agent_id, 'contexts')} (id) VALUES (:id)"),
            {"id": as_db(context_id)},
        )
        connection.execute(
            sa.text(
                f"INSERT INTO {layout.qualified_table(connection, agent_id, 'tasks')} "
                "(id, context_id, kind, state, state_timestamp, history, artifacts, metadata, created_at, updated_at) "
                "VALUES (:id, :context_id, 'task', :state, :at, :history, :artifacts, '{}', :at, :at)"
            ),
            {"id": as_db(task_id), "context_id": as_db(context_id), "state": state, "at": moment,
             "history": json.dumps(history), "artifacts": json.dumps(artifacts)},
        )
    return task_id


def bindu_feedback(
    engine: sa.Engine, agent_id: str, task_id: uuid.UUID, *, rating: int, feedback: str = "",
    created_at: datetime | None = None,
) -> int:
    """A row as Bindu's ``tasks/feedback`` method writes it (``created_at`` may be set to model a
    skewed clock); returns its id."""
    postgres = engine.dialect.name == "postgresql"
    moment = created_at or datetime.now(UTC)
    data = {"task_id": str(task_id), "feedback": feedback, "rating": rating, "metadata": {}, "timestamp": moment.isoformat()}
    with engine.begin() as connection:
        return connection.execute(
            sa.text(
                f"INSERT INTO {layout.qualified_table(connection, agent_id, 'task_feedback')} (task_id, feedback_data, created_at) "
                "VALUES (:task_id, :data, :at) RETURNING id"
            ),
            {"task_id": str(task_id) if postgres else task_id.hex, "data": json.dumps(data), "at": moment},
        ).scalar_one()


def stamp(engine: sa.Engine, agent_id: str, task_id: uuid.UUID, prompt_id: str) -> None:
    """Mark a task as served by ``prompt_id`` (what the router's stamp leaves behind)."""
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as connection:
        connection.execute(
            sa.text(f"UPDATE {layout.qualified_table(connection, agent_id, 'tasks')} SET prompt_id = :p WHERE id = :id"),
            {"p": prompt_id, "id": str(task_id) if postgres else task_id.hex},
        )

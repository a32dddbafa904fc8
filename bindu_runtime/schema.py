"""The tables, on SQLite and PostgreSQL alike.

``tasks`` and ``task_feedback`` are Bindu's own tables, column for column: we read them as Bindu
writes them and add only ``tasks.prompt_id``. ``agent_prompts`` and ``prompt_events`` are ours.

Invariants the database enforces (not the code that happens to write today):
- at most one ``active`` and one ``candidate`` prompt per agent (partial unique indexes);
- ``traffic`` is an exact decimal in 0..1, and archived prompts carry none (CHECK constraints);
- on PostgreSQL, active + candidate traffic is exactly 1 at every commit, and a candidate never
  exists without an active prompt (a deferred constraint trigger). SQLite has no deferred triggers,
  so there ``PromptStore`` verifies the same condition inside the transaction before it commits;
- ``prompt_events`` is append-only (triggers refuse UPDATE and DELETE on both databases).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from .db import is_sqlite, write_transaction

metadata = sa.MetaData()

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# SQLite only autoincrements INTEGER PRIMARY KEY columns.
BigIdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)
# Four decimal places: steps of 0.1, 0.05 or 0.0025 stay exact, and sums are exact decimals.
TrafficType = sa.Numeric(5, 4, asdecimal=True)

PROMPT_STATUSES = ("active", "candidate", "deprecated", "rolled_back")
SERVING_STATUSES = ("active", "candidate")

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("context_id", sa.Uuid(), nullable=False),
    sa.Column("kind", sa.String(50), nullable=False, server_default="task"),
    sa.Column("state", sa.String(50), nullable=False),
    sa.Column("state_timestamp", Timestamp, nullable=False),
    sa.Column("history", JSONType, nullable=False),
    sa.Column("artifacts", JSONType, nullable=True),
    sa.Column("metadata", JSONType, nullable=True, key="metadata_"),
    sa.Column("prompt_id", sa.String(64), nullable=True),
    sa.Column("created_at", Timestamp, nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", Timestamp, nullable=False, server_default=sa.func.now()),
    # prompt_id's one index. Leading with prompt_id it serves every lookup by prompt; with created_at
    # (and id, on PostgreSQL) the canary's "this prompt's tasks since the experiment began" is an
    # index-only range scan instead of a read of the prompt's whole history.
    sa.Index("ix_tasks_prompt_id", "prompt_id", "created_at", postgresql_include=["id"]),
)

task_feedback = sa.Table(
    "task_feedback",
    metadata,
    sa.Column("id", BigIdType, primary_key=True, autoincrement=True),
    sa.Column(
        "task_id",
        sa.Uuid(),
        sa.ForeignKey("tasks.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("feedback_data", JSONType, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False, server_default=sa.func.now()),
    sa.Index("idx_task_feedback_task_id", "task_id"),
)

agent_prompts = sa.Table(
    "agent_prompts",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("agent_id", sa.String(200), nullable=False),
    sa.Column("prompt_text", sa.Text(), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("traffic", TrafficType, nullable=False),
    sa.Column("parent_id", sa.String(64), sa.ForeignKey("agent_prompts.id"), nullable=True),
    sa.Column("source", sa.String(100), nullable=False),
    sa.Column("details", JSONType, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.CheckConstraint(
        "status IN ('active', 'candidate', 'deprecated', 'rolled_back')",
        name="ck_agent_prompts_status",
    ),
    sa.CheckConstraint("traffic >= 0 AND traffic <= 1", name="ck_agent_prompts_traffic_range"),
    sa.CheckConstraint(
        "status IN ('active', 'candidate') OR traffic = 0",
        name="ck_agent_prompts_archived_no_traffic",
    ),
    sa.CheckConstraint("length(prompt_text) > 0", name="ck_agent_prompts_text_not_empty"),
    sa.Index(
        "uq_agent_prompts_one_active",
        "agent_id",
        unique=True,
        postgresql_where=sa.text("status = 'active'"),
        sqlite_where=sa.text("status = 'active'"),
    ),
    sa.Index(
        "uq_agent_prompts_one_candidate",
        "agent_id",
        unique=True,
        postgresql_where=sa.text("status = 'candidate'"),
        sqlite_where=sa.text("status = 'candidate'"),
    ),
    sa.Index("ix_agent_prompts_agent_status", "agent_id", "status"),
)

prompt_events = sa.Table(
    "prompt_events",
    metadata,
    sa.Column("id", BigIdType, primary_key=True, autoincrement=True),
    sa.Column("agent_id", sa.String(200), nullable=False),
    sa.Column("prompt_id", sa.String(64), nullable=False),
    sa.Column("event", sa.String(40), nullable=False),
    sa.Column("from_status", sa.String(20), nullable=True),
    sa.Column("to_status", sa.String(20), nullable=True),
    sa.Column("from_traffic", TrafficType, nullable=True),
    sa.Column("to_traffic", TrafficType, nullable=True),
    sa.Column("details", JSONType, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("ix_prompt_events_agent_created", "agent_id", "created_at"),
)

_POSTGRES_TRIGGERS = [
    """
    CREATE OR REPLACE FUNCTION bindu_check_agent_traffic() RETURNS trigger AS $$
    DECLARE
        agent text := COALESCE(NEW.agent_id, OLD.agent_id);
        serving_total numeric;
        actives integer;
        candidates integer;
    BEGIN
        SELECT COALESCE(SUM(traffic), 0),
               COUNT(*) FILTER (WHERE status = 'active'),
               COUNT(*) FILTER (WHERE status = 'candidate')
          INTO serving_total, actives, candidates
          FROM agent_prompts
         WHERE agent_id = agent AND status IN ('active', 'candidate');
        IF candidates > 0 AND actives = 0 THEN
            RAISE EXCEPTION 'agent %: a candidate prompt needs an active prompt', agent
                USING ERRCODE = 'check_violation';
        END IF;
        IF actives + candidates > 0 AND serving_total <> 1 THEN
            RAISE EXCEPTION 'agent %: active + candidate traffic is %, must be 1', agent, serving_total
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NULL;
    END;
    $$ LANGUAGE plpgsql
    """,
    "DROP TRIGGER IF EXISTS agent_prompts_traffic_sums_to_one ON agent_prompts",
    """
    CREATE CONSTRAINT TRIGGER agent_prompts_traffic_sums_to_one
        AFTER INSERT OR UPDATE OR DELETE ON agent_prompts
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION bindu_check_agent_traffic()
    """,
    """
    CREATE OR REPLACE FUNCTION bindu_prompt_events_append_only() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION 'prompt_events is append-only' USING ERRCODE = 'insufficient_privilege';
    END;
    $$ LANGUAGE plpgsql
    """,
    "DROP TRIGGER IF EXISTS prompt_events_append_only ON prompt_events",
    """
    CREATE TRIGGER prompt_events_append_only BEFORE UPDATE OR DELETE ON prompt_events
        FOR EACH ROW EXECUTE FUNCTION bindu_prompt_events_append_only()
    """,
]

_SQLITE_TRIGGERS = [
    """
    CREATE TRIGGER IF NOT EXISTS prompt_events_no_update BEFORE UPDATE ON prompt_events
    BEGIN SELECT RAISE(ABORT, 'prompt_events is append-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS prompt_events_no_delete BEFORE DELETE ON prompt_events
    BEGIN SELECT RAISE(ABORT, 'prompt_events is append-only'); END
    """,
]

# Serialises concurrent `db upgrade` runs on PostgreSQL; an arbitrary constant of ours.
_UPGRADE_LOCK_KEY = 0x62696E6475


def upgrade(engine: sa.Engine) -> list[str]:
    """Create or migrate our tables; safe to run any number of times, concurrently.

    On a database where Bindu already created ``tasks`` without ``prompt_id``, only that column
    and its index are added: nothing else of Bindu's is touched. Returns what was changed.
    """
    changes: list[str] = []
    with write_transaction(engine) as connection:
        if not is_sqlite(engine):
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK_KEY})
        inspector = sa.inspect(connection)
        existing = set(inspector.get_table_names())
        for table in metadata.sorted_tables:
            if table.name not in existing:
                table.create(connection)
                changes.append(f"created table {table.name}")
        if "tasks" in existing:
            columns = {column["name"] for column in inspector.get_columns("tasks")}
            if "prompt_id" not in columns:
                connection.execute(sa.text("ALTER TABLE tasks ADD COLUMN prompt_id VARCHAR(64)"))
                changes.append("added column tasks.prompt_id")
            indexes = {index["name"] for index in inspector.get_indexes("tasks")}
            if "ix_tasks_prompt_id" not in indexes:
                next(index for index in tasks.indexes if index.name == "ix_tasks_prompt_id").create(connection)
                changes.append("created index ix_tasks_prompt_id")
        for statement in _SQLITE_TRIGGERS if is_sqlite(engine) else _POSTGRES_TRIGGERS:
            connection.execute(sa.text(statement))
    return changes

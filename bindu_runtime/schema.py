"""The tables, on SQLite and PostgreSQL alike, in each agent's namespace.

``tasks`` and ``task_feedback`` are Bindu's own tables, column for column: we read them as Bindu
writes them and add only ``tasks.prompt_id`` and ``tasks.prompt_unit`` (nullable) and their one
index. ``agent_prompts``, ``prompt_events`` and ``registered_agents`` are ours.

The tables are defined without a schema; every statement runs through
``bindu_runtime.layout.for_agent`` so it names the agent's schema (a Bindu DID's own schema, or the
shared ``public`` one) explicitly. ``upgrade`` puts our tables into every Bindu agent schema.

Invariants the database enforces (not the code that happens to write today):
- at most one ``active`` and one ``candidate`` prompt per agent (partial unique indexes);
- ``traffic`` is an exact decimal in 0..1, and archived prompts carry none (CHECK constraints);
- on PostgreSQL, active + candidate traffic is exactly 1 at every commit, and a candidate never
  exists without an active prompt (a deferred constraint trigger). SQLite has no deferred triggers,
  so there ``PromptStore`` verifies the same condition inside the transaction before it commits;
- ``prompt_events`` is append-only (triggers refuse UPDATE and DELETE on both databases).
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from . import layout
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
    sa.Column("owner_did", sa.String(255), nullable=True),
    sa.Column("kind", sa.String(50), nullable=False, server_default="task"),
    sa.Column("state", sa.String(50), nullable=False),
    sa.Column("state_timestamp", Timestamp, nullable=False),
    sa.Column("history", JSONType, nullable=False),
    sa.Column("artifacts", JSONType, nullable=True),
    sa.Column("metadata", JSONType, nullable=True, key="metadata_"),
    sa.Column("prompt_id", sa.String(64), nullable=True),
    # The randomisation unit of a stamped task: a hash of the router key (bindu_runtime.router.unit_of),
    # NULL when the task was stamped without a key (then the task is its own unit).
    sa.Column("prompt_unit", sa.String(64), nullable=True),
    sa.Column("created_at", Timestamp, nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", Timestamp, nullable=False, server_default=sa.func.now()),
    # prompt_id's one index. Leading with prompt_id it serves every lookup by prompt; with created_at
    # (and id and prompt_unit, on PostgreSQL) the canary's "this prompt's tasks and units since the
    # experiment began" is an index-only range scan instead of a read of the prompt's whole history.
    sa.Index("ix_tasks_prompt_id", "prompt_id", "created_at", postgresql_include=["id", "prompt_unit"]),
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

# The agents whose tables live in this namespace, named by `db upgrade --agent ID` before any prompt
# exists: a DID cannot be read back from its schema name (the rule lowercases, replaces and hashes),
# so discovery reads agent ids from here and from agent_prompts.
registered_agents = sa.Table(
    "registered_agents",
    metadata,
    sa.Column("agent_id", sa.String(200), primary_key=True),
    sa.Column("registered_at", Timestamp, nullable=False, server_default=sa.func.now()),
)

OUR_TABLES = ("agent_prompts", "prompt_events", "registered_agents")
BINDU_TABLES = ("tasks", "task_feedback")

def _postgres_triggers(quoted: str) -> list[str]:
    """The PostgreSQL trigger functions and triggers of one schema (``quoted``: its quoted name),
    every name qualified: the function lives beside its table (a role limited to the schema can
    run it), and its body names the table explicitly instead of trusting the search_path."""
    return [
        f"""
    CREATE OR REPLACE FUNCTION {quoted}.bindu_check_agent_traffic() RETURNS trigger AS $$
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
          FROM {quoted}.agent_prompts
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
        f"DROP TRIGGER IF EXISTS agent_prompts_traffic_sums_to_one ON {quoted}.agent_prompts",
        f"""
    CREATE CONSTRAINT TRIGGER agent_prompts_traffic_sums_to_one
        AFTER INSERT OR UPDATE OR DELETE ON {quoted}.agent_prompts
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION {quoted}.bindu_check_agent_traffic()
    """,
        f"""
    CREATE OR REPLACE FUNCTION {quoted}.bindu_prompt_events_append_only() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION 'prompt_events is append-only' USING ERRCODE = 'insufficient_privilege';
    END;
    $$ LANGUAGE plpgsql
    """,
        f"DROP TRIGGER IF EXISTS prompt_events_append_only ON {quoted}.prompt_events",
        f"""
    CREATE TRIGGER prompt_events_append_only BEFORE UPDATE OR DELETE ON {quoted}.prompt_events
        FOR EACH ROW EXECUTE FUNCTION {quoted}.bindu_prompt_events_append_only()
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
_INDEX_BUILD_LOCK_KEY = _UPGRADE_LOCK_KEY + 1


def upgrade(engine: sa.Engine, agent_id: str | None = None) -> list[str]:
    """Create or migrate our tables in every Bindu agent namespace; safe to run any number of
    times, concurrently. Returns what was changed (empty when everything was up to date).

    On PostgreSQL, without ``agent_id``, every schema holding Bindu's ``tasks`` is upgraded: each
    DID schema (``did_…``) and the shared one (``public``) when Bindu's tables are there. A database
    without any Bindu tables gets all four tables in the shared schema (a fresh single-tenant or demo
    database). With ``agent_id`` only that agent's schema is upgraded, and the agent is recorded in
    its ``registered_agents`` so discovery finds it before its first prompt. SQLite has one namespace.

    Where Bindu created ``tasks``, only ``prompt_id``, ``prompt_unit`` and their index are added:
    nothing else of Bindu's is touched. Raises ``layout.SchemaNotFound`` for an agent whose schema
    does not exist, ``layout.NotABinduSchema`` for a schema with ``tasks`` but no ``task_feedback``.
    """
    if is_sqlite(engine):
        targets: list[str | None] = [None]
    elif agent_id is not None:
        targets = [layout.schema_of(engine, agent_id)]
    else:
        with engine.connect() as connection:
            targets = [namespace.schema for namespace in layout.bindu_namespaces(connection)]
        targets = targets or [layout.shared_schema(engine)]
    changes: list[str] = []
    for schema in targets:
        with write_transaction(engine) as connection:
            if schema is not None:
                # Serialises concurrent upgrades; held to the end of this schema's transaction.
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK_KEY})
            changes += _upgrade_namespace(connection, schema, agent_id=agent_id)
        if schema is not None:
            changes += _build_prompt_index_concurrently(engine, schema)
    return changes


_PROMPT_INDEX = next(index for index in tasks.indexes if index.name == "ix_tasks_prompt_id")


def _build_prompt_index_concurrently(engine: sa.Engine, schema: str) -> list[str]:
    """Build ix_tasks_prompt_id on a Bindu tasks table that lacks it without blocking Bindu's
    writes (``CREATE INDEX CONCURRENTLY``; a plain build holds inserts for the whole table scan:
    ``benchmarks/storage_upgrade.py``). A build that failed half-way leaves an invalid index,
    which is dropped and built again.

    Builds are serialised by an advisory lock of their own, taken by polling: a CONCURRENTLY build
    waits for every statement holding a snapshot, so another upgrader blocked inside a lock wait
    would deadlock with it, while one that sleeps between tries holds none."""
    with engine.connect() as plain:
        connection = plain.execution_options(isolation_level="AUTOCOMMIT")
        try_lock = sa.text("SELECT pg_try_advisory_lock(:key)")
        while not connection.execute(try_lock, {"key": _INDEX_BUILD_LOCK_KEY}).scalar():
            time.sleep(0.05)
        try:
            valid = connection.execute(
                sa.text(
                    "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :schema AND c.relname = :name"
                ),
                {"schema": schema, "name": _PROMPT_INDEX.name},
            ).scalar()
            if valid:
                return []
            quoted = layout.quote_identifier(connection, schema)
            if valid is False:
                connection.exec_driver_sql(f"DROP INDEX CONCURRENTLY {quoted}.{_PROMPT_INDEX.name}")
            create = str(sa.schema.CreateIndex(_PROMPT_INDEX).compile(
                dialect=connection.dialect, schema_translate_map={None: schema}, render_schema_translate=True))
            connection.exec_driver_sql(create.replace("CREATE INDEX ", "CREATE INDEX CONCURRENTLY ", 1))
            return [f"schema {schema}: created index {_PROMPT_INDEX.name}"]
        finally:
            connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _INDEX_BUILD_LOCK_KEY})


def _upgrade_namespace(connection: sa.Connection, schema: str | None, *, agent_id: str | None) -> list[str]:
    """Upgrade one namespace inside the caller's transaction."""
    inspector = sa.inspect(connection)
    where = "" if schema is None else f"schema {schema}: "
    if schema is not None and not inspector.has_schema(schema):
        raise layout.SchemaNotFound(
            f"no schema {schema!r} for agent {agent_id!r} in this database "
            "(a Bindu agent creates it when it first starts with PostgreSQL storage)"
        )
    existing = set(inspector.get_table_names(schema=schema))
    if "tasks" in existing and "task_feedback" not in existing:
        raise layout.NotABinduSchema(
            f"{where or 'database: '}it has Bindu's tasks table but no task_feedback "
            "(a Bindu older than its feedback support, or not a Bindu database); nothing was changed"
        )
    if "tasks" not in existing and schema is not None and layout.is_did_schema(schema):
        raise layout.NotABinduSchema(
            f"schema {schema!r} holds no Bindu tasks table yet: start the Bindu agent once, then run db upgrade"
        )
    scoped = connection.execution_options(schema_translate_map={None: schema}) if schema is not None else connection
    changes: list[str] = []
    for table in metadata.sorted_tables:
        if table.name not in existing:
            table.create(scoped)
            changes.append(f"{where}created table {table.name}")
    if "tasks" in existing:
        columns = {column["name"] for column in inspector.get_columns("tasks", schema=schema)}
        qualified_tasks = layout.qualified_name(connection, schema, "tasks")
        for column in ("prompt_id", "prompt_unit"):
            if column not in columns:
                connection.execute(sa.text(f"ALTER TABLE {qualified_tasks} ADD COLUMN {column} VARCHAR(64)"))
                changes.append(f"{where}added column tasks.{column}")
        indexes = {index["name"] for index in inspector.get_indexes("tasks", schema=schema)}
        # On PostgreSQL the index is built after this transaction, concurrently (see upgrade).
        if schema is None and _PROMPT_INDEX.name not in indexes:
            _PROMPT_INDEX.create(scoped)
            changes.append(f"{where}created index {_PROMPT_INDEX.name}")
    statements = _SQLITE_TRIGGERS if schema is None else _postgres_triggers(layout.quote_identifier(connection, schema))
    for statement in statements:
        connection.execute(sa.text(statement))
    if agent_id is not None:
        if _register(scoped, agent_id):
            changes.append(f"{where}registered agent {agent_id}")
    return changes


def _register(connection: sa.Connection, agent_id: str) -> bool:
    """Record the agent in its namespace's registered_agents; False when it already was."""
    exists = connection.execute(
        sa.select(registered_agents.c.agent_id).where(registered_agents.c.agent_id == agent_id)
    ).first()
    if exists:
        return False
    connection.execute(registered_agents.insert().values(agent_id=agent_id))
    return True

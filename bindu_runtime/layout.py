"""Where an agent's rows live: Bindu's storage layout, as Bindu itself lays it out.

A Bindu agent with PostgreSQL storage keeps ``tasks``, ``contexts`` and ``task_feedback`` in a schema
of its own, named from its DID by Bindu's rule (reproduced in :func:`sanitize_did_for_schema`). Any
other agent id names an agent of the legacy single-tenant layout, in ``public``. SQLite (the embedded
demo) has one namespace for every agent.

Every agent-scoped statement names its schema explicitly: Core statements on the shared
``bindu_runtime.schema`` tables through :func:`for_agent` (a ``schema_translate_map``), raw SQL through
:func:`qualified_table`. Nothing relies on ``search_path``: Bindu sets it inside a transaction that a
rollback undoes, so a pooled connection can silently point at ``public`` again.
"""

from __future__ import annotations

import hashlib
import re
import weakref
from dataclasses import dataclass

import sqlalchemy as sa

# Defined in ``errors``; importable from here too (``layout.SchemaNotFound`` is how ``schema`` raises it).
from .errors import NotABinduSchema, SchemaNotFound

# PostgreSQL truncates identifiers to 63 bytes; Bindu keeps 54 characters, "_" and 8 hex digits.
_MAX_SCHEMA_LENGTH = 63
_HASH_DIGITS = 8
_KEPT_PREFIX_LENGTH = _MAX_SCHEMA_LENGTH - 1 - _HASH_DIGITS
_OUTSIDE_SCHEMA_ALPHABET = re.compile(r"[^a-z0-9_]")

PUBLIC_SCHEMA = "public"
# Every sanitised DID starts with "did_" (a DID starts with "did:"; the hash keeps the first 54 chars).
DID_SCHEMA_PREFIX = "did_"
# The shared namespace of an engine (see shared_schema), by dialect instance: every engine has a
# dialect of its own, and its connections and execution_options() copies share it.
_SHARED_SCHEMA_BY_DIALECT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SEARCH_PATH_OPTION = re.compile(r"-c\s*search_path\s*=\s*(\S+)")


def sanitize_did_for_schema(did: str) -> str:
    """The schema Bindu's ``PostgresStorage`` uses for ``did``, by Bindu's own rule and order of steps.

    Lowercase first (so e.g. the Kelvin sign becomes an ASCII ``k`` instead of ``_``), then every
    character outside ``[a-z0-9_]`` becomes ``_``, then a leading digit gets the prefix ``schema_``,
    and only then is a name over 63 characters cut to 54 + ``_`` + the first 8 hex digits of the
    SHA-256 of the whole (prefixed, untruncated) name.
    """
    name = _OUTSIDE_SCHEMA_ALPHABET.sub("_", did.lower())
    if name[:1].isdigit():
        name = f"schema_{name}"
    if len(name) > _MAX_SCHEMA_LENGTH:
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:_HASH_DIGITS]
        name = f"{name[:_KEPT_PREFIX_LENGTH]}_{digest}"
    return name


def is_did(agent_id: str) -> bool:
    """Whether the agent id is a DID, i.e. a Bindu agent with a schema of its own on PostgreSQL."""
    return agent_id.startswith("did:")


def agent_schema(agent_id: str, dialect_name: str, *, shared_schema: str = PUBLIC_SCHEMA) -> str | None:
    """The agent's schema: its DID's schema on PostgreSQL, ``public`` (the shared namespace) for any
    other id there, and ``None`` on SQLite, which has a single namespace."""
    if dialect_name == "sqlite":
        return None
    return sanitize_did_for_schema(agent_id) if is_did(agent_id) else shared_schema


def shared_schema_of_url(url: str | sa.URL) -> str:
    """The shared (non-DID) namespace a database URL names: ``public``, or the first schema of a
    ``search_path`` startup option in the URL (``?options=-csearch_path=s``).

    A startup option is part of the configuration, not session state a rollback can undo (Bindu's
    bug): we read it once and then name that schema explicitly in every statement. It is how a
    deployment keeps its single-tenant tables outside ``public``, and how the tests give every test
    a schema of its own.
    """
    options = sa.make_url(url).query.get("options") or ""
    for option in options if isinstance(options, tuple) else (options,):
        match = _SEARCH_PATH_OPTION.search(option)
        if match:
            for entry in match.group(1).split(","):
                entry = entry.strip().strip('"')
                if entry and entry != "$user":
                    return entry
    return PUBLIC_SCHEMA


def register_shared_schema(engine: sa.Engine, schema: str) -> None:
    """Record the engine's shared namespace (``bindu_runtime.make_engine`` does, from its URL)."""
    _SHARED_SCHEMA_BY_DIALECT[engine.dialect] = schema


def _dialect_of(engine_or_dialect: sa.Engine | sa.Connection | sa.engine.Dialect) -> sa.engine.Dialect:
    return getattr(engine_or_dialect, "dialect", engine_or_dialect)


def shared_schema(engine_or_dialect: sa.Engine | sa.Connection | sa.engine.Dialect) -> str:
    """The schema of every non-DID agent id on this engine: ``public`` unless its URL says otherwise."""
    dialect = _dialect_of(engine_or_dialect)
    schema = _SHARED_SCHEMA_BY_DIALECT.get(dialect)
    if schema is None:
        engine = getattr(engine_or_dialect, "engine", None)
        schema = shared_schema_of_url(engine.url) if engine is not None else PUBLIC_SCHEMA
        _SHARED_SCHEMA_BY_DIALECT[dialect] = schema
    return schema


def schema_of(engine_or_dialect: sa.Engine | sa.Connection | sa.engine.Dialect, agent_id: str) -> str | None:
    """:func:`agent_schema` for an engine, connection or dialect."""
    dialect = _dialect_of(engine_or_dialect)
    if dialect.name == "sqlite":
        return None
    return agent_schema(agent_id, dialect.name, shared_schema=shared_schema(engine_or_dialect))


def for_agent(engine: sa.Engine, agent_id: str) -> sa.Engine:
    """The engine with every Core statement on the shared ``bindu_runtime.schema`` tables rendered
    in the agent's schema (``"schema".tasks``). SQLite is returned unchanged.

    The translate map applies to ``sa.Table`` objects (not to ``sa.table()`` clauses or text SQL:
    use :func:`qualified_table` there). The returned engine shares the original's pool; it is cheap
    to make, so callers need not cache it.
    """
    return for_schema(engine, schema_of(engine, agent_id))


def for_schema(engine: sa.Engine, schema: str | None) -> sa.Engine:
    """The engine with Core statements rendered in ``schema``; unchanged for ``None`` (SQLite)."""
    if schema is None:
        return engine
    return engine.execution_options(schema_translate_map={None: schema})


def quote_identifier(engine_or_dialect: sa.Engine | sa.Connection | sa.engine.Dialect, name: str) -> str:
    """``name`` quoted as an identifier, always (a schema name may need quotes on some DIDs)."""
    return _dialect_of(engine_or_dialect).identifier_preparer.quote_identifier(name)


def qualified_name(
    engine_or_dialect: sa.Engine | sa.Connection | sa.engine.Dialect, schema: str | None, name: str
) -> str:
    """``"schema"."name"`` for text SQL, or the bare name when there is no schema (SQLite)."""
    if schema is None:
        return name
    return f"{quote_identifier(engine_or_dialect, schema)}.{quote_identifier(engine_or_dialect, name)}"


def qualified_table(
    engine_or_dialect: sa.Engine | sa.Connection | sa.engine.Dialect, agent_id: str, table_name: str
) -> str:
    """The agent's ``table_name`` for a raw SQL string: ``"schema"."table"``, plain ``table`` on SQLite."""
    return qualified_name(engine_or_dialect, schema_of(engine_or_dialect, agent_id), table_name)


def agent_ids_in_namespace(connection: sa.Connection, schema: str | None) -> set[str]:
    """The distinct agent ids of ``agent_prompts`` in ``schema`` (empty when the table is not there)."""
    if not sa.inspect(connection).has_table("agent_prompts", schema=schema):
        return set()
    table = qualified_name(connection, schema, "agent_prompts")
    return set(connection.execute(sa.text(f"SELECT DISTINCT agent_id FROM {table}")).scalars())


def owns_namespace(connection: sa.Connection, agent_id: str, *, assume_single_agent: bool = False) -> bool:
    """Whether the agent's namespace belongs to that agent alone, so that its unstamped tasks
    (``prompt_id`` NULL, written before the router) are the agent's history for TRAINING.

    True for a DID schema on PostgreSQL (unless another id's prompts are there too: two DIDs can
    sanitise to one schema); for ``public`` or SQLite only when ``agent_prompts`` holds exactly this
    one agent; and whenever the operator names the agent explicitly (``assume_single_agent``). Never
    a reason to count unstamped tasks in the canary: those compare prompts, and need the stamp.
    """
    if assume_single_agent:
        return True
    schema = schema_of(connection, agent_id)
    known = agent_ids_in_namespace(connection, schema)
    if schema is not None and is_did(agent_id):
        return known <= {agent_id}
    return known == {agent_id}


def is_did_schema(schema: str) -> bool:
    """Whether a schema name is one Bindu's rule gives a DID."""
    return schema.startswith(DID_SCHEMA_PREFIX)


@dataclass(frozen=True, slots=True)
class Namespace:
    """One agent namespace: a DID schema, the shared schema, or SQLite's single one (``None``),
    with the tables of interest it holds and the current role may read."""

    schema: str | None
    tables: frozenset[str]

    @property
    def has_bindu_tables(self) -> bool:
        return "tasks" in self.tables


_NAMESPACE_TABLES = ("tasks", "task_feedback", "agent_prompts", "prompt_events", "registered_agents")


def namespaces(connection: sa.Connection) -> list[Namespace]:
    """Every namespace that may hold an agent: on PostgreSQL each DID schema and the shared one,
    with the tables of ours and Bindu's that each holds, listed only where the current role may
    use the schema and read the table (a role limited to one agent sees that agent alone)."""
    if connection.dialect.name == "sqlite":
        present = set(sa.inspect(connection).get_table_names())
        return [Namespace(None, frozenset(present.intersection(_NAMESPACE_TABLES)))]
    rows = connection.execute(
        sa.text(
            """
            SELECT n.nspname AS schema, array_agg(c.relname::text) AS tables
              FROM pg_namespace n
              JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
             WHERE (n.nspname LIKE 'did\\_%' OR n.nspname = :shared)
               AND c.relname = ANY(:tables)
               AND has_schema_privilege(n.oid, 'USAGE')
               AND has_any_column_privilege(c.oid, 'SELECT')
             GROUP BY n.nspname
             ORDER BY n.nspname
            """
        ),
        {"shared": shared_schema(connection), "tables": list(_NAMESPACE_TABLES)},
    ).all()
    return [Namespace(row.schema, frozenset(row.tables)) for row in rows]


def bindu_namespaces(connection: sa.Connection) -> list[Namespace]:
    """The namespaces holding Bindu's ``tasks``: what ``db upgrade`` upgrades."""
    return [namespace for namespace in namespaces(connection) if namespace.has_bindu_tables]

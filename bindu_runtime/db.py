"""Engines that behave the same on SQLite and PostgreSQL for what the runtime needs.

- Connection attempts are bounded (``connect_timeout``) so a dead database costs a refresh, never a hang.
- Write transactions are serialised per database on SQLite (``BEGIN IMMEDIATE``) and rely on row locks
  plus partial unique indexes on PostgreSQL, so concurrent writers see each other's committed state.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from . import layout
from .config import resolve_database_url

SQLITE_BUSY_TIMEOUT_S = 10.0


def make_engine(url: str | None = None, *, connect_timeout: float = 5.0, **engine_kwargs) -> sa.Engine:
    resolved = make_url(resolve_database_url(url))
    # Errors must not carry statement parameters: prompt texts, feedback and user data would end up
    # in logs, exceptions and Dagster run metadata.
    engine_kwargs.setdefault("hide_parameters", True)
    if resolved.get_backend_name() == "sqlite":
        return _sqlite_engine(resolved, connect_timeout, **engine_kwargs)
    engine = _postgres_engine(resolved, connect_timeout, **engine_kwargs)
    layout.register_shared_schema(engine, layout.shared_schema_of_url(resolved))
    return engine


def _postgres_engine(url: sa.URL, connect_timeout: float, **engine_kwargs) -> sa.Engine:
    connect_args = {
        # libpq takes whole seconds and treats values below 2 as 2.
        "connect_timeout": max(2, math.ceil(connect_timeout)),
        "application_name": "bindu-dspy",
        # A half-open TCP connection must not hold a refresh thread forever.
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        # Unacknowledged writes on a dead link fail after this many ms instead of the kernel's ~15 min.
        "tcp_user_timeout": 10_000,
    }
    connect_args.update(engine_kwargs.pop("connect_args", {}))
    engine_kwargs.setdefault("pool_pre_ping", True)
    engine_kwargs.setdefault("pool_size", 5)
    engine_kwargs.setdefault("pool_timeout", max(connect_timeout, 1.0))
    return sa.create_engine(url, connect_args=connect_args, **engine_kwargs)


def _sqlite_engine(url: sa.URL, connect_timeout: float, **engine_kwargs) -> sa.Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
    connect_args.update(engine_kwargs.pop("connect_args", {}))
    engine = sa.create_engine(url, connect_args=connect_args, **engine_kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def is_sqlite(engine: sa.Engine | sa.Connection) -> bool:
    return engine.dialect.name == "sqlite"


@contextlib.contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One transaction that writes. On SQLite it takes the write lock up front, so two writers
    never both read the same state and then race to write it."""
    with engine.connect() as connection:
        if is_sqlite(engine):
            connection = connection.execution_options(sqlite_begin="IMMEDIATE")
        with connection.begin():
            yield connection

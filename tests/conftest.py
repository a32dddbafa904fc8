"""Shared fixtures: real SQLite and real PostgreSQL, a fresh database per session and a fresh
schema per test, never touching anything these tests did not create."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import sqlalchemy as sa

# Before anything imports litellm or dspy: no network for the model cost map, no disk cache.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="bindu-dspy-cache-"))
# Tests never use the repo's dagster_home or a database from the environment.
os.environ["DAGSTER_HOME"] = tempfile.mkdtemp(prefix="bindu-dagster-home-")
for variable in ("BINDU_DATABASE_URL", "STORAGE__POSTGRES_URL", "BINDU_LM", "BINDU_LM_API_BASE", "BINDU_LM_API_KEY"):
    os.environ.pop(variable, None)

from bindu_runtime import make_engine, upgrade  # noqa: E402
from tests.support.session_databases import drop_abandoned_session_databases, session_database_name  # noqa: E402

POSTGRES_ADMIN_URL = os.environ.get("BINDU_TEST_POSTGRES_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session", autouse=True)
def _dspy_without_disk_cache() -> None:
    try:
        import dspy
    except ImportError:  # the runtime-only install has no dspy
        return
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A database of this test session's own on the local server, dropped at the end (or, if the
    session is killed, by the next session on this machine)."""
    name = session_database_name()
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            drop_abandoned_session_databases(connection)
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc.orig}")
    url = sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def _fresh_postgres_schema_url(server_url: str) -> str:
    """A URL whose connections see only a new, empty schema (through the search_path)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(server_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine.dispose()
    return f"{server_url}?options={quote(f'-csearch_path={schema}')}"


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'bindu.sqlite'}"


@pytest.fixture
def postgres_url(postgres_server_url) -> str:
    return _fresh_postgres_schema_url(postgres_server_url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request) -> str:
    """An empty database, once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")


def _upgraded_engine(url: str) -> Iterator[sa.Engine]:
    engine = make_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(db_url) -> Iterator[sa.Engine]:
    """An engine on an empty database with the schema upgraded."""
    yield from _upgraded_engine(db_url)


@pytest.fixture
def postgres_engine(postgres_url) -> Iterator[sa.Engine]:
    """An engine on an empty PostgreSQL schema with the schema upgraded."""
    yield from _upgraded_engine(postgres_url)

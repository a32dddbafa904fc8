"""A PostgreSQL database of the module's own for the real Bindu server, dropped afterwards.

Not the session database: the work-around for Bindu's ``search_path`` bug (``ALTER DATABASE … SET
search_path``) changes the database's defaults, which no other test may see. The name follows the
session databases' rule, so a killed run's database is dropped by the next session.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from tests.conftest import POSTGRES_ADMIN_URL
from tests.support.session_databases import session_database_name


@dataclass(frozen=True)
class BinduDatabase:
    name: str
    # Ours: postgresql+psycopg2://, its search_path pinned to public, so the work-around below can
    # never hide a statement of ours that forgets to name its schema.
    url: str
    bindu_url: str  # Bindu's: postgresql:// (it switches the driver to asyncpg itself)
    engine: sa.Engine  # autocommit, for checks and the search_path work-around

    def point_search_path_at(self, schema: str) -> None:
        """Work around Bindu's bug for the one server about to run: a pooled connection whose first
        transaction rolled back lost Bindu's ``SET search_path``; the database default catches it.
        Only ever one Bindu server runs against this database at a time, so the default is its schema."""
        quoted = self.engine.dialect.identifier_preparer.quote_identifier
        with self.engine.connect() as connection:
            connection.exec_driver_sql(f"ALTER DATABASE {quoted(self.name)} SET search_path TO {quoted(schema)}")


@pytest.fixture(scope="module")
def bindu_database() -> Iterator[BinduDatabase]:
    name = session_database_name()
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(POSTGRES_ADMIN_URL).set(database=name)
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        yield BinduDatabase(
            name=name,
            url=url.update_query_dict({"options": "-csearch_path=public"}).render_as_string(hide_password=False),
            bindu_url=url.set(drivername="postgresql").render_as_string(hide_password=False),
            engine=engine,
        )
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

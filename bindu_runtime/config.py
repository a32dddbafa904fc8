"""Where the Bindu database is.

Order: an explicit URL, then ``BINDU_DATABASE_URL``, then the seed's ``STORAGE__POSTGRES_URL``.
There is no silent default: an agent pod without a URL would otherwise record feedback into a
local file the pipelines never read. Only the demo (``bindu-dspy demo``, ``make demo``/``make ui``)
and tests pass the embedded SQLite file, explicitly, as ``demo_sqlite_url()``.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url

from .errors import ConfigurationError

DEMO_SQLITE_FILENAME = "bindu.sqlite"
NO_DATABASE_MESSAGE = (
    "no database configured: set BINDU_DATABASE_URL (or STORAGE__POSTGRES_URL) to the Bindu database URL"
)

# SQLAlchemy 2.1 maps the bare "postgresql" scheme to psycopg 3, which we do not ship; Bindu itself
# configures asyncpg. The runtime is synchronous and uses psycopg2 for all of them.
_POSTGRES_DRIVER_ALIASES = {
    "postgres",
    "postgresql",
    "postgresql+asyncpg",
    "postgresql+psycopg",
}


def demo_sqlite_url() -> str:
    """The embedded demo's SQLite file under ``$DAGSTER_HOME`` (or ``./dagster_home``). Only the
    demo commands use it, and they pass it explicitly; nothing falls back to it."""
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / "dagster_home")
    return f"sqlite:///{(home / DEMO_SQLITE_FILENAME).resolve()}"


def normalize_database_url(url: str) -> str:
    """Name the driver explicitly so the URL means the same on every SQLAlchemy version."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with the URL (and password) in it
        raise ConfigurationError("database URL is not a valid SQLAlchemy URL") from None
    if parsed.drivername in _POSTGRES_DRIVER_ALIASES:
        parsed = parsed.set(drivername="postgresql+psycopg2")
    if parsed.get_backend_name() not in {"postgresql", "sqlite"}:
        raise ConfigurationError(
            f"unsupported database backend {parsed.get_backend_name()!r}: use PostgreSQL or SQLite"
        )
    return parsed.render_as_string(hide_password=False)


def resolve_database_url(url: str | None = None) -> str:
    """The database URL to use, driver named. Raises ConfigurationError when none is given."""
    for candidate in (
        url,
        os.environ.get("BINDU_DATABASE_URL"),
        os.environ.get("STORAGE__POSTGRES_URL"),
    ):
        if candidate and candidate.strip():
            return normalize_database_url(candidate.strip())
    raise ConfigurationError(NO_DATABASE_MESSAGE)


def redact_url(url: str) -> str:
    """The URL as it may appear in logs and metadata: never with its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<invalid database URL>"

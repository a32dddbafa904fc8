"""The Bindu database as a Dagster resource."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dagster as dg
import sqlalchemy as sa
from pydantic import Field, PrivateAttr

from bindu_runtime import PromptStore, make_engine
from bindu_runtime.config import redact_url, resolve_database_url


class BinduDatabase(dg.ConfigurableResource):
    """The database Bindu agents write their tasks and feedback to, and read prompts from.

    Leave ``url`` unset in deployments: it is then read from ``BINDU_DATABASE_URL`` (or the seed's
    ``STORAGE__POSTGRES_URL``) at run time, so no password lands in the run's configuration.
    """

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default: BINDU_DATABASE_URL, then STORAGE__POSTGRES_URL (no silent SQLite default)",
    )
    connect_timeout: float = Field(default=5.0, description="Seconds to wait for a connection before failing.")

    _engine: sa.Engine | None = PrivateAttr(default=None)

    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = make_engine(self.url, connect_timeout=self.connect_timeout)
        return self._engine

    def store(self) -> PromptStore:
        return PromptStore(self.engine())

    @contextlib.contextmanager
    def failing_cleanly(self, what: str) -> Iterator[None]:
        """A database error inside the block fails the step with one line naming the cause (the
        driver's own words), instead of Dagster's wrapper around a page of SQL."""
        try:
            yield
        except sa.exc.DBAPIError as exc:
            raise dg.Failure(description=f"{what}: database error: {database_error_reason(exc)}") from exc

    def display_url(self) -> str:
        return redact_url(resolve_database_url(self.url))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def database_error_reason(exc: sa.exc.DBAPIError) -> str:
    """The first line of the driver's message, without SQLAlchemy's statement and parameters."""
    text = str(exc.orig).strip() if exc.orig is not None else ""
    return text.splitlines()[0] if text else type(exc.orig or exc).__name__

"""Fixtures shared by the reliability tests."""

import pytest

from bindu_runtime import make_engine, upgrade


@pytest.fixture
def direct(postgres_url):
    """An engine straight to the test schema (not through the fault proxy), schema upgraded."""
    engine = make_engine(postgres_url)
    upgrade(engine)
    yield engine
    engine.dispose()

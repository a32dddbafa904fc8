"""Fixtures shared by the reliability tests."""

import pytest


@pytest.fixture
def direct(postgres_engine):
    """An engine straight to the test schema (not through the fault proxy), schema upgraded."""
    return postgres_engine

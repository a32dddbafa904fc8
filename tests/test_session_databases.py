"""A test session killed before its teardown leaves its database behind; the next one drops it."""

import subprocess
import sys

import pytest
import sqlalchemy as sa

from tests.conftest import POSTGRES_ADMIN_URL
from tests.support.session_databases import PREFIX, drop_abandoned_session_databases, session_database_name


@pytest.mark.postgres
def test_only_this_machines_databases_of_finished_processes_are_dropped():
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead_pid = int(finished.stdout)
    abandoned = session_database_name(dead_pid)
    running = session_database_name()  # this process: alive
    other_machine = f"{PREFIX}00000000_{dead_pid}_abcdef12"
    assert abandoned.split("_")[2] != "00000000"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            for name in (abandoned, running, other_machine):
                connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
            dropped = drop_abandoned_session_databases(connection)
            left = set(connection.execute(sa.text("SELECT datname FROM pg_database")).scalars())
        assert abandoned in dropped and abandoned not in left
        assert running in left and other_machine in left
        assert running not in dropped and other_machine not in dropped
    finally:
        with admin.connect() as connection:
            for name in (abandoned, running, other_machine):
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

"""Shared plumbing for the benchmark scripts: a throwaway PostgreSQL database and result files.

Run every script from the project root as a module (``.venv/bin/python -m benchmarks.<name>``);
``BINDU_BENCH_POSTGRES_ADMIN_URL`` names the server that holds the scratch databases.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

RESULTS_DIR = Path(__file__).parent / "results"
POSTGRES_ADMIN_URL = os.environ.get("BINDU_BENCH_POSTGRES_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def scratch_postgres_database(prefix: str) -> Iterator[str]:
    """A database created for this run and dropped after it; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def write_results(name: str, body: str) -> Path:
    """Write ``body`` under benchmarks/results/ headed by the command that produced it."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.txt"
    script = Path(sys.argv[0])
    command = [".venv/bin/python", "-m", f"benchmarks.{script.stem}", *sys.argv[1:]]
    # The machines are shared: the load average at the end says how busy this one was.
    header = (
        f"$ {shlex.join(command)}\n"
        f"# {datetime.now(UTC):%Y-%m-%d %H:%M UTC} · {platform.python_implementation()} {platform.python_version()} · "
        f"{os.cpu_count()} cores · {platform.machine()} · load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}\n\n"
    )
    path.write_text(header + body.rstrip() + "\n")
    return path


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]

"""Concurrent first commands on a new DAGSTER_HOME: none fails, the instance is healthy after.

Two cron lines at 02:00 on a fresh home both create the SQLite run, event-log and schedule storages
at once; with a bare ``DagsterInstance.get()`` that fails (``table runs already exists``,
``UNIQUE constraint failed: alembic_version``) and can leave two alembic heads for good.
``open_instance()`` initialises under ``DAGSTER_HOME/.init.lock``.

Each pair is two processes started together on one fresh home, all pairs at once. Run with ``-s``
for the summary line in docs/RELIABILITY.md; ``BINDU_TEST_INIT_PAIRS`` sets the number of pairs
(default 10). ``BINDU_TEST_INIT_OPENER=bare`` runs the same probe with ``DagsterInstance.get()``,
for the "before" figure (that run is expected to fail).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

REPO = Path(__file__).resolve().parents[2]

# A first command in miniature: open the instance, then use each storage once.
PROBE = """
import sys, dagster as dg
from bindu_pipelines.instance import open_instance
instance = open_instance() if sys.argv[1] == "locked" else dg.DagsterInstance.get()
instance.add_dynamic_partitions("agents", [sys.argv[2]])
instance.get_runs(limit=1)
instance.all_instigator_state()
print("ok")
"""


def _alembic_versions(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        return [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]


@pytest.mark.timeout(900)  # 20 interpreters importing Dagster at once on 2 shared cores
def test_ten_pairs_of_first_commands_on_fresh_homes_all_succeed(tmp_path, capsys):
    pairs = int(os.environ.get("BINDU_TEST_INIT_PAIRS", "10"))
    opener = "bare" if os.environ.get("BINDU_TEST_INIT_OPENER") == "bare" else "locked"
    shipped = (REPO / "dagster_home" / "dagster.yaml").read_text()
    homes, processes = [], []
    for pair in range(pairs):
        home = tmp_path / f"home{pair}"
        home.mkdir()
        (home / "dagster.yaml").write_text(shipped)
        homes.append(home)
    for pair, home in enumerate(homes):
        env = {**os.environ, "DAGSTER_HOME": str(home)}
        for member in ("a", "b"):
            processes.append(subprocess.Popen(
                [sys.executable, "-c", PROBE, opener, f"agent-{pair}-{member}"], cwd=REPO, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))  # fmt: skip
    outcomes = [(p.wait(300), *p.communicate()) for p in processes]
    failures = [err.strip().splitlines()[-1] if err.strip() else f"exit {code}" for code, out, err in outcomes if code != 0 or out.strip() != "ok"]

    # Healthy after: one alembic version per storage, the same in every home, and a later opening
    # sees both partitions and records a run.
    broken = []
    heads = set()
    for pair, home in enumerate(homes):
        versions = {db.name: _alembic_versions(db) for db in (home / "history" / "runs.db", home / "history" / "runs" / "index.db", home / "schedules" / "schedules.db")}
        if any(len(v) != 1 for v in versions.values()):
            broken.append(f"home{pair}: alembic versions {versions}")
            continue
        heads.add(tuple(sorted((name, v[0]) for name, v in versions.items())))
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            if set(instance.get_dynamic_partitions("agents")) != {f"agent-{pair}-a", f"agent-{pair}-b"}:
                broken.append(f"home{pair}: partitions {instance.get_dynamic_partitions('agents')}")
            instance.create_run_for_job(dg.GraphDefinition(name="probe", node_defs=[]).to_job())
        finally:
            instance.dispose()
    with capsys.disabled():
        print(f"\nINSTANCE INIT opener={opener} pairs={pairs} processes={len(processes)} failed={len(failures)} "
              f"broken_homes={len(broken)} distinct_alembic_heads={len(heads)}"
              + (f" first_failure={failures[0]!r}" if failures else ""))  # fmt: skip
    assert failures == []
    assert broken == []
    assert len(heads) == 1

"""`bindu-dspy db upgrade`, `demo seed` and `status`, run as users run them."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import sqlalchemy as sa

from bindu_pipelines.demo.seed import MALFORMED_FEEDBACK_KINDS, MALFORMED_TASK_KINDS, seed_demo_data
from bindu_runtime import make_engine, upgrade
from bindu_runtime.schema import task_feedback, tasks


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bindu_pipelines.cli", *args], capture_output=True, text=True, env=env)


def test_db_upgrade_and_status_json(db_url):
    first = cli("db", "upgrade", "--database-url", db_url)
    assert first.returncode == 0, first.stderr
    assert "created table agent_prompts" in first.stdout
    again = cli("db", "upgrade", "--database-url", db_url)
    assert again.returncode == 0 and "up to date" in again.stdout
    seeded = cli("demo", "seed", "--agents", "2", "--tasks", "40", "--seed", "3", "--database-url", db_url, "--json")
    assert seeded.returncode == 0, seeded.stderr
    summary = json.loads(seeded.stdout)
    assert summary["agents"] == ["support-bot", "travel-planner"] and summary["tasks"] == 80
    status = cli("status", "--agent", "support-bot", "--json", "--database-url", db_url)
    assert status.returncode == 0, status.stderr
    payload = json.loads(status.stdout)
    (prompt,) = payload["prompts"]
    assert (prompt["status"], prompt["traffic"], prompt["tasks"]) == ("active", 1.0, 40)
    assert 0 < prompt["tasks_with_feedback"] < 40
    assert payload["experiment_running"] is False


def test_cli_errors_are_one_line_and_non_zero(sqlite_url):
    assert cli("db", "upgrade", "--database-url", sqlite_url).returncode == 0
    unknown = cli("status", "--agent", "nobody", "--database-url", sqlite_url)
    assert unknown.returncode == 1
    assert unknown.stderr.strip().startswith("bindu-dspy status: unknown agent 'nobody': no prompts in the database")
    assert len(unknown.stderr.strip().splitlines()) == 1
    bad_url = cli("status", "--agent", "x", "--database-url", "mysql://root:secret@h/d")
    assert bad_url.returncode == 1 and len(bad_url.stderr.strip().splitlines()) == 1
    assert "secret" not in bad_url.stderr
    bad_number = cli("demo", "seed", "--agents", "zero", "--database-url", sqlite_url)
    assert bad_number.returncode == 2 and "--agents" in bad_number.stderr and len(bad_number.stderr.strip().splitlines()) == 1


def test_demo_data_is_deterministic_and_holds_every_malformed_kind(sqlite_url, tmp_path):
    engines = [make_engine(sqlite_url), make_engine(f"sqlite:///{tmp_path / 'second.sqlite'}")]
    for engine in engines:
        upgrade(engine)
        seed_demo_data(engine, agents=3, tasks_per_agent=300, seed=11, now=datetime(2026, 11, 1, tzinfo=UTC))
    snapshots = []
    for engine in engines:
        with engine.connect() as connection:
            rows = connection.execute(sa.select(tasks.c.id, tasks.c.context_id, tasks.c.history).order_by(tasks.c.id)).all()
            feedback = connection.execute(sa.select(task_feedback.c.task_id, task_feedback.c.feedback_data).order_by(task_feedback.c.task_id, task_feedback.c.id)).all()
        snapshots.append((rows, feedback))
    assert snapshots[0] == snapshots[1]
    rows, feedback = snapshots[0]
    histories = [history for _, _, history in rows]
    roles = {message.get("role") for history in histories if isinstance(history, list) for message in history if isinstance(message, dict)}
    assert {"user", "assistant", "agent", None} <= roles
    assert any(not isinstance(history, list) for history in histories)
    part_kinds = {part.get("kind") for h in histories if isinstance(h, list) for m in h if isinstance(m, dict) and isinstance(m.get("parts"), list) for part in m["parts"] if isinstance(part, dict)}
    assert {"text", "file", "data"} <= part_kinds
    contexts = [context for _, context, _ in rows]
    assert len(set(contexts)) < len(contexts)  # some conversations span several tasks
    shapes = {json.dumps(sorted(data)) if isinstance(data, dict) else type(data).__name__ for _, data in feedback}
    assert any('"rating"' in shape for shape in shapes) and any('"thumbs_up"' in shape for shape in shapes) and "list" in shapes
    per_task = {}
    for task_id, _ in feedback:
        per_task[task_id] = per_task.get(task_id, 0) + 1
    assert max(per_task.values()) >= 2 and len(per_task) < len(rows)
    thumbs_values = {data.get("thumbs_up") for _, data in feedback if isinstance(data, dict)}
    assert {True, False, "maybe"} <= thumbs_values and thumbs_values & {"yes", "no", "true", "false", "1", "0"}
    ratings = {data.get("rating") for _, data in feedback if isinstance(data, dict)}
    assert {1, 5, "five", 0, 6, 4.5} <= ratings
    assert len(MALFORMED_TASK_KINDS) == 9 and len(MALFORMED_FEEDBACK_KINDS) == 7
    for engine in engines:
        engine.dispose()

"""The queued stamp writer: batches in one transaction each, a bounded queue whose drops are
counted, retries while the database is down, refusals counted, and a flush at close and at exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from bindu_runtime import PromptRouter, PromptStore, make_engine, upgrade
from bindu_runtime.router import unit_of
from bindu_runtime.schema import tasks
from tests.runtime.test_feedback import make_task
from tests.runtime.test_router import wait_until
from tests.support.tcp_proxy import TcpProxy

CODE_PROMPT = "code prompt"


def stamps_by_task(engine) -> dict[uuid.UUID, tuple[str | None, str | None]]:
    with engine.connect() as connection:
        return {row.id: (row.prompt_id, row.prompt_unit)
                for row in connection.execute(sa.select(tasks.c.id, tasks.c.prompt_id, tasks.c.prompt_unit))}


def test_stamps_are_written_in_batches_with_their_units(engine):
    prompt = PromptStore(engine).bootstrap("bot", "v1")
    task_ids = [make_task(engine) for _ in range(1_200)]
    commits = []
    event.listen(engine, "commit", lambda _connection: commits.append(1))
    with PromptRouter(engine, agent_id="bot", default_prompt=CODE_PROMPT, start=False) as router:
        router.refresh()
        commits.clear()
        for index, task_id in enumerate(task_ids):
            router.stamp_task(task_id, router.select(f"ctx-{index}"), key=f"ctx-{index}")
        assert router.status()["stamps_pending"] == len(task_ids)  # nothing written on the request path
        assert router.flush_stamps()
        status = router.status()
    assert len(commits) == 3  # 1 200 stamps, batches of 500: one transaction each
    assert status["stamps_written"] == len(task_ids) and status["stamps_pending"] == 0
    assert stamps_by_task(engine) == {task_id: (prompt.id, unit_of(f"ctx-{i}")) for i, task_id in enumerate(task_ids)}


def test_background_thread_writes_stamps_without_being_asked(engine):
    prompt = PromptStore(engine).bootstrap("bot", "v1")
    task_id = make_task(engine)
    with PromptRouter(engine, agent_id="bot", default_prompt=CODE_PROMPT, refresh_interval=0.05) as router:
        assert wait_until(lambda: router.select("k").prompt_id == prompt.id)
        router.stamp_task(task_id, router.select("k"), key="k")
        assert wait_until(lambda: router.status()["stamps_written"] == 1)
    assert stamps_by_task(engine)[task_id] == (prompt.id, unit_of("k"))


def test_a_full_queue_drops_new_stamps_and_counts_them(engine):
    PromptStore(engine).bootstrap("bot", "v1")
    task_ids = [make_task(engine) for _ in range(15)]
    with PromptRouter(engine, agent_id="bot", default_prompt=CODE_PROMPT, start=False, stamp_queue_limit=10) as router:
        router.refresh()
        for task_id in task_ids:
            router.stamp_task(task_id, router.select())
        assert router.status()["stamps_dropped"] == 5 and router.status()["stamps_pending"] == 10
        router.flush_stamps()
        assert router.status()["stamps_written"] == 10
    assert sum(prompt_id is not None for prompt_id, _unit in stamps_by_task(engine).values()) == 10


def test_unknown_and_malformed_task_ids_are_counted_not_raised(engine):
    prompt = PromptStore(engine).bootstrap("bot", "v1")
    real = make_task(engine)
    with PromptRouter(engine, agent_id="bot", default_prompt=CODE_PROMPT, start=False) as router:
        router.refresh()
        choice = router.select()
        for task_id in (uuid.uuid4(), "not-a-uuid", None, 42, real):
            router.stamp_task(task_id, choice)
        router.stamp_task(uuid.uuid4(), router.default)  # the code default has no row: not queued
        assert router.flush_stamps()
        status = router.status()
    assert (status["stamps_written"], status["stamps_unknown_task"]) == (1, 4)
    assert stamps_by_task(engine)[real] == (prompt.id, None)


def test_close_flushes_what_is_queued(engine):
    prompt = PromptStore(engine).bootstrap("bot", "v1")
    task_id = make_task(engine)
    router = PromptRouter(engine, agent_id="bot", default_prompt=CODE_PROMPT, refresh_interval=60)
    router.stamp_task(task_id, router.select("k"), key="k")
    router.close()
    assert stamps_by_task(engine)[task_id] == (prompt.id, unit_of("k"))


def test_stamps_queued_at_exit_are_written(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    PromptStore(engine).bootstrap("bot", "v1")
    task_id = make_task(engine)
    script = textwrap.dedent(f"""
        from bindu_runtime import PromptRouter
        router = PromptRouter({db_url!r}, agent_id="bot", default_prompt="code", refresh_interval=60)
        router.stamp_task({str(task_id)!r}, router.select("k"), key="k")
        # no close(): the interpreter exits with the stamp still queued
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert stamps_by_task(engine)[task_id][1] == unit_of("k")
    engine.dispose()


@pytest.mark.postgres
def test_stamps_wait_while_the_database_is_down_and_are_written_when_it_returns(postgres_engine, postgres_url):
    prompt = PromptStore(postgres_engine).bootstrap("bot", "v1")
    task_ids = [make_task(postgres_engine) for _ in range(20)]
    proxy, url = TcpProxy.for_url(postgres_url)
    router = PromptRouter(url, agent_id="bot", default_prompt=CODE_PROMPT, refresh_interval=0.1, connect_timeout=2)
    try:
        assert wait_until(lambda: router.select("k").prompt_id == prompt.id)
        proxy.cut()
        for task_id in task_ids:
            router.stamp_task(task_id, router.select("k"), key="k")  # neither blocks nor raises
        assert wait_until(lambda: router.status()["stamp_retries"] >= 2, timeout=20)
        assert router.status()["stamps_written"] == 0 and router.status()["stamps_pending"] == 20
        proxy.restore()
        assert wait_until(lambda: router.status()["stamps_written"] == 20, timeout=20)
    finally:
        router.close()
        proxy.close()
    assert {stamp for task_id, stamp in stamps_by_task(postgres_engine).items() if task_id in task_ids} == {(prompt.id, unit_of("k"))}


def test_a_backlog_left_at_close_is_reported_as_a_backlog_not_an_outage(engine, caplog):
    """A healthy but slow database and a close timeout shorter than the backlog needs: the stamps
    left are counted as lost at close, and the warning names the timeout, not an outage."""
    import time

    from bindu_runtime.stamps import StampWriter

    prompt = PromptStore(engine).bootstrap("bot", "v1")
    task_ids = [make_task(engine) for _ in range(1_500)]
    writer = StampWriter(engine, "bot", batch_size=100, flush_interval=0.01)
    slow = lambda *_args: time.sleep(0.05) if _args[2].lstrip().upper().startswith("UPDATE") else None  # noqa: E731
    event.listen(engine, "before_cursor_execute", slow)
    try:
        for index, task_id in enumerate(task_ids):
            writer.submit(task_id, prompt.id, f"ctx-{index}")
        writer.start()
        assert wait_until(lambda: writer.written > 0)  # the writer thread is draining the backlog
        with caplog.at_level("WARNING", logger="bindu_runtime"):
            writer.close(timeout=0.3)
        writer._thread.join(5)
    finally:
        event.remove(engine, "before_cursor_execute", slow)
    assert 0 < writer.lost_at_close < len(task_ids) and writer.written + writer.lost_at_close >= len(task_ids)
    assert writer.last_error is None
    [warning] = [r.getMessage() for r in caplog.records if "closed with" in r.getMessage()]
    assert "close timeout (0.3 s)" in warning and "unreachable" not in warning

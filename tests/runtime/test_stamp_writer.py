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
    slow = lambda *_args: time.sleep(0.05) if "UPDATE" in _args[2].upper() else None  # noqa: E731  # the stamp statement
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


# --------------------------------------- what PostgreSQL casts, hashes and matches for the writer


class _Unprintable:
    def __str__(self):
        raise RuntimeError("no text")


KEYS_BY_PATH = {
    # one join into an array literal: plain text, however odd, with nothing to escape
    "literal": ["ctx-1", "", " spaced ", "ü日本🎉", "com,ma {brace} NULL", "NULL", "tab\tnew\nline"],
    # a quote or a backslash: the list is sent item by item
    "quoted": ['quo"te', "back\\slash", 'both \\" here', "plain"],
    # not text: key_text() of each (None and a str() that raises: no unit)
    "not text": [uuid.UUID(int=7), 12345, None, _Unprintable(), "text too"],
    # a NUL or a lone surrogate cannot be sent as text: the whole batch is hashed in Python
    "hashed here": ["nul\x00inside", "lone \ud800 surrogate", "fine"],
}


@pytest.mark.parametrize("path", list(KEYS_BY_PATH))
def test_every_key_gets_the_unit_unit_of_gives_it(engine, path):
    prompt = PromptStore(engine).bootstrap("bot", "v1")
    keys = KEYS_BY_PATH[path]
    task_ids = [make_task(engine) for _ in keys]
    with PromptRouter(engine, agent_id="bot", default_prompt=CODE_PROMPT, start=False) as router:
        router.refresh()
        choice = router.select()
        for task_id, key in zip(task_ids, keys):
            router.stamp_task(task_id, choice, key=key)
        assert router.flush_stamps()
        assert router.status()["stamps_written"] == len(keys)
    stamped = stamps_by_task(engine)
    assert [stamped[task_id] for task_id in task_ids] == [(prompt.id, unit_of(key)) for key in keys]


def test_task_ids_in_every_form_uuid_reads_are_stamped_and_the_rest_counted(engine):
    prompt = PromptStore(engine).bootstrap("bot", "v1")
    real = [make_task(engine) for _ in range(6)]
    forms = [real[0], str(real[1]), str(real[2]).upper(), "{%s}" % real[3], f"urn:uuid:{real[4]}", real[5].hex]
    not_uuids = ["not-a-uuid", 42, None, "g" * 36, str(real[0])[:-1]]
    unknown = [uuid.uuid4(), str(uuid.uuid4())]
    with PromptRouter(engine, agent_id="bot", default_prompt=CODE_PROMPT, start=False) as router:
        router.refresh()
        choice = router.select()
        for task_id in forms + not_uuids + unknown:  # one mixed batch
            router.stamp_task(task_id, choice, key="k")
        assert router.flush_stamps()
        status = router.status()
    assert (status["stamps_written"], status["stamps_unknown_task"]) == (len(forms), len(not_uuids) + len(unknown))
    assert all(stamps_by_task(engine)[task_id] == (prompt.id, unit_of("k")) for task_id in real)


@pytest.mark.parametrize("as_text", [False, True], ids=["UUID objects", "UUID text"])
def test_a_batch_of_one_kind_of_task_id_is_stamped_whole(engine, as_text):
    prompt = PromptStore(engine).bootstrap("bot", "v1")
    real = [make_task(engine) for _ in range(5)]
    absent = [uuid.uuid4() for _ in range(2)]
    # text that is not a UUID, among UUID text: counted, and the rest of the batch still written
    malformed = ["not-a-uuid", str(real[0])[:-1] + "x"] if as_text else []
    with PromptRouter(engine, agent_id="bot", default_prompt=CODE_PROMPT, start=False) as router:
        router.refresh()
        choice = router.select()
        for index, task_id in enumerate(real + absent):
            router.stamp_task(str(task_id) if as_text else task_id, choice, key=f"ctx-{index}")
        for task_id in malformed:
            router.stamp_task(task_id, choice, key="bad")
        assert router.flush_stamps()
        status = router.status()
    assert (status["stamps_written"], status["stamps_unknown_task"], status["stamps_failed"]) == (5, 2 + len(malformed), 0)
    stamped = stamps_by_task(engine)
    assert [stamped[task_id] for task_id in real] == [(prompt.id, unit_of(f"ctx-{i}")) for i in range(5)]


def test_the_last_stamp_of_a_task_in_a_batch_is_the_one_written(engine):
    store = PromptStore(engine)
    active = store.bootstrap("bot", "v1")
    candidate = store.start_experiment("bot", "v2", source="test")
    task_id, other = make_task(engine), make_task(engine)
    with PromptRouter(engine, agent_id="bot", default_prompt=CODE_PROMPT, start=False) as router:
        router.refresh()
        writer = router._stamps
        writer.submit(task_id, active.id, "first")
        writer.submit(other, active.id, "other")
        writer.submit(task_id, candidate.id, "second")
        assert router.flush_stamps()
        status = router.status()
    assert status["stamps_written"] == 3 and status["stamps_unknown_task"] == 0
    assert stamps_by_task(engine)[task_id] == (candidate.id, unit_of("second"))
    assert stamps_by_task(engine)[other] == (active.id, unit_of("other"))


def test_prompt_ids_not_the_agents_are_refused_in_a_batch_with_its_own(engine):
    store = PromptStore(engine)
    own = store.bootstrap("bot", "v1")
    foreign = store.bootstrap("other-bot", "theirs")
    task_ids = [make_task(engine) for _ in range(6)]
    with PromptRouter(engine, agent_id="bot", default_prompt=CODE_PROMPT, start=False) as router:
        router.refresh()
        writer = router._stamps
        for task_id, prompt_id in zip(task_ids, [own.id, foreign.id, "nul\x00id", ["unhashable"], 7, own.id]):
            writer.submit(task_id, prompt_id, "k")
        assert router.flush_stamps()
        status = router.status()
    assert (status["stamps_written"], status["stamps_refused_foreign_prompt"]) == (2, 4)
    stamped = stamps_by_task(engine)
    assert [stamped[t][0] for t in task_ids] == [own.id, None, None, None, None, own.id]


@pytest.mark.postgres
def test_a_batch_is_written_by_primary_key_lookups_whatever_the_statistics(postgres_engine):
    """Just after a bulk load (no statistics yet) the planner would hash-join the batch against a
    sequential scan of every task: a batch would cost the table's size, not its own."""
    from benchmarks.runtime_select import insert_tasks

    prompt = PromptStore(postgres_engine).bootstrap("bot", "v1")
    task_ids = insert_tasks(postgres_engine, 20_000)
    captured = []
    capture = lambda _conn, _cursor, statement, parameters, *_rest: captured.append((statement, parameters)) if "UPDATE" in statement else None  # noqa: E731
    event.listen(postgres_engine, "before_cursor_execute", capture)
    try:
        with PromptRouter(postgres_engine, agent_id="bot", default_prompt=CODE_PROMPT, start=False) as router:
            router.refresh()
            for index, task_id in enumerate(task_ids[:500]):
                router.stamp_task(task_id, router.select(), key=f"ctx-{index}")
            assert router.flush_stamps() and router.status()["stamps_written"] == 500
    finally:
        event.remove(postgres_engine, "before_cursor_execute", capture)
    [(statement, parameters)] = captured
    explained = statement.replace("WITH s AS", "EXPLAIN WITH s AS", 1)
    with postgres_engine.connect() as connection:
        cursor = connection.connection.dbapi_connection.cursor()
        cursor.execute(explained, parameters)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        connection.rollback()
    assert "Seq Scan on tasks" not in plan and "tasks_pkey" in plan, plan
    assert stamps_by_task(postgres_engine)[task_ids[0]] == (prompt.id, unit_of("ctx-0"))

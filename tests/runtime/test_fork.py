"""Routers across fork (gunicorn --preload, celery prefork): a child never uses the parent's
connections, restarts its refresh and stamp threads and serves fresh state within a refresh."""

from __future__ import annotations

import json
import multiprocessing
import os
import uuid

import pytest
import sqlalchemy as sa

from bindu_runtime import PromptRouter, PromptStore, make_engine, upgrade
from bindu_runtime import router as router_module
from bindu_runtime.schema import task_feedback, tasks
from tests.runtime.test_feedback import make_task
from tests.runtime.test_router import wait_until

pytestmark = pytest.mark.timeout(120)

FORK = multiprocessing.get_context("fork")
KEYS = [f"ctx-{i}" for i in range(300)]


def _serves_active_only(router) -> bool:
    return router.status()["candidate_id"] is None and all(router.select(key).status == "active" for key in KEYS)


def _child_after_rollback(router, results) -> None:
    fresh = wait_until(lambda: _serves_active_only(router), timeout=20)
    status = router.status()
    results.put({"fresh": fresh, "refreshing": status["refreshing"], "refreshes": status["refresh_count"]})


def test_forked_children_serve_the_parents_rollback(db_url):
    # Issue 16: in 20 of 20 children the refresh thread was dead, and after the parent rolled a
    # candidate back every child kept serving it to its share of keys.
    engine = make_engine(db_url)
    upgrade(engine)
    store = PromptStore(engine)
    store.bootstrap("bot", "v1")
    candidate = store.start_experiment("bot", "v2", source="simba", candidate_traffic="0.5")
    router = PromptRouter(db_url, agent_id="bot", default_prompt="code", refresh_interval=0.1)
    try:
        assert wait_until(lambda: router.status()["candidate_id"] == candidate.id)
        results = FORK.Queue()
        children = [FORK.Process(target=_child_after_rollback, args=(router, results)) for _ in range(4)]
        for child in children:
            child.start()  # each child starts from the snapshot with the candidate at 50 %
        store.rollback("bot", candidate_id=candidate.id)
        outcomes = [results.get(timeout=60) for _ in children]
        for child in children:
            child.join(30)
            assert child.exitcode == 0
        assert outcomes == [{"fresh": True, "refreshing": True, "refreshes": outcomes[i]["refreshes"]} for i in range(4)]
        assert all(outcome["refreshes"] >= 1 for outcome in outcomes)
        assert wait_until(lambda: _serves_active_only(router))  # the parent's own thread still runs
    finally:
        router.close()
        engine.dispose()


def _parent_sessions(router) -> set[int]:
    """Server pids of the sessions the router's pool holds in this process (a local libpq call)."""
    return {connection.get_backend_pid() for connection in router_module._OPEN_CONNECTIONS[router.engine].values()}


def _live_sessions(engine) -> set[int]:
    with engine.connect() as connection:
        return set(connection.execute(sa.text("SELECT pid FROM pg_stat_activity")).scalars())


def _child_records_feedback(router, task_ids, results) -> None:
    rows, errors = [], []
    for round_number in range(3):
        for task_id in task_ids:
            try:
                rows.append((str(task_id), router.record_feedback(task_id, rating=1 + round_number)))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
    results.put({"pid": os.getpid(), "rows": rows, "errors": errors})


@pytest.mark.postgres
def test_children_record_feedback_on_postgres_through_their_own_connections(postgres_engine, postgres_url):
    # Issue 16: children shared the parent's pooled connection — 225 of 5 400 calls raised, 45
    # returned another process's row id, 57 rows came from calls that reported failure.
    PromptStore(postgres_engine).bootstrap("bot", "v1")
    children_tasks = [[make_task(postgres_engine) for _ in range(50)] for _ in range(4)]
    parent_task = make_task(postgres_engine)
    router = PromptRouter(postgres_url, agent_id="bot", default_prompt="code", refresh_interval=0.2)
    try:
        router.record_feedback(parent_task, rating=5)  # a warm pooled connection for the children to inherit
        parent_sessions = _parent_sessions(router)
        results = FORK.Queue()
        children = [FORK.Process(target=_child_records_feedback, args=(router, task_ids, results)) for task_ids in children_tasks]
        for child in children:
            child.start()
        parent_rows = [router.record_feedback(parent_task, thumbs_up=True) for _ in range(100)]  # meanwhile, in the parent
        outcomes = [results.get(timeout=90) for _ in children]
        for child in children:
            child.join(30)
            assert child.exitcode == 0
        assert [outcome["errors"] for outcome in outcomes] == [[]] * 4
        with postgres_engine.connect() as connection:
            owner = dict(connection.execute(sa.select(task_feedback.c.id, task_feedback.c.task_id)).all())
        for outcome in outcomes:
            assert len(outcome["rows"]) == 150
            assert all(owner[row_id] == uuid.UUID(task_id) for task_id, row_id in outcome["rows"])  # each id is its own row
        assert all(owner[row_id] == parent_task for row_id in parent_rows)
        assert len(owner) == 4 * 150 + 101  # no row from a call that failed, none missing
        assert parent_sessions <= _live_sessions(postgres_engine)  # no child closed a session of the parent's
    finally:
        router.close()


def _preforked_worker(router, task_ids, write_end, close_parked: bool) -> None:
    """A gunicorn-style worker: serve requests through the bindu handler, record feedback, exit."""
    report = {"ok": False}
    try:
        if close_parked:
            # Worst case: something in the child closes the connections it inherited (a close
            # sends the server a Terminate). Their sockets point at /dev/null, so the parent's
            # sessions are untouched.
            for connection in router_module._PARKED_CONNECTIONS:
                connection.close()
        handler = router.bindu_handler(lambda messages, system_prompt: system_prompt)
        fresh = wait_until(lambda: router.status()["refresh_count"] >= 1, timeout=20)
        for task_id in task_ids:
            handler([{"role": "user", "task_id": str(task_id), "context_id": f"conversation-{task_id}"}])
            router.record_feedback(task_id, thumbs_up=True)
        router.close()  # flushes the stamps
        report = {"ok": fresh, "written": router.status()["stamps_written"]}
    except Exception as exc:
        report = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        os.write(write_end, json.dumps(report).encode() + b"\n")
        os._exit(0)


@pytest.mark.parametrize("close_parked", [False, True], ids=["parked", "parked-closed"])
def test_preloaded_router_serves_forked_workers(db_url, close_parked):
    engine = make_engine(db_url)
    upgrade(engine)
    PromptStore(engine).bootstrap("bot", "v1")
    worker_tasks = [[make_task(engine) for _ in range(30)] for _ in range(3)]
    # The master builds the router once (--preload), uses it, then forks its workers.
    router = PromptRouter(db_url, agent_id="bot", default_prompt="code", refresh_interval=0.2)
    try:
        assert router.refresh_count >= 1
        parent_sessions = _parent_sessions(router) if db_url.startswith("postgresql") else set()
        pids, reads = [], []
        for task_ids in worker_tasks:
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read_end)
                _preforked_worker(router, task_ids, write_end, close_parked)
            os.close(write_end)
            pids.append(pid)
            reads.append(read_end)
        reports = []
        for pid, read_end in zip(pids, reads):
            with os.fdopen(read_end) as pipe:
                reports.append(json.loads(pipe.readline()))
            os.waitpid(pid, 0)
        assert reports == [{"ok": True, "written": 30}] * 3
        with engine.connect() as connection:
            stamped = connection.execute(sa.select(sa.func.count()).select_from(tasks).where(tasks.c.prompt_id.is_not(None))).scalar()
            rated = connection.execute(sa.select(sa.func.count()).select_from(task_feedback)).scalar()
        assert (stamped, rated) == (90, 90)
        if parent_sessions:
            assert parent_sessions <= _live_sessions(engine)
        assert router.select("k").status == "active" and router.status()["refreshing"]
    finally:
        router.close()
        engine.dispose()

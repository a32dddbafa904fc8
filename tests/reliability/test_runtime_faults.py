"""Runtime database faults beyond tests/runtime/test_router.py: stalls, writes while the database is
cut, connections cut in the middle of a transition, and a commit whose answer is lost.

Everything the code under test does goes through a TcpProxy; every check afterwards reads the
tables over a direct connection.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from bindu_runtime import (
    DatabaseFailure,
    ExperimentRunning,
    FeedbackCollector,
    NoExperiment,
    PromptRouter,
    PromptStore,
    StaleTransition,
    make_engine,
)
from bindu_runtime.schema import task_feedback, tasks
from tests.reliability.helpers import TRANSITIONS, state_signature, state_violations, wait_until
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]


@pytest.fixture
def proxied(postgres_url):
    """(proxy, engine through the proxy), with its pool warmed so the cut also kills pooled connections."""
    proxy, url = TcpProxy.for_url(postgres_url)
    engine = make_engine(url, connect_timeout=2)
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
    yield proxy, engine
    engine.dispose()
    proxy.close()


def _insert_task(engine: sa.Engine) -> uuid.UUID:
    task_id = uuid.uuid4()
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(tasks.insert().values(
            id=task_id, context_id=uuid.uuid4(), state="completed", state_timestamp=now, history=[],
        ))
    return task_id


def _feedback_rows(engine: sa.Engine, task_id: uuid.UUID) -> list[dict]:
    with engine.connect() as connection:
        return [row.feedback_data for row in connection.execute(
            sa.select(task_feedback.c.feedback_data).where(task_feedback.c.task_id == task_id))]


def _stamp(engine: sa.Engine, task_id: uuid.UUID) -> str | None:
    with engine.connect() as connection:
        return connection.execute(sa.select(tasks.c.prompt_id).where(tasks.c.id == task_id)).scalar_one()


@pytest.mark.parametrize("stall_ends_with", ["restore", "cut then restore"])
def test_stalled_database_while_warm_serves_the_snapshot_and_refresh_recovers(direct, postgres_url, stall_ends_with):
    store = PromptStore(direct)
    store.bootstrap("bot", "v1")
    candidate = store.start_experiment("bot", "v2", source="faults", candidate_traffic="0.5")
    proxy, url = TcpProxy.for_url(postgres_url)
    router = PromptRouter(url, agent_id="bot", default_prompt="code prompt", refresh_interval=0.05, connect_timeout=2)
    try:
        assert wait_until(lambda: router.status()["candidate_id"] == candidate.id)
        keys = [f"ctx-{i}" for i in range(1_000)]
        before = {key: router.select(key) for key in keys}
        assert {choice.status for choice in before.values()} == {"active", "candidate"}
        proxy.stall()
        refreshes = router.refresh_count
        store.promote("bot", candidate_id=candidate.id)  # the change the stalled router cannot see
        assert not wait_until(lambda: router.refresh_count > refreshes + 1, timeout=0.6)  # the refresh hangs…
        assert {key: router.select(key) for key in keys} == before  # …and requests are answered from memory
        selects_while_down = len(keys)
        if stall_ends_with == "cut then restore":
            proxy.cut()  # the hung refresh fails, the router notes it and keeps its snapshot
            assert wait_until(lambda: router.last_error is not None)
            assert {key: router.select(key) for key in keys} == before
            selects_while_down += len(keys)
        proxy.restore()
        assert wait_until(lambda: {router.select(key).text for key in keys} == {"v2"}, timeout=15)
        assert router.last_error is None and router.status()["candidate_id"] is None
        print(f"\nSTALL ends_with={stall_ends_with!r} selects_while_down={selects_while_down} changed_answers=0 recovered=yes")
    finally:
        router.close()
        proxy.close()


def test_writes_while_the_database_is_cut_fail_clearly_write_nothing_and_succeed_on_retry(direct, proxied):
    proxy, engine = proxied
    direct_store = PromptStore(direct)
    direct_store.bootstrap("experiment", "v1")
    running = direct_store.start_experiment("experiment", "v2", source="faults")
    for agent in ("promote", "rollback"):
        direct_store.bootstrap(agent, "v1")
    candidates = {agent: direct_store.start_experiment(agent, "v2", source="faults").id for agent in ("promote", "rollback")}
    direct_store.bootstrap("start", "v1")
    task_id = _insert_task(direct)
    store, feedback = PromptStore(engine), FeedbackCollector(engine, agent_id="experiment")
    writes = {
        "record_feedback": lambda: feedback.record_feedback(task_id, rating=4, feedback="fine"),
        "stamp_task_prompt": lambda: feedback.stamp_task_prompt(task_id, running.id),
        "bootstrap": lambda: store.bootstrap("new-agent", "v1"),
        "start_experiment": lambda: store.start_experiment("start", "v2", source="faults"),
        "step_traffic": lambda: store.step_traffic("experiment", candidate_id=running.id, expected_traffic="0.1", new_traffic="0.2"),
        "promote": lambda: store.promote("promote", candidate_id=candidates["promote"]),
        "rollback": lambda: store.rollback("rollback", candidate_id=candidates["rollback"]),
    }
    agents = ("experiment", "promote", "rollback", "start", "new-agent")
    before = {agent: state_signature(direct, agent) for agent in agents}

    proxy.cut()
    for name, write in writes.items():
        # The runtime's calls raise the package's own error; the store's transitions the driver's.
        expected = DatabaseFailure if name in ("record_feedback", "stamp_task_prompt") else OperationalError
        with pytest.raises(expected) as raised:
            write()
        # The driver's own words, naming the lost connection (not a hang, not a generic failure).
        message = str(raised.value) if expected is DatabaseFailure else str(raised.value.orig)
        assert "server closed the connection unexpectedly" in message, name
        assert "INSERT" not in message and "fine" not in message  # neither the statement nor the user's text
    assert _feedback_rows(direct, task_id) == [] and _stamp(direct, task_id) is None
    assert {agent: state_signature(direct, agent) for agent in agents} == before

    proxy.restore()
    for name, write in writes.items():
        write()  # one retry each, on the same engine
    assert [row["rating"] for row in _feedback_rows(direct, task_id)] == [4]
    assert _stamp(direct, task_id) == running.id
    assert direct_store.get_active_prompt("new-agent").prompt_text == "v1"
    assert direct_store.get_candidate_prompt("start").prompt_text == "v2"
    assert direct_store.get_candidate_prompt("experiment").traffic == Decimal("0.2")
    assert direct_store.get_active_prompt("promote").id == candidates["promote"]
    assert direct_store.get_candidate_prompt("rollback") is None
    for agent in agents:
        assert state_violations(direct, agent) == []
        assert len(state_signature(direct, agent)[1]) > len(before[agent][1])  # each retry wrote its audit rows once
    print(f"\nCUT_WRITES writes_while_cut={len(writes)} failed_cleanly={len(writes)} rows_written_while_cut=0 retries_ok={len(writes)}")


def _count_statements(engine: sa.Engine, run) -> int:
    statements = []
    listener = lambda *args: statements.append(1)  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    return len(statements)


@pytest.mark.parametrize("transition", list(TRANSITIONS))
def test_connection_cut_before_each_statement_and_the_commit_leaves_no_partial_state(direct, proxied, transition):
    proxy, engine = proxied
    spec = TRANSITIONS[transition]
    store, direct_store = PromptStore(engine), PromptStore(direct)
    dry_ctx = spec.setup(direct_store, "dry")
    statements = _count_statements(engine, lambda: spec.act(store, "dry", dry_ctx))
    after = state_signature(direct, "dry")
    cut_points = [f"statement {k}" for k in range(1, statements + 1)] + ["commit"]
    for point_number, point in enumerate(cut_points, start=1):
        agent = f"cut-{point_number}"
        ctx = spec.setup(direct_store, agent)
        before = state_signature(direct, agent)
        seen = []

        def cut_before_statement(*args, point=point):
            seen.append(1)
            if point == f"statement {len(seen)}":
                proxy.cut()

        def cut_before_commit(conn, point=point):
            if point == "commit":
                proxy.cut()

        event.listen(engine, "before_cursor_execute", cut_before_statement)
        event.listen(engine, "commit", cut_before_commit)
        try:
            with pytest.raises(OperationalError):
                spec.act(store, agent, ctx)
        finally:
            event.remove(engine, "before_cursor_execute", cut_before_statement)
            event.remove(engine, "commit", cut_before_commit)
        assert state_signature(direct, agent) == before, f"cut at {point}: partial state"
        assert state_violations(direct, agent) == []
        proxy.restore()
        spec.act(store, agent, ctx)  # the retry through the same engine
        assert state_signature(direct, agent) == after
    print(f"\nCUT transition={transition} cut_points={len(cut_points)} partial_states=0 retries_ok={len(cut_points)}")


RETRY_AFTER_LOST_COMMIT = {
    # What repeating the call does when its first commit happened but the answer was lost.
    "bootstrap": None,  # returns the row the lost commit created
    "start_experiment": ExperimentRunning,
    "step_traffic": StaleTransition,
    "promote": NoExperiment,
    "rollback": NoExperiment,
}


@pytest.mark.parametrize("transition", list(TRANSITIONS))
def test_lost_commit_answer_is_an_error_and_a_blind_retry_never_applies_twice(direct, proxied, transition):
    proxy, engine = proxied
    spec = TRANSITIONS[transition]
    store, direct_store = PromptStore(engine), PromptStore(direct)
    dry_ctx = spec.setup(direct_store, "dry")
    spec.act(direct_store, "dry", dry_ctx)
    after = state_signature(direct, "dry")
    ctx = spec.setup(direct_store, "bot")
    proxy.cut_after_reply_to(b"COMMIT")
    with pytest.raises(OperationalError):
        spec.act(store, "bot", ctx)
    assert proxy.replies_dropped == 1
    assert state_signature(direct, "bot") == after  # the commit happened; the caller could not know
    proxy.restore()
    expected = RETRY_AFTER_LOST_COMMIT[transition]
    if expected is None:
        assert spec.act(store, "bot", ctx).id == direct_store.get_active_prompt("bot").id
    else:
        with pytest.raises(expected):
            spec.act(store, "bot", ctx)
    assert state_signature(direct, "bot") == after  # nothing applied twice
    assert state_violations(direct, "bot") == []
    print(f"\nLOST_COMMIT transition={transition} retry={'returns the same row' if expected is None else expected.__name__} applied_twice=0")

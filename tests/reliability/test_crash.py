"""SIGKILL at every point of every prompt transition: the state is whole afterwards.

For each transition of ``PromptStore`` a child process runs it once untouched to learn its points
(before and after each SQL statement, the commit, the return after the commit), then once per point
killing itself with SIGKILL exactly there. After each crash the parent checks, on the tables:
- the invariants and the audit agreement (``helpers.state_violations``);
- all or nothing: the agent's rows and audit rows are exactly those before the transition when the
  kill came before the commit, exactly those of a completed transition when it came after;
- the database is still usable: the transition (redone if it was lost) and the next one succeed.

Run with ``-s`` for the per-transition summary lines recorded in docs/RELIABILITY.md.
"""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from bindu_runtime import PromptStore, make_engine, upgrade
from bindu_runtime.db import is_sqlite
from tests.reliability.helpers import TRANSITIONS, state_signature, state_violations

FORK = multiprocessing.get_context("fork")
COMMITTED = "returned after commit"


def _describe(statement: str) -> str:
    """``SELECT agent_prompts FOR UPDATE``, ``INSERT prompt_events``…: a statement in a few words."""
    words = statement.split()
    table = next((w for w in words if w in ("agent_prompts", "prompt_events")), "")
    lock = " FOR UPDATE" if "FOR UPDATE" in statement else ""
    return f"{words[0]} {table}{lock}".strip()


def _child(url: str, transition: str, agent: str, ctx: dict, kill_at: int | None, sender) -> None:
    """Run one transition in a fresh engine, SIGKILLing this process at point ``kill_at`` (1-based)."""
    engine = make_engine(url)
    with engine.connect() as connection:  # dialect initialisation happens before we count
        connection.execute(sa.text("SELECT 1"))
    trace: list[str] = []

    def point(label: str) -> None:
        trace.append(label)
        if len(trace) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def before(conn, cursor, statement, *args):
        point("before " + _describe(statement))

    def after(conn, cursor, statement, *args):
        point("after " + _describe(statement))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "commit", lambda conn: point("commit (before the driver commits)"))
    TRANSITIONS[transition].act(PromptStore(engine), agent, ctx)
    point(COMMITTED)
    sender.send(trace)
    sender.close()


def _run_child(url: str, transition: str, agent: str, ctx: dict, kill_at: int | None) -> tuple[int, list[str] | None]:
    receiver, sender = FORK.Pipe(duplex=False)
    process = FORK.Process(target=_child, args=(url, transition, agent, ctx, kill_at, sender))
    process.start()
    sender.close()
    trace = receiver.recv() if kill_at is None and receiver.poll(30) else None
    process.join(30)
    receiver.close()
    return process.exitcode, trace


def _parent_engine(url: str) -> sa.Engine:
    engine = make_engine(url)
    if not is_sqlite(engine):
        # A lock left behind by a killed writer would make the follow-up hang: fail instead.
        @event.listens_for(engine, "connect")
        def _lock_timeout(dbapi_connection, _record):
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = '5s'")
    upgrade(engine)
    return engine


TOTALS = {"transitions": 0, "kill_points": 0, "crashes": 0, "violations": 0, "follow_ups": 0}


@pytest.fixture(scope="module", autouse=True)
def _print_totals():
    yield
    print(
        "\nCRASH TOTAL transitions×backends={transitions} kill_points={kill_points} crashes={crashes} "
        "invariant_or_atomicity_violations={violations} follow_up_transitions_ok={follow_ups}".format(**TOTALS)
    )


@pytest.mark.parametrize("transition", list(TRANSITIONS))
@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def test_sigkill_at_every_point_of_a_transition_leaves_whole_state(backend, transition, request):
    url = request.getfixturevalue(f"{backend}_url")
    engine = _parent_engine(url)
    store = PromptStore(engine)
    spec = TRANSITIONS[transition]
    try:
        # The untouched run: its points, and what a completed transition leaves behind.
        dry_agent = f"{transition}-dry"
        exitcode, points = _run_child(url, transition, dry_agent, spec.setup(store, dry_agent), None)
        assert exitcode == 0 and points and points[-1] == COMMITTED
        assert points.count("commit (before the driver commits)") == 1
        after = state_signature(engine, dry_agent)
        assert state_violations(engine, dry_agent) == []

        violations: list[str] = []
        crashes = follow_ups = 0
        for kill_at, label in enumerate(points, start=1):
            agent = f"{transition}-k{kill_at}"
            ctx = spec.setup(store, agent)
            before = state_signature(engine, agent)
            assert before != after
            exitcode, _ = _run_child(url, transition, agent, ctx, kill_at)
            assert exitcode == -signal.SIGKILL, f"the child was not killed at point {kill_at} ({label})"
            crashes += 1
            observed = state_signature(engine, agent)
            expected = after if label == COMMITTED else before
            violations += [f"k={kill_at} ({label}): {problem}" for problem in state_violations(engine, agent)]
            if observed != expected:
                which = "after" if observed == after else "before" if observed == before else "a partial state"
                violations.append(f"k={kill_at} ({label}): expected the state {'after' if label == COMMITTED else 'before'}, found {which}")
            if observed not in (before, after):
                continue  # recorded above; a half-written state has no meaningful follow-up
            # Still usable: redo the transition if the crash lost it, then the next one.
            if observed == before:
                spec.act(store, agent, ctx)
                assert state_signature(engine, agent) == after
            spec.follow_up(store, agent)
            assert state_violations(engine, agent) == []
            follow_ups += 1
        print(
            f"\nCRASH backend={backend} transition={transition} kill_points={len(points)} crashes={crashes} "
            f"violations={len(violations)} follow_ups_ok={follow_ups} points={points}"
        )
        TOTALS["transitions"] += 1
        TOTALS["kill_points"] += len(points)
        TOTALS["crashes"] += crashes
        TOTALS["violations"] += len(violations)
        TOTALS["follow_ups"] += follow_ups
        assert violations == []
    finally:
        engine.dispose()

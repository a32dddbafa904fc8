"""Two processes at the same moment: one step applied, one bootstrap row."""

from __future__ import annotations

import multiprocessing
from decimal import Decimal

import pytest

from bindu_runtime import PromptStore, StaleTransition, make_engine, upgrade

ROUNDS = 8


def _step_worker(url: str, barrier, results, candidate_id: str, expected: str, new: str) -> None:
    engine = make_engine(url)
    barrier.wait()
    try:
        PromptStore(engine).step_traffic("bot", candidate_id=candidate_id, expected_traffic=expected, new_traffic=new)
        results.put("applied")
    except StaleTransition:
        results.put("stale")
    finally:
        engine.dispose()


def _bootstrap_worker(url: str, barrier, results, agent: str, text: str) -> None:
    engine = make_engine(url)
    barrier.wait()
    try:
        results.put(PromptStore(engine).bootstrap(agent, text).id)
    finally:
        engine.dispose()


def _run_pair(target, url: str, args_for) -> list:
    """Run ``target`` in two processes released together by a barrier; their results."""
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    processes = [context.Process(target=target, args=(url, barrier, results, *args_for(i))) for i in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    return [results.get(timeout=5) for _ in processes]


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def test_two_processes_stepping_at_once_apply_exactly_one_step(backend, request):
    url = request.getfixturevalue(f"{backend}_url")
    engine = make_engine(url)
    upgrade(engine)
    store = PromptStore(engine)
    store.bootstrap("bot", "v1")
    candidate = store.start_experiment("bot", "v2", source="simba")
    traffic = Decimal("0.1")
    for _ in range(ROUNDS):
        new = traffic + Decimal("0.1")
        outcomes = _run_pair(_step_worker, url, lambda i: (candidate.id, str(traffic), str(new)))
        assert sorted(outcomes) == ["applied", "stale"]
        assert store.get_candidate_prompt("bot").traffic == new
        traffic = new
    steps = [e for e in store.list_events("bot") if e["event"] == "step" and e["prompt_id"] == candidate.id]
    assert len(steps) == ROUNDS
    engine.dispose()


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def test_two_routers_bootstrapping_at_once_create_one_row(backend, request):
    url = request.getfixturevalue(f"{backend}_url")
    engine = make_engine(url)
    upgrade(engine)
    store = PromptStore(engine)
    for round_number in range(ROUNDS):
        agent = f"agent-{round_number}"
        ids = _run_pair(_bootstrap_worker, url, lambda i: (agent, f"code prompt from process {i}"))
        prompts = store.list_prompts(agent)
        assert len(prompts) == 1
        assert set(ids) == {prompts[0].id}
        assert [e["event"] for e in store.list_events(agent)] == ["bootstrap"]
    engine.dispose()

"""PromptRouter: sticky and monotone assignment, background refresh, database outages."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from bindu_runtime import PromptRouter, PromptStore, make_engine, upgrade
from bindu_runtime.router import BUCKETS, bucket_of
from tests.support.tcp_proxy import SilentServer, TcpProxy

CODE_PROMPT = "You are the code's prompt."


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_first_router_bootstraps_the_code_prompt(engine):
    with PromptRouter(engine, agent_id="bot", default_prompt=CODE_PROMPT, start=False) as router:
        assert router.select("k").status == "default"  # nothing loaded yet
        assert router.refresh()
        choice = router.select("k")
    active = PromptStore(engine).get_active_prompt("bot")
    assert (choice.prompt_id, choice.text, choice.status) == (active.id, CODE_PROMPT, "active")
    assert active.traffic == 1 and active.source == "bootstrap"


def test_bootstrap_can_be_turned_off_for_read_only_deployments(engine):
    with PromptRouter(engine, agent_id="bot", default_prompt=CODE_PROMPT, bootstrap=False, start=False) as router:
        assert router.refresh()
        assert router.select("k").status == "default"
    assert PromptStore(engine).list_prompts("bot") == []


def test_assignment_is_sticky_matches_the_split_and_is_monotone(engine):
    store = PromptStore(engine)
    store.bootstrap("bot", "v1")
    candidate = store.start_experiment("bot", "v2", source="simba")
    keys = [f"context-{i}" for i in range(20_000)]
    with PromptRouter(engine, agent_id="bot", default_prompt=CODE_PROMPT, start=False) as router:
        router.refresh()
        at_10 = {key: router.select(key).status for key in keys}
        assert all(router.select(key).status == at_10[key] for key in keys[:2_000])  # sticky
        share = sum(status == "candidate" for status in at_10.values()) / len(keys)
        assert abs(share - 0.10) < 0.01  # binomial sd is 0.002
        store.step_traffic("bot", candidate_id=candidate.id, expected_traffic="0.1", new_traffic="0.3")
        router.refresh()
        at_30 = {key: router.select(key).status for key in keys}
    moved = [key for key in keys if at_10[key] != at_30[key]]
    assert all(at_10[key] == "active" and at_30[key] == "candidate" for key in moved)
    assert abs(sum(status == "candidate" for status in at_30.values()) / len(keys) - 0.30) < 0.015


def test_buckets_are_stable_and_salted_per_experiment():
    assert bucket_of("ctx-1", b"salt") == bucket_of("ctx-1", b"salt")
    assert 0 <= bucket_of("ctx-1") < BUCKETS
    keys = [f"k{i}" for i in range(2_000)]
    first = {k for k in keys if bucket_of(k, b"experiment-1") < 1_000}
    second = {k for k in keys if bucket_of(k, b"experiment-2") < 1_000}
    # A new experiment reaches a different 10 % of users, not the same guinea pigs again.
    assert len(first & second) < len(first) * 0.3


def test_keyless_requests_follow_the_split(engine):
    store = PromptStore(engine)
    store.bootstrap("bot", "v1")
    store.start_experiment("bot", "v2", source="simba", candidate_traffic="0.25")
    with PromptRouter(engine, agent_id="bot", default_prompt=CODE_PROMPT, start=False) as router:
        router.refresh()
        draws = [router.select().status for _ in range(20_000)]
    assert abs(draws.count("candidate") / len(draws) - 0.25) < 0.015


def test_background_refresh_picks_up_a_traffic_change(engine):
    store = PromptStore(engine)
    store.bootstrap("bot", "v1")
    with PromptRouter(engine, agent_id="bot", default_prompt=CODE_PROMPT, refresh_interval=0.05) as router:
        assert wait_until(lambda: router.select("k").text == "v1")
        candidate = store.start_experiment("bot", "v2", source="simba", candidate_traffic="0.5")
        assert wait_until(lambda: router.status()["candidate_id"] == candidate.id)
        store.promote("bot", candidate_id=candidate.id)
        assert wait_until(lambda: router.select("any").text == "v2")


@pytest.mark.postgres
def test_warm_router_serves_last_good_snapshot_while_database_is_gone(postgres_url):
    engine = make_engine(postgres_url)
    upgrade(engine)
    store = PromptStore(engine)
    store.bootstrap("bot", "v1")
    candidate = store.start_experiment("bot", "v2", source="simba", candidate_traffic="0.5")
    proxy, proxied_url = TcpProxy.for_url(postgres_url)
    router = PromptRouter(proxied_url, agent_id="bot", default_prompt=CODE_PROMPT, start=False, connect_timeout=2)
    try:
        assert router.refresh()
        before = {key: router.select(key) for key in map(str, range(500))}
        proxy.cut()
        assert not router.refresh()
        assert router.last_error is not None
        assert {key: router.select(key) for key in before} == before  # same prompts, same arms
        store.promote("bot", candidate_id=candidate.id)  # the change happens while the router is cut off
        proxy.restore()
        assert router.refresh()
        assert {router.select(key).text for key in before} == {"v2"}
    finally:
        router.close()
        proxy.close()
        engine.dispose()


def test_cold_start_without_database_serves_the_default_prompt():
    # Nothing listens on this port: the connection is refused at once.
    router = PromptRouter("postgresql+psycopg2://postgres@127.0.0.1:9/none", agent_id="bot", default_prompt=CODE_PROMPT, refresh_interval=60)
    try:
        assert wait_until(lambda: router.last_error is not None)
        assert router.select("k") == router.default
        assert router.select("k").prompt_id is None and router.select("k").text == CODE_PROMPT
    finally:
        router.close()


def test_cold_start_against_a_silent_server_does_not_hold_requests():
    server = SilentServer()
    router = PromptRouter(server.url(), agent_id="bot", default_prompt=CODE_PROMPT, startup_timeout=0.2, connect_timeout=2, refresh_interval=60)
    try:
        # The constructor gave up waiting while the first connection attempt was still pending…
        assert router.refresh_count == 0 and router.last_error is None
        assert router.select("k").status == "default"
        # …which then fails by its own bounded connect timeout, and requests kept being served.
        assert wait_until(lambda: router.last_error is not None, timeout=15)
        assert router.select("k").status == "default"
    finally:
        router.close()
        server.close()


@pytest.mark.postgres
def test_router_recovers_when_a_cold_started_database_comes_up(postgres_url):
    engine = make_engine(postgres_url)
    upgrade(engine)
    PromptStore(engine).bootstrap("bot", "from the database")
    proxy, proxied_url = TcpProxy.for_url(postgres_url)
    proxy.cut()
    router = PromptRouter(proxied_url, agent_id="bot", default_prompt=CODE_PROMPT, refresh_interval=0.1, startup_timeout=3)
    try:
        assert router.select("k").status == "default"
        proxy.restore()
        assert wait_until(lambda: router.select("k").text == "from the database", timeout=15)
    finally:
        router.close()
        proxy.close()
        engine.dispose()


def test_router_refuses_bad_arguments(engine):
    with pytest.raises(ValueError):
        PromptRouter(engine, agent_id="", default_prompt=CODE_PROMPT, start=False)
    with pytest.raises(ValueError):
        PromptRouter(engine, agent_id="bot", default_prompt="  ", start=False)


def test_traffic_share_in_snapshot_is_exact(engine):
    store = PromptStore(engine)
    store.bootstrap("bot", "v1")
    store.start_experiment("bot", "v2", source="simba", candidate_traffic=Decimal("0.0025"))
    with PromptRouter(engine, agent_id="bot", default_prompt=CODE_PROMPT, start=False) as router:
        router.refresh()
        assert router.status()["candidate_share"] == 0.0025

"""PromptRouter: sticky and monotone assignment, background refresh, database outages."""

from __future__ import annotations

import gc
import hashlib
import threading
import time
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa

from bindu_runtime import ConfigurationError, PromptRouter, PromptStore, make_engine, resolve_database_url, upgrade
from bindu_runtime.router import BUCKETS, bucket_of, unit_of
from bindu_runtime.schema import agent_prompts
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


class StrRaises:
    def __str__(self):
        raise RuntimeError("a key that cannot be printed")

    __repr__ = __str__


HOSTILE_KEYS = ["\ud800", "ctx-\udfff-end", "\x00", "", StrRaises(), b"\xff\xfe", 10**400, 10**5000, float("nan"), object()]


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=lambda key: type(key).__name__)
def test_select_never_raises_for_any_key(engine, key):
    # Issue 16: select() raised UnicodeEncodeError for a lone surrogate (json.loads produces them)
    # and the key's own error when its __str__ raised.
    store = PromptStore(engine)
    store.bootstrap("bot", "v1")
    store.start_experiment("bot", "v2", source="simba", candidate_traffic="0.5")
    with PromptRouter(engine, agent_id="bot", default_prompt=CODE_PROMPT, start=False) as router:
        router.refresh()
        choices = {router.select(key).status for _ in range(200)}
        router.stamp_task(uuid.uuid4(), router.select(key), key=key)  # nor does the stamp
    if unit_of(key) is None:  # str() raises (StrRaises; an int beyond Python's 4 300-digit limit)
        assert choices == {"active", "candidate"}  # treated as no key: a random draw
    else:
        assert len(choices) == 1  # sticky: the key hashes as its text


def test_unit_of_follows_the_shared_contract():
    assert unit_of(None) is None and unit_of(StrRaises()) is None
    assert unit_of("ctx-1") == hashlib.sha256(b"ctx-1").hexdigest()[:32]
    key = uuid.uuid4()
    assert unit_of(key) == unit_of(str(key))
    assert unit_of("\ud800") == hashlib.sha256("\ud800".encode("utf-8", "surrogatepass")).hexdigest()[:32]


def test_agent_id_is_validated_against_the_column_limit_at_construction(engine):
    # Issue 16: a 300-character agent_id worked on SQLite, while on PostgreSQL every refresh failed
    # (DataError) and the router served the code default forever.
    limit = agent_prompts.c.agent_id.type.length
    with pytest.raises(ValueError, match=f"the limit is {limit}"):
        PromptRouter(engine, agent_id="a" * 300, default_prompt=CODE_PROMPT, start=False)
    for bad in ("bot\x00", "bot\ud800", None, 42):
        with pytest.raises(ValueError):
            PromptRouter(engine, agent_id=bad, default_prompt=CODE_PROMPT, start=False)
    with PromptRouter(engine, agent_id="a" * limit, default_prompt=CODE_PROMPT, start=False) as router:
        assert router.refresh() and router.select("k").status == "active"


def test_router_without_a_database_url_refuses_in_one_line(monkeypatch):
    monkeypatch.delenv("BINDU_DATABASE_URL", raising=False)
    monkeypatch.delenv("STORAGE__POSTGRES_URL", raising=False)
    with pytest.raises(ConfigurationError) as raised:
        PromptRouter(agent_id="bot", default_prompt=CODE_PROMPT)
    assert str(raised.value) == (
        "no database configured: set BINDU_DATABASE_URL (or STORAGE__POSTGRES_URL) to the Bindu database URL"
    )
    with pytest.raises(ConfigurationError, match="BINDU_DATABASE_URL"):
        resolve_database_url()


def _router_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("bindu-router-", "bindu-stamps-"))]


def _checked_out_or_pooled(url: str) -> int:
    if url.startswith("sqlite"):
        return 0
    admin = sa.create_engine(url.split("?")[0], poolclass=sa.pool.NullPool)
    with admin.connect() as connection:
        count = connection.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'bindu-dspy' AND pid <> pg_backend_pid()"
        )).scalar()
    admin.dispose()
    return count


def test_routers_never_closed_are_reclaimed(db_url):
    # Issue 16: 30 routers never closed kept 30 threads and 30 connections.
    engine = make_engine(db_url)
    upgrade(engine)
    PromptStore(engine).bootstrap("bot", "v1")
    engine.dispose()
    threads_before, connections_before = len(_router_threads()), _checked_out_or_pooled(db_url)
    routers = [PromptRouter(db_url, agent_id="bot", default_prompt=CODE_PROMPT, refresh_interval=0.05) for _ in range(30)]
    assert wait_until(lambda: all(router.refresh_count > 0 for router in routers))
    assert len(_router_threads()) >= threads_before + 60
    if db_url.startswith("postgresql"):
        assert _checked_out_or_pooled(db_url) >= connections_before + 30
    del routers
    gc.collect()
    assert wait_until(lambda: len(_router_threads()) == threads_before)
    assert wait_until(lambda: _checked_out_or_pooled(db_url) == connections_before)


def test_one_candidate_text_splits_users_the_same_way_and_another_text_differently(engine):
    """The salt is the agent and the candidate's text: trying the same text again (a rerun of the
    demo, a retrained identical prompt) meets the same users; a new candidate meets other users."""
    store = PromptStore(engine)
    store.bootstrap("bot", "v1")
    keys = [f"user-{i}" for i in range(5_000)]

    def users_of(text: str) -> set[str]:
        candidate = store.start_experiment("bot", text, source="test", candidate_traffic="0.2")
        with PromptRouter(engine, agent_id="bot", default_prompt=CODE_PROMPT, start=False) as router:
            router.refresh()
            chosen = {key for key in keys if router.select(key).status == "candidate"}
        store.rollback("bot", candidate_id=candidate.id)
        return chosen

    first, again, other = users_of("v2"), users_of("v2"), users_of("v3")
    assert first == again and abs(len(first) / len(keys) - 0.2) < 0.02
    assert len(first & other) < 0.35 * len(first)  # ~20 % overlap by chance, not the same users


def test_select_buckets_every_key_as_bucket_of_does(engine):
    """select() hashes with a copy of the snapshot's salted hasher; the bucket is bucket_of's."""
    from bindu_runtime.router import experiment_salt, key_text

    store = PromptStore(engine)
    store.bootstrap("bot", "v1")
    candidate = store.start_experiment("bot", "v2", source="test")
    with PromptRouter(engine, agent_id="bot", default_prompt="code", start=False) as router:
        router.refresh()
        share = router._snapshot.candidate_buckets
        salt = experiment_salt("bot", "v2")
        keys = [f"ctx-{i}" for i in range(3_000)] + ["", "ü日本🎉", "lone \ud800", "nul\x00", 12345, uuid.UUID(int=3)]
        served = {repr(key): router.select(key).prompt_id == candidate.id for key in keys}
    assert served == {repr(key): bucket_of(key_text(key), salt) < share for key in keys}
    assert 0 < sum(served.values()) < len(keys)

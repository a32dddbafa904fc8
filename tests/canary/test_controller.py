"""Controller iterations on a real database: transitions, audit rows, races, failures, seed API."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from decimal import Decimal

import pytest

from bindu_pipelines.canary import (
    DatabaseUnavailable,
    SequentialPolicy,
    compare_metrics,
    ensure_system_stable,
    experiment_state,
    promote_step,
    rollback_step,
    run_canary_controller,
    run_controller_once,
)
from bindu_pipelines.launch import UnknownAgent
from bindu_runtime import PromptStore, make_engine, upgrade
from tests.canary.conftest import T0, start_experiment, write_rate
from tests.support.tcp_proxy import TcpProxy


def test_no_harm_after_the_dwell_ramps_and_audits_the_statistics(engine):
    active, candidate = start_experiment(engine)
    write_rate(engine, active.id, T0 + timedelta(hours=2), 1000, 0.70)
    write_rate(engine, candidate.id, T0 + timedelta(hours=2), 115, 0.72)
    outcome = run_controller_once(engine, "bot", as_of=T0 + timedelta(hours=25))
    assert (outcome.status, outcome.traffic_before, outcome.traffic_after) == ("applied", 0.1, 0.25)
    store = PromptStore(engine)
    assert store.get_candidate_prompt("bot").traffic == Decimal("0.2500")
    assert store.get_active_prompt("bot").traffic == Decimal("0.7500")
    step = [e for e in store.list_events("bot") if e["event"] == "step" and e["prompt_id"] == candidate.id][-1]
    assert step["details"]["action"] == "step" and step["details"]["policy"] == "sequential"
    assert step["details"]["candidate_n"] == 115 and step["details"]["active_n"] == 1000
    assert step["details"]["lower_bound"] < 0 < step["details"]["upper_bound"]
    # Every audit row carries the settings it was decided with and the maturity window used
    # (feedback written with its task: the smallest window).
    assert step["details"]["settings"]["ramp"] == [0.1, 0.25, 0.5] and step["details"]["settings"]["holdback_hours"] == 168.0
    assert step["details"]["maturity_hours"] == 1.0 and step["details"]["phase"] == "experiment"
    # The dwell restarts at the new stage: an hour later the controller holds.
    again = run_controller_once(engine, "bot", as_of=T0 + timedelta(hours=26))
    assert (again.status, again.traffic_after) == ("held", 0.25)


def _promoted_with_holdback(engine):
    store = PromptStore(engine, clock=lambda: T0 - timedelta(days=1))
    active = store.bootstrap("bot", "You are helpful.")
    candidate = PromptStore(engine, clock=lambda: T0).start_experiment("bot", "Better.", source="test", candidate_traffic="0.5")
    write_rate(engine, active.id, T0 + timedelta(hours=3), 1000, 0.60)
    write_rate(engine, candidate.id, T0 + timedelta(hours=3), 1000, 0.80)
    outcome = run_controller_once(engine, "bot", as_of=T0 + timedelta(hours=30))
    return store, active, candidate, outcome


def test_significantly_better_candidate_is_promoted_and_the_old_prompt_held_back(engine):
    store, active, candidate, outcome = _promoted_with_holdback(engine)
    assert (outcome.status, outcome.decision.action.label, outcome.traffic_after) == ("applied", "promote", 0.9)
    prompts = {p.id: p for p in store.list_prompts("bot")}
    assert (prompts[candidate.id].status, prompts[candidate.id].traffic) == ("active", Decimal("0.9000"))
    assert (prompts[active.id].status, prompts[active.id].traffic) == ("candidate", Decimal("0.1000"))
    events = {e["event"]: e for e in store.list_events("bot") if e["event"] in ("promote", "holdback_start")}
    assert events["promote"]["prompt_id"] == candidate.id and events["holdback_start"]["prompt_id"] == active.id
    assert (events["holdback_start"]["from_status"], events["holdback_start"]["to_status"]) == ("active", "candidate")
    assert events["promote"]["details"]["lower_bound"] > 0
    # The holdback phase: a new comparison from its start; nothing yet, so it holds.
    held = run_controller_once(engine, "bot", as_of=T0 + timedelta(hours=31))
    assert held.status == "held" and "holdback" in held.message


def test_holdback_without_evidence_concludes_at_its_end(engine):
    store, active, candidate, _ = _promoted_with_holdback(engine)
    start = T0 + timedelta(hours=30)
    write_rate(engine, candidate.id, start + timedelta(hours=2), 900, 0.70)
    write_rate(engine, active.id, start + timedelta(hours=2), 100, 0.60)
    done = run_controller_once(engine, "bot", as_of=start + timedelta(hours=169))
    assert (done.status, done.decision.action.label) == ("applied", "conclude")
    prompts = {p.id: p for p in store.list_prompts("bot")}
    assert (prompts[candidate.id].status, prompts[candidate.id].traffic) == ("active", Decimal("1.0000"))
    assert (prompts[active.id].status, prompts[active.id].traffic) == ("deprecated", Decimal("0.0000"))
    asyncio.run(ensure_system_stable("bot", engine=engine))  # free to train again
    after = run_controller_once(engine, "bot", as_of=start + timedelta(hours=170))
    assert after.status == "no_experiment" and "no running experiment" in after.message


def test_holdback_reverts_when_the_new_prompt_turns_out_worse(engine):
    store, active, candidate, _ = _promoted_with_holdback(engine)
    start = T0 + timedelta(hours=30)
    write_rate(engine, candidate.id, start + timedelta(hours=2), 4500, 0.50)
    write_rate(engine, active.id, start + timedelta(hours=2), 500, 0.70)
    reverted = run_controller_once(engine, "bot", as_of=start + timedelta(hours=10))
    assert (reverted.status, reverted.decision.action.label) == ("applied", "revert")
    prompts = {p.id: p for p in store.list_prompts("bot")}
    assert (prompts[active.id].status, prompts[active.id].traffic) == ("active", Decimal("1.0000"))
    assert (prompts[candidate.id].status, prompts[candidate.id].traffic) == ("rolled_back", Decimal("0.0000"))
    revert = [e for e in store.list_events("bot") if e["event"] == "holdback_revert"]
    assert {e["prompt_id"] for e in revert} == {active.id, candidate.id}
    assert all(e["details"]["phase"] == "holdback" and e["details"]["lower_bound"] > 0 for e in revert)


def test_without_a_holdback_the_old_active_is_deprecated_at_once(engine):
    store = PromptStore(engine, clock=lambda: T0 - timedelta(days=1))
    active = store.bootstrap("bot", "You are helpful.")
    candidate = PromptStore(engine, clock=lambda: T0).start_experiment("bot", "Better.", source="test", candidate_traffic="0.5")
    write_rate(engine, active.id, T0 + timedelta(hours=3), 1000, 0.60)
    write_rate(engine, candidate.id, T0 + timedelta(hours=3), 1000, 0.80)
    outcome = run_controller_once(engine, "bot", as_of=T0 + timedelta(hours=30), settings={"holdback_share": 0})
    assert (outcome.decision.action.label, outcome.traffic_after) == ("promote", 1.0)
    prompts = {p.id: p for p in store.list_prompts("bot")}
    assert (prompts[active.id].status, prompts[candidate.id].status) == ("deprecated", "active")


def test_agent_settings_file_and_run_settings_tune_the_policy(engine, tmp_path, monkeypatch):
    active, candidate = start_experiment(engine)
    write_rate(engine, active.id, T0 + timedelta(hours=2), 1000, 0.70)
    write_rate(engine, candidate.id, T0 + timedelta(hours=2), 115, 0.72)
    settings_file = tmp_path / "canary.toml"
    settings_file.write_text('["*"]\nholdback_hours = 72\n["bot"]\nmin_stage_hours = 4\nramp = [0.1, 0.3]\n')
    monkeypatch.setenv("BINDU_CANARY_SETTINGS", str(settings_file))
    outcome = run_controller_once(engine, "bot", as_of=T0 + timedelta(hours=5))
    assert (outcome.status, outcome.traffic_after) == ("applied", 0.3)
    step = [e for e in PromptStore(engine).list_events("bot") if e["event"] == "step"][-1]
    assert step["details"]["settings"]["min_stage_hours"] == 4.0 and step["details"]["settings"]["holdback_hours"] == 72.0
    state = experiment_state(engine, "bot", as_of=T0 + timedelta(hours=6), settings={"maturity_hours": "3"})
    assert state["settings"]["maturity_hours"] == 3.0 and state["maturity_hours"] == 3.0
    settings_file.write_text('["bot"]\nmin_stage_hour = 4\n')
    with pytest.raises(ValueError, match="unknown canary setting 'min_stage_hour'"):
        run_controller_once(engine, "bot", as_of=T0 + timedelta(hours=7))


def test_harmful_candidate_is_rolled_back_at_the_first_stage(engine):
    active, candidate = start_experiment(engine)
    write_rate(engine, active.id, T0 + timedelta(hours=1), 1000, 0.80)
    write_rate(engine, candidate.id, T0 + timedelta(hours=1), 110, 0.40)
    outcome = run_controller_once(engine, "bot", as_of=T0 + timedelta(hours=4))
    assert (outcome.status, outcome.decision.action.label, outcome.traffic_after) == ("applied", "rollback", 0.0)
    assert "harm" in outcome.message
    store = PromptStore(engine)
    assert store.get_candidate_prompt("bot") is None
    assert store.get_active_prompt("bot").id == active.id and store.get_active_prompt("bot").traffic == 1
    assert {p.id: p.status for p in store.list_prompts("bot")}[candidate.id] == "rolled_back"


def test_no_experiment_and_unknown_agent_give_clear_answers(engine):
    PromptStore(engine).bootstrap("calm", "Only an active prompt.")
    outcome = run_controller_once(engine, "calm", as_of=T0)
    assert outcome.status == "no_experiment" and "'calm' has no running experiment" in outcome.message
    with pytest.raises(UnknownAgent, match="unknown agent 'ghost'"):
        run_controller_once(engine, "ghost", as_of=T0)
    assert experiment_state(engine, "calm") is None


def test_experiment_state_reports_the_live_arms_without_writing(engine):
    active, candidate = start_experiment(engine)
    write_rate(engine, active.id, T0 + timedelta(hours=1), 200, 0.70)
    write_rate(engine, candidate.id, T0 + timedelta(hours=1), 40, 0.75)
    events_before = len(PromptStore(engine).list_events("bot"))
    state = experiment_state(engine, "bot", as_of=T0 + timedelta(hours=5))
    assert state["hours_running"] == 5.0 and state["candidate"]["feedback_tasks"] == 40
    assert state["active"]["mean_score"] == pytest.approx(0.70) and state["next_action"] == "hold"
    assert state["statistics"]["difference"] == pytest.approx(0.05)
    assert len(PromptStore(engine).list_events("bot")) == events_before


class _BarrierPolicy(SequentialPolicy):
    """The real policy, but both controller runs decide before either applies: a forced race."""

    def __init__(self, barrier: threading.Barrier):
        super().__init__()
        object.__setattr__(self, "_barrier", barrier)

    def decide(self, snapshot):
        decision = super().decide(snapshot)
        self._barrier.wait(timeout=20)
        return decision


@pytest.mark.postgres
def test_two_concurrent_controller_runs_apply_one_decision(postgres_url):
    setup = make_engine(postgres_url)
    upgrade(setup)
    active, candidate = start_experiment(setup)
    write_rate(setup, active.id, T0 + timedelta(hours=2), 1000, 0.70)
    write_rate(setup, candidate.id, T0 + timedelta(hours=2), 115, 0.72)
    barrier = threading.Barrier(2)
    outcomes = []

    def controller_run():
        engine = make_engine(postgres_url)  # each run has its own connections
        try:
            outcomes.append(run_controller_once(engine, "bot", policy=_BarrierPolicy(barrier), as_of=T0 + timedelta(hours=25)))
        finally:
            engine.dispose()

    threads = [threading.Thread(target=controller_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(o.status for o in outcomes) == ["applied", "stale"]
    stale = next(o for o in outcomes if o.status == "stale")
    assert "another controller run changed the experiment first" in stale.message
    store = PromptStore(setup)
    steps = [e for e in store.list_events("bot") if e["event"] == "step" and e["prompt_id"] == candidate.id]
    assert len(steps) == 1 and store.get_candidate_prompt("bot").traffic == Decimal("0.2500")
    setup.dispose()


class _CutDatabasePolicy(SequentialPolicy):
    """Cuts the network to the database after the metrics were read, before the decision applies."""

    def __init__(self, proxy: TcpProxy):
        super().__init__()
        object.__setattr__(self, "_proxy", proxy)

    def decide(self, snapshot):
        self._proxy.cut()
        return super().decide(snapshot)


@pytest.mark.postgres
def test_database_dropping_mid_run_is_a_clear_error_and_changes_nothing(postgres_url):
    engine = make_engine(postgres_url)
    upgrade(engine)
    active, candidate = start_experiment(engine)
    write_rate(engine, active.id, T0 + timedelta(hours=1), 1000, 0.80)
    write_rate(engine, candidate.id, T0 + timedelta(hours=1), 110, 0.40)  # would be rolled back
    proxy, proxied_url = TcpProxy.for_url(postgres_url)
    proxied = make_engine(proxied_url, connect_timeout=2)
    try:
        with pytest.raises(DatabaseUnavailable, match="the database failed during the canary run"):
            run_controller_once(proxied, "bot", policy=_CutDatabasePolicy(proxy), as_of=T0 + timedelta(hours=4))
    finally:
        proxied.dispose()
        proxy.close()
    store = PromptStore(engine)
    assert store.get_candidate_prompt("bot").id == candidate.id
    assert store.get_candidate_prompt("bot").traffic == Decimal("0.1000")
    assert not [e for e in store.list_events("bot") if e["event"] in ("rollback", "step", "promote")]
    engine.dispose()


def test_seed_api_steps_by_ten_points_through_compare_and_set(engine):
    active, candidate = start_experiment(engine)
    assert asyncio.run(promote_step(active, candidate, engine=engine)) == pytest.approx(0.2)
    with pytest.raises(Exception, match="not the expected"):
        asyncio.run(promote_step(active, candidate, engine=engine))  # stale: the candidate is at 0.2 now
    current = PromptStore(engine).get_candidate_prompt("bot")
    assert asyncio.run(rollback_step(active.as_dict(), current.as_dict(), engine=engine)) == pytest.approx(0.1)
    with pytest.raises(RuntimeError, match="experiment running"):
        asyncio.run(ensure_system_stable("bot", engine=engine))
    outcomes = asyncio.run(run_canary_controller(engine=engine, as_of=T0 + timedelta(hours=1)))
    assert [(o.agent_id, o.status) for o in outcomes] == [("bot", "held")]


def test_compare_metrics_needs_significance_where_the_seed_only_compares_averages():
    active = {"num_interactions": 100, "average_feedback_score": 0.70}
    slightly = {"num_interactions": 40, "average_feedback_score": 0.75}
    assert compare_metrics(active, slightly, policy="seed") == "candidate"
    assert compare_metrics(active, slightly) is None
    clearly = {"num_interactions": 3000, "average_feedback_score": 0.80}
    assert compare_metrics({"num_interactions": 3000, "average_feedback_score": 0.70}, clearly) == "candidate"
    assert compare_metrics(clearly, {"num_interactions": 3000, "average_feedback_score": 0.70}) == "active"
    with pytest.raises(ValueError, match="within 0..1"):
        compare_metrics(active, {"num_interactions": 3, "average_feedback_score": 4})

"""Canary decision policy: single decisions on hand-built snapshots, then error rates by simulation.

The simulations run the same vectorised policy code the controller calls, on traffic with users
(several correlated events), arm-dependent delays, daily swings and novelty, with fixed seeds and
small run counts; each bound has a margin the old per-event analysis would fail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from bindu_pipelines.canary.policy import (
    Action,
    ArmClusters,
    ArmStats,
    ExperimentSnapshot,
    SeedPolicy,
    SequentialPolicy,
    Stratum,
    coerce_settings,
    get_policy,
    maturity_from_delays,
    mixture_radius,
)
from bindu_pipelines.canary.simulate import Scenario, simulate

POLICY = SequentialPolicy()


def independent(n: int, rate: float) -> Stratum:
    ones = round(n * rate)
    return Stratum.from_units([(1, 1)] * ones + [(1, 0)] * (n - ones))


def clustered(users: int, events: int, rate: float) -> Stratum:
    """Users whose events are all alike (correlation 1): the most a cluster can inflate variance."""
    happy = round(users * rate)
    return Stratum.from_units([(events, events)] * happy + [(events, 0)] * (users - happy))


def snapshot(active, candidate, *, traffic=0.5, hours=48.0, dwell=30.0, shares=None, first_units=(), holdback=False):
    active = active if isinstance(active, tuple) else (active,)
    candidate = candidate if isinstance(candidate, tuple) else (candidate,)
    return ExperimentSnapshot(
        ArmClusters(active), ArmClusters(candidate), traffic, hours, dwell,
        shares or (traffic,) * len(active), first_units, holdback,
    )  # fmt: skip


# --- the statistics ---------------------------------------------------------------------


def test_clustered_units_widen_the_bounds_that_the_same_events_as_independent_would_give():
    # 2000 events each arm: as independent events an 8-point gap is significant, as 200 users of
    # 10 alike events it is not (the unit is what the router randomised).
    as_events = POLICY.decide(snapshot(independent(2000, 0.60), independent(2000, 0.68)))
    as_users = POLICY.decide(snapshot(clustered(200, 10, 0.60), clustered(200, 10, 0.68)))
    assert as_events.statistics["difference"] == pytest.approx(as_users.statistics["difference"])
    assert as_users.statistics["standard_error"] > 2.5 * as_events.statistics["standard_error"]
    assert as_events.statistics["lower_bound"] > 0 > as_users.statistics["lower_bound"]


def test_strata_are_compared_within_and_never_pooled_across_a_split_change():
    # Both arms 0.5 in the first segment and 0.7 in the second (a time trend): pooled, the candidate,
    # which got more of the later traffic, would look 8 points better; within segments it is equal.
    active = (independent(900, 0.5), independent(500, 0.7))
    candidate = (independent(100, 0.5), independent(500, 0.7))
    decision = POLICY.decide(snapshot(active, candidate, shares=(0.1, 0.5)))
    pooled = (50 + 350) / 600 - (450 + 350) / 1400
    assert pooled > 0.08
    assert decision.statistics["difference"] == pytest.approx(0.0, abs=1e-12)
    assert decision.action is not Action.PROMOTE


def test_maturity_window_is_the_slowest_groups_high_quantile_within_bounds():
    rng = np.random.default_rng(1)
    fast, slow = rng.exponential(2.0, 5000), rng.exponential(12.0, 5000)
    assert maturity_from_delays([fast]) == pytest.approx(np.ceil(np.quantile(fast, 0.995)))
    assert maturity_from_delays([fast, slow]) == pytest.approx(np.ceil(np.quantile(slow, 0.995)))
    assert maturity_from_delays([rng.exponential(100.0, 5000)]) == 120.0
    assert maturity_from_delays([[0.0, 0.0]]) == 1.0 and maturity_from_delays([]) == 24.0


def test_confidence_sequence_narrows_as_information_grows():
    radii = mixture_radius(np.array([100.0, 1_000.0, 10_000.0]), 0.05, 400.0)
    assert radii[0] > radii[1] > radii[2] > 0
    assert np.isinf(mixture_radius(np.array([0.0]), 0.05, 400.0))[0]


# --- single decisions -------------------------------------------------------------------


def test_clear_winner_at_the_last_stage_is_promoted_keeping_a_holdback():
    decision = POLICY.decide(snapshot(independent(2000, 0.70), independent(2000, 0.80)))
    assert decision.action is Action.PROMOTE and decision.new_traffic == pytest.approx(0.9)
    assert decision.statistics["lower_bound"] > 0 and decision.statistics["recent_difference"] == pytest.approx(0.10)
    no_holdback = SequentialPolicy(holdback_share=0.0).decide(snapshot(independent(2000, 0.70), independent(2000, 0.80)))
    assert (no_holdback.action, no_holdback.new_traffic) == (Action.PROMOTE, 1.0)


def test_winner_whose_recent_segment_has_faded_is_held():
    early = (independent(2000, 0.60), independent(2000, 0.60))
    active = (independent(3000, 0.60), independent(1000, 0.60))
    candidate = (independent(1000, 0.75), independent(1000, 0.59))
    decision = POLICY.decide(snapshot(active, candidate, shares=(0.25, 0.5)))
    assert decision.statistics["lower_bound"] > 0 > decision.statistics["recent_difference"]
    assert decision.action is Action.HOLD and "recent window" in decision.reason
    assert early  # the same gap with a positive recent segment is promoted:
    assert POLICY.decide(snapshot(active, (independent(1000, 0.75), independent(1000, 0.62)), shares=(0.25, 0.5))).action is Action.PROMOTE


def test_no_harm_after_the_dwell_ramps_one_stage_and_the_dwell_is_respected():
    step = POLICY.decide(snapshot(independent(1500, 0.70), independent(400, 0.70), traffic=0.25))
    assert (step.action, step.new_traffic) == (Action.STEP, 0.50)
    waiting = POLICY.decide(snapshot(independent(1500, 0.70), independent(400, 0.70), traffic=0.25, dwell=3.0))
    assert waiting.action is Action.HOLD


def test_significantly_worse_candidate_is_rolled_back_at_any_stage():
    decision = POLICY.decide(snapshot(independent(3000, 0.70), independent(300, 0.45), traffic=0.10, dwell=1.0))
    assert (decision.action, decision.new_traffic) == (Action.ROLLBACK, 0.0) and "harm" in decision.reason


def test_too_few_events_and_the_maximum_duration():
    assert "too few" in POLICY.decide(snapshot(independent(500, 0.2), independent(10, 1.0), first_units=((10, 10),))).reason
    timeout = POLICY.decide(snapshot(independent(8000, 0.70), independent(8000, 0.70), hours=336.0))
    assert timeout.action is Action.ROLLBACK and "maximum duration" in timeout.reason


def test_sample_ratio_counts_units_once_and_a_mismatch_holds():
    winner = (independent(2000, 0.70), independent(2000, 0.80))
    fine = POLICY.decide(snapshot(*winner, first_units=((2000, 2000),)))
    assert fine.action is Action.PROMOTE
    skewed = POLICY.decide(snapshot(*winner, first_units=((2300, 1700),)))
    assert skewed.action is Action.HOLD and "sample-ratio" in skewed.reason and skewed.statistics["srm_mismatch"] == 1.0


def test_holdback_reverts_on_a_better_old_prompt_and_concludes_at_its_end():
    # In the holdback the candidate row is the old prompt.
    worse_new = POLICY.decide(snapshot(independent(4000, 0.55), independent(500, 0.70), traffic=0.1, hours=20, holdback=True))
    assert (worse_new.action, worse_new.new_traffic) == (Action.REVERT, 1.0)
    collecting = POLICY.decide(snapshot(independent(900, 0.70), independent(100, 0.70), traffic=0.1, hours=20, holdback=True))
    assert collecting.action is Action.HOLD and "holdback" in collecting.reason
    ahead_old = POLICY.decide(snapshot(independent(900, 0.70), independent(100, 0.72), traffic=0.1, hours=168, holdback=True))
    assert ahead_old.action is Action.REVERT and "holdback over" in ahead_old.reason
    holds = POLICY.decide(snapshot(independent(900, 0.72), independent(100, 0.70), traffic=0.1, hours=168, holdback=True))
    assert (holds.action, holds.new_traffic) == (Action.CONCLUDE, 0.0)


def test_scalar_decision_is_the_batched_decision():
    rng = np.random.default_rng(7)
    for _ in range(20):
        active = clustered(int(rng.integers(50, 400)), int(rng.integers(1, 6)), float(rng.uniform(0.5, 0.8)))
        candidate = clustered(int(rng.integers(50, 400)), int(rng.integers(1, 6)), float(rng.uniform(0.5, 0.8)))
        single = POLICY.decide(snapshot(active, candidate, traffic=0.5))
        from bindu_pipelines.canary.policy import _snapshot_arrays

        actions, traffic, reasons, _ = POLICY.decide_arrays(_snapshot_arrays(snapshot(active, candidate, traffic=0.5)))
        assert (single.action, single.new_traffic, single.reason) == (Action(actions[0]), traffic[0], POLICY.reasons[reasons[0]])


def test_settings_are_checked_with_one_clear_error():
    assert coerce_settings({"ramp": "0.05,0.2,0.5", "min_stage_hours": "6", "recent_check": "no"}) == {
        "ramp": (0.05, 0.2, 0.5), "min_stage_hours": 6.0, "recent_check": False,
    }  # fmt: skip
    with pytest.raises(ValueError, match="unknown canary setting 'dwell'"):
        get_policy("sequential", dwell=3)
    with pytest.raises(ValueError, match="'holdback_hours' must be a number"):
        get_policy("sequential", holdback_hours="a week")
    with pytest.raises(ValueError, match="holdback_share must be in"):
        get_policy("sequential", holdback_share=0.7)
    with pytest.raises(ValueError, match="unknown canary policy"):
        get_policy("bandit")
    assert get_policy("sequential", ramp=[0.2, 0.5]).settings()["ramp"] == [0.2, 0.5]


def test_seed_rule_steps_by_ten_points_on_event_counts():
    seed = SeedPolicy()
    up = seed.decide(snapshot(ArmStats(25, 15, 15).as_clusters().strata[0], ArmStats(25, 20, 20).as_clusters().strata[0], traffic=0.3))
    assert (up.action, up.new_traffic) == (Action.STEP, pytest.approx(0.4))


# --- error rates by simulation (same code as the controller) -----------------------------


@dataclass(frozen=True)
class PerEventPolicy(SequentialPolicy):
    """The previous analysis: every feedback event its own unit (variance and SRM per event)."""

    def decide_arrays(self, s):
        s = dict(s)
        for arm in "ac":
            s[f"{arm}_units"], s[f"{arm}_nn"] = s[f"{arm}_n"], s[f"{arm}_n"]
            s[f"{arm}_ny"], s[f"{arm}_yy"] = s[f"{arm}_y"], s[f"{arm}_y"]
        s["srm_a"], s["srm_c"] = s["a_n"], s["c_n"]
        return super().decide_arrays(s)


CLUSTERED_AA = Scenario(active_rate=0.6, candidate_rate=0.6, events_per_user=5, correlation=0.4, runs=300, hours=168, seed=3)


def test_clustered_a_a_traffic_is_neither_promoted_nor_falsely_rolled_back():
    ours = simulate(CLUSTERED_AA, POLICY)
    per_event = simulate(CLUSTERED_AA, PerEventPolicy())
    # 300 runs: ours measured 0 % / 0.3 %, the per-event analysis 11 % / 25 % (within 7 days, before any timeout).
    assert ours.promoted <= 0.02 and ours.rolled_back <= 0.03
    assert per_event.promoted >= 0.05 and per_event.rolled_back >= 0.12


def test_better_candidate_is_still_found_with_users():
    result = simulate(Scenario(active_rate=0.6, candidate_rate=0.7, events_per_user=5, correlation=0.3, runs=200, seed=4), POLICY)
    assert result.promoted >= 0.95 and result.median_hours_to_decision < 200


def test_worse_candidate_with_users_is_never_promoted():
    result = simulate(Scenario(active_rate=0.6, candidate_rate=0.55, events_per_user=5, correlation=0.3, runs=200, hours=200, seed=5), POLICY)
    assert result.promoted == 0.0 and result.rolled_back >= 0.5


def test_arm_dependent_delays_do_not_promote_an_identical_candidate():
    # The candidate's thumbs-down arrive ~12 h late, everything else in ~2 h: counted as it arrives,
    # the candidate looks better; on mature tasks with the derived window it does not.
    scenario = Scenario(active_rate=0.6, candidate_rate=0.6, candidate_down_delay_hours=12.0, runs=300, seed=6)
    ours = simulate(scenario, POLICY)
    no_maturity = simulate(scenario, SequentialPolicy(maturity_hours=6.0))
    assert ours.maturity_hours >= 60 and ours.promoted <= 0.03
    assert no_maturity.promoted >= 0.06


def test_a_candidate_that_fades_to_worse_is_rarely_left_active():
    scenario = Scenario(active_rate=0.6, candidate_rate=0.68, fade_to=-0.03, fade_hours=120, runs=300, seed=7)
    ours = simulate(scenario, POLICY)
    without_holdback = simulate(scenario, SequentialPolicy(holdback_share=0.0, recent_check=False))
    assert ours.promoted <= 0.06 and ours.reverted > 0.1
    assert without_holdback.promoted >= 0.15


def test_daily_swing_while_the_ramp_moves_is_not_a_difference():
    result = simulate(Scenario(active_rate=0.6, candidate_rate=0.6, daily_swing=0.1, start_hour=18, runs=300, seed=8), POLICY)
    assert result.promoted <= 0.03


def test_seed_rule_promotes_identical_candidates_often():
    result = simulate(Scenario(active_rate=0.6, candidate_rate=0.6, runs=200, seed=9), "seed")
    assert result.promoted >= 0.15


def test_scenario_refuses_bad_input():
    with pytest.raises(ValueError, match="correlation"):
        Scenario(correlation=1.0)
    with pytest.raises(ValueError, match="candidate_down_delay_hours"):
        Scenario(candidate_down_delay_hours=0)
    with pytest.raises(ValueError, match="events_per_user"):
        Scenario(events_per_user=0.5)

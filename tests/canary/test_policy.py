"""Canary decision policy: single decisions on hand-built snapshots, then error rates by simulation.

The statistical tests run the simulator (the same vectorised code the controller calls) with
fixed seeds and enough runs that DESIGN §8's targets are asserted with a margin of several
binomial standard errors.
"""

from __future__ import annotations

import numpy as np
import pytest

from bindu_pipelines.canary.policy import (
    Action,
    ArmStats,
    ExperimentSnapshot,
    SeedPolicy,
    SequentialPolicy,
    SplitCounts,
    get_policy,
    mixture_radius,
)
from bindu_pipelines.canary.simulate import Scenario, rating_probabilities, simulate

POLICY = SequentialPolicy()


def thumbs(n: int, rate: float) -> ArmStats:
    ones = round(n * rate)
    return ArmStats(n=n, total=ones, total_sq=ones)


def snapshot(active, candidate, *, traffic=0.5, hours=48.0, dwell=24.0, split=None) -> ExperimentSnapshot:
    return ExperimentSnapshot(active, candidate, traffic, hours, dwell, split)


# --- single decisions -------------------------------------------------------------------


def test_clear_winner_at_the_last_ramp_stage_is_promoted_with_its_bounds():
    decision = POLICY.decide(snapshot(thumbs(2000, 0.70), thumbs(2000, 0.80)))
    assert decision.action is Action.PROMOTE and decision.new_traffic == 1.0
    stats = decision.statistics
    assert stats["lower_bound"] > 0 and stats["difference"] == pytest.approx(0.10)
    assert stats["active_n"] == 2000 and stats["candidate_mean"] == pytest.approx(0.80)


def test_clear_winner_below_the_last_stage_ramps_instead_of_jumping_to_100():
    decision = POLICY.decide(snapshot(thumbs(3000, 0.70), thumbs(400, 0.85), traffic=0.10))
    assert decision.action is Action.STEP and decision.new_traffic == 0.25


def test_winner_waits_for_the_dwell_time_at_the_last_stage():
    decision = POLICY.decide(snapshot(thumbs(2000, 0.70), thumbs(2000, 0.80), dwell=3.0))
    assert decision.action is Action.HOLD and "dwelling" in decision.reason


def test_significantly_worse_candidate_is_rolled_back_at_any_stage():
    decision = POLICY.decide(snapshot(thumbs(3000, 0.70), thumbs(300, 0.45), traffic=0.10, dwell=1.0))
    assert decision.action is Action.ROLLBACK and decision.new_traffic == 0.0
    assert decision.statistics["upper_bound"] < 0 and "harm" in decision.reason


def test_no_harm_after_the_dwell_time_ramps_to_the_next_stage():
    decision = POLICY.decide(snapshot(thumbs(1500, 0.70), thumbs(400, 0.70), traffic=0.25))
    assert decision.action is Action.STEP and decision.new_traffic == 0.50


def test_ramp_is_held_while_the_candidate_trails_by_more_than_the_tolerance():
    decision = POLICY.decide(snapshot(thumbs(1000, 0.70), thumbs(60, 0.62), traffic=0.10))
    assert decision.action is Action.HOLD and "tolerance" in decision.reason


def test_too_few_events_hold_even_with_a_huge_difference():
    decision = POLICY.decide(snapshot(thumbs(500, 0.2), thumbs(10, 1.0), traffic=0.5))
    assert decision.action is Action.HOLD and "too few" in decision.reason


def test_inconclusive_experiment_is_rolled_back_at_the_maximum_duration():
    inconclusive = snapshot(thumbs(8000, 0.70), thumbs(8000, 0.70), hours=336.0)
    assert POLICY.decide(inconclusive).action is Action.ROLLBACK
    assert "maximum duration" in POLICY.decide(inconclusive).reason
    before = snapshot(thumbs(8000, 0.70), thumbs(8000, 0.70), hours=335.0)
    assert POLICY.decide(before).action is Action.HOLD


def test_sample_ratio_mismatch_holds_a_would_be_promotion():
    # Configured 50 %, but the candidate only got 40 % of 4 000 routed units.
    split = SplitCounts.from_segments([(2400, 1600, 0.5)])
    decision = POLICY.decide(snapshot(thumbs(2400, 0.70), thumbs(1600, 0.85), split=split))
    assert decision.action is Action.HOLD and "sample-ratio" in decision.reason
    assert decision.statistics["srm_mismatch"] == 1.0 and decision.statistics["srm_z"] < -10
    matching = SplitCounts.from_segments([(2010, 1990, 0.5)])
    assert POLICY.decide(snapshot(thumbs(2010, 0.70), thumbs(1990, 0.85), split=matching)).action is Action.PROMOTE


def test_split_counts_combine_segments_with_their_own_shares():
    split = SplitCounts.from_segments([(900, 100, 0.1), (750, 250, 0.25)])
    assert split.observed == 350 and split.expected == pytest.approx(350)
    assert split.variance == pytest.approx(1000 * 0.1 * 0.9 + 1000 * 0.25 * 0.75)


def test_rating_scale_variance_is_smaller_so_the_same_gap_is_more_significant():
    # Same means and counts; ratings concentrated near the mean have a smaller variance.
    rating_a = ArmStats(n=600, total=600 * 0.70, total_sq=600 * (0.70**2 + 0.03))
    rating_c = ArmStats(n=600, total=600 * 0.75, total_sq=600 * (0.75**2 + 0.03))
    rated = POLICY.decide(snapshot(rating_a, rating_c)).statistics
    thumbed = POLICY.decide(snapshot(thumbs(600, 0.70), thumbs(600, 0.75))).statistics
    assert rated["difference"] == pytest.approx(thumbed["difference"])
    assert rated["lower_bound"] > thumbed["lower_bound"] and rated["z"] > thumbed["z"]


def test_arm_stats_refuse_scores_outside_zero_one():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ArmStats(n=2, total=3.0, total_sq=3.0)
    with pytest.raises(ValueError, match="non-negative"):
        ArmStats(n=-1, total=0, total_sq=0)
    assert ArmStats.from_scores([0.0, 0.25, 1.0]) == ArmStats(3, 1.25, 1.0625)


def test_confidence_sequence_narrows_as_information_grows():
    radii = mixture_radius(np.array([100.0, 1_000.0, 10_000.0, 100_000.0]), 0.05, 400.0)
    assert np.all(np.diff(radii) < 0) and np.isinf(mixture_radius(np.array([0.0]), 0.05, 400.0)[0])


def test_scalar_decision_is_the_batched_decision():
    rng = np.random.default_rng(3)
    n_a, n_c = rng.integers(0, 3000, 50).astype(float), rng.integers(0, 1500, 50).astype(float)
    sum_a, sum_c = np.floor(n_a * rng.uniform(0.5, 0.9, 50)), np.floor(n_c * rng.uniform(0.5, 0.9, 50))
    traffic = rng.choice([0.1, 0.25, 0.5], 50)
    hours, dwell = rng.uniform(0, 400, 50), rng.uniform(0, 30, 50)
    batch = {
        "n_a": n_a, "sum_a": sum_a, "sq_a": sum_a, "n_c": n_c, "sum_c": sum_c, "sq_c": sum_c,
        "traffic": traffic, "hours": hours, "hours_at_traffic": dwell,
        "srm_observed": np.zeros(50), "srm_expected": np.zeros(50), "srm_variance": np.zeros(50),
    }  # fmt: skip
    actions, new_traffic, _, _ = POLICY.decide_arrays(batch)
    for i in range(50):
        single = POLICY.decide(
            snapshot(ArmStats(int(n_a[i]), sum_a[i], sum_a[i]), ArmStats(int(n_c[i]), sum_c[i], sum_c[i]),
                     traffic=traffic[i], hours=hours[i], dwell=dwell[i])
        )  # fmt: skip
        assert (single.action, single.new_traffic) == (Action(actions[i]), new_traffic[i])


def test_seed_rule_steps_by_ten_points_and_finishes_at_the_ends():
    seed = SeedPolicy()
    up = seed.decide(snapshot(thumbs(100, 0.70), thumbs(20, 0.75), traffic=0.2))
    assert (up.action, up.new_traffic) == (Action.STEP, pytest.approx(0.3))
    assert seed.decide(snapshot(thumbs(100, 0.7), thumbs(19, 0.9), traffic=0.2)).action is Action.HOLD
    assert seed.decide(snapshot(thumbs(100, 0.7), thumbs(50, 0.8), traffic=0.9)).action is Action.PROMOTE
    assert seed.decide(snapshot(thumbs(100, 0.7), thumbs(50, 0.6), traffic=0.1)).action is Action.ROLLBACK


def test_unknown_policy_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown canary policy 'greedy'"):
        get_policy("greedy")
    assert get_policy("ours").name == "sequential"


# --- error rates by simulation (DESIGN §8) -----------------------------------------------

RUNS = 2000


@pytest.mark.parametrize(
    ("label", "candidate_rate", "scale", "bound"),
    [
        ("A/A", 0.70, "thumbs", ("<=", 0.025)),
        ("5 points worse", 0.65, "thumbs", ("<=", 0.005)),
        ("5 points better", 0.75, "thumbs", (">=", 0.95)),
        ("10 points better", 0.80, "thumbs", (">=", 0.995)),
        ("ratings A/A", 0.70, "rating", ("<=", 0.025)),
        ("ratings 5 points better", 0.75, "rating", (">=", 0.95)),
    ],
)
def test_promotion_rates_meet_design_targets(label, candidate_rate, scale, bound):
    result = simulate(Scenario(candidate_rate=candidate_rate, scale=scale, runs=RUNS, seed=11), POLICY)
    comparison, target = bound
    if comparison == "<=":
        assert result.promoted <= target, f"{label}: promoted {result.promoted:.2%}"
    else:
        assert result.promoted >= target, f"{label}: promoted {result.promoted:.2%}"
    assert result.undecided == 0.0  # the maximum duration always concludes within 14 days


def test_seed_rule_fails_the_same_a_a_target():
    result = simulate(Scenario(candidate_rate=0.70, runs=RUNS, seed=11), "seed")
    assert result.promoted > 0.15  # DESIGN §8 "the original": 20-28 %


def test_long_inconclusive_runs_end_in_rollback_at_the_maximum_duration():
    result = simulate(Scenario(candidate_rate=0.70, runs=500, seed=5), SequentialPolicy(max_hours=200))
    assert result.undecided == 0.0 and result.rolled_back > 0.95
    assert result.median_hours_to_decision == 200


def test_sample_ratio_mismatch_prevents_most_false_promotions():
    # The candidate silently loses every thumbs-down: it looks ~30 points better than it is.
    lossy = Scenario(candidate_rate=0.70, candidate_loss=1.0, runs=RUNS, seed=11)
    without_check = simulate(lossy, SequentialPolicy(alpha_srm=1e-300))
    with_check = simulate(lossy, POLICY)
    assert without_check.promoted > 0.95
    assert with_check.promoted < 0.15


def test_rating_probabilities_hit_the_requested_mean():
    for mean in (0.3, 0.7, 0.9):
        probabilities = rating_probabilities(mean)
        assert probabilities.sum() == pytest.approx(1.0)
        assert probabilities @ np.array([0, 0.25, 0.5, 0.75, 1.0]) == pytest.approx(mean, abs=1e-9)

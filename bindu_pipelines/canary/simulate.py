"""Simulated canary experiments: how often a policy promotes, rolls back or never decides.

Each run is one experiment checked hourly: feedback events arrive (Poisson, ``feedback_per_hour``),
each is routed to the candidate with its current traffic share, and scored as thumbs (0/1) or
as a 1-5 rating normalised to (r-1)/4. All runs advance together as numpy arrays and the
policy's own ``decide_arrays`` decides for all of them, so these figures describe exactly the
code the controller runs.

A sample-ratio problem is simulated with ``candidate_loss``: that fraction of the candidate's
unhappy events (thumbs down, ratings 1-2) silently disappear, as when the candidate breaks the
feedback path for unhappy users: the candidate then looks better than it is, and its share of
routed units falls below the configured one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from bindu_pipelines.canary.policy import Action, CanaryPolicy, get_policy

__all__ = ["Scenario", "SimulationResult", "rating_probabilities", "simulate"]

RATING_SCORES = np.array([0.0, 0.25, 0.5, 0.75, 1.0])  # ratings 1..5 on the feedback scale


@dataclass(frozen=True)
class Scenario:
    active_rate: float = 0.7
    candidate_rate: float = 0.75
    feedback_per_hour: float = 50.0
    hours: int = 336
    runs: int = 1000
    seed: int = 1
    scale: Literal["thumbs", "rating"] = "thumbs"
    initial_traffic: float = 0.1
    candidate_loss: float = 0.0

    def __post_init__(self) -> None:
        for name in ("active_rate", "candidate_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a mean score and must be within [0, 1], got {value}")
        if self.scale == "rating" and not all(0.0 < r < 1.0 for r in (self.active_rate, self.candidate_rate)):
            raise ValueError("rating-scale rates must be strictly between 0 and 1")
        if not (math.isfinite(self.feedback_per_hour) and self.feedback_per_hour > 0):
            raise ValueError(f"feedback_per_hour must be a positive number, got {self.feedback_per_hour}")
        if self.hours < 1 or self.runs < 1:
            raise ValueError("hours and runs must be at least 1")
        if self.scale not in ("thumbs", "rating"):
            raise ValueError(f"scale must be 'thumbs' or 'rating', got {self.scale!r}")
        if not 0.0 < self.initial_traffic < 1.0:
            raise ValueError(f"initial_traffic must be strictly between 0 and 1, got {self.initial_traffic}")
        if not 0.0 <= self.candidate_loss <= 1.0:
            raise ValueError(f"candidate_loss must be in [0, 1], got {self.candidate_loss}")


@dataclass(frozen=True)
class SimulationResult:
    policy: str
    scenario: Scenario
    promoted: float
    rolled_back: float
    undecided: float
    median_events_to_decision: float | None
    median_hours_to_decision: float | None
    median_hours_to_promotion: float | None
    mean_candidate_share_of_events: float

    def to_dict(self) -> dict:
        result = asdict(self)
        result["scenario"] = asdict(self.scenario)
        return result


def rating_probabilities(mean_score: float) -> np.ndarray:
    """Probabilities of ratings 1..5 with the given mean normalised score.

    Exponential tilting of the uniform distribution: p_k ∝ exp(beta * score_k), beta found by
    bisection. A smooth, unimodal family whose variance shrinks towards the ends as real
    rating data does.
    """
    if not 0.0 < mean_score < 1.0:
        raise ValueError(f"mean score must be strictly between 0 and 1, got {mean_score}")

    def mean_for(beta: float) -> float:
        weights = np.exp(beta * (RATING_SCORES - 0.5))
        return float(weights @ RATING_SCORES / weights.sum())

    low, high = -200.0, 200.0
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if mean_for(mid) < mean_score else (low, mid)
    weights = np.exp((low + high) / 2 * (RATING_SCORES - 0.5))
    return weights / weights.sum()


THUMB_SCORES = np.array([0.0, 1.0])


def _draw_counts(rng, n: np.ndarray, rate: float, scale: str) -> tuple[np.ndarray, np.ndarray]:
    """Per run, how many of the n events got each score; returns (counts, score values)."""
    if scale == "thumbs":
        ones = rng.binomial(n, rate)
        return np.stack([n - ones, ones], axis=1), THUMB_SCORES
    return rng.multinomial(n, rating_probabilities(rate)), RATING_SCORES


def simulate(scenario: Scenario, policy: CanaryPolicy | str = "sequential") -> SimulationResult:
    policy = get_policy(policy) if isinstance(policy, str) else policy
    rng = np.random.default_rng(scenario.seed)
    runs = scenario.runs
    zeros = lambda: np.zeros(runs)  # noqa: E731 - tiny local factory
    n_a, sum_a, sq_a, n_c, sum_c, sq_c = (zeros() for _ in range(6))
    srm_observed, srm_expected, srm_variance = zeros(), zeros(), zeros()
    traffic = np.full(runs, scenario.initial_traffic)
    hours_at_traffic = zeros()
    outcome = np.full(runs, -1, dtype=np.int8)  # -1 undecided, else Action.PROMOTE / ROLLBACK
    decided_hour = np.full(runs, np.nan)
    decided_events = np.full(runs, np.nan)
    share_num = share_den = 0.0

    for hour in range(1, scenario.hours + 1):
        live = outcome < 0
        if not live.any():
            break
        total = rng.poisson(scenario.feedback_per_hour, size=runs) * live
        to_candidate = rng.binomial(total, traffic)
        to_active = total - to_candidate
        a_counts, scores = _draw_counts(rng, to_active, scenario.active_rate, scenario.scale)
        c_counts, _ = _draw_counts(rng, to_candidate, scenario.candidate_rate, scenario.scale)
        if scenario.candidate_loss:
            unhappy = scores < 0.5  # thumbs down, ratings 1-2
            c_counts[:, unhappy] -= rng.binomial(c_counts[:, unhappy], scenario.candidate_loss)
            to_candidate = c_counts.sum(axis=1)
        a_sum, a_sq = a_counts @ scores, a_counts @ scores**2
        c_sum, c_sq = c_counts @ scores, c_counts @ scores**2
        n_a += to_active
        sum_a += a_sum
        sq_a += a_sq
        n_c += to_candidate
        sum_c += c_sum
        sq_c += c_sq
        routed = to_active + to_candidate
        srm_observed += to_candidate
        srm_expected += routed * traffic
        srm_variance += routed * traffic * (1 - traffic)
        share_num += float(to_candidate[live].sum())
        share_den += float(routed[live].sum())
        hours_at_traffic += 1

        actions, new_traffic, _, _ = policy.decide_arrays(
            {
                "n_a": n_a, "sum_a": sum_a, "sq_a": sq_a,
                "n_c": n_c, "sum_c": sum_c, "sq_c": sq_c,
                "traffic": traffic, "hours": np.full(runs, float(hour)),
                "hours_at_traffic": hours_at_traffic,
                "srm_observed": srm_observed, "srm_expected": srm_expected, "srm_variance": srm_variance,
            }
        )  # fmt: skip
        step = live & (actions == Action.STEP)
        changed = step & (new_traffic != traffic)
        traffic = np.where(step, new_traffic, traffic)
        hours_at_traffic = np.where(changed, 0.0, hours_at_traffic)
        finished = live & ((actions == Action.PROMOTE) | (actions == Action.ROLLBACK))
        outcome[finished] = actions[finished]
        decided_hour[finished] = hour
        decided_events[finished] = (n_a + n_c)[finished]

    promoted = outcome == Action.PROMOTE
    decided = outcome >= 0

    def median(values: np.ndarray) -> float | None:
        return float(np.median(values)) if values.size else None

    return SimulationResult(
        policy=policy.name,
        scenario=scenario,
        promoted=float(promoted.mean()),
        rolled_back=float((outcome == Action.ROLLBACK).mean()),
        undecided=float((~decided).mean()),
        median_events_to_decision=median(decided_events[decided]),
        median_hours_to_decision=median(decided_hour[decided]),
        median_hours_to_promotion=median(decided_hour[promoted]),
        mean_candidate_share_of_events=share_num / share_den if share_den else math.nan,
    )

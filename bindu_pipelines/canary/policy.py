"""Canary decision policies: pure statistics, no Dagster, no database.

A policy looks at what the two arms have collected since the experiment started and says
what to do with the candidate's traffic: hold, step (ramp up, or the seed's ±10 % step),
promote (candidate wins, 100 %) or roll back (candidate loses, 0 %).

Two policies exist:

``sequential`` (the default; alias ``ours``)
    An always-valid test, so checking every hour ("peeking") does not inflate error rates.
    The difference of mean scores, ``theta = mean(candidate) - mean(active)``, is tracked with
    Robbins' normal-mixture confidence sequence

        theta_hat +- sqrt((I + rho) * (log((I + rho) / rho) + 2 log(1 / a))) / I

    where ``I = 1 / (v_a / n_a + v_c / n_c)`` is the information (inverse variance of theta_hat)
    and ``rho = 1 / mixture_sd**2``. The sequence covers theta at all times with probability
    ``1 - a`` (Ville's inequality on the mixture martingale, asymptotically for sample means
    by the time-uniform CLT); its lower edge at ``a = 2 * alpha_promote`` is a one-sided
    always-valid bound at level ``alpha_promote`` (the two tails are symmetric under
    theta = 0, and the probability is at most ``2 * alpha_promote`` without symmetry).
    Scores are bounded in [0, 1], so each arm's variance is shrunk towards the largest
    possible one (1/4) with ``variance_prior_events`` pseudo-events: conservative while an
    arm has few events, the empirical variance later (for thumbs it equals m(1-m); for
    ratings it is smaller, which is where rating data gains power).

    * harm boundary: upper edge (level ``alpha_harm``) below 0, i.e. the candidate is
      significantly worse -> roll back at once, at any ramp stage;
    * ramp: 10 % -> 25 % -> 50 % (``ramp``), one stage up after ``min_stage_hours`` at the
      current stage, unless the harm boundary is crossed or the point estimate is more than
      ``ramp_tolerance`` below the active arm;
    * promotion: only from the last ramp stage after its dwell time, when the lower edge
      (level ``alpha_promote``) is above 0, i.e. the candidate is significantly better;
    * maximum duration: after ``max_hours`` without a conclusion the candidate is rolled back
      (inconclusive: the active prompt stays, which is the safe default);
    * sample-ratio mismatch: the observed candidate share of routed units is compared with
      the configured shares over all traffic segments by the same kind of always-valid test
      (level ``alpha_srm``); a mismatch means the comparison cannot be trusted, so the
      experiment holds (no ramp, no promotion, no rollback on harm) until the maximum
      duration rolls it back.

``seed``
    The original rule, for comparison only: each arm needs MIN_INTERACTIONS_THRESHOLD = 20
    events, the higher average wins, and the candidate's traffic moves by +-0.1; it is
    promoted at 100 % and rolled back at 0 %.

Every policy works on numpy arrays (one element per simulated run) so the simulator runs the
very code the controller runs; ``decide`` is the scalar front door the controller uses.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

__all__ = [
    "Action",
    "ArmStats",
    "CanaryPolicy",
    "Decision",
    "ExperimentSnapshot",
    "SeedPolicy",
    "SequentialPolicy",
    "SplitCounts",
    "available_policies",
    "get_policy",
    "mixture_radius",
]


class Action(enum.IntEnum):
    """What the controller does with the candidate (int values so arrays can carry them)."""

    HOLD = 0
    STEP = 1  # change the candidate's traffic to Decision.new_traffic
    PROMOTE = 2  # candidate becomes active at 100 %, the old active is deprecated
    ROLLBACK = 3  # candidate goes to 0 % and is archived as rolled_back

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class ArmStats:
    """One arm's feedback since the experiment started: scores are normalised to [0, 1]."""

    n: int
    total: float
    total_sq: float

    def __post_init__(self) -> None:
        if self.n < 0 or self.total < 0 or self.total_sq < 0:
            raise ValueError(f"arm statistics must be non-negative, got {self}")
        if self.total > self.n + 1e-9 or self.total_sq > self.total + 1e-9:
            raise ValueError(f"scores must lie in [0, 1]: total <= n and total_sq <= total, got {self}")

    @classmethod
    def from_scores(cls, scores: Iterable[float]) -> ArmStats:
        values = [float(s) for s in scores]
        return cls(len(values), sum(values), sum(v * v for v in values))

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None


@dataclass(frozen=True)
class SplitCounts:
    """Routed units (tasks) per arm, summed over traffic segments, for the sample-ratio check.

    ``expected`` and ``variance`` are what a correct router gives for the candidate's count:
    sum over segments of n*share and n*share*(1-share).
    """

    observed: float
    expected: float
    variance: float

    @classmethod
    def from_segments(cls, segments: Iterable[tuple[int, int, float]]) -> SplitCounts:
        """Build from (active_units, candidate_units, configured candidate share) per segment."""
        observed = expected = variance = 0.0
        for active_units, candidate_units, share in segments:
            n = active_units + candidate_units
            observed += candidate_units
            expected += n * share
            variance += n * share * (1.0 - share)
        return cls(observed, expected, variance)


@dataclass(frozen=True)
class ExperimentSnapshot:
    """Everything a policy may look at, as of one controller iteration."""

    active: ArmStats
    candidate: ArmStats
    traffic: float  # the candidate's configured share now
    hours_running: float  # since the experiment started
    hours_at_traffic: float  # since the last traffic change
    split: SplitCounts | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    new_traffic: float
    reason: str
    statistics: dict[str, float] = field(default_factory=dict)


class CanaryPolicy(Protocol):
    name: str

    def decide_arrays(self, s: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Vectorised decision. Keys of ``s``: n_a, sum_a, sq_a, n_c, sum_c, sq_c, traffic,
        hours, hours_at_traffic, srm_observed, srm_expected, srm_variance.
        Returns (action codes, new traffic, reason codes, statistics arrays)."""

    reasons: tuple[str, ...]

    def decide(self, snapshot: ExperimentSnapshot) -> Decision: ...


def mixture_radius(information: np.ndarray, alpha: float, rho: float) -> np.ndarray:
    """Half-width of Robbins' two-sided normal-mixture confidence sequence at level 1-alpha.

    For a Brownian motion S_I = theta_hat * I with drift theta in information time I, the
    mixture martingale sqrt(rho/(I+rho)) exp((S - theta I)^2 / (2 (I+rho))) exceeds 1/alpha
    at some time with probability at most alpha; solving for theta gives this radius.
    """
    info = np.asarray(information, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        radius = np.sqrt((info + rho) * (np.log((info + rho) / rho) + 2.0 * math.log(1.0 / alpha))) / info
    return np.where(info > 0, radius, np.inf)


def _snapshot_arrays(snapshot: ExperimentSnapshot) -> dict[str, np.ndarray]:
    split = snapshot.split or SplitCounts(0.0, 0.0, 0.0)
    values = {
        "n_a": snapshot.active.n,
        "sum_a": snapshot.active.total,
        "sq_a": snapshot.active.total_sq,
        "n_c": snapshot.candidate.n,
        "sum_c": snapshot.candidate.total,
        "sq_c": snapshot.candidate.total_sq,
        "traffic": snapshot.traffic,
        "hours": snapshot.hours_running,
        "hours_at_traffic": snapshot.hours_at_traffic,
        "srm_observed": split.observed,
        "srm_expected": split.expected,
        "srm_variance": split.variance,
    }
    return {key: np.asarray([value], dtype=float) for key, value in values.items()}


class _ScalarFrontDoor:
    """Shared scalar wrapper: one snapshot -> one Decision, via the vectorised code."""

    name: str
    reasons: tuple[str, ...]

    def decide_arrays(self, s):  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def decide(self, snapshot: ExperimentSnapshot) -> Decision:
        if not 0.0 <= snapshot.traffic <= 1.0:
            raise ValueError(f"candidate traffic must be within [0, 1], got {snapshot.traffic}")
        actions, new_traffic, reasons, stats = self.decide_arrays(_snapshot_arrays(snapshot))
        statistics = {key: float(value[0]) for key, value in stats.items()}
        return Decision(
            action=Action(int(actions[0])),
            new_traffic=float(new_traffic[0]),
            reason=self.reasons[int(reasons[0])],
            statistics=statistics,
        )


@dataclass(frozen=True)
class SequentialPolicy(_ScalarFrontDoor):
    """Always-valid sequential test with harm boundary, ramp, maximum duration and SRM hold."""

    name: str = "sequential"
    alpha_promote: float = 0.025
    alpha_harm: float = 0.05
    mixture_sd: float = 0.05
    ramp: tuple[float, ...] = (0.10, 0.25, 0.50)
    min_stage_hours: float = 12.0
    ramp_tolerance: float = 0.05
    min_events_per_arm: int = 30
    variance_prior_events: float = 10.0
    max_hours: float = 336.0
    alpha_srm: float = 0.001
    srm_mixture_sd: float = 0.3
    min_srm_variance: float = 9.0  # about 100 routed units at a 10 % share

    reasons: tuple[str, ...] = (
        "collecting data",
        "candidate significantly better",
        "candidate significantly worse (harm boundary)",
        "ramp up: no harm detected",
        "maximum duration reached without a conclusion",
        "sample-ratio mismatch: holding",
        "too few feedback events",
        "significantly better, dwelling at this stage before promotion",
        "holding ramp: candidate behind by more than the ramp tolerance",
    )

    def __post_init__(self) -> None:
        for name in ("alpha_promote", "alpha_harm", "alpha_srm"):
            value = getattr(self, name)
            if not 0.0 < value < 0.5:
                raise ValueError(f"{name} must be in (0, 0.5), got {value}")
        if not self.ramp or list(self.ramp) != sorted(self.ramp) or not all(0 < r < 1 for r in self.ramp):
            raise ValueError(f"ramp must be increasing shares strictly between 0 and 1, got {self.ramp}")
        if self.mixture_sd <= 0 or self.srm_mixture_sd <= 0:
            raise ValueError("mixture standard deviations must be positive")
        if self.max_hours <= 0:
            raise ValueError(f"max_hours must be positive, got {self.max_hours}")

    def _arm_variance(self, n: np.ndarray, total: np.ndarray, total_sq: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(n > 0, total / np.maximum(n, 1), 0.0)
            empirical = np.clip(np.where(n > 0, total_sq / np.maximum(n, 1), 0.0) - mean**2, 0.0, 0.25)
        k = self.variance_prior_events
        return (n * empirical + k * 0.25) / (n + k)

    def decide_arrays(self, s):
        n_a, n_c = s["n_a"], s["n_c"]
        traffic, hours, dwell = s["traffic"], s["hours"], s["hours_at_traffic"]
        safe_a, safe_c = np.maximum(n_a, 1), np.maximum(n_c, 1)
        mean_a, mean_c = s["sum_a"] / safe_a, s["sum_c"] / safe_c
        var_a = self._arm_variance(n_a, s["sum_a"], s["sq_a"])
        var_c = self._arm_variance(n_c, s["sum_c"], s["sq_c"])
        variance = var_a / safe_a + var_c / safe_c
        information = 1.0 / variance
        diff = mean_c - mean_a
        rho = 1.0 / self.mixture_sd**2
        lower = diff - mixture_radius(information, 2 * self.alpha_promote, rho)
        upper = diff + mixture_radius(information, 2 * self.alpha_harm, rho)

        # Sample-ratio mismatch over every traffic segment since the start.
        srm_dev = s["srm_observed"] - s["srm_expected"]
        srm_var = s["srm_variance"]
        srm_rho = 1.0 / self.srm_mixture_sd**2
        srm_bound = np.sqrt((srm_var + srm_rho) * (np.log((srm_var + srm_rho) / srm_rho) + 2 * math.log(1 / self.alpha_srm)))
        srm = (np.abs(srm_dev) > srm_bound) & (srm_var >= self.min_srm_variance)

        ramp = np.asarray(self.ramp)
        stage_index = np.searchsorted(ramp, traffic + 1e-9, side="left")  # first stage above traffic
        at_last_stage = stage_index >= len(ramp)
        next_stage = ramp[np.minimum(stage_index, len(ramp) - 1)]
        dwell_done = dwell >= self.min_stage_hours

        enough = (n_a >= self.min_events_per_arm) & (n_c >= self.min_events_per_arm)
        better = enough & (lower > 0)
        worse = enough & (upper < 0)
        expired = hours >= self.max_hours

        action = np.full(n_a.shape, Action.HOLD, dtype=np.int8)
        reason = np.zeros(n_a.shape, dtype=np.int8)
        new_traffic = traffic.astype(float).copy()

        # Evaluate from lowest to highest priority; later assignments win.
        can_ramp = enough & ~at_last_stage & dwell_done
        ramp_ok = can_ramp & (diff > -self.ramp_tolerance)
        reason[~enough] = 6
        reason[can_ramp & ~ramp_ok] = 8
        action[ramp_ok] = Action.STEP
        reason[ramp_ok] = 3
        new_traffic = np.where(ramp_ok, next_stage, new_traffic)

        dwelling = better & ~(at_last_stage & dwell_done) & ~ramp_ok
        reason[dwelling] = 7
        promote = better & at_last_stage & dwell_done
        action[promote] = Action.PROMOTE
        reason[promote] = 1
        new_traffic = np.where(promote, 1.0, new_traffic)

        action[worse] = Action.ROLLBACK
        reason[worse] = 2
        new_traffic = np.where(worse, 0.0, new_traffic)

        # A mismatched split invalidates the comparison: freeze everything ...
        action[srm] = Action.HOLD
        reason[srm] = 5
        new_traffic = np.where(srm, traffic, new_traffic)

        # ... except the clock: an experiment never outlives max_hours.
        timeout = expired & (action != Action.PROMOTE)
        action[timeout] = Action.ROLLBACK
        reason[timeout] = np.where(worse[timeout], 2, 4)
        new_traffic = np.where(timeout, 0.0, new_traffic)

        stats = {
            "active_n": n_a.astype(float),
            "active_mean": np.where(n_a > 0, mean_a, np.nan),
            "candidate_n": n_c.astype(float),
            "candidate_mean": np.where(n_c > 0, mean_c, np.nan),
            "difference": np.where((n_a > 0) & (n_c > 0), diff, np.nan),
            "lower_bound": np.where((n_a > 0) & (n_c > 0), lower, -np.inf),
            "upper_bound": np.where((n_a > 0) & (n_c > 0), upper, np.inf),
            "z": np.where((n_a > 0) & (n_c > 0), diff * np.sqrt(information), 0.0),
            "srm_z": np.where(srm_var > 0, srm_dev / np.sqrt(np.maximum(srm_var, 1e-12)), 0.0),
            "srm_mismatch": srm.astype(float),
        }
        return action, new_traffic, reason, stats


@dataclass(frozen=True)
class SeedPolicy(_ScalarFrontDoor):
    """The original controller's rule, kept only to compare against (DESIGN §8 'the original')."""

    name: str = "seed"
    min_interactions: int = 20  # the seed's MIN_INTERACTIONS_THRESHOLD
    step: float = 0.1  # the seed's TRAFFIC_STEP

    reasons: tuple[str, ...] = (
        "fewer than MIN_INTERACTIONS_THRESHOLD interactions or a tie",
        "candidate average higher: promote step",
        "active average higher: rollback step",
        "candidate reached 100 %",
        "candidate reached 0 %",
    )

    def decide_arrays(self, s):
        n_a, n_c, traffic = s["n_a"], s["n_c"], s["traffic"]
        mean_a = s["sum_a"] / np.maximum(n_a, 1)
        mean_c = s["sum_c"] / np.maximum(n_c, 1)
        enough = (n_a >= self.min_interactions) & (n_c >= self.min_interactions)
        up = enough & (mean_c > mean_a)
        down = enough & (mean_c < mean_a)
        # Decimal-like rounding: 0.1 + 0.2 must be 0.3, or ten steps would never reach 1.0.
        stepped = np.round(traffic + np.where(up, self.step, 0.0) - np.where(down, self.step, 0.0), 6)
        action = np.where(up | down, Action.STEP, Action.HOLD).astype(np.int8)
        reason = np.where(up, 1, np.where(down, 2, 0)).astype(np.int8)
        promote = stepped >= 1.0
        rollback = stepped <= 0.0
        action[promote] = Action.PROMOTE
        reason[promote] = 3
        action[rollback] = Action.ROLLBACK
        reason[rollback] = 4
        new_traffic = np.clip(stepped, 0.0, 1.0)
        stats = {
            "active_n": n_a.astype(float),
            "active_mean": np.where(n_a > 0, mean_a, np.nan),
            "candidate_n": n_c.astype(float),
            "candidate_mean": np.where(n_c > 0, mean_c, np.nan),
            "difference": np.where((n_a > 0) & (n_c > 0), mean_c - mean_a, np.nan),
        }
        return action, new_traffic, reason, stats


_POLICIES = {"sequential": SequentialPolicy, "ours": SequentialPolicy, "seed": SeedPolicy}


def available_policies() -> list[str]:
    return sorted(_POLICIES)


def get_policy(name: str = "sequential", **settings) -> CanaryPolicy:
    """Policy by name (``sequential``/``ours`` or ``seed``); settings override its defaults."""
    try:
        factory = _POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown canary policy {name!r}; choose one of {', '.join(available_policies())}") from None
    return factory(**settings)

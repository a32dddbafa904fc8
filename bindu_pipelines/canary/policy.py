"""Canary decision policies: pure statistics, no Dagster, no database.

A policy looks at what the two arms have collected and says what to do with the candidate's
traffic: hold, step (ramp up), promote, roll back — and, after a promotion with a holdback,
revert (the old prompt comes back) or conclude (the holdback ends, the new prompt keeps 100 %).

Two policies exist:

``sequential`` (the default; alias ``ours``) — see docs/CANARY.md for the method and why.

* **Units, not events.** The router randomises keys (users, conversations); every statistic is
  computed from per-unit sums: units K, events N = Σn_i, score sum Y = Σy_i and the second moments
  Σn_i², Σn_i·y_i, Σy_i². An arm's mean is the ratio Y/N and its variance the cluster-robust
  (delta-method) one, Σ(y_i − m·n_i)² / N² · K/(K−1), so several correlated events of one user
  count as what they are: one randomised unit.
* **Strata.** A cluster is a unit's events in one arm within one traffic segment (ramp stage).
  The difference is estimated within each stratum and combined with fixed weights
  w_s = N_as·N_cs/(N_as+N_cs) (they depend on counts only, never on scores), so hours and days in
  which the split was different are never pooled into one mean.
* **Always valid.** The combined difference θ̂ with variance V = Σw_s²(V_as+V_cs)/(Σw_s)² is
  tracked with Robbins' normal-mixture confidence sequence
  θ̂ ± sqrt((I+ρ)(log((I+ρ)/ρ) + 2 log(1/a)))/I, I = 1/V, ρ = 1/mixture_sd², so checking every hour
  does not inflate error rates. Lower edge at a = 2·alpha_promote > 0 → better; upper edge at
  a = 2·alpha_harm < 0 → harm (roll back at once).
* **Ramp** 10 % → 25 % → 50 % (``ramp``): one stage up after ``min_stage_hours`` at the stage and
  once the current stratum holds ``min_events_per_arm`` mature events in each arm, unless the
  estimate trails by more than ``ramp_tolerance``.
* **Recent window.** Promotion also needs the current stratum's own estimate to be positive, so
  an effect that has faded by the last stage is not promoted on the strength of its early days.
* **Holdback.** A promotion with ``holdback_share`` > 0 keeps the old prompt as the candidate row
  at that share for ``holdback_hours``. Reverts at once when the old prompt is significantly
  better (level ``alpha_harm``), and at the end of the holdback when its estimate is above the
  new prompt's at all; otherwise concludes (the old prompt is deprecated).
* **Maximum duration** ``max_hours`` without a conclusion rolls the candidate back.
* **Sample ratio.** Each unit is counted once, in the segment and arm of its first task; the
  candidate's count is compared with the configured shares by an always-valid test (``alpha_srm``).
  A mismatch freezes everything but the clock.

Maturity (which tasks and feedback the numbers are computed on) is the data side's job: a task
counts once it is ``maturity_hours`` old, with the feedback written within ``maturity_hours`` of it
(``metrics`` in SQL, ``simulate`` in numpy). ``maturity_from_delays`` is the one rule deriving the
default window from observed delays (per arm and outcome).

``seed``
    The original rule, for comparison only: each arm needs MIN_INTERACTIONS_THRESHOLD = 20
    events, the higher average wins, and the candidate's traffic moves by ±0.1; it is
    promoted at 100 % and rolled back at 0 %. It counts events and ignores units and strata.

Every policy works on numpy arrays (one row per simulated run, one column per stratum) so the
simulator runs the very code the controller runs; ``decide`` is the scalar front door.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = [
    "Action",
    "ArmClusters",
    "ArmStats",
    "CanaryPolicy",
    "Decision",
    "ExperimentSnapshot",
    "SeedPolicy",
    "SequentialPolicy",
    "Stratum",
    "TUNABLE_SETTINGS",
    "available_policies",
    "get_policy",
    "maturity_from_delays",
    "mixture_radius",
]


class Action(enum.IntEnum):
    """What the controller does with the candidate (int values so arrays can carry them)."""

    HOLD = 0
    STEP = 1  # change the candidate's traffic to Decision.new_traffic
    PROMOTE = 2  # candidate becomes active (at 1 - holdback share; the old active is held back or deprecated)
    ROLLBACK = 3  # candidate goes to 0 % and is archived as rolled_back
    REVERT = 4  # holdback: the held-back old prompt is active again at 100 %, the new one rolled back
    CONCLUDE = 5  # holdback over: the old prompt is deprecated, the new active serves 100 %

    @property
    def label(self) -> str:
        return self.name.lower()


MOMENTS = ("units", "n", "y", "nn", "ny", "yy")


@dataclass(frozen=True)
class Stratum:
    """One arm's units in one traffic segment: count sums and second moments over units."""

    units: int = 0
    n: float = 0.0
    y: float = 0.0
    nn: float = 0.0
    ny: float = 0.0
    yy: float = 0.0

    def __post_init__(self) -> None:
        if min(self.units, self.n, self.y, self.nn, self.ny, self.yy) < 0:
            raise ValueError(f"stratum sums must be non-negative, got {self}")
        if self.y > self.n + 1e-9:
            raise ValueError(f"scores must lie in [0, 1]: y <= n, got {self}")

    @classmethod
    def from_units(cls, units: Iterable[Sequence[float]]) -> Stratum:
        """From one (events, score sum) pair per unit."""
        pairs = [(float(n), float(y)) for n, y in units]
        return cls(
            len(pairs), sum(n for n, _ in pairs), sum(y for _, y in pairs),
            sum(n * n for n, _ in pairs), sum(n * y for n, y in pairs), sum(y * y for _, y in pairs),
        )  # fmt: skip


@dataclass(frozen=True)
class ArmClusters:
    """One arm's strata, in segment order."""

    strata: tuple[Stratum, ...]

    @property
    def units(self) -> int:
        return sum(s.units for s in self.strata)

    @property
    def n(self) -> float:
        return sum(s.n for s in self.strata)

    @property
    def mean(self) -> float | None:
        n = self.n
        return sum(s.y for s in self.strata) / n if n else None


@dataclass(frozen=True)
class ArmStats:
    """Event-level sums (the seed API's view of an arm): every event its own unit."""

    n: int
    total: float
    total_sq: float

    def __post_init__(self) -> None:
        if self.n < 0 or self.total < 0 or self.total_sq < 0:
            raise ValueError(f"arm statistics must be non-negative, got {self}")
        if self.total > self.n + 1e-9 or self.total_sq > self.total + 1e-9:
            raise ValueError(f"scores must lie in [0, 1]: total <= n and total_sq <= total, got {self}")

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    def as_clusters(self) -> ArmClusters:
        return ArmClusters((Stratum(self.n, self.n, self.total, self.n, self.total, self.total_sq),))


@dataclass(frozen=True)
class ExperimentSnapshot:
    """Everything a policy may look at, as of one controller iteration.

    ``shares[s]`` is the candidate's configured share in segment s; ``first_units`` the units
    counted once each, (active, candidate) per segment, for the sample-ratio check.
    ``holdback`` says the candidate row is the old prompt held back after a promotion.
    """

    active: ArmClusters
    candidate: ArmClusters
    traffic: float
    hours_running: float  # since the experiment (or the holdback) started
    hours_at_traffic: float  # since the last traffic change
    shares: tuple[float, ...]
    first_units: tuple[tuple[int, int], ...] = ()
    holdback: bool = False

    def __post_init__(self) -> None:
        count = len(self.shares)
        if len(self.active.strata) != count or len(self.candidate.strata) != count:
            raise ValueError("each arm needs one stratum per traffic segment")
        if self.first_units and len(self.first_units) != count:
            raise ValueError("first_units needs one (active, candidate) pair per traffic segment")


@dataclass(frozen=True)
class Decision:
    action: Action
    new_traffic: float
    reason: str
    statistics: dict[str, float] = field(default_factory=dict)


class CanaryPolicy(Protocol):
    name: str
    reasons: tuple[str, ...]

    def decide_arrays(self, s: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Vectorised decision. ``s`` holds, with shape (runs, strata): ``{a,c}_{units,n,y,nn,ny,yy}``,
        ``shares``, ``srm_a``, ``srm_c``; with shape (runs,): ``traffic``, ``hours``,
        ``hours_at_traffic``, ``holdback`` (0/1) and optionally ``current_stratum`` (default: the last). Returns (actions, new traffic, reason codes, statistics)."""

    def decide(self, snapshot: ExperimentSnapshot) -> Decision: ...

    def settings(self) -> dict[str, Any]: ...


def mixture_radius(information: np.ndarray, alpha: float, rho: float) -> np.ndarray:
    """Half-width of Robbins' two-sided normal-mixture confidence sequence at level 1-alpha."""
    info = np.asarray(information, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        radius = np.sqrt((info + rho) * (np.log((info + rho) / rho) + 2.0 * math.log(1.0 / alpha))) / info
    return np.where(info > 0, radius, np.inf)


# The default maturity window: long enough that the slowest feedback has (nearly) all arrived —
# the 99.5th percentile of the observed delays of each group (arm × thumbs up/down), the largest
# of them — bounded so a few stray late rows cannot stall decisions for weeks. Per group, because
# a window that suits the pooled delays still cuts off a slow minority (one arm's thumbs-down),
# and what it cuts off biases the comparison.
MATURITY_QUANTILE = 0.995
MATURITY_BOUNDS_HOURS = (1.0, 120.0)
MATURITY_FALLBACK_HOURS = 24.0  # no feedback observed yet


def maturity_from_delays(delay_groups: Iterable[Sequence[float]]) -> float:
    """Hours a task must age before it counts: the largest per-group 99.5th percentile of the
    delays (hours), rounded up, within MATURITY_BOUNDS_HOURS; the fallback without data."""
    quantiles = [float(np.quantile(np.asarray(d, dtype=float), MATURITY_QUANTILE)) for d in delay_groups if len(d)]
    if not quantiles:
        return MATURITY_FALLBACK_HOURS
    low, high = MATURITY_BOUNDS_HOURS
    return float(min(max(math.ceil(max(quantiles)), low), high))


def _snapshot_arrays(snapshot: ExperimentSnapshot) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for prefix, arm in (("a", snapshot.active), ("c", snapshot.candidate)):
        for moment in MOMENTS:
            arrays[f"{prefix}_{moment}"] = np.asarray([[float(getattr(s, moment)) for s in arm.strata]])
    first = snapshot.first_units or tuple((s_a.units, s_c.units) for s_a, s_c in zip(snapshot.active.strata, snapshot.candidate.strata))
    arrays["srm_a"] = np.asarray([[float(a) for a, _ in first]])
    arrays["srm_c"] = np.asarray([[float(c) for _, c in first]])
    arrays["shares"] = np.asarray([list(map(float, snapshot.shares))])
    for key, value in (("traffic", snapshot.traffic), ("hours", snapshot.hours_running),
                       ("hours_at_traffic", snapshot.hours_at_traffic), ("holdback", float(snapshot.holdback))):  # fmt: skip
        arrays[key] = np.asarray([float(value)])
    return arrays


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
        return Decision(
            action=Action(int(actions[0])),
            new_traffic=float(new_traffic[0]),
            reason=self.reasons[int(reasons[0])],
            statistics={key: float(value[0]) for key, value in stats.items()},
        )

    def settings(self) -> dict[str, Any]:
        """The policy's tunable settings (recorded in every audit row and shown in status)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "reasons"}  # type: ignore[arg-type]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _arm_estimates(s: Mapping[str, np.ndarray], prefix: str, prior_units: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per stratum: events, ratio mean and cluster-robust variance of the mean (runs × strata).

    The delta-method variance is shrunk towards its bounded worst case (every unit's events
    identical 0/1 outcomes: 0.25·Σn²/N²) with ``prior_units`` pseudo-units, which keeps a stratum
    with a handful of units from looking precise by chance.
    """
    k, n, y = s[f"{prefix}_units"], s[f"{prefix}_n"], s[f"{prefix}_y"]
    nn, ny, yy = s[f"{prefix}_nn"], s[f"{prefix}_ny"], s[f"{prefix}_yy"]
    safe_n = np.maximum(n, 1e-12)
    mean = np.where(n > 0, y / safe_n, 0.0)
    residual = np.maximum(yy - 2 * mean * ny + mean**2 * nn, 0.0)
    small_sample = np.where(k > 1, k / np.maximum(k - 1, 1), 1.0)
    empirical = residual * small_sample / safe_n**2
    worst = 0.25 * nn / safe_n**2
    variance = (k * empirical + prior_units * worst) / np.maximum(k + prior_units, 1e-12)
    return n, mean, np.where(n > 0, variance, np.inf)


@dataclass(frozen=True)
class SequentialPolicy(_ScalarFrontDoor):
    """Unit-level, stratified, always-valid test with harm boundary, ramp, recent-window check,
    holdback, maximum duration and sample-ratio hold. Defaults meet issue 15's targets."""

    name: str = "sequential"
    alpha_promote: float = 0.025
    alpha_harm: float = 0.05
    mixture_sd: float = 0.05
    ramp: tuple[float, ...] = (0.10, 0.25, 0.50)
    min_stage_hours: float = 24.0
    ramp_tolerance: float = 0.05
    min_events_per_arm: int = 30
    prior_units: float = 10.0
    max_hours: float = 336.0
    recent_check: bool = True
    holdback_share: float = 0.10
    holdback_hours: float = 168.0
    maturity_hours: float | None = None  # None: derived from observed delays (maturity_from_delays)
    alpha_srm: float = 0.001
    srm_mixture_sd: float = 0.3
    min_srm_variance: float = 9.0

    reasons: tuple[str, ...] = (
        "collecting data",
        "candidate significantly better",
        "candidate significantly worse (harm boundary)",
        "ramp up: no harm detected",
        "maximum duration reached without a conclusion",
        "sample-ratio mismatch: holding",
        "too few mature feedback events",
        "significantly better, dwelling at this stage before promotion",
        "holding ramp: candidate behind by more than the ramp tolerance",
        "significantly better overall but not in the recent window: holding",
        "holdback: the old prompt is significantly better, reverting",
        "holdback over: the old prompt is ahead, reverting",
        "holdback over: the new prompt holds, concluding",
        "holdback: collecting data",
    )

    def __post_init__(self) -> None:
        for name in ("alpha_promote", "alpha_harm", "alpha_srm"):
            value = getattr(self, name)
            if not 0.0 < value < 0.5:
                raise ValueError(f"{name} must be in (0, 0.5), got {value}")
        ramp = tuple(self.ramp)
        if not ramp or list(ramp) != sorted(ramp) or not all(0 < r < 1 for r in ramp):
            raise ValueError(f"ramp must be increasing shares strictly between 0 and 1, got {self.ramp}")
        object.__setattr__(self, "ramp", tuple(float(r) for r in ramp))
        if self.mixture_sd <= 0 or self.srm_mixture_sd <= 0:
            raise ValueError("mixture standard deviations must be positive")
        for name in ("max_hours", "holdback_hours"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.min_stage_hours < 0:
            raise ValueError(f"min_stage_hours must be >= 0, got {self.min_stage_hours}")
        if not 0.0 <= self.holdback_share < 0.5:
            raise ValueError(f"holdback_share must be in [0, 0.5), got {self.holdback_share}")
        if self.maturity_hours is not None and not self.maturity_hours >= 0:
            raise ValueError(f"maturity_hours must be >= 0 (or unset: derived), got {self.maturity_hours}")

    def decide_arrays(self, s):
        n_a, mean_a, var_a = _arm_estimates(s, "a", self.prior_units)
        n_c, mean_c, var_c = _arm_estimates(s, "c", self.prior_units)
        both = (n_a > 0) & (n_c > 0)
        weights = np.where(both, n_a * n_c / np.maximum(n_a + n_c, 1e-12), 0.0)
        total_weight = weights.sum(axis=1)
        safe_w = np.maximum(total_weight, 1e-12)
        diff_s = np.where(both, mean_c - mean_a, 0.0)
        diff = (weights * diff_s).sum(axis=1) / safe_w
        variance = (weights**2 * np.where(both, var_a + var_c, 0.0)).sum(axis=1) / safe_w**2
        has_data = total_weight > 0
        information = np.where(has_data, 1.0 / np.maximum(variance, 1e-15), 0.0)
        rho = 1.0 / self.mixture_sd**2
        lower = np.where(has_data, diff - mixture_radius(information, 2 * self.alpha_promote, rho), -np.inf)
        upper = np.where(has_data, diff + mixture_radius(information, 2 * self.alpha_harm, rho), np.inf)

        # The recent window: the current segment's own estimate (the last one unless told otherwise).
        current = s.get("current_stratum")
        current = np.full(n_a.shape[0], n_a.shape[1] - 1) if current is None else current.astype(np.int64)
        pick = lambda values: np.take_along_axis(values, current[:, None], axis=1)[:, 0]  # noqa: E731
        recent = np.where(pick(both), pick(diff_s), np.nan)

        # Sample ratio over units counted once, at their first task.
        shares = s["shares"]
        routed = s["srm_a"] + s["srm_c"]
        srm_dev = (s["srm_c"] - routed * shares).sum(axis=1)
        srm_var = (routed * shares * (1 - shares)).sum(axis=1)
        srm_rho = 1.0 / self.srm_mixture_sd**2
        srm_bound = np.sqrt((srm_var + srm_rho) * (np.log((srm_var + srm_rho) / srm_rho) + 2 * math.log(1 / self.alpha_srm)))
        srm = (np.abs(srm_dev) > srm_bound) & (srm_var >= self.min_srm_variance)

        traffic, hours, dwell = s["traffic"], s["hours"], s["hours_at_traffic"]
        holdback = s["holdback"] > 0
        total_a, total_c = n_a.sum(axis=1), n_c.sum(axis=1)
        enough = (total_a >= self.min_events_per_arm) & (total_c >= self.min_events_per_arm)
        stage_enough = (pick(n_a) >= self.min_events_per_arm) & (pick(n_c) >= self.min_events_per_arm)

        ramp = np.asarray(self.ramp)
        stage_index = np.searchsorted(ramp, traffic + 1e-9, side="left")
        at_last_stage = stage_index >= len(ramp)
        next_stage = ramp[np.minimum(stage_index, len(ramp) - 1)]
        dwell_done = dwell >= self.min_stage_hours

        better = enough & (lower > 0)
        worse = enough & (upper < 0)
        recent_ok = (~np.asarray(self.recent_check)) | (stage_enough & (np.nan_to_num(recent, nan=-1.0) > 0))

        action = np.full(traffic.shape, Action.HOLD, dtype=np.int8)
        reason = np.zeros(traffic.shape, dtype=np.int8)
        new_traffic = traffic.astype(float).copy()

        # Experiment phase, lowest priority first; later assignments win.
        can_ramp = stage_enough & ~at_last_stage & dwell_done
        ramp_ok = can_ramp & (diff > -self.ramp_tolerance)
        reason[~enough] = 6
        reason[can_ramp & ~ramp_ok] = 8
        action[ramp_ok] = Action.STEP
        reason[ramp_ok] = 3
        new_traffic = np.where(ramp_ok, next_stage, new_traffic)
        dwelling = better & ~(at_last_stage & dwell_done) & ~ramp_ok
        reason[dwelling] = 7
        ready = better & at_last_stage & dwell_done
        reason[ready & ~recent_ok] = 9
        promote = ready & recent_ok
        action[promote] = Action.PROMOTE
        reason[promote] = 1
        new_traffic = np.where(promote, 1.0 - self.holdback_share, new_traffic)
        action[worse] = Action.ROLLBACK
        reason[worse] = 2
        new_traffic = np.where(worse, 0.0, new_traffic)
        action[srm] = Action.HOLD
        reason[srm] = 5
        new_traffic = np.where(srm, traffic, new_traffic)
        timeout = (hours >= self.max_hours) & (action != Action.PROMOTE)
        action[timeout] = Action.ROLLBACK
        reason[timeout] = np.where(worse[timeout], 2, 4)
        new_traffic = np.where(timeout, 0.0, new_traffic)

        # Holdback phase: the candidate row is the old prompt. "better" = the old one is better.
        # The held-back prompt must beat the promoted one significantly at the harm level to revert early.
        old_better_harm = enough & (diff - mixture_radius(information, 2 * self.alpha_harm, rho) > 0)
        ended = hours >= self.holdback_hours
        h_action = np.full(traffic.shape, Action.HOLD, dtype=np.int8)
        h_reason = np.full(traffic.shape, 13, dtype=np.int8)
        end_revert = ended & has_data & (diff > 0)
        h_action[ended] = Action.CONCLUDE
        h_reason[ended] = 12
        h_action[end_revert] = Action.REVERT
        h_reason[end_revert] = 11
        early = old_better_harm
        h_action[early] = Action.REVERT
        h_reason[early] = 10
        h_traffic = np.where(h_action == Action.REVERT, 1.0, np.where(h_action == Action.CONCLUDE, 0.0, traffic))
        action = np.where(holdback, h_action, action).astype(np.int8)
        reason = np.where(holdback, h_reason, reason).astype(np.int8)
        new_traffic = np.where(holdback, h_traffic, new_traffic)

        any_a, any_c = total_a > 0, total_c > 0
        stats = {
            "active_n": total_a.astype(float),
            "active_units": s["a_units"].sum(axis=1).astype(float),
            "active_mean": np.where(any_a, s["a_y"].sum(axis=1) / np.maximum(total_a, 1e-12), np.nan),
            "candidate_n": total_c.astype(float),
            "candidate_units": s["c_units"].sum(axis=1).astype(float),
            "candidate_mean": np.where(any_c, s["c_y"].sum(axis=1) / np.maximum(total_c, 1e-12), np.nan),
            "difference": np.where(has_data, diff, np.nan),
            "standard_error": np.where(has_data, np.sqrt(variance), np.nan),
            "lower_bound": lower,
            "upper_bound": upper,
            "recent_difference": recent,
            "z": np.where(has_data, diff * np.sqrt(information), 0.0),
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
        n_a, n_c, traffic = s["a_n"].sum(axis=1), s["c_n"].sum(axis=1), s["traffic"]
        mean_a = s["a_y"].sum(axis=1) / np.maximum(n_a, 1)
        mean_c = s["c_y"].sum(axis=1) / np.maximum(n_c, 1)
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

# What an operator may set per agent (run config, CLI flags, settings file), with its type.
TUNABLE_SETTINGS: dict[str, type] = {
    "ramp": tuple, "min_stage_hours": float, "alpha_promote": float, "alpha_harm": float,
    "max_hours": float, "maturity_hours": float, "holdback_share": float, "holdback_hours": float,
    "min_events_per_arm": int, "ramp_tolerance": float, "recent_check": bool,
}  # fmt: skip


def available_policies() -> list[str]:
    return sorted(_POLICIES)


def coerce_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Operator settings checked against TUNABLE_SETTINGS: one clear error for an unknown key or
    a value of the wrong kind."""
    result: dict[str, Any] = {}
    for key, value in settings.items():
        kind = TUNABLE_SETTINGS.get(key)
        if kind is None:
            raise ValueError(f"unknown canary setting {key!r}; settable: {', '.join(sorted(TUNABLE_SETTINGS))}")
        if value is None and key == "maturity_hours":
            result[key] = None
            continue
        try:
            if kind is tuple:
                parts = value.split(",") if isinstance(value, str) else list(value)
                result[key] = tuple(float(p) for p in parts)
            elif kind is bool:
                if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
                    result[key] = value.strip().lower() in ("true", "yes", "1")
                elif isinstance(value, bool):
                    result[key] = value
                else:
                    raise ValueError
            elif kind is int:
                if isinstance(value, bool) or float(value) != int(float(value)):
                    raise ValueError
                result[key] = int(float(value))
            else:
                if isinstance(value, bool):
                    raise ValueError
                result[key] = float(value)
        except (TypeError, ValueError):
            kind_name = {tuple: "comma-separated list of numbers", bool: "true/false", int: "whole number", float: "number"}[kind]
            raise ValueError(f"canary setting {key!r} must be a {kind_name}, got {value!r}") from None
    return result


def get_policy(name: str = "sequential", **settings) -> CanaryPolicy:
    """Policy by name (``sequential``/``ours`` or ``seed``); settings override its defaults."""
    try:
        factory = _POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown canary policy {name!r}; choose one of {', '.join(available_policies())}") from None
    if factory is SeedPolicy:
        return factory()
    return factory(**coerce_settings(settings))

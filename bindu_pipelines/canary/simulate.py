"""Simulated canary experiments on realistic traffic, decided by the controller's own policy code.

Traffic (per run, hour by hour; all runs advance together as numpy arrays):

* **Users.** Units (router keys) arrive as a Poisson process; each gives 1 + Poisson(m − 1) feedback
  events (``events_per_user`` = m; 1 = independent events). A user's personal rate is drawn from
  a Beta distribution with the arm's mean and intra-user correlation ``correlation`` (the ICC of
  its thumbs), so a user's events are correlated. A user's events fall in the hour it arrives
  (a conversation: Bindu's ``context_id``), so every unit lies in one traffic segment.
* **Delays.** Every feedback event arrives after an exponential delay whose mean may differ by arm
  and by outcome (``delay_hours`` and the four ``*_delay_hours`` overrides).
* **Maturity**, as the controller's SQL applies it: a task counts once it is W hours old, with the
  feedback given within W hours of it; W = the policy's ``maturity_hours`` or, unset,
  ``maturity_from_delays`` applied to a sample of the scenario's delays — the same rule the
  controller applies to the observed delays.
* **Time of day.** Both arms' rates swing by ``daily_swing`` (a sine over 24 h, starting at
  ``start_hour``).
* **Novelty.** With ``fade_to`` set, the new prompt's effect moves linearly from
  ``candidate_rate − active_rate`` to ``fade_to`` over ``fade_hours`` (then stays there).
* **Sample-ratio problem.** ``candidate_loss``: that fraction of the new prompt's thumbs-down
  silently disappears.
* **Holdback.** After a promotion with a holdback the old prompt keeps ``holdback_share`` of the
  traffic; the policy then reverts or concludes, exactly as the controller does.

The seed's rule sees every event at once (no delays, no maturity: which only flatters it) and
counts events. Results: ``promoted`` = the new prompt is active at the end (promotion concluded,
or still in its holdback), ``reverted`` = promoted then reverted by the holdback.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from bindu_pipelines.canary.policy import MOMENTS, Action, CanaryPolicy, SequentialPolicy, get_policy, maturity_from_delays

__all__ = ["Scenario", "SimulationResult", "scenario_maturity_hours", "simulate"]

BATCH_RUNS = 2500  # runs simulated together: bounds the memory of the maturity buffer


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
    events_per_user: float = 1.0
    correlation: float = 0.0
    delay_hours: float = 2.0
    active_up_delay_hours: float | None = None
    active_down_delay_hours: float | None = None
    candidate_up_delay_hours: float | None = None
    candidate_down_delay_hours: float | None = None
    daily_swing: float = 0.0
    start_hour: int = 0
    fade_to: float | None = None
    fade_hours: float = 120.0
    candidate_loss: float = 0.0

    def __post_init__(self) -> None:
        for name in ("active_rate", "candidate_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a mean score and must be within [0, 1], got {value}")
        if not (math.isfinite(self.feedback_per_hour) and self.feedback_per_hour > 0):
            raise ValueError(f"feedback_per_hour must be a positive number, got {self.feedback_per_hour}")
        if self.hours < 1 or self.runs < 1:
            raise ValueError("hours and runs must be at least 1")
        if self.scale not in ("thumbs", "rating"):
            raise ValueError(f"scale must be 'thumbs' or 'rating', got {self.scale!r}")
        if not 0.0 < self.initial_traffic < 1.0:
            raise ValueError(f"initial_traffic must be strictly between 0 and 1, got {self.initial_traffic}")
        if not self.events_per_user >= 1.0:
            raise ValueError(f"events_per_user is a mean of at least 1, got {self.events_per_user}")
        if not 0.0 <= self.correlation < 1.0:
            raise ValueError(f"correlation must be in [0, 1), got {self.correlation}")
        for name, value in self._delays().items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of hours, got {value}")
        if not 0.0 <= self.daily_swing < 0.5:
            raise ValueError(f"daily_swing must be in [0, 0.5), got {self.daily_swing}")
        if not self.fade_hours > 0:
            raise ValueError(f"fade_hours must be positive, got {self.fade_hours}")
        if self.fade_to is not None and not -1.0 < self.fade_to < 1.0:
            raise ValueError(f"fade_to is a difference of rates in (-1, 1), got {self.fade_to}")
        if not 0.0 <= self.candidate_loss <= 1.0:
            raise ValueError(f"candidate_loss must be in [0, 1], got {self.candidate_loss}")

    def _delays(self) -> dict[str, float]:
        default = self.delay_hours
        pick = lambda value: default if value is None else value  # noqa: E731
        return {
            "delay_hours": default,
            "active_up_delay_hours": pick(self.active_up_delay_hours),
            "active_down_delay_hours": pick(self.active_down_delay_hours),
            "candidate_up_delay_hours": pick(self.candidate_up_delay_hours),
            "candidate_down_delay_hours": pick(self.candidate_down_delay_hours),
        }

    def delay_means(self, arm_is_new: bool) -> tuple[float, float]:
        """(thumbs-up, thumbs-down) mean delays of the new prompt (candidate) or the old one."""
        d = self._delays()
        prefix = "candidate" if arm_is_new else "active"
        return d[f"{prefix}_up_delay_hours"], d[f"{prefix}_down_delay_hours"]


@dataclass(frozen=True)
class SimulationResult:
    policy: str
    scenario: Scenario
    maturity_hours: float
    promoted: float
    reverted: float
    rolled_back: float
    undecided: float
    median_events_to_decision: float | None
    median_hours_to_decision: float | None
    median_hours_to_promotion: float | None

    def to_dict(self) -> dict:
        result = asdict(self)
        result["scenario"] = asdict(self.scenario)
        return result


def scenario_maturity_hours(scenario: Scenario, policy: CanaryPolicy) -> float:
    """The maturity window the controller would use on this traffic (0 for the seed's rule)."""
    if not isinstance(policy, SequentialPolicy):
        return 0.0
    if policy.maturity_hours is not None:
        return float(policy.maturity_hours)
    rng = np.random.default_rng(12345)
    groups = []
    for is_new in (False, True):
        groups += [rng.exponential(mean, 20000) for mean in scenario.delay_means(is_new)]
    return maturity_from_delays(groups)


def simulate(scenario: Scenario, policy: CanaryPolicy | str = "sequential") -> SimulationResult:
    policy = get_policy(policy) if isinstance(policy, str) else policy
    maturity = scenario_maturity_hours(scenario, policy)
    rng = np.random.default_rng(scenario.seed)
    parts = []
    for start in range(0, scenario.runs, BATCH_RUNS):
        parts.append(_simulate_batch(scenario, policy, maturity, min(BATCH_RUNS, scenario.runs - start), rng))
    outcome = np.concatenate([p[0] for p in parts])
    hours = np.concatenate([p[1] for p in parts])
    events = np.concatenate([p[2] for p in parts])
    promoted_hour = np.concatenate([p[3] for p in parts])

    def median(values: np.ndarray) -> float | None:
        values = values[~np.isnan(values)]
        return float(np.median(values)) if values.size else None

    decided = outcome != UNDECIDED
    return SimulationResult(
        policy=policy.name,
        scenario=scenario,
        maturity_hours=maturity,
        promoted=float(np.isin(outcome, (PROMOTED, IN_HOLDBACK)).mean()),
        reverted=float((outcome == REVERTED).mean()),
        rolled_back=float((outcome == ROLLED_BACK).mean()),
        undecided=float((~decided).mean()),
        median_events_to_decision=median(events[decided]),
        median_hours_to_decision=median(hours[decided]),
        median_hours_to_promotion=median(promoted_hour),
    )


UNDECIDED, PROMOTED, IN_HOLDBACK, REVERTED, ROLLED_BACK = range(5)


def _simulate_batch(scenario: Scenario, policy: CanaryPolicy, maturity: float, runs: int, rng):
    sequential = isinstance(policy, SequentialPolicy)
    # Strata = the traffic segments: the starting share, then each ramp stage above it.
    stage_shares = np.asarray([scenario.initial_traffic, *(r for r in policy.ramp if r > scenario.initial_traffic + 1e-9)]) if sequential else np.asarray([scenario.initial_traffic])
    strata = len(stage_shares)
    lag = int(math.ceil(maturity))
    holdback_share = policy.holdback_share if sequential else 0.0
    fields = 2 * len(MOMENTS)
    acc = np.zeros((runs, strata, fields))
    buffer = np.zeros((lag + 1, runs, fields))
    buffer_stratum = np.zeros((lag + 1, runs), dtype=np.int64)
    buffer_phase = np.full((lag + 1, runs), -1, dtype=np.int64)
    phase = np.zeros(runs, dtype=np.int64)  # 0 experiment, 1 holdback; finished runs are frozen
    stratum = np.zeros(runs, dtype=np.int64)
    traffic = np.full(runs, scenario.initial_traffic)
    phase_start = np.zeros(runs)
    changed_at = np.zeros(runs)
    outcome = np.full(runs, UNDECIDED, dtype=np.int8)
    decided_hour = np.full(runs, np.nan)
    decided_events = np.full(runs, np.nan)
    promoted_hour = np.full(runs, np.nan)
    inclusion = {}
    for is_new in (False, True):
        up_mean, down_mean = scenario.delay_means(is_new)
        if sequential:
            inclusion[is_new] = (1 - math.exp(-maturity / up_mean), 1 - math.exp(-maturity / down_mean))
        else:
            inclusion[is_new] = (1.0, 1.0)
    users_per_hour = scenario.feedback_per_hour / scenario.events_per_user
    icc = scenario.correlation
    base_effect = scenario.candidate_rate - scenario.active_rate

    for hour in range(1, scenario.hours + 1):
        live = outcome == UNDECIDED
        holding = outcome == IN_HOLDBACK
        running = live | holding
        if not running.any():
            break
        # --- this hour's users and their feedback
        counts = rng.poisson(users_per_hour, size=runs) * running
        run_of = np.repeat(np.arange(runs), counts)
        size = run_of.size
        k = 1 + (rng.poisson(scenario.events_per_user - 1.0, size=size) if scenario.events_per_user > 1 else np.zeros(size, dtype=np.int64))
        to_candidate_row = rng.random(size) < traffic[run_of]
        # In the experiment the candidate row is the new prompt; in the holdback it is the old one.
        is_new = to_candidate_row ^ (phase[run_of] == 1)
        swing = scenario.daily_swing * math.sin(2 * math.pi * ((hour - 1 + scenario.start_hour) % 24) / 24)
        effect = base_effect
        if scenario.fade_to is not None:
            effect = base_effect + (scenario.fade_to - base_effect) * min((hour - 1) / scenario.fade_hours, 1.0)
        mean_old = min(max(scenario.active_rate + swing, 0.001), 0.999)
        mean_new = min(max(scenario.active_rate + effect + swing, 0.001), 0.999)
        mu = np.where(is_new, mean_new, mean_old)
        if icc > 0:
            strength = 1.0 / icc - 1.0
            p = rng.beta(mu * strength, (1 - mu) * strength)
        else:
            p = mu
        q_up = np.where(is_new, inclusion[True][0], inclusion[False][0])
        q_down = np.where(is_new, inclusion[True][1], inclusion[False][1])
        if scenario.scale == "thumbs":
            ups = rng.binomial(k, p)
            downs = k - ups
            if scenario.candidate_loss:
                downs = downs - rng.binomial(downs, scenario.candidate_loss * is_new)
            ups_in, downs_in = rng.binomial(ups, q_up), rng.binomial(downs, q_down)
            n = ups_in + downs_in
            y = ups_in.astype(float)
        else:  # ratings 1..5 as (r-1)/4: a Binomial(4, p) per event, mean p
            n = rng.binomial(k, q_up)
            y = rng.binomial(4 * n, p) / 4.0
        n = n.astype(float)
        unit = (n > 0).astype(float)
        key = run_of * 2 + to_candidate_row
        contribution = np.zeros((runs, fields))
        for index, values in enumerate((unit, n, y, n * n, n * y, y * y)):
            summed = np.bincount(key, weights=values, minlength=2 * runs).reshape(runs, 2)
            contribution[:, index] = summed[:, 0]
            contribution[:, len(MOMENTS) + index] = summed[:, 1]
        slot = hour % (lag + 1)
        buffer[slot] = contribution
        buffer_stratum[slot] = stratum
        buffer_phase[slot] = np.where(running, phase, -1)
        # --- the tasks that are mature now (lag hours old) join the accumulators
        ready = (hour - lag) % (lag + 1)
        joins = (buffer_phase[ready] == phase) & running
        rows = np.nonzero(joins)[0]
        acc[rows, buffer_stratum[ready, rows]] += buffer[ready, rows]
        buffer_phase[ready] = -1

        # --- the policy decides for every run
        arrays = {f"a_{m}": acc[:, :, i] for i, m in enumerate(MOMENTS)}
        arrays.update({f"c_{m}": acc[:, :, len(MOMENTS) + i] for i, m in enumerate(MOMENTS)})
        # The holdback phase has one segment at the holdback share.
        shares = np.where(phase[:, None] == 1, traffic[:, None], stage_shares[None, :])
        arrays.update(
            shares=shares, srm_a=arrays["a_units"], srm_c=arrays["c_units"], traffic=traffic,
            hours=hour - phase_start, hours_at_traffic=hour - changed_at, holdback=phase.astype(float), current_stratum=stratum,
        )  # fmt: skip
        actions, new_traffic, _, _ = policy.decide_arrays(arrays)
        total_events = acc[:, :, 1].sum(axis=1) + acc[:, :, len(MOMENTS) + 1].sum(axis=1)

        step = live & (actions == Action.STEP) & (new_traffic != traffic)
        traffic = np.where(step, new_traffic, traffic)
        changed_at = np.where(step, hour, changed_at)
        if sequential:
            stratum = np.where(step, np.minimum(stratum + 1, strata - 1), stratum)

        rolled = live & (actions == Action.ROLLBACK)
        promote = live & (actions == Action.PROMOTE)
        finish_now = rolled | (promote & (holdback_share <= 0))
        outcome[rolled] = ROLLED_BACK
        outcome[promote & (holdback_share <= 0)] = PROMOTED
        decided_hour[finish_now | promote] = hour
        decided_events[finish_now | promote] = total_events[finish_now | promote]
        promoted_hour[promote] = hour
        to_holdback = promote & (holdback_share > 0)
        if to_holdback.any():
            outcome[to_holdback] = IN_HOLDBACK
            phase[to_holdback] = 1
            phase_start[to_holdback] = hour
            changed_at[to_holdback] = hour
            traffic[to_holdback] = holdback_share
            stratum[to_holdback] = 0
            acc[to_holdback] = 0.0
        revert = holding & (actions == Action.REVERT)
        conclude = holding & (actions == Action.CONCLUDE)
        outcome[revert] = REVERTED
        outcome[conclude] = PROMOTED
    return outcome, decided_hour, decided_events, promoted_hour

"""One canary controller iteration: read the experiment, aggregate feedback, decide, apply.

The decision is applied through the prompt store's compare-and-set transitions, naming the
candidate and the traffic it was decided on; if another controller run changed the experiment
in between, the store refuses (``StaleTransition``) and this run reports that instead of applying
a second decision. Every applied change carries the policy's statistics into the audit row.

``as_of`` fixes "now" (metrics up to that moment, audit rows stamped with it), which is what lets
tests and back-fills run the controller hour by simulated hour.

The seed's API (``run_canary_controller``, ``compare_metrics``, ``promote_step``,
``rollback_step``, ``ensure_system_stable``) is at the bottom, with the agent it acts for added.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import sqlalchemy as sa

from bindu_pipelines.canary.metrics import ExperimentMetrics, TrafficSegment, experiment_metrics, feedback_delays
from bindu_pipelines.canary.policy import (
    Action, ArmStats, ArmClusters, CanaryPolicy, Decision, ExperimentSnapshot, SequentialPolicy, get_policy, maturity_from_delays,
)  # fmt: skip
from bindu_pipelines.canary.settings import resolve_policy
from bindu_pipelines.errors import DatabaseUnavailable, UnknownAgent
from bindu_runtime import NoExperiment, Prompt, PromptStore, StaleTransition, make_engine
from bindu_runtime.store import as_traffic, as_utc

__all__ = [
    "ControllerOutcome",
    "DatabaseUnavailable",
    "UnknownAgent",
    "compare_metrics",
    "ensure_system_stable",
    "experiment_state",
    "promote_step",
    "rollback_step",
    "run_canary_controller",
    "run_controller_once",
]

Status = Literal["applied", "held", "no_experiment", "stale"]


@dataclass(frozen=True)
class ControllerOutcome:
    agent_id: str
    status: Status
    message: str
    policy: str | None = None
    decision: Decision | None = None
    active_id: str | None = None
    candidate_id: str | None = None
    experiment_id: str | None = None
    phase: str | None = None
    traffic_before: float | None = None
    traffic_after: float | None = None
    hours_running: float | None = None
    as_of: datetime | None = None
    statistics: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "status": self.status,
            "message": self.message,
            "policy": self.policy,
            "action": self.decision.action.label if self.decision else None,
            "reason": self.decision.reason if self.decision else None,
            "active_id": self.active_id,
            "candidate_id": self.candidate_id,
            "experiment_id": self.experiment_id,
            "phase": self.phase,
            "traffic_before": self.traffic_before,
            "traffic_after": self.traffic_after,
            "hours_running": self.hours_running,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "statistics": dict(self.statistics),
        }


def _now(as_of: datetime | None) -> datetime:
    if as_of is None:
        return datetime.now(UTC)
    return as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)


def _finite(statistics: Mapping[str, float]) -> dict[str, float | None]:
    """JSON has no NaN or infinity: an undefined statistic is stored as null."""
    return {key: (value if math.isfinite(value) else None) for key, value in statistics.items()}


HOLDBACK_EVENT = "holdback_start"


def traffic_segments(store: PromptStore, agent_id: str, candidate: Prompt, as_of: datetime) -> tuple[list[TrafficSegment], bool]:
    """The candidate's configured shares over time, from the audit trail (start, then each step),
    and whether the candidate row is a held-back old prompt (then one segment: the holdback)."""
    events = [
        event for event in store.list_events(agent_id)
        if event["prompt_id"] == candidate.id and as_utc(event["created_at"]) <= as_of
    ]  # fmt: skip
    holdbacks = [event for event in events if event["event"] == HOLDBACK_EVENT]
    if holdbacks:
        last = holdbacks[-1]
        return [TrafficSegment(as_utc(last["created_at"]), float(last["to_traffic"]))], True
    segments = [
        TrafficSegment(as_utc(event["created_at"]), float(event["to_traffic"]))
        for event in events
        if event["event"] in ("start_experiment", "step") and event["to_traffic"] is not None
    ]
    if not segments:  # a candidate inserted without its start event: treat its creation as the start
        segments = [TrafficSegment(candidate.created_at, float(candidate.traffic))]
    return segments, False


def _phase(snapshot: ExperimentSnapshot) -> str:
    return "holdback" if snapshot.holdback else "experiment"


@dataclass(frozen=True)
class _Experiment:
    active: Prompt
    candidate: Prompt
    metrics: ExperimentMetrics
    snapshot: ExperimentSnapshot


def maturity_hours_for(engine: sa.Engine, agent_id: str, policy: CanaryPolicy, prompt_ids: list[str], as_of: datetime) -> float:
    """The policy's maturity window, or the one derived from the observed delays (the seed's
    rule uses every feedback row as it arrives: 0)."""
    if not isinstance(policy, SequentialPolicy):
        return 0.0
    if policy.maturity_hours is not None:
        return float(policy.maturity_hours)
    return maturity_from_delays(feedback_delays(engine, prompt_ids=prompt_ids, as_of=as_of, agent_id=agent_id))


def _read_experiment(store: PromptStore, agent_id: str, as_of: datetime, policy: CanaryPolicy) -> _Experiment | str:
    """The running experiment with its metrics, or the message saying why there is none."""
    state = store.serving_state(agent_id)
    if state.active is None:
        if not store.list_prompts(agent_id):
            raise UnknownAgent(f"unknown agent {agent_id!r}: no prompts in the database (has its router bootstrapped?)")
        return f"agent {agent_id!r} has no active prompt, so no experiment to decide on"
    if state.candidate is None:
        return f"agent {agent_id!r} has no running experiment (active prompt {state.active.id} serves 100 %): nothing to decide"
    segments, holdback = traffic_segments(store, agent_id, state.candidate, as_of)
    maturity = maturity_hours_for(store.engine, agent_id, policy, [state.active.id, state.candidate.id], as_of)
    metrics = experiment_metrics(
        store.engine, active_id=state.active.id, candidate_id=state.candidate.id, segments=segments, as_of=as_of,
        agent_id=agent_id, maturity_hours=maturity,
    )  # fmt: skip
    hours = lambda since: max((as_of - since).total_seconds() / 3600.0, 0.0)  # noqa: E731
    snapshot = ExperimentSnapshot(
        active=metrics.active.clusters,
        candidate=metrics.candidate.clusters,
        traffic=float(state.candidate.traffic),
        hours_running=hours(segments[0].start),
        hours_at_traffic=hours(segments[-1].start),
        shares=tuple(segment.share for segment in segments),
        first_units=metrics.first_units,
        holdback=holdback,
    )
    return _Experiment(state.active, state.candidate, metrics, snapshot)


def run_controller_once(
    engine: sa.Engine,
    agent_id: str,
    *,
    policy: CanaryPolicy | str = "sequential",
    as_of: datetime | None = None,
    settings: Mapping[str, Any] | None = None,
) -> ControllerOutcome:
    """One iteration for one agent. Raises UnknownAgent or DatabaseUnavailable; every other
    situation (no experiment, a concurrent run got there first) is an outcome with a message.
    A policy name is resolved with the agent's settings file and then ``settings`` (canary.settings)."""
    policy = resolve_policy(policy, agent_id, settings)
    now = _now(as_of)
    store = PromptStore(engine, clock=lambda: now)
    try:
        experiment = _read_experiment(store, agent_id, now, policy)
        if isinstance(experiment, str):
            return ControllerOutcome(agent_id, "no_experiment", experiment, policy=policy.name, as_of=now)
        decision = policy.decide(experiment.snapshot)
        before = float(experiment.candidate.traffic)
        statistics = _finite(decision.statistics)
        common = dict(
            agent_id=agent_id, policy=policy.name, decision=decision, active_id=experiment.active.id,
            candidate_id=experiment.candidate.id, traffic_before=before,
            experiment_id=experiment.active.id if experiment.snapshot.holdback else experiment.candidate.id,
            phase=_phase(experiment.snapshot),
            hours_running=experiment.snapshot.hours_running, as_of=now, statistics=statistics,
        )  # fmt: skip
        if decision.action is Action.HOLD:
            return ControllerOutcome(status="held", traffic_after=before, message=f"hold at {before:.0%}: {decision.reason}", **common)
        audit = {
            "controller": "canary",
            "policy": policy.name,
            "action": decision.action.label,
            "reason": decision.reason,
            "as_of": now.isoformat(),
            "hours_running": round(experiment.snapshot.hours_running, 3),
            "phase": common["phase"],
            "maturity_hours": experiment.metrics.maturity_hours,
            "settings": policy.settings(),
            **statistics,
        }
        try:
            after = _apply(store, agent_id, experiment.candidate, decision, audit)
        except (StaleTransition, NoExperiment) as exc:
            return ControllerOutcome(
                status="stale", traffic_after=None,
                message=f"not applied: another controller run changed the experiment first ({exc})", **common,
            )  # fmt: skip
        return ControllerOutcome(
            status="applied", traffic_after=after,
            message=f"{decision.action.label}: candidate traffic {before:.0%} -> {after:.0%} ({decision.reason})", **common,
        )  # fmt: skip
    except sa.exc.DBAPIError as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None and str(exc.orig).strip() else type(exc).__name__
        raise DatabaseUnavailable(
            f"agent {agent_id!r}: the database failed during the canary run ({detail}); no partial change was written"
        ) from exc


def _apply(store: PromptStore, agent_id: str, candidate: Prompt, decision: Decision, audit: dict) -> float:
    expected = candidate.traffic
    if decision.action in (Action.REVERT, Action.CONCLUDE):
        revert = decision.action is Action.REVERT
        store.end_holdback(agent_id, held_back_id=candidate.id, revert=revert, expected_traffic=expected, statistics=audit)
        return 1.0 if revert else 0.0
    if decision.action is Action.PROMOTE and decision.new_traffic < 1.0:
        share = as_traffic(1.0 - decision.new_traffic)
        store.promote_with_holdback(agent_id, candidate_id=candidate.id, holdback_share=share, expected_traffic=expected, statistics=audit)
        return float(1 - share)
    if decision.action is Action.PROMOTE:
        store.promote(agent_id, candidate_id=candidate.id, expected_traffic=expected, statistics=audit)
        return 1.0
    if decision.action is Action.ROLLBACK:
        store.rollback(agent_id, candidate_id=candidate.id, expected_traffic=expected, statistics=audit)
        return 0.0
    new = as_traffic(decision.new_traffic)
    store.step_traffic(agent_id, candidate_id=candidate.id, expected_traffic=expected, new_traffic=new, statistics=audit)
    return float(new)


def experiment_state(
    engine: sa.Engine, agent_id: str, *, policy: CanaryPolicy | str = "sequential", as_of: datetime | None = None,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The live experiment for ``bindu-dspy status``: both arms' metrics, the statistic, hours
    running and what the controller would do now (nothing is written). None without an experiment."""
    policy = resolve_policy(policy, agent_id, settings)
    now = _now(as_of)
    store = PromptStore(engine, clock=lambda: now)
    experiment = _read_experiment(store, agent_id, now, policy)
    if isinstance(experiment, str):
        return None
    decision = policy.decide(experiment.snapshot)

    def arm(prompt: Prompt, clusters: ArmClusters) -> dict[str, Any]:
        return {
            "prompt_id": prompt.id, "traffic": float(prompt.traffic), "feedback_tasks": int(clusters.n),
            "units": clusters.units, "mean_score": clusters.mean,
        }  # fmt: skip

    return {
        "policy": policy.name,
        "started_at": experiment.metrics.segments[0].start.isoformat(),
        "hours_running": round(experiment.snapshot.hours_running, 2),
        "hours_at_current_traffic": round(experiment.snapshot.hours_at_traffic, 2),
        "phase": _phase(experiment.snapshot),
        "maturity_hours": experiment.metrics.maturity_hours,
        "settings": policy.settings(),
        "active": arm(experiment.active, experiment.snapshot.active),
        "candidate": arm(experiment.candidate, experiment.snapshot.candidate),
        "statistics": _finite(decision.statistics),
        "next_action": decision.action.label,
        "next_traffic": decision.new_traffic,
        "reason": decision.reason,
    }


# ----------------------------------------------------------------------------- seed API


def _engine_for(engine: sa.Engine | None, database_url: str | None) -> tuple[sa.Engine, bool]:
    return (engine, False) if engine is not None else (make_engine(database_url), True)


async def run_canary_controller(
    agent_id: str | None = None,
    *,
    engine: sa.Engine | None = None,
    database_url: str | None = None,
    policy: CanaryPolicy | str = "sequential",
    as_of: datetime | None = None,
) -> list[ControllerOutcome]:
    """The seed's main control loop, one iteration: for ``agent_id``, or every agent with a
    running experiment when it is None. Returns what happened for each agent."""

    def work() -> list[ControllerOutcome]:
        db, owned = _engine_for(engine, database_url)
        try:
            store = PromptStore(db)
            agents = [agent_id] if agent_id is not None else [a for a in store.list_agents() if store.get_candidate_prompt(a)]
            return [run_controller_once(db, agent, policy=policy, as_of=as_of) for agent in agents]
        finally:
            if owned:
                db.dispose()

    return await asyncio.to_thread(work)


def compare_metrics(
    active: Mapping[str, Any], candidate: Mapping[str, Any], *, policy: str = "sequential"
) -> Literal["active", "candidate", None]:
    """The seed's comparison on its metric dicts (``num_interactions``, ``average_feedback_score``).

    With the default policy the winner is the arm the always-valid test declares significantly
    better (variance bounded by m(1-m), the largest a 0..1 score with mean m can have); ``None``
    while inconclusive. ``policy="seed"`` gives the original "higher average wins" rule.
    """

    def stats(arm: Mapping[str, Any]) -> ArmStats:
        n = int(arm.get("num_interactions") or 0)
        mean = arm.get("average_feedback_score")
        if n and mean is None:
            raise ValueError("an arm with interactions needs its average_feedback_score")
        mean = float(mean or 0.0)
        if not 0.0 <= mean <= 1.0:
            raise ValueError(f"average_feedback_score must be within 0..1, got {mean}")
        return ArmStats(n, n * mean, n * mean)  # total_sq = total: the Bernoulli (largest) variance

    a, c = stats(active), stats(candidate)
    chosen = get_policy(policy)
    if chosen.name == "seed":
        if min(a.n, c.n) < chosen.min_interactions or a.mean == c.mean:
            return None
        return "candidate" if c.mean > a.mean else "active"
    decision = chosen.decide(
        ExperimentSnapshot(a.as_clusters(), c.as_clusters(), traffic=0.5, hours_running=0.0, hours_at_traffic=0.0, shares=(0.5,))
    )
    if decision.statistics["lower_bound"] > 0 and min(a.n, c.n) >= chosen.min_events_per_arm:
        return "candidate"
    if decision.statistics["upper_bound"] < 0 and min(a.n, c.n) >= chosen.min_events_per_arm:
        return "active"
    return None


def _prompt_fields(prompt: Prompt | Mapping[str, Any]) -> tuple[str, str, Decimal]:
    if isinstance(prompt, Prompt):
        return prompt.agent_id, prompt.id, prompt.traffic
    return prompt.get("agent_id"), prompt["id"], as_traffic(prompt["traffic"])


async def _step(active, candidate, delta: Decimal, agent_id, engine, database_url, statistics) -> float:
    prompt_agent, candidate_id, traffic = _prompt_fields(candidate)
    agent = agent_id or prompt_agent
    if not agent:
        raise ValueError("agent_id is required (the candidate does not say which agent it belongs to)")
    new = min(max(traffic + delta, Decimal(0)), Decimal(1))

    def work() -> float:
        db, owned = _engine_for(engine, database_url)
        try:
            PromptStore(db).step_traffic(
                agent, candidate_id=candidate_id, expected_traffic=traffic, new_traffic=new,
                statistics={"controller": "seed-api", **(statistics or {})},
            )  # fmt: skip
            return float(new)
        finally:
            if owned:
                db.dispose()

    return await asyncio.to_thread(work)


async def promote_step(
    active: Prompt | Mapping[str, Any], candidate: Prompt | Mapping[str, Any], *, agent_id: str | None = None,
    engine: sa.Engine | None = None, database_url: str | None = None, step: Decimal | str = "0.1",
    statistics: Mapping[str, Any] | None = None,
) -> float:  # fmt: skip
    """The seed's +10 % step for the candidate (compare-and-set; 100 % promotes it). Returns the new share."""
    return await _step(active, candidate, Decimal(str(step)), agent_id, engine, database_url, statistics)


async def rollback_step(
    active: Prompt | Mapping[str, Any], candidate: Prompt | Mapping[str, Any], *, agent_id: str | None = None,
    engine: sa.Engine | None = None, database_url: str | None = None, step: Decimal | str = "0.1",
    statistics: Mapping[str, Any] | None = None,
) -> float:  # fmt: skip
    """The seed's -10 % step for the candidate (compare-and-set; 0 % rolls it back). Returns the new share."""
    return await _step(active, candidate, -Decimal(str(step)), agent_id, engine, database_url, statistics)


async def ensure_system_stable(
    agent_id: str | None = None, *, engine: sa.Engine | None = None, database_url: str | None = None
) -> None:
    """The seed's guard: RuntimeError if a candidate (a running experiment) exists for the agent,
    or for any agent when ``agent_id`` is None."""

    def work() -> None:
        db, owned = _engine_for(engine, database_url)
        try:
            store = PromptStore(db)
            agents = [agent_id] if agent_id is not None else store.list_agents()
            for agent in agents:
                candidate = store.get_candidate_prompt(agent)
                if candidate is not None:
                    raise RuntimeError(
                        f"agent {agent!r} has an experiment running (candidate {candidate.id} at {candidate.traffic} traffic)"
                    )
        finally:
            if owned:
                db.dispose()

    await asyncio.to_thread(work)

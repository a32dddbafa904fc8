"""Canary rollout: decide from live feedback whether a candidate prompt is promoted or rolled back.

``policy`` (pure statistics), ``simulate`` (the policy on simulated traffic), ``metrics`` (the
per-arm SQL aggregate), ``controller`` (one iteration, and the seed's API), and the Dagster layer
in ``assets``, ``sensors`` and ``definitions``.
"""

from bindu_pipelines.canary.controller import (
    ControllerOutcome,
    DatabaseUnavailable,
    compare_metrics,
    ensure_system_stable,
    experiment_state,
    promote_step,
    rollback_step,
    run_canary_controller,
    run_controller_once,
)
from bindu_pipelines.canary.policy import Action, Decision, SeedPolicy, SequentialPolicy, get_policy

__all__ = [
    "Action",
    "ControllerOutcome",
    "DatabaseUnavailable",
    "Decision",
    "SeedPolicy",
    "SequentialPolicy",
    "compare_metrics",
    "ensure_system_stable",
    "experiment_state",
    "get_policy",
    "promote_step",
    "rollback_step",
    "run_canary_controller",
    "run_controller_once",
]

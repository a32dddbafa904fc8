"""Canary rollout: decide from live feedback whether a candidate prompt is promoted or rolled back.

``policy`` (pure statistics), ``simulate`` (the policy on simulated traffic), ``metrics`` (the
per-arm SQL aggregate), ``controller`` (one iteration, and the seed's API), and the Dagster layer
in ``assets``, ``sensors`` and ``definitions``.

The names below are loaded on first use (PEP 562), so importing ``bindu_pipelines.canary.policy``
loads the policy alone, not the controller and its database layer.
"""

from bindu_pipelines.lazy import lazy_exports

_EXPORTS = {
    "ControllerOutcome": "controller",
    "DatabaseUnavailable": "controller",
    "compare_metrics": "controller",
    "ensure_system_stable": "controller",
    "experiment_state": "controller",
    "promote_step": "controller",
    "rollback_step": "controller",
    "run_canary_controller": "controller",
    "run_controller_once": "controller",
    "Action": "policy",
    "Decision": "policy",
    "SeedPolicy": "policy",
    "SequentialPolicy": "policy",
    "get_policy": "policy",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)

"""Operator-tunable canary policy per agent, without editing code.

Three layers, later ones win: the policy's defaults; the agent-level settings file named by
``BINDU_CANARY_SETTINGS`` (TOML or JSON; a ``"*"`` section for every agent, then a section per
agent id); the run's own settings (Dagster run config, ``bindu-dspy canary`` flags). Keys are
``policy.TUNABLE_SETTINGS`` (ramp, min_stage_hours, alpha_promote, alpha_harm, max_hours,
maturity_hours, holdback_share, holdback_hours, ...). A bad file or value is one clear error.

    # canary.toml
    ["*"]
    holdback_hours = 120
    ["support-bot"]
    ramp = [0.05, 0.2, 0.5]
    min_stage_hours = 12
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bindu_pipelines.canary.policy import CanaryPolicy, coerce_settings, get_policy
from bindu_pipelines.errors import CanarySettingsError

__all__ = ["SETTINGS_ENV", "agent_settings", "canary_settings", "resolve_policy"]

SETTINGS_ENV = "BINDU_CANARY_SETTINGS"


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CanarySettingsError(f"{SETTINGS_ENV}={path}: cannot read the canary settings file ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CanarySettingsError(f"{SETTINGS_ENV}={path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'} ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise CanarySettingsError(f"{SETTINGS_ENV}={path}: expected sections per agent id (and '*'), each a table of settings")
    return data


def agent_settings(agent_id: str, *, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The file's settings for ``agent_id`` ('*' first, then its own section), checked."""
    path = (environ if environ is not None else os.environ).get(SETTINGS_ENV, "").strip()
    if not path:
        return {}
    data = _read_file(Path(path))
    merged = {**data.get("*", {}), **data.get(agent_id, {})}
    try:
        return coerce_settings(merged)
    except ValueError as exc:
        raise CanarySettingsError(f"{SETTINGS_ENV}={path} [{agent_id}]: {exc}") from None


def resolve_policy(
    policy: CanaryPolicy | str, agent_id: str, overrides: Mapping[str, Any] | None = None, *,
    environ: Mapping[str, str] | None = None,
) -> CanaryPolicy:  # fmt: skip
    """The policy the controller uses for ``agent_id``: a given policy object as it is; a name
    with the file's settings and then ``overrides`` applied."""
    if not isinstance(policy, str):
        return policy
    if policy == "seed":
        return get_policy("seed")
    settings = {**agent_settings(agent_id, environ=environ), **coerce_settings(dict(overrides or {}))}
    try:
        return get_policy(policy, **settings)
    except ValueError as exc:
        raise CanarySettingsError(f"agent {agent_id!r}: {exc}") from None


def canary_settings(agent_id: str) -> dict[str, Any]:
    """The settings the controller runs ``agent_id`` with by default (for ``bindu-dspy status``)."""
    return resolve_policy("sequential", agent_id).settings()

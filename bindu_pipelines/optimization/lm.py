"""The language model a training run uses: the ``LanguageModel`` resource and its builder.

No silent fallback: the offline demo model ``bindu/offline-demo`` is used only when it is named
(``BINDU_LM=bindu/offline-demo``, or ``model=`` on the resource, which is what the demo passes);
without a model, ``require_configured`` raises ``LanguageModelNotConfigured`` with the one line
saying what to set. Metering lives in ``metering`` (re-exported here for callers).
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from bindu_pipelines.errors import NO_LANGUAGE_MODEL, LanguageModelNotConfigured
from bindu_pipelines.names import LANGUAGE_MODEL, OFFLINE_MODEL

from .metering import Budget, BudgetExhausted, MeteredLM, one_line
from .offline_lm import OfflineLM
from .settings import LanguageModelSettings

__all__ = [
    "Budget",
    "BudgetExhausted",
    "LanguageModel",
    "MeteredLM",
    "build_lm",
    "is_offline",
    "offline_demo_resources_config",
    "one_line",
    "require_configured",
]


def is_offline(model: str | None) -> bool:
    """Whether ``model`` names the offline demo model (an unset model is *not* offline: it is missing)."""
    return model == OFFLINE_MODEL


def require_configured(settings: LanguageModelSettings) -> LanguageModelSettings:
    """The settings, or ``LanguageModelNotConfigured`` when no model is named."""
    if settings.model is None:
        raise LanguageModelNotConfigured(NO_LANGUAGE_MODEL)
    return settings


def build_lm(settings: LanguageModelSettings, budget: Budget, *, temperature: float | None = None) -> MeteredLM:
    """The run's LM: the configured LiteLLM model, or the offline demo model when it is named."""
    require_configured(settings)
    if is_offline(settings.model):
        return OfflineLM(budget=budget, temperature=settings.temperature if temperature is None else temperature)
    kwargs: dict[str, Any] = {
        "temperature": settings.temperature if temperature is None else temperature,
        "max_tokens": settings.max_tokens,
        "timeout": settings.timeout,
        "num_retries": settings.retries,
        "engine": settings.engine,
        "cache": False,
    }
    if settings.api_base:
        kwargs["api_base"] = settings.api_base
    if settings.api_key is not None:
        kwargs["api_key"] = settings.api_key.get_secret_value()
    return MeteredLM(settings.model, budget=budget, **kwargs)


def offline_demo_resources_config() -> dict[str, Any]:
    """Run-config ``resources`` block that names the offline demo model for one run: the demo's
    explicit way in (no environment change, nothing global)."""
    return {LANGUAGE_MODEL: {"config": {"model": OFFLINE_MODEL}}}


class LanguageModel(dg.ConfigurableResource):
    """The LM used for training, configured like ``BINDU_LM*`` (fields left unset read the env).

    The API key is read from ``BINDU_LM_API_KEY`` only, never from run config, so it never
    appears in the Dagster UI, run storage or logs.
    """

    model: str | None = None
    api_base: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    retries: int | None = None
    budget_calls: int | None = None
    budget_tokens: int | None = None
    budget_usd: float | None = None
    num_threads: int | None = None

    def settings(self) -> LanguageModelSettings:
        overrides = {k: v for k, v in self.model_dump().items() if v is not None}
        base = LanguageModelSettings()
        return base.model_copy(update=overrides)

    def configured(self) -> LanguageModelSettings:
        """The settings of a named model; ``LanguageModelNotConfigured`` otherwise."""
        return require_configured(self.settings())

    def is_configured(self) -> bool:
        return self.settings().model is not None

    def new_budget(self) -> Budget:
        s = self.settings()
        return Budget(max_calls=s.budget_calls, max_tokens=s.budget_tokens)

    def build(self, budget: Budget, *, temperature: float | None = None) -> MeteredLM:
        return build_lm(self.settings(), budget, temperature=temperature)

    def describe(self) -> dict[str, Any]:
        s = self.configured()
        offline = is_offline(s.model)
        return {
            "lm_model": s.model,
            "lm_offline": offline,
            # Marks every candidate the offline model wrote: never a real model's work.
            "offline_demo": offline,
            "lm_api_base": s.api_base,
            "lm_engine": "offline" if offline else s.engine,
            "lm_temperature": s.temperature,
            "lm_max_tokens": s.max_tokens,
            "lm_timeout_s": s.timeout,
            "lm_retries": s.retries,
        }

"""The language model a training run uses, metered against a per-run budget.

``MeteredLM`` is a ``dspy.LM`` that counts every call and token into a shared ``Budget``; copies
made by the optimizers (SIMBA and MIPROv2 copy the LM per rollout) share it. When a cap is reached
the next call raises ``BudgetExhausted`` *before* reaching the provider. Optimizers swallow errors
inside their evaluation loops (SIMBA scores a failed call 0 and carries on), so the training code
also checks ``Budget.exhausted`` after the optimizer returns: a run that hit the cap never writes.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

# Never fetch LiteLLM's model cost map from the network (also set in the package __init__).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dagster as dg  # noqa: E402
import dspy  # noqa: E402

from .settings import LanguageModelSettings  # noqa: E402


class BudgetExhausted(RuntimeError):
    """The training run reached its cap on LM calls or tokens."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Budget:
    """Thread-safe ledger of LM calls and tokens for one training run."""

    max_calls: int | None = None
    max_tokens: int | None = None
    calls: int = 0
    tokens: int = 0
    failures: int = 0
    first_failure: str | None = None
    exhausted: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def reserve(self) -> None:
        with self._lock:
            if self.exhausted is None:
                if self.max_calls is not None and self.calls >= self.max_calls:
                    self.exhausted = f"LM budget exhausted: {self.calls} calls reached the cap of {self.max_calls}"
                elif self.max_tokens is not None and self.tokens >= self.max_tokens:
                    self.exhausted = f"LM budget exhausted: {self.tokens} tokens reached the cap of {self.max_tokens}"
            if self.exhausted is not None:
                raise BudgetExhausted(self.exhausted)
            self.calls += 1

    def add_usage(self, usage: dict[str, Any]) -> None:
        total = usage.get("total_tokens")
        if not isinstance(total, (int, float)):
            total = sum(v for k, v in usage.items() if k in ("prompt_tokens", "completion_tokens") and isinstance(v, (int, float)))
        with self._lock:
            self.tokens += int(total or 0)

    def record_failure(self, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            if self.first_failure is None:
                self.first_failure = f"{type(exc).__name__}: {one_line(exc)}"

    def snapshot(self) -> dict[str, Any]:
        return {
            "lm_calls": self.calls,
            "lm_tokens": self.tokens,
            "lm_failures": self.failures,
            "budget_calls": self.max_calls,
            "budget_tokens": self.max_tokens,
        }


class MeteredLM(dspy.LM):
    """``dspy.LM`` that charges every call to a ``Budget`` (shared by its copies)."""

    def __init__(self, model: str, *, budget: Budget | None = None, **kwargs: Any):
        super().__init__(model, **kwargs)
        self.budget = budget if budget is not None else Budget()

    def __call__(self, *args: Any, **kwargs: Any):
        self.budget.reserve()
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            self.budget.record_failure(exc)
            raise

    async def acall(self, *args: Any, **kwargs: Any):
        self.budget.reserve()
        try:
            return await super().acall(*args, **kwargs)
        except Exception as exc:
            self.budget.record_failure(exc)
            raise

    def update_history(self, entry: dict[str, Any]) -> None:
        self.budget.add_usage(entry.get("usage") or {})
        super().update_history(entry)


def is_offline(model: str | None) -> bool:
    from .offline_lm import OFFLINE_MODEL

    return model is None or model == OFFLINE_MODEL


def build_lm(settings: LanguageModelSettings, budget: Budget, *, temperature: float | None = None) -> MeteredLM:
    """The run's LM: the configured LiteLLM model, or the offline demo model when none is set."""
    if is_offline(settings.model):
        from .offline_lm import OfflineLM

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
    num_threads: int | None = None

    def settings(self) -> LanguageModelSettings:
        overrides = {k: v for k, v in self.model_dump().items() if v is not None}
        base = LanguageModelSettings()
        return base.model_copy(update=overrides)

    def new_budget(self) -> Budget:
        s = self.settings()
        return Budget(max_calls=s.budget_calls, max_tokens=s.budget_tokens)

    def build(self, budget: Budget, *, temperature: float | None = None) -> MeteredLM:
        return build_lm(self.settings(), budget, temperature=temperature)

    def describe(self) -> dict[str, Any]:
        s = self.settings()
        from .offline_lm import OFFLINE_MODEL

        return {
            "lm_model": s.model or OFFLINE_MODEL,
            "lm_offline": is_offline(s.model),
            "lm_api_base": s.api_base,
            "lm_engine": "offline" if is_offline(s.model) else s.engine,
            "lm_temperature": s.temperature,
            "lm_max_tokens": s.max_tokens,
            "lm_timeout_s": s.timeout,
            "lm_retries": s.retries,
        }

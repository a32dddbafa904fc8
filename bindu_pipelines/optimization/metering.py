"""LM calls metered against a per-run budget (Dagster-free).

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

import dspy

from bindu_pipelines.errors import BudgetExhausted

__all__ = ["Budget", "BudgetExhausted", "MeteredLM", "litellm_with_local_cost_map", "one_line", "use_local_cost_map"]


def use_local_cost_map() -> None:
    """Tell LiteLLM to read its bundled model cost map: it fetches the map from the network when
    it is first imported unless told not to. Called where an LM is set up, never at import time
    (an operator's own LITELLM_LOCAL_MODEL_COST_MAP wins)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def litellm_with_local_cost_map():
    """LiteLLM, loaded with its bundled model cost map."""
    use_local_cost_map()
    import litellm

    return litellm


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
        use_local_cost_map()
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



"""Language-model settings from the environment (``BINDU_LM`` and ``BINDU_LM_*``).

``BINDU_LM`` is a LiteLLM model string (``openai/gpt-4o-mini``, ``ollama_chat/llama3.2``,
``openai/<name>`` for any OpenAI-compatible server such as vLLM or llama.cpp, with
``BINDU_LM_API_BASE``). There is no default: training without a model stops with one line saying
what to set. ``BINDU_LM=bindu/offline-demo`` names the rule-based offline demo model explicitly
(the demo passes it per run); every candidate it writes is marked as the offline model's.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class LanguageModelSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BINDU_LM_", extra="ignore")

    model: str | None = Field(default=None, validation_alias=AliasChoices("BINDU_LM", "BINDU_LM_MODEL"))
    api_base: str | None = None
    api_key: SecretStr | None = None
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=1024, gt=0)
    timeout: float = Field(default=60.0, gt=0)
    retries: int = Field(default=3, ge=0, le=10)
    # DSPy 3.4's default engine ("auto") sends openai/* with an api_base through its own native
    # HTTP client, bypassing LiteLLM. We pin "litellm" so every BINDU_LM string, whatever the
    # provider, takes one path with one set of semantics (LiteLLM's provider routing, its error
    # types, its local cost map). "auto" remains available for those who want the native client.
    engine: Literal["litellm", "auto"] = "litellm"
    # Per training run: the run fails with BudgetExhausted when either is reached.
    budget_calls: int = Field(default=10_000, gt=0)
    budget_tokens: int = Field(default=10_000_000, gt=0)
    # Optional cap on the estimated cost in US dollars (LiteLLM's local cost map); unset: no cap.
    budget_usd: float | None = Field(default=None, gt=0)
    num_threads: int = Field(default=4, ge=1, le=64)

    @field_validator("model", "api_base")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if isinstance(value, str) else value

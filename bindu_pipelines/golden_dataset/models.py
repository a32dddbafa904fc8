"""Records of the golden dataset: one ``Interaction`` is one (user_input -> agent_output) example."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, field_validator

FEEDBACK_TYPES = ("rating", "thumbs")


class Interaction(BaseModel):
    """One training example extracted from a task's conversation.

    ``id`` is the task id as a string (the seed passed a UUID; both are accepted).
    ``feedback_score`` is the normalised 0..1 score, ``None`` when the task has no valid feedback.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    user_input: str
    agent_output: str
    feedback_score: float | None = None
    feedback_type: str | None = None
    system_prompt: str | None = None
    context_id: str | None = None
    prompt_id: str | None = None

    @field_validator("id", "context_id", "prompt_id", mode="before")
    @classmethod
    def _uuid_to_str(cls, value: Any) -> Any:
        return str(value) if isinstance(value, UUID) else value

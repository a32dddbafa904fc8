"""The extraction strategy interface (the seed's ``BaseExtractionStrategy``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any
from uuid import UUID

from ..history import parse_turns
from ..models import Interaction

__all__ = ["BaseExtractionStrategy", "parse_turns", "positive_int"]


def positive_int(value: Any, what: str) -> int:
    """``value`` as an int >= 1, or a ValueError that names the parameter."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


class BaseExtractionStrategy(ABC):
    """Turns one task's cleaned messages into training interactions.

    ``messages`` are clean ``{"role": "user"|"assistant", "content": str}`` dicts (see
    ``history.clean_messages``). Subclasses implement ``name`` and ``extract``; strategies that
    yield several examples per conversation override ``extract_all``.
    """

    @property
    @abstractmethod
    def name(self) -> str:
        """Strategy identifier, as written on the CLI."""

    @abstractmethod
    def extract(
        self,
        task_id: UUID | str,
        messages: list[dict[str, Any]],
        feedback_score: float | None = None,
        feedback_type: str | None = None,
    ) -> Interaction | None:
        """One interaction from the messages, or None when the conversation has none to give."""

    def extract_all(
        self,
        task_id: UUID | str,
        messages: list[dict[str, Any]],
        feedback_score: float | None = None,
        feedback_type: str | None = None,
    ) -> list[Interaction]:
        """Every interaction the strategy takes from one conversation (default: ``extract``'s one)."""
        interaction = self.extract(task_id, messages, feedback_score, feedback_type)
        return [interaction] if interaction is not None else []

    def extract_texts(self, task_id: UUID | str, messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
        """The (user_input, agent_output) texts of ``extract_all``, for callers that need only the
        texts (the dataset pipeline, a million tasks at a time). Strategies override it when they
        can skip building ``Interaction`` objects; the default goes through ``extract_all``."""
        return [(i.user_input, i.agent_output) for i in self.extract_all(task_id, messages)]

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


def make_interaction(
    task_id: UUID | str,
    user_input: str,
    agent_output: str,
    feedback_score: float | None,
    feedback_type: str | None,
    system_prompt: str | None = None,
) -> Interaction | None:
    """An Interaction, or None when either side is empty."""
    if not user_input or not agent_output:
        return None
    return Interaction(
        id=task_id,
        user_input=user_input,
        agent_output=agent_output,
        feedback_score=feedback_score,
        feedback_type=feedback_type,
        system_prompt=system_prompt,
    )


def format_dialogue(turns: list[tuple[str, str]]) -> str:
    """Earlier turns as ``User: …`` / ``Assistant: …`` lines followed by the final user message."""
    lines = []
    for user, agent in turns[:-1]:
        lines.append(f"User: {user}")
        lines.append(f"Assistant: {agent}")
    context = "\n".join(lines)
    return f"{context}\n\nUser: {turns[-1][0]}"


def join_user_messages(turns: list[tuple[str, str]]) -> str:
    """The user messages of the turns; numbered when there are more than three."""
    users = [user for user, _ in turns]
    if len(users) == 1:
        return users[0]
    if len(users) > 3:
        users = [f"[Turn {i}] {text}" for i, text in enumerate(users, 1)]
    return "\n\n".join(users)

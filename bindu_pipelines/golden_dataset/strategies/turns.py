"""Strategies that take turns by position: last turn, full history, first/last N, context window."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from ..history import USER, parse_turns
from ..models import Interaction
from .base import (
    BaseExtractionStrategy,
    format_dialogue,
    join_user_messages,
    make_interaction,
    positive_int,
)

DEFAULT_N_TURNS = 3
DEFAULT_MAX_FULL_HISTORY_CHARS = 10_000


class LastTurnStrategy(BaseExtractionStrategy):
    """The final user message and the agent's reply to it."""

    @property
    def name(self) -> str:
        return "last_turn"

    def extract_texts(self, task_id, messages) -> list[tuple[str, str]]:
        turns = parse_turns(messages)
        if not turns or not turns[-1][0] or not turns[-1][1]:
            return []
        return [turns[-1]]

    def extract(self, task_id, messages, feedback_score=None, feedback_type=None) -> Interaction | None:
        texts = self.extract_texts(task_id, messages)
        return make_interaction(task_id, *texts[0], feedback_score, feedback_type) if texts else None


class FullHistoryStrategy(BaseExtractionStrategy):
    """First user message as input; everything after it, as ``Role: text`` lines, as output.

    Conversations whose formatted output exceeds ``max_chars`` are skipped (the seed's cap).
    """

    def __init__(self, max_chars: int = DEFAULT_MAX_FULL_HISTORY_CHARS):
        self.max_chars = positive_int(max_chars, "max_chars")

    @property
    def name(self) -> str:
        return "full_history"

    def extract(self, task_id, messages, feedback_score=None, feedback_type=None) -> Interaction | None:
        first_user = next((i for i, m in enumerate(messages) if m["role"] == USER), None)
        if first_user is None or first_user + 1 >= len(messages):
            return None
        agent_output = "\n".join(
            f"{m['role'].capitalize()}: {m['content']}" for m in messages[first_user + 1 :]
        )
        if len(agent_output) > self.max_chars:
            return None
        return make_interaction(task_id, messages[first_user]["content"], agent_output, feedback_score, feedback_type)


class _NTurnsStrategy(BaseExtractionStrategy):
    def __init__(self, n_turns: int = DEFAULT_N_TURNS):
        self.n_turns = positive_int(n_turns, "n_turns")

    def _select(self, turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
        raise NotImplementedError

    def extract(self, task_id, messages, feedback_score=None, feedback_type=None) -> Interaction | None:
        turns = parse_turns(messages)
        if not turns:
            return None
        selected = self._select(turns)
        user_input = selected[0][0] if len(selected) == 1 else format_dialogue(selected)
        return make_interaction(task_id, user_input, selected[-1][1], feedback_score, feedback_type)


class LastNTurnsStrategy(_NTurnsStrategy):
    """The last N turns: earlier ones as ``User:/Assistant:`` context, the last reply as output."""

    @property
    def name(self) -> str:
        return "last_n"

    def _select(self, turns):
        return turns[-self.n_turns :]


class FirstNTurnsStrategy(_NTurnsStrategy):
    """The first N turns (how conversations open): same format as ``LastNTurnsStrategy``."""

    @property
    def name(self) -> str:
        return "first_n"

    def _select(self, turns):
        return turns[: self.n_turns]


class ContextWindowStrategy(BaseExtractionStrategy):
    """The user messages of the last N turns as input, the final reply as output.

    ``system_prompt``, when given, is carried on each interaction.
    """

    def __init__(self, n_turns: int = DEFAULT_N_TURNS, system_prompt: str | None = None):
        self.n_turns = positive_int(n_turns, "n_turns")
        self.system_prompt = system_prompt

    @property
    def name(self) -> str:
        return "context_window"

    def extract(
        self,
        task_id: UUID | str,
        messages: list[dict[str, Any]],
        feedback_score: float | None = None,
        feedback_type: str | None = None,
    ) -> Interaction | None:
        turns = parse_turns(messages)
        if not turns:
            return None
        selected = turns[-self.n_turns :]
        return make_interaction(
            task_id, join_user_messages(selected), selected[-1][1], feedback_score, feedback_type, self.system_prompt
        )

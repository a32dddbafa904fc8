"""Strategies for long conversations: sliding windows (many examples) and summarised context."""

from __future__ import annotations

import re

from ..history import parse_turns
from ..models import Interaction
from .base import BaseExtractionStrategy, join_user_messages, make_interaction, positive_int

# A sentence ends at . ! or ? followed by a space or the end ("python.org" does not end one).
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
DEFAULT_WINDOW_SIZE = 2
DEFAULT_STRIDE = 1


class SlidingWindowStrategy(BaseExtractionStrategy):
    """Windows of ``window_size`` turns, moved ``stride`` turns at a time from ``start_offset``.

    Each window gives one example: its user messages as input, its last reply as output.
    ``extract`` returns the last window only; ``extract_all`` returns every window.
    """

    def __init__(self, window_size: int = DEFAULT_WINDOW_SIZE, stride: int = DEFAULT_STRIDE, start_offset: int = 0):
        self.window_size = positive_int(window_size, "window_size")
        self.stride = positive_int(stride, "stride")
        if isinstance(start_offset, bool) or not isinstance(start_offset, int) or start_offset < 0:
            raise ValueError(f"start_offset must be a non-negative integer, got {start_offset!r}")
        self.start_offset = start_offset

    @property
    def name(self) -> str:
        return "sliding_window"

    def _window(self, task_id, window, feedback_score, feedback_type) -> Interaction | None:
        return make_interaction(task_id, join_user_messages(window), window[-1][1], feedback_score, feedback_type)

    def extract(self, task_id, messages, feedback_score=None, feedback_type=None) -> Interaction | None:
        turns = parse_turns(messages)
        if len(turns) < self.window_size:
            return None
        return self._window(task_id, turns[-self.window_size :], feedback_score, feedback_type)

    def extract_all(self, task_id, messages, feedback_score=None, feedback_type=None) -> list[Interaction]:
        turns = parse_turns(messages)
        out = []
        for start in range(self.start_offset, len(turns) - self.window_size + 1, self.stride):
            interaction = self._window(task_id, turns[start : start + self.window_size], feedback_score, feedback_type)
            if interaction is not None:
                out.append(interaction)
        return out


class SummaryContextStrategy(BaseExtractionStrategy):
    """Earlier turns summarised (first sentence of each side), recent turns in full.

    Of the last ``summary_turns + recent_turns`` turns, the first ``summary_turns`` are summarised
    (bullets or a paragraph, capped at ``max_summary_length`` chars) and the rest kept verbatim;
    the output is the final reply. The summary is extractive: no language model is called.
    """

    def __init__(
        self,
        summary_turns: int = 5,
        recent_turns: int = 2,
        max_summary_length: int = 500,
        summary_format: str = "bullets",
    ):
        self.summary_turns = positive_int(summary_turns, "summary_turns")
        self.recent_turns = positive_int(recent_turns, "recent_turns")
        if max_summary_length < 100:
            raise ValueError(f"max_summary_length must be at least 100, got {max_summary_length!r}")
        if summary_format not in ("bullets", "paragraph"):
            raise ValueError(f"summary_format must be 'bullets' or 'paragraph', got {summary_format!r}")
        self.max_summary_length = max_summary_length
        self.summary_format = summary_format

    @property
    def name(self) -> str:
        return "summary_context"

    @staticmethod
    def _key_point(text: str, prefix: str) -> str:
        text = " ".join(text.split())
        end = _SENTENCE_END.search(text)
        if end is not None and end.start() < 100:
            point = text[: end.start() + 1]
        elif len(text) > 80:
            point = text[:80].rsplit(" ", 1)[0] + "..."
        else:
            point = text
        return f"{prefix}: {point}"

    def _summary(self, turns: list[tuple[str, str]]) -> str:
        if not turns:
            return ""
        if self.summary_format == "bullets":
            summary = "\n".join(
                f"- Turn {i}: {self._key_point(u, 'Asked')}; {self._key_point(a, 'Answered')}"
                for i, (u, a) in enumerate(turns, 1)
            )
        else:
            summary = " ".join(
                f"{self._key_point(u, 'User asked about')} {self._key_point(a, 'and received information on')}."
                for u, a in turns
            )
        if len(summary) > self.max_summary_length:
            summary = summary[: self.max_summary_length - 3] + "..."
        return summary

    @staticmethod
    def _recent(turns: list[tuple[str, str]]) -> str:
        if len(turns) == 1:
            return turns[0][0]
        lines = []
        for user, agent in turns[:-1]:
            lines += [f"User: {user}", f"Assistant: {agent}"]
        lines.append(f"User: {turns[-1][0]}")
        return "\n".join(lines)

    def extract(self, task_id, messages, feedback_score=None, feedback_type=None) -> Interaction | None:
        turns = parse_turns(messages)
        if not turns:
            return None
        window = turns[-(self.summary_turns + self.recent_turns) :]
        split = max(0, len(window) - self.recent_turns)
        summary = self._summary(window[:split])
        recent = self._recent(window[split:])
        user_input = f"[Previous conversation summary]\n{summary}\n\n[Recent conversation]\n{recent}" if summary else recent
        return make_interaction(task_id, user_input, turns[-1][1], feedback_score, feedback_type)

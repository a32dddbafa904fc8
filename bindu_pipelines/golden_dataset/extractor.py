"""Interaction extraction: clean a task's history, apply a strategy, scrub PII."""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple
from uuid import UUID

from .history import DEFAULT_MAX_MESSAGE_CHARS, NO_COMPLETE_TURN, clean_messages, parse_history
from .models import Interaction
from .pii import might_contain_pii, scrub_pii
from .strategies import BaseExtractionStrategy, LastTurnStrategy

__all__ = ["ExtractedTexts", "ExtractionOutcome", "InteractionExtractor", "clean_messages"]


class ExtractionOutcome(NamedTuple):
    interactions: list[Interaction]
    drop_reason: str | None  # why the task gave no interaction
    message_drops: dict[str, int]  # messages skipped inside the task, by reason
    pii_found: Counter  # replacements made, by kind


class ExtractedTexts(NamedTuple):
    """``ExtractionOutcome`` as plain (user_input, agent_output) texts, for the dataset pipeline."""

    pairs: list[tuple[str, str]]
    drop_reason: str | None
    message_drops: dict[str, int]
    pii_found: Counter | None  # None when nothing was scrubbed


class InteractionExtractor:
    """The seed's extractor: ``InteractionExtractor(strategy).extract(task_id, history, score, type)``.

    ``scrub_pii`` (on by default) replaces PII in the extracted texts so nothing downstream (the
    dataset files, the optimizer's language model) sees it.
    """

    def __init__(
        self,
        strategy: BaseExtractionStrategy | None = None,
        *,
        scrub_pii: bool = True,
        max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS,
    ):
        self.strategy = strategy or LastTurnStrategy()
        self.scrub_pii = scrub_pii
        self.max_message_chars = max_message_chars

    def _scrubbed(self, user_input: str, agent_output: str, found: Counter | None) -> tuple[str, str, Counter | None]:
        """Both texts with PII replaced; ``found`` (created on first use) counts replacements."""
        # One pre-check over both texts: most interactions hold no PII and skip the regex.
        if self.scrub_pii and might_contain_pii(user_input + "\n" + agent_output):
            if found is None:
                found = Counter()
            user_input, agent_output = scrub_pii(user_input, found), scrub_pii(agent_output, found)
        return user_input, agent_output, found

    def extract_texts(self, task_id: UUID | str, history: Any) -> ExtractedTexts:
        """Every (user_input, agent_output) pair from one task, scrubbed, with the reasons for anything dropped."""
        parsed = parse_history(history, self.max_message_chars)
        if parsed.drop_reason is not None:
            return ExtractedTexts([], parsed.drop_reason, parsed.message_drops, None)
        found = self.strategy.extract_texts(task_id, parsed.messages)
        if not found:
            return ExtractedTexts([], NO_COMPLETE_TURN, parsed.message_drops, None)
        pairs = []
        pii: Counter | None = None
        for user_input, agent_output in found:
            user_input, agent_output, pii = self._scrubbed(user_input, agent_output, pii)
            pairs.append((user_input, agent_output))
        return ExtractedTexts(pairs, None, parsed.message_drops, pii)

    def extract_task(
        self,
        task_id: UUID | str,
        history: Any,
        feedback_score: float | None = None,
        feedback_type: str | None = None,
        *,
        context_id: str | None = None,
        prompt_id: str | None = None,
    ) -> ExtractionOutcome:
        """Every interaction from one task, with the reasons for anything dropped."""
        parsed = parse_history(history, self.max_message_chars)
        pii: Counter | None = None
        if parsed.drop_reason is not None:
            return ExtractionOutcome([], parsed.drop_reason, parsed.message_drops, Counter())
        found = self.strategy.extract_all(task_id, parsed.messages, feedback_score, feedback_type)
        if not found:
            return ExtractionOutcome([], NO_COMPLETE_TURN, parsed.message_drops, Counter())
        interactions = []
        for interaction in found:
            user_input, agent_output, pii = self._scrubbed(interaction.user_input, interaction.agent_output, pii)
            update: dict[str, Any] = {}
            if user_input != interaction.user_input:
                update["user_input"] = user_input
            if agent_output != interaction.agent_output:
                update["agent_output"] = agent_output
            if context_id is not None:
                update["context_id"] = context_id
            if prompt_id is not None:
                update["prompt_id"] = prompt_id
            interactions.append(interaction.model_copy(update=update) if update else interaction)
        return ExtractionOutcome(interactions, None, parsed.message_drops, pii if pii is not None else Counter())

    def extract_all(
        self,
        task_id: UUID | str,
        history: Any,
        feedback_score: float | None = None,
        feedback_type: str | None = None,
    ) -> list[Interaction]:
        return self.extract_task(task_id, history, feedback_score, feedback_type).interactions

    def extract(
        self,
        task_id: UUID | str,
        history: Any,
        feedback_score: float | None = None,
        feedback_type: str | None = None,
    ) -> Interaction | None:
        """The seed's call: the strategy's one interaction for the task, or None."""
        parsed = parse_history(history, self.max_message_chars)
        if parsed.drop_reason is not None:
            return None
        interaction = self.strategy.extract(task_id, parsed.messages, feedback_score, feedback_type)
        if interaction is None or not self.scrub_pii:
            return interaction
        return interaction.model_copy(
            update={
                "user_input": scrub_pii(interaction.user_input),
                "agent_output": scrub_pii(interaction.agent_output),
            }
        )

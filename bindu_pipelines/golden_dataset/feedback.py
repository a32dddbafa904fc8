"""Feedback normalisation: Bindu's rating 1-5 and other clients' thumbs to one 0..1 score.

The rule (shared with the canary's SQL aggregate, see the team's "Feedback scale"):

- ``rating`` r in {1, 2, 3, 4, 5} (an int, or a float/str equal to such an int: ``4.0``, ``"4"``)
  scores ``(r - 1) / 4``. Anything else (``"five"``, 0, 6, 4.5, booleans, null) is invalid.
- ``thumbs_up``: true / 1 / "true" / "yes" / "1" scores 1.0; false / 0 / "false" / "no" / "0"
  scores 0.0 (strings case-insensitive); anything else (``"maybe"``) is invalid.
- A row with a valid rating uses the rating (the richer signal) even if thumbs is present too.
- Several rows on one task: the latest *valid* row wins, ordered by ``task_feedback.id`` (the
  database's insertion order, never ``created_at`` or the writer's timestamp, which clocks and
  clients can skew): a user revising their rating. The task counts once; the older valid rows are
  counted as superseded.

Both mappings are fields of ``FeedbackScale`` so a deployment can state its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .history import loads

# Drop reasons (one invalid feedback row each).
FEEDBACK_NOT_OBJECT = "feedback_not_object"
INVALID_RATING = "invalid_rating"
INVALID_THUMBS = "invalid_thumbs"
NO_RATING_OR_THUMBS = "no_rating_or_thumbs"
SUPERSEDED = "superseded_by_later_feedback"
FEEDBACK_ON_MISSING_TASK = "feedback_on_missing_task"


def _default_rating_scores() -> dict[int, float]:
    return {r: (r - 1) / 4 for r in range(1, 6)}


@dataclass(frozen=True)
class FeedbackScale:
    """How raw feedback maps to 0..1. The defaults are the team's stated scale."""

    rating_scores: Mapping[int, float] = field(default_factory=_default_rating_scores)
    thumbs_up_score: float = 1.0
    thumbs_down_score: float = 0.0
    thumbs_up_words: frozenset[str] = frozenset({"true", "yes", "1"})
    thumbs_down_words: frozenset[str] = frozenset({"false", "no", "0"})

    def __post_init__(self) -> None:
        for rating, score in self.rating_scores.items():
            if isinstance(rating, bool) or not isinstance(rating, int):
                raise ValueError(f"rating keys must be integers, got {rating!r}")
            if not 0.0 <= score <= 1.0:
                raise ValueError(f"rating {rating} maps to {score}, outside 0..1")
        for score in (self.thumbs_up_score, self.thumbs_down_score):
            if not 0.0 <= score <= 1.0:
                raise ValueError(f"thumbs score {score} is outside 0..1")

    def rating_score(self, value: Any) -> float | None:
        """Score of a rating value, or None when it is not one of the scale's ratings."""
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, int):
            return self.rating_scores.get(value)
        if isinstance(value, float):
            if math.isfinite(value) and value.is_integer():
                return self.rating_scores.get(int(value))
            return None
        if isinstance(value, str):
            text = value.strip()
            try:
                number = float(text)
            except ValueError:
                return None
            if math.isfinite(number) and number.is_integer():
                return self.rating_scores.get(int(number))
        return None

    def thumbs_score(self, value: Any) -> float | None:
        """Score of a thumbs value, or None when it is not a recognised yes/no."""
        if value is True:
            return self.thumbs_up_score
        if value is False:
            return self.thumbs_down_score
        if isinstance(value, int):
            return {1: self.thumbs_up_score, 0: self.thumbs_down_score}.get(value)
        if isinstance(value, str):
            word = value.strip().lower()
            if word in self.thumbs_up_words:
                return self.thumbs_up_score
            if word in self.thumbs_down_words:
                return self.thumbs_down_score
        return None


DEFAULT_SCALE = FeedbackScale()


class NormalizedFeedback(NamedTuple):
    """One feedback row's verdict: a score and its type, or the reason it is invalid."""

    score: float | None
    feedback_type: str | None
    invalid_reason: str | None


def normalize_feedback_data(data: Any, scale: FeedbackScale = DEFAULT_SCALE) -> NormalizedFeedback:
    """Normalise one ``feedback_data`` value (a dict, or JSON text of one)."""
    if isinstance(data, (str, bytes)):
        try:
            data = loads(data)
        except ValueError:
            return NormalizedFeedback(None, None, FEEDBACK_NOT_OBJECT)
    if not isinstance(data, dict):
        return NormalizedFeedback(None, None, FEEDBACK_NOT_OBJECT)
    has_rating = "rating" in data
    has_thumbs = "thumbs_up" in data
    if has_rating:
        score = scale.rating_score(data["rating"])
        if score is not None:
            return NormalizedFeedback(score, "rating", None)
    if has_thumbs:
        score = scale.thumbs_score(data["thumbs_up"])
        if score is not None:
            return NormalizedFeedback(score, "thumbs", None)
    if has_rating:
        return NormalizedFeedback(None, None, INVALID_RATING)
    if has_thumbs:
        return NormalizedFeedback(None, None, INVALID_THUMBS)
    return NormalizedFeedback(None, None, NO_RATING_OR_THUMBS)


class FeedbackRow(NamedTuple):
    """A raw ``task_feedback`` row as read from the database."""

    id: Any
    created_at: Any
    data: Any


class TaskFeedback(NamedTuple):
    """The one score a task counts with, plus what happened to each of its rows."""

    score: float | None
    feedback_type: str | None
    valid_rows: int
    drops: dict[str, int]


def combine_task_feedback(
    rows: Iterable[FeedbackRow | tuple], scale: FeedbackScale = DEFAULT_SCALE
) -> TaskFeedback:
    """Combine a task's feedback rows: the latest valid row by id (insertion order) wins."""
    drops: dict[str, int] = {}
    best: NormalizedFeedback | None = None
    best_at: Any = None
    valid = 0
    for row_id, created_at, data in rows:
        verdict = normalize_feedback_data(data, scale)
        if verdict.invalid_reason is not None:
            drops[verdict.invalid_reason] = drops.get(verdict.invalid_reason, 0) + 1
            continue
        valid += 1
        # Sort keys are built only when there is a second valid row to compare with (rare).
        if best is None or _sortable(row_id) > _sortable(best_at):
            best, best_at = verdict, row_id
    if valid > 1:
        drops[SUPERSEDED] = valid - 1
    if best is None:
        return TaskFeedback(None, None, 0, drops)
    return TaskFeedback(best.score, best.feedback_type, valid, drops)


def _sortable(value: Any) -> tuple:
    # None sorts first; mixed types (which one database never returns) sort by type name.
    if value is None:
        return (0, "", 0)
    return (1, type(value).__name__, value)

"""How good is a reply? One metric for SIMBA, GEPA and MIPROv2: a score in 0..1 plus feedback.

The golden dataset holds real replies with the user's rating. A reply is scored by its similarity
(``text.similarity``: token-F1 and character trigrams) to replies users rated highly:

* its own reference reply, weighted by how much the user liked it (weight ``2r - 1``: a 5-star
  reply is a target, a 3-star one carries no information);
* highly rated replies to the most similar requests in the training split (the pool), which
  gives a signal even when this request's own reply was rated poorly;
* minus a penalty for resembling its own reference when that one was rated poorly (weight
  ``1 - 2r``), so a low rating never reads as "imitate this".

It returns ``dspy.Prediction(score=…, feedback=…)``: GEPA reads the feedback; SIMBA reads
``score``; MIPROv2 and ``dspy.Evaluate`` use it as a float (``Prediction`` supports ``float()``,
``+``, ``/`` and comparisons).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import dspy

from .examples import rating_of
from .text import content_words, jaccard, quote_rated_reply, similarity

LIKED_RATING = 0.5
POOL_NEIGHBOURS = 3
NEGATIVE_WEIGHT = 0.5


@dataclass(frozen=True)
class RatedReply:
    user_input: str
    reply: str
    rating: float


def _reply_of(prediction: object) -> str:
    if prediction is None:
        return ""
    value = getattr(prediction, "agent_output", None)
    if value is None and hasattr(prediction, "get"):
        value = prediction.get("agent_output")  # type: ignore[union-attr]
    return value.strip() if isinstance(value, str) else ""


@dataclass
class ReplyMetric:
    """Similarity to highly rated replies; callable as a DSPy metric (2 to 5 arguments)."""

    pool: Sequence[RatedReply] = field(default_factory=tuple)

    @classmethod
    def from_examples(cls, examples: Sequence[dspy.Example]) -> ReplyMetric:
        pool = []
        for ex in examples:
            rating = rating_of(ex.get("feedback_score"))
            if rating is not None and rating >= LIKED_RATING and str(ex.get("agent_output", "")).strip():
                pool.append(RatedReply(str(ex.user_input), str(ex.agent_output), rating))
        return cls(pool=tuple(pool))

    def neighbours(self, user_input: str, exclude: str | None = None) -> list[RatedReply]:
        words = content_words(user_input)
        candidates = [r for r in self.pool if r.reply != exclude]
        candidates.sort(key=lambda r: (-jaccard(words, content_words(r.user_input)), -r.rating, r.reply))
        return candidates[:POOL_NEIGHBOURS]

    def score(self, example: dspy.Example, reply: str) -> tuple[float, str]:
        reference = str(example.get("agent_output", "") or "")
        rating = rating_of(example.get("feedback_score"))
        r = 0.5 if rating is None else rating
        if not reply:
            return 0.0, "Score 0.00. The agent produced no reply."
        neighbours = self.neighbours(str(example.get("user_input", "")), exclude=reference)
        pool_sim = sum(similarity(reply, n.reply) for n in neighbours) / len(neighbours) if neighbours else 0.0
        own_sim = similarity(reply, reference) if reference else 0.0
        if r >= LIKED_RATING:
            w = 2 * r - 1
            positive = w * own_sim + (1 - w) * pool_sim
            penalty = 0.0
        else:
            positive = pool_sim
            penalty = NEGATIVE_WEIGHT * (1 - 2 * r) * own_sim
        score = min(max(positive - penalty, 0.0), 1.0)
        return score, self._feedback(score, reply, reference, r, rating is None, neighbours)

    @staticmethod
    def _feedback(score, reply, reference, r, unrated, neighbours) -> str:
        parts = [f"Score {score:.2f}."]
        liked = [n.reply for n in neighbours]
        if reference and not unrated and r >= LIKED_RATING:
            parts.append(f"Users rated this reply to the same request highly: {quote_rated_reply(reference, r)}")
            liked.insert(0, reference)
        elif reference and not unrated:
            parts.append(
                f"Users rated this reply to the same request poorly; do not imitate it: {quote_rated_reply(reference, r)}"
            )
        for n in neighbours[:2]:
            parts.append(f"A highly rated reply to a similar request: {quote_rated_reply(n.reply, n.rating)}")
        have = set(content_words(reply))
        missing = []
        for text in liked:
            for w in content_words(text):
                if w not in have and w not in missing:
                    missing.append(w)
        if missing:
            parts.append("Words the highly rated replies use that this reply lacks: " + ", ".join(missing[:8]) + ".")
        return " ".join(parts)

    def __call__(self, gold, pred, trace=None, pred_name=None, pred_trace=None) -> dspy.Prediction:
        score, feedback = self.score(gold, _reply_of(pred))
        return dspy.Prediction(score=score, feedback=feedback)


class JudgeReply(dspy.Signature):
    """Rate the agent's reply against a reference reply and the rating users gave that reference.
    A reference rated below 0.5 shows what users disliked. Return a score from 0 to 1."""

    user_input: str = dspy.InputField()
    agent_reply: str = dspy.InputField()
    reference_reply: str = dspy.InputField()
    reference_rating: float = dspy.InputField(desc="0..1, or -1 when unrated")
    score: float = dspy.OutputField(desc="0 (bad) .. 1 (as good as the best reference)")
    critique: str = dspy.OutputField(desc="One or two sentences on how to improve the reply")


@dataclass
class JudgeMetric:
    """Optional LM-as-judge metric (same call shape and result as ``ReplyMetric``)."""

    judge_lm: dspy.BaseLM

    def __post_init__(self) -> None:
        self._judge = dspy.Predict(JudgeReply)

    def __call__(self, gold, pred, trace=None, pred_name=None, pred_trace=None) -> dspy.Prediction:
        reply = _reply_of(pred)
        if not reply:
            return dspy.Prediction(score=0.0, feedback="The agent produced no reply.")
        rating = rating_of(gold.get("feedback_score"))
        with dspy.context(lm=self.judge_lm, adapter=dspy.ChatAdapter()):
            verdict = self._judge(
                user_input=str(gold.user_input),
                agent_reply=reply,
                reference_reply=str(gold.get("agent_output", "")),
                reference_rating=-1.0 if rating is None else rating,
            )
        score = float(verdict.score) if verdict.score is not None else 0.0
        score = 0.0 if math.isnan(score) else min(max(score, 0.0), 1.0)
        return dspy.Prediction(score=score, feedback=f"Score {score:.2f}. {verdict.critique or ''}".strip())

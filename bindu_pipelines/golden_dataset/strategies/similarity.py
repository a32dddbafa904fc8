"""Text-similarity strategies: offline word-overlap measures, no model, no download.

``jaccard`` (|A∩B| / |A∪B|), ``overlap`` (|A∩B| / min(|A|,|B|)) and ``weighted`` (cosine of
TF-IDF vectors over the conversation's own turns) on lower-cased word tokens.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Literal

from ..history import parse_turns
from ..models import Interaction
from .base import BaseExtractionStrategy, make_interaction, positive_int

SimilarityMethod = Literal["jaccard", "weighted", "overlap"]
SIMILARITY_METHODS: dict[str, str] = {
    "jaccard": "Jaccard coefficient (intersection / union of word sets)",
    "overlap": "overlap coefficient (intersection / smaller word set)",
    "weighted": "cosine similarity of TF-IDF vectors over the conversation's turns",
}
_WORD = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def jaccard_similarity(text1: str, text2: str) -> float:
    a, b = set(tokenize(text1)), set(tokenize(text2))
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def overlap_similarity(text1: str, text2: str) -> float:
    a, b = set(tokenize(text1)), set(tokenize(text2))
    if not a or not b:
        return 0.0
    return len(a & b) / min(len(a), len(b))


def weighted_similarity(text1: str, text2: str, corpus: list[str] | None = None) -> float:
    words1, words2 = tokenize(text1), tokenize(text2)
    if not words1 or not words2:
        return 0.0
    documents = corpus if corpus else [text1, text2]
    doc_freq: Counter = Counter()
    for doc in documents:
        doc_freq.update(set(tokenize(doc)))
    n_docs = len(documents)

    def idf(term: str) -> float:
        # Terms absent from the corpus are treated as seen once: rare, so weighty.
        return math.log(n_docs / doc_freq.get(term, 1)) + 1.0

    tf1, tf2 = Counter(words1), Counter(words2)
    terms = set(tf1) | set(tf2)
    weights = {t: idf(t) for t in terms}
    dot = sum(tf1[t] * tf2[t] * weights[t] ** 2 for t in terms)
    norm1 = math.sqrt(sum((tf1[t] * weights[t]) ** 2 for t in tf1))
    norm2 = math.sqrt(sum((tf2[t] * weights[t]) ** 2 for t in tf2))
    return dot / (norm1 * norm2) if norm1 and norm2 else 0.0


def compute_similarity(
    text1: str, text2: str, method: SimilarityMethod = "jaccard", corpus: list[str] | None = None
) -> float:
    if method == "jaccard":
        return jaccard_similarity(text1, text2)
    if method == "overlap":
        return overlap_similarity(text1, text2)
    if method == "weighted":
        return weighted_similarity(text1, text2, corpus)
    raise ValueError(f"unknown similarity method {method!r}; use one of {', '.join(SIMILARITY_METHODS)}")


Embedder = Callable[[list[str]], Sequence[Sequence[float]]]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def _check_method(method: str) -> str:
    if method not in SIMILARITY_METHODS:
        raise ValueError(f"unknown similarity method {method!r}; use one of {', '.join(SIMILARITY_METHODS)}")
    return method


class SimilarityStrategy(BaseExtractionStrategy):
    """Topic-focused: the turn most similar to ``query`` (ties go to the later turn).

    Conversations whose best turn scores below ``min_similarity`` are off-topic and yield nothing.
    Without a query, the reference is the conversation's final user message and the candidates are
    the turns before it (the earlier exchange the final question is about); a one-turn
    conversation yields its only turn.

    By default similarity is word overlap: offline and fast. ``embed`` (a callable mapping texts to
    vectors, e.g. a local model you loaded yourself or ``dspy.Embedder``) switches to cosine
    similarity of embeddings; nothing is ever downloaded by this module.
    """

    def __init__(
        self,
        query: str | None = None,
        min_similarity: float = 0.0,
        similarity_method: SimilarityMethod = "jaccard",
        use_both_messages: bool = True,
        embed: Embedder | None = None,
    ):
        if not 0.0 <= float(min_similarity) <= 1.0:
            raise ValueError(f"min_similarity must be within 0..1, got {min_similarity!r}")
        self.query = query or None
        self.min_similarity = float(min_similarity)
        self.similarity_method = _check_method(similarity_method)
        self.use_both_messages = use_both_messages
        self.embed = embed

    @property
    def name(self) -> str:
        return "similarity"

    def _scores(self, reference: str, candidates: list[tuple[str, str]], turns: list[tuple[str, str]]) -> list[float]:
        texts = [self._text(turn) for turn in candidates]
        if self.embed is not None:
            vectors = list(self.embed([reference, *texts]))
            return [cosine(vectors[0], vector) for vector in vectors[1:]]
        corpus = [self._text(t) for t in turns] if self.similarity_method == "weighted" else None
        return [compute_similarity(text, reference, self.similarity_method, corpus) for text in texts]

    def _text(self, turn: tuple[str, str]) -> str:
        return f"{turn[0]} {turn[1]}" if self.use_both_messages else turn[0]

    def extract(self, task_id, messages, feedback_score=None, feedback_type=None) -> Interaction | None:
        turns = parse_turns(messages)
        if not turns:
            return None
        if self.query is None:
            if len(turns) == 1:
                return make_interaction(task_id, *turns[0], feedback_score, feedback_type)
            reference, candidates = turns[-1][0], turns[:-1]
        else:
            reference, candidates = self.query, turns
        best_score, best_turn = -1.0, None
        for turn, score in zip(candidates, self._scores(reference, candidates, turns)):
            if score >= best_score:
                best_score, best_turn = score, turn
        if best_turn is None or best_score < self.min_similarity:
            return None
        return make_interaction(task_id, best_turn[0], best_turn[1], feedback_score, feedback_type)


class KeyTurnsStrategy(BaseExtractionStrategy):
    """The N turns most relevant to the final one (by similarity), in chronological order.

    Earlier key turns become labelled context, the final user message the current query, and
    the final reply the output.
    """

    def __init__(
        self,
        n_turns: int = 3,
        similarity_method: SimilarityMethod = "jaccard",
        include_final: bool = True,
        use_both_messages: bool = True,
    ):
        self.n_turns = positive_int(n_turns, "n_turns")
        self.similarity_method = _check_method(similarity_method)
        self.include_final = include_final
        self.use_both_messages = use_both_messages

    @property
    def name(self) -> str:
        return "key_turns"

    def _text(self, turn: tuple[str, str]) -> str:
        return f"{turn[0]} {turn[1]}" if self.use_both_messages else turn[0]

    def extract(self, task_id, messages, feedback_score=None, feedback_type=None) -> Interaction | None:
        turns = parse_turns(messages)
        if not turns:
            return None
        if len(turns) <= self.n_turns:
            selected = turns
        else:
            final = turns[-1]
            reference = self._text(final)
            corpus = [self._text(t) for t in turns] if self.similarity_method == "weighted" else None
            scored = [
                (compute_similarity(self._text(t), reference, self.similarity_method, corpus), i)
                for i, t in enumerate(turns[:-1])
            ]
            # Highest score first; among equal scores the more recent turn.
            scored.sort(key=lambda pair: (-pair[0], -pair[1]))
            keep = self.n_turns - 1 if self.include_final else self.n_turns
            chosen = sorted(i for _, i in scored[:keep])
            selected = [turns[i] for i in chosen] + ([final] if self.include_final else [])
        if not selected:
            return None
        if len(selected) == 1:
            user_input = selected[0][0]
        else:
            lines = []
            for i, (user, agent) in enumerate(selected[:-1], 1):
                lines += [f"[Key context {i}]", f"User: {user}", f"Assistant: {agent}"]
            lines += ["", "[Current query]", f"User: {selected[-1][0]}"]
            user_input = "\n".join(lines)
        return make_interaction(task_id, user_input, selected[-1][1], feedback_score, feedback_type)

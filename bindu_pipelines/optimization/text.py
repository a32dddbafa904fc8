"""Plain-text measures shared by the metric and the offline model.

Pure functions over strings: word tokens, token-F1 and character n-gram similarity, and the
"house style" of a set of replies (how the replies users liked open, close, are laid out, how
long they are and which words they use more than the replies users disliked).
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

_WORD = re.compile(r"[a-z0-9']+")
_NUMBERED_LINE = re.compile(r"^\s*\d+[.)]\s+", re.MULTILINE)
_BULLET_LINE = re.compile(r"^\s*[-*•]\s+", re.MULTILINE)
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")

STOPWORDS = frozenset(
    """a an and are as at be but by can do does for from has have how i if in into is it its
    me my of on or our so that the their them then there these this to up was we what when
    where which who will with you your yours i'm it's can't don't i'll you're""".split()
)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in STOPWORDS and len(w) > 2]


def token_f1(candidate: str, reference: str) -> float:
    """SQuAD-style bag-of-words F1 between two texts (0 when either is empty)."""
    cand, ref = Counter(words(candidate)), Counter(words(reference))
    overlap = sum((cand & ref).values())
    if overlap == 0:
        return 0.0
    precision = overlap / sum(cand.values())
    recall = overlap / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


def char_ngram_similarity(candidate: str, reference: str, n: int = 3) -> float:
    """Dice coefficient of character n-gram multisets: layout and phrasing, not just words."""

    def grams(text: str) -> Counter[str]:
        squashed = " ".join(text.lower().split())
        return Counter(squashed[i : i + n] for i in range(max(len(squashed) - n + 1, 0)))

    a, b = grams(candidate), grams(reference)
    total = sum(a.values()) + sum(b.values())
    if total == 0:
        return 0.0
    return 2 * sum((a & b).values()) / total


def similarity(candidate: str, reference: str) -> float:
    """The one similarity used everywhere: mean of token-F1 and character-trigram Dice."""
    return 0.5 * token_f1(candidate, reference) + 0.5 * char_ngram_similarity(candidate, reference)


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    sa, sb = set(a), set(b)
    if not sa or not sb:
        return 0.0
    return len(sa & sb) / len(sa | sb)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_SPLIT.split(text.strip()) if s.strip()]


def layout_of(text: str) -> str:
    """'numbered', 'bullets' or 'prose'."""
    if len(_NUMBERED_LINE.findall(text)) >= 2:
        return "numbered"
    if len(_BULLET_LINE.findall(text)) >= 2:
        return "bullets"
    return "prose"


def _opening(text: str, max_words: int = 8) -> str:
    first = sentences(text)[:1]
    if not first:
        return ""
    tokens = first[0].split()
    return " ".join(tokens[:max_words]) if len(tokens) > max_words else first[0]


def _closing(text: str) -> str:
    lines = [s for s in sentences(text) if not _NUMBERED_LINE.match(s) and not _BULLET_LINE.match(s)]
    return lines[-1] if len(lines) >= 2 else ""


def _shared(values: Sequence[str], share: float) -> str:
    values = [v for v in values if v]
    if not values:
        return ""
    value, count = Counter(values).most_common(1)[0]
    return value if count >= max(2, share * len(values)) or (len(values) == 1 and count == 1) else ""


@dataclass(frozen=True)
class HouseStyle:
    """What the highly rated replies have in common (and the poorly rated ones lack)."""

    opener: str = ""
    closer: str = ""
    layout: str = "prose"
    max_words: int | None = None
    style_words: tuple[str, ...] = field(default_factory=tuple)

    @property
    def empty(self) -> bool:
        return not (self.opener or self.closer or self.layout != "prose" or self.max_words or self.style_words)


def house_style(liked: Sequence[str], disliked: Sequence[str] = (), *, share: float = 0.5) -> HouseStyle:
    """Read the house style off replies users rated highly, contrasted with ones they did not."""
    liked = [t for t in liked if t and t.strip()]
    if not liked:
        return HouseStyle()
    layouts = Counter(layout_of(t) for t in liked)
    layout, count = layouts.most_common(1)[0]
    layout = layout if count >= share * len(liked) else "prose"
    lengths = [len(words(t)) for t in liked]
    median = statistics.median(lengths)
    max_words = int(median * 1.25) + 1 if median else None

    liked_counts = Counter(w for t in liked for w in set(content_words(t)))
    disliked_counts = Counter(w for t in disliked for w in set(content_words(t)))
    n_liked, n_disliked = len(liked), max(len(disliked), 1)
    lift = {
        w: liked_counts[w] / n_liked - disliked_counts[w] / n_disliked
        for w in liked_counts
        if liked_counts[w] >= max(2, share * n_liked) or n_liked == 1
    }
    opener = _shared([_opening(t) for t in liked], share)
    closer = _shared([_closing(t) for t in liked], share)
    framing = set(words(opener)) | set(words(closer))
    ranked = sorted(lift.items(), key=lambda kv: (-kv[1], kv[0]))
    style_words = tuple(w for w, v in ranked if v > 0 and w not in framing)[:5]
    return HouseStyle(
        opener=opener,
        closer=closer,
        layout=layout,
        max_words=max_words,
        style_words=style_words,
    )


# The directive sentences below are the one vocabulary for style advice: the offline model writes
# them when it proposes instructions and obeys them when it answers. A real model reads them as
# ordinary English.
def directives(style: HouseStyle) -> list[str]:
    out = []
    if style.opener:
        out.append(f'Begin the reply with "{style.opener}".')
    if style.layout == "numbered":
        out.append("Give the answer as numbered steps.")
    elif style.layout == "bullets":
        out.append("Give the answer as bullet points.")
    if style.style_words:
        out.append(f"Use words such as: {', '.join(style.style_words)}.")
    if style.closer:
        out.append(f'End the reply with "{style.closer}".')
    if style.max_words:
        out.append(f"Keep the reply under {style.max_words} words.")
    return out


_BEGIN = re.compile(r'Begin the reply with "([^"\n]+)"')
_END = re.compile(r'End the reply with "([^"\n]+)"')
_WORDS = re.compile(r"Use words such as: ([^.\n]+)\.")
_LIMIT = re.compile(r"Keep the reply under (\d+) words")


def style_from_text(text: str, *, strict: bool = False) -> HouseStyle:
    """Parse directive sentences back into a style.

    Unless ``strict``, a few common plain-English cues count too ("step by step", "bullet",
    "concise"), the way a model would read a hand-written prompt.
    """
    lower = text.lower()
    if "give the answer as numbered steps" in lower:
        layout = "numbered"
    elif "give the answer as bullet points" in lower:
        layout = "bullets"
    elif not strict and ("numbered" in lower or "step-by-step" in lower or "step by step" in lower):
        layout = "numbered"
    elif not strict and "bullet" in lower:
        layout = "bullets"
    else:
        layout = "prose"
    limits = [int(m) for m in _LIMIT.findall(text)]
    if not limits and not strict and re.search(r"\b(concise|brief|short)\b", lower):
        limits = [40]
    found_words: list[str] = []
    for group in _WORDS.findall(text):
        for w in group.split(","):
            w = w.strip().lower()
            if w and w not in found_words:
                found_words.append(w)
    begins, ends = _BEGIN.findall(text), _END.findall(text)
    return HouseStyle(
        opener=begins[-1] if begins else "",
        closer=ends[-1] if ends else "",
        layout=layout,
        max_words=min(limits) if limits else None,
        style_words=tuple(found_words[:8]),
    )


def merge_instructions(current: str, advice: Sequence[str]) -> str:
    """Current instructions plus the advice sentences they do not already contain."""
    new = [a for a in advice if a not in current]
    if not new:
        return current
    return current.rstrip() + "\n\n" + " ".join(new)


# How rated replies are quoted inside feedback text, so any reader (a person, a real model, the
# offline model) can tell the quoted reply and its rating apart from the surrounding advice.
def quote_rated_reply(reply: str, rating: float) -> str:
    return f"<<reply rated {rating:.2f}>>{reply}<</reply>>"


_QUOTED = re.compile(r"<<reply rated (\d(?:\.\d+)?)>>(.*?)<</reply>>", re.DOTALL)
_JSON_PAIR = re.compile(
    r'"agent_output"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"feedback_score"\s*:\s*(-?\d+(?:\.\d+)?)', re.DOTALL
)
_REPR_PAIR = re.compile(
    r"'agent_output'\s*:\s*(?P<q>['\"])(?P<text>(?:(?!(?P=q))[^\\]|\\.)*)(?P=q)\s*,\s*"
    r"'feedback_score'\s*:\s*(?P<score>-?\d+(?:\.\d+)?)",
    re.DOTALL,
)


def _unescape(text: str) -> str:
    return text.replace("\\n", "\n").replace('\\"', '"').replace("\\'", "'").replace("\\\\", "\\")


def rated_replies(text: str) -> list[tuple[str, float]]:
    """Every (reply, rating) pair quoted in ``text``: our feedback quotes, JSON or Python reprs."""
    found = [(_unescape(m.group(2)), float(m.group(1))) for m in _QUOTED.finditer(text)]
    found += [(_unescape(m.group(1)), float(m.group(2))) for m in _JSON_PAIR.finditer(text)]
    found += [(_unescape(m.group("text")), float(m.group("score"))) for m in _REPR_PAIR.finditer(text)]
    seen, unique = set(), []
    for reply, rating in found:
        if (reply, rating) not in seen:
            seen.add((reply, rating))
            unique.append((reply, rating))
    return unique

"""Quality stages after extraction, in the seed's order: filter by quality, validate,
deduplicate; then the deterministic train/validation split.

- filter: ``require_feedback`` drops interactions without a valid score (the seed accepted the
  flag and ignored it); ``min_feedback_threshold`` drops scores below it.
- validate: Unicode normalisation (NFC by default, NFKC on request), whitespace tidied (runs of
  spaces/tabs collapsed, trailing spaces and surplus blank lines removed), minimum lengths,
  and input != output (compared after normalisation, case-insensitively).
- deduplicate: exact (user_input, agent_output) pairs, then pairs equal after NFKC,
  case-folding and whitespace collapsing. The first occurrence is kept (the fetch reads
  newest first, so the most recent copy wins).
- split: ``validation`` when a salted hash of the task id falls below ``validation_fraction``:
  stable across runs and machines, and all examples of one task land on the same side.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

NO_FEEDBACK = "no_feedback"
BELOW_THRESHOLD = "below_feedback_threshold"
INPUT_TOO_SHORT = "input_too_short"
OUTPUT_TOO_SHORT = "output_too_short"
INPUT_EQUALS_OUTPUT = "input_equals_output"
DUPLICATE_EXACT = "duplicate_exact"
DUPLICATE_NORMALIZED = "duplicate_normalized"

TRAIN = "train"
VALIDATION = "validation"



@dataclass(frozen=True)
class QualitySettings:
    require_feedback: bool = True
    min_feedback_threshold: float = 0.0
    unicode_form: Literal["NFC", "NFKC"] = "NFC"
    min_input_chars: int = 2
    min_output_chars: int = 2
    validation_fraction: float = 0.2
    split_salt: str = "bindu-golden-v1"

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_feedback_threshold <= 1.0:
            raise ValueError(f"min_feedback_threshold must be within 0..1, got {self.min_feedback_threshold}")
        if self.unicode_form not in ("NFC", "NFKC"):
            raise ValueError(f"unicode_form must be NFC or NFKC, got {self.unicode_form!r}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be within [0, 1), got {self.validation_fraction}")
        if self.min_input_chars < 1 or self.min_output_chars < 1:
            raise ValueError("minimum lengths must be at least 1")


def quality_drop_reason(score: float | None, settings: QualitySettings) -> str | None:
    """Why an interaction with this feedback score is filtered out, or None to keep it."""
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return NO_FEEDBACK if settings.require_feedback else None
    if score < settings.min_feedback_threshold:
        return BELOW_THRESHOLD
    return None


def normalize_text(text: str, form: str = "NFC") -> str:
    """Unicode-normalised text with tidy whitespace (line breaks kept, at most one blank line).

    Runs of whitespace inside a line become one space, lines are trimmed, blank-line runs become
    one blank line, and the text is trimmed. Done with ``str.split``/``join`` (C speed) rather
    than regular expressions, which cost tens of microseconds per paragraph.
    """
    if not text.isascii():
        text = unicodedata.normalize(form, text)
    elif _is_tidy_ascii(text):
        return text  # most texts: a few substring scans instead of a split per line
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\n" not in text:
        return " ".join(text.split())
    lines: list[str] = []
    previous_blank = True  # drops leading blank lines
    for raw_line in text.split("\n"):
        line = " ".join(raw_line.split())
        if line:
            lines.append(line)
            previous_blank = False
        elif not previous_blank:
            lines.append("")
            previous_blank = True
    if lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


# ASCII whitespace that ``normalize_text`` never keeps: all but the space and the line break.
_NOT_STRAY_WHITESPACE = bytes(b for b in range(256) if b not in b"\t\r\x0b\x0c\x1c\x1d\x1e\x1f")


def _is_tidy_ascii(text: str) -> bool:
    """True when ``normalize_text`` would return this ASCII text unchanged."""
    if not text or text[0].isspace() or text[-1].isspace() or "  " in text:
        return False
    if "\n" in text and (" \n" in text or "\n " in text or "\n\n\n" in text):
        return False
    return not text.encode().translate(None, _NOT_STRAY_WHITESPACE)


def comparison_key(text: str) -> str:
    """Text reduced for "same meaning" comparisons: NFKC, case-folded, whitespace collapsed."""
    if text.isascii():
        return " ".join(text.lower().split())  # case folding is lower-casing in ASCII
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def validate_pair(user_input: str, agent_output: str, settings: QualitySettings) -> tuple[str, str, str | None]:
    """(normalised input, normalised output, drop reason or None)."""
    return validate_pair_with_keys(user_input, agent_output, settings)[:3]


def validate_pair_with_keys(
    user_input: str, agent_output: str, settings: QualitySettings
) -> tuple[str, str, str | None, tuple[str, str] | None]:
    """``validate_pair`` plus both texts' ``comparison_key`` (None if dropped before comparing),
    so that deduplication need not compute them again."""
    user_input = normalize_text(user_input, settings.unicode_form)
    agent_output = normalize_text(agent_output, settings.unicode_form)
    if len(user_input) < settings.min_input_chars:
        return user_input, agent_output, INPUT_TOO_SHORT, None
    if len(agent_output) < settings.min_output_chars:
        return user_input, agent_output, OUTPUT_TOO_SHORT, None
    keys = (_key_of_normalized(user_input), _key_of_normalized(agent_output))
    if keys[0] == keys[1]:
        return user_input, agent_output, INPUT_EQUALS_OUTPUT, keys
    return user_input, agent_output, None, keys


def _key_of_normalized(text: str) -> str:
    """``comparison_key`` of a ``normalize_text`` result: in ASCII, words are already single-spaced
    and lines trimmed, so lower-casing and joining the lines is the whole job."""
    if not text.isascii():
        return comparison_key(text)
    text = text.lower()
    return text.replace("\n\n", "\n").replace("\n", " ") if "\n" in text else text


class Deduplicator:
    """Remembers 64-bit hashes of the pairs seen so far (bounded memory: ~70 bytes a pair).

    Two different pairs share a hash with probability ~n²/2⁶⁵ (3e-8 for a million pairs); the
    cost of such a collision is one example dropped, never a duplicate kept. The normalized
    digest is stable (not Python's per-process ``hash``) so that worker processes can compute it
    next to the comparison keys they already have; the exact check hashes in this process.
    """

    def __init__(self) -> None:
        self._exact: set[int] = set()
        self._normalized: set[int] = set()

    @staticmethod
    def normalized_digest(user_key: str, agent_key: str) -> int:
        """Digest of a pair's ``comparison_key``s; the length prefix keeps ("ab", "c") and ("a", "bc") apart."""
        data = f"{len(user_key)}:{user_key}{agent_key}".encode("utf-8", "surrogatepass")
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")

    def admit(self, user_input: str, agent_output: str, normalized_digest: int) -> str | None:
        """Why the pair is a duplicate of an earlier one, or None (and remember it)."""
        exact = hash((user_input, agent_output))
        if exact in self._exact:
            return DUPLICATE_EXACT
        if normalized_digest in self._normalized:
            return DUPLICATE_NORMALIZED
        self._exact.add(exact)
        self._normalized.add(normalized_digest)
        return None

    def drop_reason(self, user_input: str, agent_output: str) -> str | None:
        digest = self.normalized_digest(comparison_key(user_input), comparison_key(agent_output))
        return self.admit(user_input, agent_output, digest)


_SPLIT_HASHES: dict[str, Any] = {}


def split_for(task_id: str, validation_fraction: float = 0.2, salt: str = "bindu-golden-v1") -> str:
    """``"validation"`` or ``"train"`` for a task id, by a salted hash (deterministic)."""
    # blake2b over "salt:task_id", from a hash object that has already taken "salt:".
    salted = _SPLIT_HASHES.get(salt)
    if salted is None:
        salted = _SPLIT_HASHES[salt] = hashlib.blake2b(f"{salt}:".encode(), digest_size=8)
    hasher = salted.copy()
    hasher.update(task_id.encode())
    digest = hasher.digest()
    bucket = int.from_bytes(digest, "big") / 2**64
    return VALIDATION if bucket < validation_fraction else TRAIN

"""PII scrubbing: what must not leave the database for a language model.

Replaces, with a typed placeholder such as ``[EMAIL]``:

- e-mail addresses;
- API keys and tokens: OpenAI-style ``sk-…``, ``Bearer …`` headers, AWS access key ids
  (``AKIA…``/``ASIA…``), GitHub tokens (``ghp_…``, ``gho_…``, ``github_pat_…``), Slack tokens
  (``xox?-…``), and generic secrets: 32+ hex digits or 40+ base64/url-safe characters, mixing letters
  and digits;
- payment card numbers: 13-19 digits (spaces/dashes allowed) that pass the Luhn check;
- phone numbers: international ``+CC …`` forms and North-American ``(555) 123-4567`` forms.

One compiled regex scans a text once; the callback decides (Luhn, letter/digit mix). Python's
regex engine costs tens of microseconds on a paragraph, so ``might_contain_pii`` first checks
conditions every alternative needs (an "@", a key prefix, a 32+ character token, enough digits)
with C-speed string methods, and most texts skip the regex altogether.
"""

from __future__ import annotations

import re
from collections import Counter

EMAIL = "email"
API_KEY = "api_key"
CARD = "card_number"
PHONE = "phone"

PLACEHOLDERS = {EMAIL: "[EMAIL]", API_KEY: "[API_KEY]", CARD: "[CARD_NUMBER]", PHONE: "[PHONE]"}

_PATTERN = re.compile(
    r"""
    (?P<bearer>\bBearer\s+)(?P<bearer_token>[A-Za-z0-9._~+/=-]{16,})
  | (?P<key>
        \bsk-[A-Za-z0-9_-]{16,}
      | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b
      | \bgh[pousr]_[A-Za-z0-9]{30,}\b
      | \bgithub_pat_[A-Za-z0-9_]{22,}
      | \bxox[abprs]-[A-Za-z0-9-]{10,}
    )
  | (?P<email>[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})
  | (?P<hex>\b[0-9a-fA-F]{32,}\b)
  | (?P<b64>(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{40,}={0,2})
  | (?P<card>\b\d(?:[ -]?\d){12,18}\b)
  | (?P<phone>
        (?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}\d(?!\d)
      | (?<![\w(])(?:\(\d{3}\)\s?|\d{3}[ .-])\d{3}[ .-]\d{4}\b
    )
    """,
    re.VERBOSE,
)


_KEY_PREFIXES = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")  # with "_"; the others are tested first
_NOT_DIGIT_BYTES = bytes(b for b in range(256) if not 48 <= b <= 57)
_ASCII_BYTES = bytes(range(128))
# Every byte that can be part of a generic secret (the hex and base64 alternatives) becomes "t",
# every other byte a space: a secret needs a run of at least 32 "t"s.
_TOKEN_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-"
_TOKEN_MAP = bytes(ord("t") if b in _TOKEN_CHARS else ord(" ") for b in range(256))
_MIN_TOKEN_CHARS = 32  # the shortest generic secret (hex) the pattern accepts
_TOKEN_RUN = b"t" * _MIN_TOKEN_CHARS
_MIN_PHONE_DIGITS_WITH_PLUS = 4
_MIN_PHONE_DIGITS = 10


def might_contain_pii(text: str) -> bool:
    """False only when no alternative of the pattern can match (a necessary-condition test)."""
    if "@" in text or "sk-" in text or "Bearer" in text or "xox" in text:
        return True
    # The other key prefixes share a substring: one scan usually rules them all out.
    if "IA" in text and ("AKIA" in text or "ASIA" in text):
        return True
    if "_" in text and any(prefix in text for prefix in _KEY_PREFIXES):
        return True
    # Counted and searched in C on the UTF-8 bytes: ASCII characters are single bytes there and
    # no other character encodes to an ASCII byte, so digits and token runs come out exact.
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) != len(text) and _has_non_ascii_digit(encoded):
        return True  # the pattern's \d also matches other scripts' digits (Arabic-Indic, Devanagari, ...)
    digits = len(encoded.translate(None, _NOT_DIGIT_BYTES))
    if digits >= _MIN_PHONE_DIGITS or (digits >= _MIN_PHONE_DIGITS_WITH_PLUS and "+" in text):
        return True  # also covers cards, which need 13+ digits
    # Generic secrets mix letters and digits: without a digit there is none to find.
    return bool(digits) and len(encoded) >= _MIN_TOKEN_CHARS and _TOKEN_RUN in encoded.translate(_TOKEN_MAP)


def _has_non_ascii_digit(encoded: bytes) -> bool:
    # Deleting the ASCII bytes leaves whole multi-byte characters: usually a short string.
    others = encoded.translate(None, _ASCII_BYTES).decode("utf-8", "surrogatepass")
    return any(map(str.isdecimal, others))


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a digit string (card numbers carry one), in any script's digits."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _classify(match: re.Match) -> str | None:
    kind = match.lastgroup
    if kind in ("bearer_token", "key"):
        return API_KEY
    if kind in ("hex", "b64"):
        # Secrets mix letters and digits; a long run of one kind is a word or a number.
        token = match.group()
        has_digit = any(c.isdigit() for c in token)
        has_alpha = any(c.isalpha() for c in token)
        return API_KEY if has_digit and has_alpha else None
    if kind == "email":
        return EMAIL
    if kind == "card":
        digits = match.group().replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return CARD
        return None
    if kind == "phone":
        return PHONE
    return None


def scrub_pii(text: str, counts: Counter | None = None) -> str:
    """``text`` with PII replaced by placeholders; ``counts`` (if given) gains one per replacement."""
    if not text or not might_contain_pii(text):
        return text

    def replace(match: re.Match) -> str:
        kind = _classify(match)
        if kind is None:
            return match.group()
        if counts is not None:
            counts[kind] += 1
        if match.lastgroup == "bearer_token":
            return match.group("bearer") + PLACEHOLDERS[kind]
        return PLACEHOLDERS[kind]

    return _PATTERN.sub(replace, text)


def find_pii(text: str) -> list[str]:
    """The kinds of PII found in ``text`` (one entry per occurrence)."""
    found: list[str] = []
    if not text or not might_contain_pii(text):
        return found
    for match in _PATTERN.finditer(text):
        kind = _classify(match)
        if kind is not None:
            found.append(kind)
    return found

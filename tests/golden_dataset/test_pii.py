from collections import Counter

import pytest

from bindu_pipelines.golden_dataset.pii import find_pii, luhn_valid, scrub_pii


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("write to jane.doe+bot@mail.example.co.uk today", "write to [EMAIL] today", "email"),
        ("key sk-proj-Abc123def456ghi789jkl", "key [API_KEY]", "api_key"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc", "Authorization: Bearer [API_KEY]", "api_key"),
        ("aws AKIAIOSFODNN7EXAMPLE here", "aws [API_KEY] here", "api_key"),
        ("token ghp_" + "a1B2" * 9, "token [API_KEY]", "api_key"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "[API_KEY]", "api_key"),
        ("sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "sha [API_KEY]", "api_key"),
        ("secret dGhpcyBpcyBhIHZlcnkgc2VjcmV0IHRva2VuIDEyMzQ1Ng==", "secret [API_KEY]", "api_key"),
        ("card 4111 1111 1111 1111.", "card [CARD_NUMBER].", "card_number"),
        ("card 5500-0000-0000-0004", "card [CARD_NUMBER]", "card_number"),
        ("call +1 415 555 0100 now", "call [PHONE] now", "phone"),
        ("call (415) 555-0199", "call [PHONE]", "phone"),
        ("UK +44 20 7946 0958", "UK [PHONE]", "phone"),
        # Regex \d matches every script's digits; the pre-check and Luhn must follow.
        ("اتصل +٤٤ ٢٠ ٧٩٤٦ ٠٩٥٨", "اتصل [PHONE]", "phone"),
        ("बटुआ ४१११ ११११ ११११ ११११", "बटुआ [CARD_NUMBER]", "card_number"),
    ],
)
def test_scrubs(text, expected, kind):
    counts = Counter()
    assert scrub_pii(text, counts) == expected
    assert counts == {kind: 1}
    assert find_pii(expected) == []


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112 failed Luhn",
        "released on 2024-01-15, version 1.2.3, ticket 123456",
        "the word pneumonoultramicroscopicsilicovolcanoconiosis is long",
        "see python.org or docs at https://example.com/a/b",
        "score 0.75 out of 1",
    ],
)
def test_leaves_ordinary_text(text):
    assert scrub_pii(text) == text
    assert find_pii(text) == []


def test_luhn():
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")


from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bindu_pipelines.golden_dataset import pii  # noqa: E402

pieces = st.sampled_from(
    ["a", "Z", "0", "7", "4111", " ", "\n", "@", "+", ".", "-", "(", ")", "_", "/", "=", "sk-", "Bearer ", "AKIA",
     "ghp_", "xox", "example.com", "deadbeef" * 2, "a1B2" * 5, "415 555 0100", "4111 1111 1111 1111",
     "é", "\u00a0", "٤", "٤١١١ ١١١١", "\u2003", "日本"]
)


@given(st.lists(pieces, max_size=40).map("".join))
def test_prefilter_never_hides_a_match(text):
    """The fast pre-check only skips texts in which the full pattern finds nothing."""
    unfiltered = [kind for kind in map(pii._classify, pii._PATTERN.finditer(text)) if kind is not None]
    assert find_pii(text) == unfiltered
    if not pii.might_contain_pii(text):
        assert unfiltered == []

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bindu_pipelines.golden_dataset.quality import (
    BELOW_THRESHOLD,
    DUPLICATE_EXACT,
    DUPLICATE_NORMALIZED,
    INPUT_EQUALS_OUTPUT,
    INPUT_TOO_SHORT,
    NO_FEEDBACK,
    OUTPUT_TOO_SHORT,
    Deduplicator,
    QualitySettings,
    comparison_key,
    normalize_text,
    quality_drop_reason,
    split_for,
    validate_pair,
)


def test_quality_filter_honours_require_feedback():
    strict = QualitySettings(require_feedback=True, min_feedback_threshold=0.5)
    lenient = QualitySettings(require_feedback=False, min_feedback_threshold=0.5)
    assert quality_drop_reason(None, strict) == NO_FEEDBACK
    assert quality_drop_reason(math.nan, strict) == NO_FEEDBACK
    assert quality_drop_reason(None, lenient) is None
    assert quality_drop_reason(0.25, lenient) == BELOW_THRESHOLD
    assert quality_drop_reason(0.5, strict) is None


def test_normalize_text():
    assert normalize_text("  cafe\u0301 \t\t ok  \r\n\r\n\r\n\n next  ") == "caf\u00e9 ok\n\nnext"
    assert normalize_text("\uff21\uff22 \ufb01", "NFKC") == "AB fi"
    assert normalize_text("\uff21\uff22", "NFC") == "\uff21\uff22"


def test_validate_pair():
    settings = QualitySettings(min_input_chars=3, min_output_chars=3)
    assert validate_pair(" hi ", "hello", settings)[2] == INPUT_TOO_SHORT
    assert validate_pair("hello", "ok", settings)[2] == OUTPUT_TOO_SHORT
    assert validate_pair("Same  Text", "same text", settings)[2] == INPUT_EQUALS_OUTPUT
    assert validate_pair("what?  ", " answer\t here", settings) == ("what?", "answer here", None)


def test_deduplicator_exact_then_normalised():
    dedupe = Deduplicator()
    assert dedupe.drop_reason("How are you?", "Fine.") is None
    assert dedupe.drop_reason("How are you?", "Fine.") == DUPLICATE_EXACT
    assert dedupe.drop_reason("how are  YOU?", "fine.") == DUPLICATE_NORMALIZED
    assert dedupe.drop_reason("How are you?", "Great.") is None
    # The pair boundary matters: ("ab", "c") is not ("a", "bc").
    assert dedupe.drop_reason("ab", "c") is None
    assert dedupe.drop_reason("a", "bc") is None


def test_split_is_deterministic_and_near_fraction():
    ids = [f"task-{i}" for i in range(4000)]
    splits = [split_for(i, 0.2) for i in ids]
    assert splits == [split_for(i, 0.2) for i in ids]
    share = splits.count("validation") / len(ids)
    assert 0.17 < share < 0.23
    assert all(split_for(i, 0.0) == "train" for i in ids[:100])


def test_settings_are_checked():
    with pytest.raises(ValueError, match="min_feedback_threshold"):
        QualitySettings(min_feedback_threshold=1.5)
    with pytest.raises(ValueError, match="unicode_form"):
        QualitySettings(unicode_form="NFD")


@given(st.text(max_size=60))
def test_normalize_text_is_idempotent_and_trimmed(text):
    once = normalize_text(text, "NFKC")
    assert normalize_text(once, "NFKC") == once
    assert once == once.strip()
    assert "  " not in once and "\n\n\n" not in once


@given(st.text(max_size=40), st.text(max_size=40))
def test_comparison_key_ignores_case_and_spacing(a, b):
    assert comparison_key(f" {a.upper()}  ") == comparison_key(a.upper())
    assert comparison_key(a) == comparison_key(comparison_key(a))


@given(st.text(alphabet=st.sampled_from("ab \t\r\n\x0b\x0c\x1c.é\u00a0\u2028\u3000"), max_size=40))
def test_string_method_normalisation_matches_the_regex_rule(text):
    import re
    import unicodedata

    reference = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    reference = re.sub(r"[^\S\n]+", " ", reference)
    reference = re.sub(r"\n{3,}", "\n\n", re.sub(r" ?\n ?", "\n", reference)).strip()
    assert normalize_text(text) == reference


ascii_texts = st.text(alphabet=st.sampled_from("ab. \t\r\n\x0b\x0c\x1c\x1f"), max_size=40)


@given(ascii_texts)
def test_tidy_ascii_text_takes_the_fast_path_to_the_same_result(text):
    """ASCII text that needs no tidying is returned as is; the result equals the regex rule."""
    import re

    reference = text.replace("\r\n", "\n").replace("\r", "\n")
    reference = re.sub(r"[^\S\n]+", " ", reference)
    reference = re.sub(r"\n{3,}", "\n\n", re.sub(r" ?\n ?", "\n", reference)).strip()
    assert normalize_text(text) == reference
    assert normalize_text(reference) == reference


@given(st.text(alphabet=st.sampled_from("aBß İ\u00c5\u212b\uff21\t\n"), max_size=30) | st.text(max_size=30))
def test_comparison_key_is_nfkc_casefold_whatever_the_path(text):
    import unicodedata

    assert comparison_key(text) == " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def test_split_is_the_salted_blake2b_of_the_task_id():
    import hashlib

    for task_id in ("c3b697d6-df89-5034-a38b-8591dff7d2f7", "task-1", "é"):
        for salt in ("bindu-golden-v1", "other"):
            digest = hashlib.blake2b(f"{salt}:{task_id}".encode(), digest_size=8).digest()
            expected = "validation" if int.from_bytes(digest, "big") / 2**64 < 0.3 else "train"
            assert split_for(task_id, 0.3, salt) == expected


@given(st.text(alphabet=st.sampled_from("aB. \t\r\n\x0b\x1cé\u00a0\u3000ß"), max_size=40),
       st.text(alphabet=st.sampled_from("aB. \t\r\nxY"), max_size=40))
def test_validation_keys_are_the_comparison_keys_of_the_normalised_texts(user_input, agent_output):
    """Deduplication reuses the keys validation computed, through a shortcut for normalised ASCII."""
    from bindu_pipelines.golden_dataset.quality import validate_pair_with_keys

    settings = QualitySettings(min_input_chars=1, min_output_chars=1)
    normalised_input, normalised_output, reason, keys = validate_pair_with_keys(user_input, agent_output, settings)
    if normalised_input and normalised_output:  # long enough to be compared
        assert keys == (comparison_key(normalised_input), comparison_key(normalised_output))
    else:
        assert keys is None and reason is not None

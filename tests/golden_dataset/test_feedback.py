import json
import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bindu_pipelines.golden_dataset.feedback import (
    FEEDBACK_NOT_OBJECT,
    INVALID_RATING,
    INVALID_THUMBS,
    NO_RATING_OR_THUMBS,
    SUPERSEDED,
    FeedbackScale,
    combine_task_feedback,
    normalize_feedback_data,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("data", "score", "kind"),
    [
        ({"rating": 1}, 0.0, "rating"),
        ({"rating": 3}, 0.5, "rating"),
        ({"rating": 5, "feedback": "great", "task_id": "x"}, 1.0, "rating"),
        ({"rating": 4.0}, 0.75, "rating"),
        ({"rating": "4"}, 0.75, "rating"),
        ({"rating": " 2 "}, 0.25, "rating"),
        ({"thumbs_up": True}, 1.0, "thumbs"),
        ({"thumbs_up": False}, 0.0, "thumbs"),
        ({"thumbs_up": "YES"}, 1.0, "thumbs"),
        ({"thumbs_up": "no"}, 0.0, "thumbs"),
        ({"thumbs_up": "1"}, 1.0, "thumbs"),
        ({"thumbs_up": 0}, 0.0, "thumbs"),
        ({"rating": 2, "thumbs_up": True}, 0.25, "rating"),  # rating is the richer signal
        ({"rating": "five", "thumbs_up": "true"}, 1.0, "thumbs"),  # invalid rating, valid thumbs
        (json.dumps({"rating": 5}), 1.0, "rating"),  # JSON text from a driver
    ],
)
def test_valid_feedback(data, score, kind):
    verdict = normalize_feedback_data(data)
    assert (verdict.score, verdict.feedback_type, verdict.invalid_reason) == (score, kind, None)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"rating": "five"}, INVALID_RATING),
        ({"rating": 0}, INVALID_RATING),
        ({"rating": 6}, INVALID_RATING),
        ({"rating": 4.5}, INVALID_RATING),
        ({"rating": True}, INVALID_RATING),
        ({"rating": None}, INVALID_RATING),
        ({"rating": float("nan")}, INVALID_RATING),
        ({"rating": [5]}, INVALID_RATING),
        ({"thumbs_up": "maybe"}, INVALID_THUMBS),
        ({"thumbs_up": 2}, INVALID_THUMBS),
        ({"thumbs_up": None}, INVALID_THUMBS),
        ({"feedback": "nice"}, NO_RATING_OR_THUMBS),
        ({}, NO_RATING_OR_THUMBS),
        ([1, 2], FEEDBACK_NOT_OBJECT),
        ("not json", FEEDBACK_NOT_OBJECT),
        (5, FEEDBACK_NOT_OBJECT),
        (None, FEEDBACK_NOT_OBJECT),
    ],
)
def test_invalid_feedback(data, reason):
    verdict = normalize_feedback_data(data)
    assert verdict.score is None and verdict.invalid_reason == reason


def test_latest_valid_row_wins_and_counts_once():
    rows = [
        (1, T0, {"rating": 2}),
        (2, T0 + timedelta(hours=1), {"rating": 5}),
        (4, T0 + timedelta(hours=2), {"rating": "five"}),  # later but invalid: ignored
        (3, T0 + timedelta(minutes=30), {"thumbs_up": False}),  # inserted last of the valid ones
    ]
    result = combine_task_feedback(rows)
    assert (result.score, result.feedback_type, result.valid_rows) == (0.0, "thumbs", 3)
    assert result.drops == {INVALID_RATING: 1, SUPERSEDED: 2}


def test_insertion_order_wins_over_timestamps():
    # The writer's clock went backwards: the row inserted later (higher id) still wins.
    rows = [(1, T0 + timedelta(hours=5), {"rating": 1}), (2, T0, {"rating": 5})]
    assert combine_task_feedback(rows).score == 1.0


def test_same_timestamp_higher_id_wins():
    rows = [(7, T0, {"rating": 1}), (9, T0, {"rating": 3}), (8, T0, {"rating": 5})]
    assert combine_task_feedback(rows).score == 0.5


def test_no_valid_rows():
    result = combine_task_feedback([(1, T0, {"thumbs_up": "maybe"})])
    assert (result.score, result.valid_rows, result.drops) == (None, 0, {INVALID_THUMBS: 1})


def test_configurable_scale():
    scale = FeedbackScale(rating_scores={1: 0.0, 2: 0.5, 3: 1.0}, thumbs_up_words=frozenset({"si"}))
    assert normalize_feedback_data({"rating": 2}, scale).score == 0.5
    assert normalize_feedback_data({"rating": 5}, scale).invalid_reason == INVALID_RATING
    assert normalize_feedback_data({"thumbs_up": "Si"}, scale).score == 1.0
    assert normalize_feedback_data({"thumbs_up": "yes"}, scale).invalid_reason == INVALID_THUMBS
    with pytest.raises(ValueError, match="outside 0..1"):
        FeedbackScale(rating_scores={1: 2.0})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@given(st.one_of(json_values, st.dictionaries(st.sampled_from(["rating", "thumbs_up", "feedback"]), json_values)))
def test_normalisation_is_total_and_in_range(data):
    verdict = normalize_feedback_data(data)
    if verdict.invalid_reason is None:
        assert 0.0 <= verdict.score <= 1.0 and verdict.feedback_type in ("rating", "thumbs")
    else:
        assert verdict.score is None and verdict.feedback_type is None


@given(st.integers(min_value=-10, max_value=10), st.sampled_from([int, float, str]))
def test_rating_rule(rating, form):
    verdict = normalize_feedback_data({"rating": form(rating)})
    if 1 <= rating <= 5:
        assert math.isclose(verdict.score, (rating - 1) / 4)
    else:
        assert verdict.invalid_reason == INVALID_RATING


@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.integers(0, 5), st.sampled_from([1, 2, 3, 4, 5, "x"])),
        max_size=8,
        unique_by=lambda row: row[0],  # feedback ids are primary keys
    )
)
def test_combined_score_is_the_latest_valid_rating(rows):
    feedback = [(row_id, T0 + timedelta(minutes=minute), {"rating": r}) for row_id, minute, r in rows]
    result = combine_task_feedback(feedback)
    valid = [(i, r) for i, _minute, r in rows if r != "x"]  # by id: timestamps play no part
    if not valid:
        assert result.score is None
    else:
        assert result.score == (max(valid)[1] - 1) / 4
        assert result.drops.get(SUPERSEDED, 0) == len(valid) - 1

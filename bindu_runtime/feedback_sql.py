"""The feedback scale as an SQL expression, for SQLite JSON and PostgreSQL JSONB.

One row of ``task_feedback.feedback_data`` scores in 0..1, or NULL when it holds no valid feedback:
a rating r in 1..5 scores (r-1)/4 (a valid rating wins over thumbs in the same row); thumbs_up
true/1/"true"/"yes"/"1" scores 1 and false/0/"false"/"no"/"0" scores 0. The golden dataset applies
the same rule in Python (``bindu_pipelines.golden_dataset.feedback``); tests hold the two together.
Used by the canary's aggregate and by the seed-compatible ``select_prompt_with_canary``.
"""

from __future__ import annotations

_WHITESPACE_PG = r"E' \t\r\n'"
_WHITESPACE_SQLITE = "' ' || char(9, 10, 13)"


def _postgres_score(fd: str) -> str:
    rating_text = f"btrim({fd}->>'rating', {_WHITESPACE_PG})"
    thumbs_text = f"lower(btrim({fd}->>'thumbs_up', {_WHITESPACE_PG}))"
    # CASE, unlike AND, evaluates in order: the numeric casts only see text that is a number.
    return f"""CASE WHEN jsonb_typeof({fd}) = 'object' THEN COALESCE(
        CASE
            WHEN jsonb_typeof({fd}->'rating') = 'number' THEN
                CASE WHEN ({fd}->>'rating')::numeric IN (1, 2, 3, 4, 5) THEN (({fd}->>'rating')::numeric - 1) / 4 END
            WHEN jsonb_typeof({fd}->'rating') = 'string' AND {rating_text} ~ '^\\+?([0-9]+\\.?[0-9]*|\\.[0-9]+)$' THEN
                CASE WHEN {rating_text}::numeric IN (1, 2, 3, 4, 5) THEN ({rating_text}::numeric - 1) / 4 END
        END,
        CASE
            WHEN jsonb_typeof({fd}->'thumbs_up') = 'boolean' THEN CASE WHEN ({fd}->'thumbs_up')::boolean THEN 1 ELSE 0 END
            WHEN jsonb_typeof({fd}->'thumbs_up') = 'number' AND {fd}->>'thumbs_up' IN ('0', '1') THEN ({fd}->>'thumbs_up')::numeric
            WHEN jsonb_typeof({fd}->'thumbs_up') = 'string' AND {thumbs_text} IN ('true', 'yes', '1') THEN 1
            WHEN jsonb_typeof({fd}->'thumbs_up') = 'string' AND {thumbs_text} IN ('false', 'no', '0') THEN 0
        END) END"""


def _sqlite_score(fd: str) -> str:
    rating = f"json_extract({fd}, '$.rating')"
    trimmed = f"trim({rating}, {_WHITESPACE_SQLITE})"
    unsigned = f"(CASE WHEN substr({trimmed}, 1, 1) = '+' THEN substr({trimmed}, 2) ELSE {trimmed} END)"
    plain_decimal = (
        f"{unsigned} NOT IN ('', '.') AND {unsigned} NOT GLOB '*[^0-9.]*' "
        f"AND length({unsigned}) - length(replace({unsigned}, '.', '')) <= 1"
    )
    thumbs = f"json_extract({fd}, '$.thumbs_up')"
    thumbs_text = f"lower(trim({thumbs}, {_WHITESPACE_SQLITE}))"
    return f"""CASE WHEN json_valid({fd}) AND json_type({fd}) = 'object' THEN COALESCE(
        CASE
            WHEN json_type({fd}, '$.rating') IN ('integer', 'real') AND {rating} IN (1, 2, 3, 4, 5) THEN ({rating} - 1) / 4.0
            WHEN json_type({fd}, '$.rating') = 'text' AND {plain_decimal} AND CAST({unsigned} AS REAL) IN (1, 2, 3, 4, 5)
                THEN (CAST({unsigned} AS REAL) - 1) / 4.0
        END,
        CASE
            WHEN json_type({fd}, '$.thumbs_up') = 'true' THEN 1.0
            WHEN json_type({fd}, '$.thumbs_up') = 'false' THEN 0.0
            WHEN json_type({fd}, '$.thumbs_up') = 'integer' AND {thumbs} IN (0, 1) THEN {thumbs} * 1.0
            WHEN json_type({fd}, '$.thumbs_up') = 'text' AND {thumbs_text} IN ('true', 'yes', '1') THEN 1.0
            WHEN json_type({fd}, '$.thumbs_up') = 'text' AND {thumbs_text} IN ('false', 'no', '0') THEN 0.0
        END) END"""


def feedback_score_sql(dialect_name: str, column: str = "f.feedback_data") -> str:
    """SQL expression: the normalised score of one feedback row, NULL when it is not valid."""
    if dialect_name == "postgresql":
        return _postgres_score(column)
    if dialect_name == "sqlite":
        return _sqlite_score(column)
    raise ValueError(f"the canary aggregate supports SQLite and PostgreSQL, not {dialect_name}")

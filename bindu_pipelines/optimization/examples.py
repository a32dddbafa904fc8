"""Golden-dataset rows as DSPy examples (the one place this conversion lives for DataFrames).

Same shape as the golden-dataset domain's ``convert_to_dspy_examples``:
``dspy.Example(user_input=…, agent_output=…, feedback_score=…).with_inputs("user_input")``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import dspy

if TYPE_CHECKING:
    import pandas as pd

REQUIRED_COLUMNS = ("user_input", "agent_output", "feedback_score", "split")


def rating_of(value: object) -> float | None:
    """A feedback score in 0..1, or None when missing (NaN/None)."""
    if value is None:
        return None
    try:
        rating = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(rating) else min(max(rating, 0.0), 1.0)


def examples_from_frame(frame: pd.DataFrame, split: str | None = None) -> list[dspy.Example]:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"golden dataset is missing columns {missing}")
    rows = frame if split is None else frame[frame["split"] == split]
    return [
        dspy.Example(
            user_input=str(row.user_input),
            agent_output=str(row.agent_output),
            feedback_score=rating_of(row.feedback_score),
        ).with_inputs("user_input")
        for row in rows.itertuples(index=False)
    ]


def dataset_fingerprint(frame: pd.DataFrame) -> str:
    """Content hash of the rows that matter to training (order-independent)."""
    import hashlib

    digest = hashlib.sha256()
    keyed = sorted(
        f"{row.split}\x1f{row.user_input}\x1f{row.agent_output}\x1f{rating_of(row.feedback_score)}"
        for row in frame.itertuples(index=False)
    )
    for line in keyed:
        digest.update(line.encode())
        digest.update(b"\x1e")
    return digest.hexdigest()[:16]

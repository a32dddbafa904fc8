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


# A busy agent has thousands of rated tasks; the optimizer and the gate need a few hundred, and
# every extra example costs LM calls (SIMBA scores each candidate on the whole training split).
DEFAULT_MAX_TRAIN_EXAMPLES = 200
DEFAULT_MAX_VALIDATION_EXAMPLES = 100


def cap_split(frame: pd.DataFrame, split: str, limit: int, *, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """At most ``limit`` rows of ``split``, stratified by feedback score, chosen deterministically.

    The scored rows are ordered by score (ties by a content hash salted with ``seed``) and the
    kept ones are evenly spaced along that order, so every score level keeps its share; unscored
    rows keep theirs the same way. Same rows and seed, same choice, whatever the frame's order;
    the kept rows stay in frame order. Returns the rows and what was done, for the run's details.
    """
    import hashlib

    rows = frame[frame["split"] == split]
    info = {"available": len(rows), "used": min(len(rows), limit), "limit": limit,
            "stratified_by": "feedback_score", "seed": seed}
    if len(rows) <= limit:
        return rows, info

    def key(user_input: object, agent_output: object) -> str:
        return hashlib.sha256(f"{seed}\x1f{user_input}\x1f{agent_output}".encode("utf-8", "surrogatepass")).hexdigest()

    keys = [key(u, a) for u, a in zip(rows["user_input"], rows["agent_output"], strict=True)]
    scores = [rating_of(value) for value in rows["feedback_score"]]
    positions = range(len(rows))
    groups = [
        sorted((p for p in positions if scores[p] is not None), key=lambda p: (scores[p], keys[p])),
        sorted((p for p in positions if scores[p] is None), key=lambda p: keys[p]),
    ]
    groups = [g for g in groups if g]
    exact = [limit * len(g) / len(rows) for g in groups]
    shares = [math.floor(x) for x in exact]
    for i in sorted(range(len(groups)), key=lambda i: (shares[i] - exact[i], i))[: limit - sum(shares)]:
        shares[i] += 1
    kept = sorted(g[int((j + 0.5) * len(g) / n)] for g, n in zip(groups, shares, strict=True) for j in range(n))
    return rows.iloc[kept], info

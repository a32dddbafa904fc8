"""The offline gate: does the candidate prompt beat the active one on held-out data?

Both prompts answer every validation example; the metric scores each reply. The candidate is
accepted only if its text differs from the active prompt and the one-sided lower confidence
bound of the mean paired difference (candidate − active, Student t) is above zero.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Literal

import dspy


from bindu_pipelines.errors import EvaluationFailed

__all__ = ["EvaluationFailed", "GateResult", "offline_gate", "score_program", "t_quantile"]


def t_quantile(p: float, df: int) -> float:
    """Student t quantile (exact for df 1 and 2; Cornish-Fisher expansion, error < 1e-3, beyond)."""
    if not 0.5 <= p < 1 or df < 1:
        raise ValueError("t_quantile needs 0.5 <= p < 1 and df >= 1")
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = NormalDist().inv_cdf(p)
    v = float(df)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * v**4)
    )


def score_program(
    program: dspy.Module, examples: Sequence[dspy.Example], metric: Callable[..., Any], *, num_threads: int = 1
) -> list[float]:
    """Score ``program`` on each example; any error propagates (nothing is silently zeroed)."""

    def one(example: dspy.Example) -> float:
        prediction = program(**example.inputs())
        return float(metric(example, prediction))

    if num_threads <= 1 or len(examples) <= 1:
        return [one(ex) for ex in examples]
    with ThreadPoolExecutor(max_workers=min(num_threads, len(examples))) as pool:
        futures = [pool.submit(copy_context().run, one, ex) for ex in examples]
        return [f.result() for f in futures]


@dataclass(frozen=True)
class GateResult:
    verdict: Literal["accepted", "rejected"]
    reason: str
    active_score: float
    candidate_score: float
    mean_difference: float
    lower_bound: float
    confidence: float
    n: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def offline_gate(
    active_text: str,
    candidate_text: str,
    active_scores: Sequence[float],
    candidate_scores: Sequence[float],
    *,
    confidence: float = 0.95,
) -> GateResult:
    if len(active_scores) != len(candidate_scores):
        raise ValueError("the gate needs paired scores (same validation examples for both prompts)")
    n = len(active_scores)
    if n == 0:
        raise EvaluationFailed("the validation split is empty: nothing to compare the prompts on")
    if not any(active_scores) and not any(candidate_scores):
        raise EvaluationFailed(f"evaluation produced all-zero scores on {n} validation examples")
    active_mean = statistics.fmean(active_scores)
    candidate_mean = statistics.fmean(candidate_scores)
    diffs = [c - a for a, c in zip(active_scores, candidate_scores, strict=True)]
    mean = statistics.fmean(diffs)
    if n >= 2:
        sd = statistics.stdev(diffs)
        lower = mean - t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    else:
        lower = float("-inf")

    def result(verdict, reason):
        return GateResult(verdict, reason, active_mean, candidate_mean, mean, lower, confidence, n)

    if candidate_text.strip() == active_text.strip():
        return result("rejected", "the optimizer returned the active prompt unchanged")
    if n < 2:
        return result("rejected", "one validation example cannot bound the improvement")
    if lower <= 0:
        return result(
            "rejected",
            f"no reliable improvement: mean difference {mean:+.3f}, {confidence:.0%} lower bound {lower:+.3f} <= 0",
        )
    return result(
        "accepted", f"candidate better by {mean:+.3f} on {n} examples ({confidence:.0%} lower bound {lower:+.3f})"
    )

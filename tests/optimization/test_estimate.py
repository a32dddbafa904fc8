"""The pre-run estimate and the example cap: sized for a real model, refused over budget."""

from __future__ import annotations

import pandas as pd
import pytest

from bindu_pipelines.errors import EstimateOverBudget
from bindu_pipelines.names import OFFLINE_MODEL
from bindu_pipelines.optimization.estimate import estimate_training_run, optimizer_calls
from bindu_pipelines.optimization.examples import cap_split
from bindu_pipelines.optimization.optimizers import OptimizerConfig
from bindu_pipelines.optimization.settings import LanguageModelSettings


def settings(**values) -> LanguageModelSettings:
    return LanguageModelSettings().model_copy(update={"model": "openai/gpt-4o-mini"} | values)


def test_a_busy_agent_fits_the_default_budget_because_the_examples_are_capped():
    # The case: thousands of rated tasks used to spend the whole 10 000-call budget.
    busy = estimate_training_run(settings(), 5_000)
    assert busy.train_examples == 200 and busy.validation_examples == 100
    assert busy.available_train_examples == 4_000 and busy.available_validation_examples == 1_000
    assert busy.calls < busy.budget_calls and not busy.over_budget()
    uncapped = estimate_training_run(settings(), 5_000, max_train_examples=4_000, max_validation_examples=1_000)
    assert uncapped.calls > uncapped.budget_calls
    assert "BINDU_LM_BUDGET_CALLS=10,000" in uncapped.over_budget()[0]
    with pytest.raises(EstimateOverBudget, match="^estimated run exceeds its budget: "):
        uncapped.refuse_if_over_budget()


def test_cost_comes_from_litellms_local_map_and_an_unknown_model_cannot_pass_a_cost_cap():
    known = estimate_training_run(settings(), 300)
    assert known.cost_usd is not None and known.cost_usd > 0
    assert known.as_dict()["cost_usd"] == round(known.cost_usd, 6)  # what the metadata and details show
    assert estimate_training_run(settings(budget_usd=known.cost_usd * 2), 300).over_budget() == []
    assert "exceeds BINDU_LM_BUDGET_USD" in estimate_training_run(settings(budget_usd=known.cost_usd / 2), 300).over_budget()[0]

    unknown = estimate_training_run(settings(model="openai/my-own-model"), 300)
    assert unknown.cost_usd is None and unknown.over_budget() == []  # no cost cap: nothing to check
    [reason] = estimate_training_run(settings(model="openai/my-own-model", budget_usd=1.0), 300).over_budget()
    assert "not in LiteLLM's cost map" in reason

    offline = estimate_training_run(settings(model=OFFLINE_MODEL), 300)
    assert offline.offline_demo and offline.cost_usd == 0.0


def test_the_summary_is_one_paragraph_with_calls_tokens_cost_and_the_verdict():
    text = estimate_training_run(settings(), 5_000, "gepa", "last_n:3").summary()
    assert "\n" not in text and text.endswith(".")
    for part in ("gepa", "last_n:3", "200 training and 100 validation examples", "capped from 4,000 and 1,000",
                 "LM calls", "tokens", "cost $", "within the budget"):
        assert part in text, part


def test_optimizer_call_counts_follow_their_settings():
    simba = OptimizerConfig(name="simba", max_steps=2, num_candidates=3, bsize=4)
    assert optimizer_calls(simba, 10) == (2 * 2 * 3 * 4 + 4 * 10, 2 * 3)
    # More examples never cost fewer calls, for every optimizer.
    for name in ("simba", "gepa", "miprov2"):
        config = OptimizerConfig(name=name)
        assert sum(optimizer_calls(config, 50)) <= sum(optimizer_calls(config, 200))


def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "user_input": [f"question {i}" for i in range(n)],
        "agent_output": [f"reply {i}" for i in range(n)],
        "feedback_score": [None if i % 10 == 0 else (i % 5) / 4 for i in range(n)],
        "split": ["train"] * n,
    })


def test_the_cap_is_deterministic_stratified_by_score_and_keeps_small_splits_whole():
    rows = frame(1_000)
    kept, info = cap_split(rows, "train", 100)
    again, _ = cap_split(rows.sample(frac=1.0, random_state=1), "train", 100)
    assert len(kept) == 100 and info == {"available": 1_000, "used": 100, "limit": 100, "stratified_by": "feedback_score",
                                         "seed": 0}
    assert sorted(kept["user_input"]) == sorted(again["user_input"])  # the same rows, whatever the order
    assert list(kept.index) == sorted(kept.index)  # kept rows stay in frame order
    # Each score level keeps about its share (10 % unscored; the rest spread over five levels).
    assert kept["feedback_score"].isna().sum() == 10
    share = kept["feedback_score"].value_counts(normalize=True)
    assert (abs(share - rows["feedback_score"].value_counts(normalize=True)) < 0.02).all()
    assert set(cap_split(rows, "train", 100, seed=1)[0]["user_input"]) != set(kept["user_input"])

    small, info = cap_split(rows.head(50), "train", 100)
    assert len(small) == 50 and info["used"] == 50

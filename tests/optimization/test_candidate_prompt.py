"""End to end through Dagster (ephemeral instance, in-process) with the offline model."""

from __future__ import annotations

import dspy
import pytest

from bindu_pipelines.errors import NO_LANGUAGE_MODEL
from bindu_pipelines.names import OFFLINE_GATE_CHECK
from bindu_pipelines.optimization.lm import LanguageModel
from bindu_pipelines.optimization.offline_lm import OFFLINE_MODEL, OfflineLM
from bindu_pipelines.optimization.program import AgentProgram
from bindu_pipelines.optimization.text import directives, house_style
from bindu_runtime import PromptRouter

from .conftest import ACTIVE_PROMPT, AGENT, candidate_metadata, failure_reason, materialize_candidate
from .golden_frames import golden_frame


def _serve_as_candidate(router: PromptRouter) -> str:
    for i in range(2000):
        choice = router.select(key=f"user-{i}")
        if choice.status == "candidate":
            return choice.text
    raise AssertionError("the router never served the candidate")


@pytest.mark.parametrize("optimizer", ["simba", "gepa", "miprov2"])
def test_optimizer_writes_a_candidate_that_passed_the_gate(optimizer, database, instance):
    url, store = database
    active = store.get_active_prompt(AGENT)
    result = materialize_candidate(instance, url, golden_frame(), optimizer=optimizer)
    assert result.success
    meta = candidate_metadata(result)
    assert meta["outcome"] == "candidate_started" and meta["gate_verdict"] == "accepted"
    assert meta["candidate_score"] > meta["active_score"] and meta["lower_bound"] > 0
    for key in ("active_score", "candidate_score", "mean_difference", "lower_bound"):  # as the UI shows them
        assert meta[key] == round(meta[key], 4), (key, meta[key])
    assert meta["lm_calls"] > 0 and meta["lm_tokens"] > 0
    assert meta["lm_model"] == f"{OFFLINE_MODEL} (offline demo model)"
    assert "```diff" in meta["prompt_diff"] and meta["optimizer_settings"]["optimizer"] == optimizer

    candidate = store.get_candidate_prompt(AGENT)
    assert candidate.id == meta["candidate_prompt_id"] and candidate.parent_id == active.id
    assert candidate.source == optimizer and str(candidate.traffic) in ("0.1", "0.1000")
    assert str(store.get_active_prompt(AGENT).traffic) in ("0.9", "0.9000")
    assert candidate.prompt_text != ACTIVE_PROMPT and candidate.prompt_text.startswith(ACTIVE_PROMPT)
    details = candidate.details
    assert details["lm"]["lm_model"] == OFFLINE_MODEL and details["lm"]["lm_offline"] is True
    assert details["scores"]["candidate"] > details["scores"]["active"]
    assert len(details["dataset"]["fingerprint"]) == 16 and details["usage"]["lm_calls"] == meta["lm_calls"]
    # Marked as the offline model's work, in the stored details and in the materialization.
    assert details["lm"]["offline_demo"] is True and meta["lm_offline_demo"] is True
    assert details["dataset"]["examples_used"]["train"] == meta["examples_used"]["train"]
    assert details["estimate"]["calls"] >= meta["lm_calls"]  # the estimate is an upper bound
    # The gate as a check on candidate_prompt: passed, with both scores, as the asset decided.
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == OFFLINE_GATE_CHECK and check.passed
    check_meta = {k: getattr(v, "value", v) for k, v in check.metadata.items()}
    assert check_meta["active_score"] == meta["active_score"] and check_meta["candidate_score"] == meta["candidate_score"]
    assert check_meta["candidate_prompt_id"] == candidate.id

    # What the router serves is the stored text, and it is exactly the system message the agent sends.
    router = PromptRouter(url, agent_id=AGENT, default_prompt="unused default")
    try:
        served = _serve_as_candidate(router)
    finally:
        router.close()
    assert served == candidate.prompt_text
    lm = OfflineLM()
    with dspy.context(lm=lm):
        AgentProgram(served)(user_input="How do I get a refund?")
    assert lm.history[-1]["messages"][0] == {"role": "system", "content": served}


def test_gate_rejects_a_candidate_that_is_no_better(database, instance):
    url, store = database
    frame = golden_frame()
    liked = frame[(frame.split == "train") & (frame.feedback_score >= 0.5)].agent_output.tolist()
    disliked = frame[(frame.split == "train") & (frame.feedback_score < 0.5)].agent_output.tolist()
    # An active prompt that already says everything the data can teach.
    best = ACTIVE_PROMPT + "\n\n" + " ".join(directives(house_style(liked, disliked)))
    store.start_experiment(AGENT, best, source="test")
    store.promote(AGENT, candidate_id=store.get_candidate_prompt(AGENT).id)
    before = store.list_prompts(AGENT)

    result = materialize_candidate(instance, url, frame, optimizer="gepa")
    assert result.success
    meta = candidate_metadata(result)
    assert meta["outcome"] == "rejected" and meta["gate_verdict"] == "rejected"
    assert "active_score" in meta and "candidate_score" in meta
    assert meta["candidate_score"] <= meta["active_score"] + 1e-9 or meta["lower_bound"] <= 0
    assert store.list_prompts(AGENT) == before and store.get_candidate_prompt(AGENT) is None
    # The check a person sees: failed, with both scores, and no candidate id (nothing was written).
    [check] = result.get_asset_check_evaluations()
    check_meta = {k: getattr(v, "value", v) for k, v in check.metadata.items()}
    assert check.check_name == OFFLINE_GATE_CHECK and not check.passed
    assert check_meta["active_score"] == meta["active_score"] and check_meta["candidate_score"] == meta["candidate_score"]
    assert "candidate_prompt_id" not in check_meta


def test_guard_skips_while_an_experiment_runs(database, instance):
    url, store = database
    store.start_experiment(AGENT, "Someone else's candidate.", source="test")
    before = store.list_prompts(AGENT)
    result = materialize_candidate(instance, url, golden_frame())
    assert result.success
    meta = candidate_metadata(result)
    assert meta["outcome"] == "skipped" and "experiment is running" in meta["reason"]
    assert store.list_prompts(AGENT) == before
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and check.description.startswith("gate not run: an experiment is running")


def test_too_little_data_is_skipped_not_failed(database, instance):
    url, store = database
    result = materialize_candidate(instance, url, golden_frame(n_train=1, n_validation=1))
    assert result.success
    meta = candidate_metadata(result)
    assert meta["outcome"] == "skipped" and "not enough data" in meta["reason"]
    assert store.get_candidate_prompt(AGENT) is None


def test_a_run_estimated_over_its_budget_is_refused_before_any_lm_call(database, instance):
    url, store = database
    before = store.list_prompts(AGENT)
    result = materialize_candidate(
        instance, url, golden_frame(), language_model=LanguageModel(model=OFFLINE_MODEL, num_threads=1, budget_calls=15)
    )
    assert not result.success
    reason = failure_reason(result)
    assert "estimated run exceeds its budget:" in reason and "exceed BINDU_LM_BUDGET_CALLS=15" in reason
    assert "\n" not in reason.split("Failure: ", 1)[-1].strip()
    assert store.list_prompts(AGENT) == before


def test_the_optimizer_and_the_gate_see_at_most_the_configured_examples(database, instance):
    url, store = database
    result = materialize_candidate(instance, url, golden_frame(n_train=40, n_validation=20),
                                   max_train_examples=10, max_validation_examples=6)
    assert result.success
    meta = candidate_metadata(result)
    used = meta["examples_used"]
    assert used["train"]["available"] == 40 and used["train"]["used"] == 10
    assert used["validation"]["available"] == 20 and used["validation"]["used"] == 6
    assert meta["validation_examples"] == 6 and meta["estimate"]["train_examples"] == 10
    [check] = result.get_asset_check_evaluations()
    # The check reports the asset's decision, whichever it was.
    assert check.passed == (meta["outcome"] == "candidate_started")


def test_without_a_language_model_the_asset_fails_with_one_line_and_writes_nothing(database, instance, monkeypatch):
    monkeypatch.delenv("BINDU_LM", raising=False)
    url, store = database
    before = store.list_prompts(AGENT)
    result = materialize_candidate(instance, url, golden_frame(), language_model=LanguageModel(num_threads=1))
    assert not result.success
    assert failure_reason(result).split("Failure: ", 1)[-1].strip() == NO_LANGUAGE_MODEL
    assert store.list_prompts(AGENT) == before

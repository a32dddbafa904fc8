"""The real HTTP path: LiteLLM → a small OpenAI-compatible server on 127.0.0.1, same settings
as production (``LanguageModel`` with BINDU_LM_* values)."""

from __future__ import annotations

import json

import dspy
import pytest

from bindu_pipelines.optimization.lm import Budget, LanguageModel
from bindu_pipelines.optimization.program import AgentProgram
from bindu_pipelines.optimization.training import TrainingFailed, preflight

from .conftest import AGENT, candidate_metadata, failure_reason, materialize_candidate
from .golden_frames import golden_frame
from .openai_stub import OpenAIStub

KEY = "sk-test-not-a-real-key"


def http_model(stub: OpenAIStub, **overrides) -> LanguageModel:
    settings = {"model": "openai/stub-model", "api_base": stub.api_base, "retries": 0, "timeout": 5.0, "num_threads": 1}
    return LanguageModel(**(settings | overrides))


@pytest.fixture(autouse=True)
def _api_key(monkeypatch):
    monkeypatch.setenv("BINDU_LM_API_KEY", KEY)


def test_agent_call_over_http_sends_the_prompt_and_the_key():
    with OpenAIStub() as stub:
        lm = http_model(stub).build(Budget())
        with dspy.context(lm=lm):
            reply = AgentProgram("You are terse.")(user_input="Where are my invoices?").agent_output
    [request] = stub.requests
    assert request["body"]["model"] == "stub-model"
    assert request["body"]["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Where are my invoices?"},
    ]
    assert request["headers"]["authorization"] == f"Bearer {KEY}"
    assert reply and "invoices" in reply


def test_training_over_http_starts_a_candidate_and_never_records_the_key(database, instance):
    url, store = database
    with OpenAIStub() as stub:
        result = materialize_candidate(instance, url, golden_frame(), language_model=http_model(stub))
    assert result.success, failure_reason(result)
    meta = candidate_metadata(result)
    assert meta["outcome"] == "candidate_started" and meta["lm_model"] == "openai/stub-model"
    assert meta["lm_calls"] == len(stub.requests)
    candidate = store.get_candidate_prompt(AGENT)
    assert candidate.details["lm"]["lm_api_base"] == stub.api_base
    assert KEY not in json.dumps(candidate.details) + json.dumps(meta, default=str)
    run_config = instance.get_run_by_id(result.run_id).run_config
    assert KEY not in json.dumps(run_config, default=str)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("error", "preflight failed"), ("garbage", "preflight failed"), ("slow", "preflight failed")],
)
def test_broken_model_fails_the_run_with_one_line_and_writes_nothing(mode, expected, database, instance):
    url, store = database
    before = store.list_prompts(AGENT)
    with OpenAIStub(mode, delay=3.0) as stub:
        result = materialize_candidate(instance, url, golden_frame(), language_model=http_model(stub, timeout=1.0))
    assert not result.success
    reason = failure_reason(result)
    assert expected in reason and "\n" not in reason.strip()
    assert store.list_prompts(AGENT) == before
    if mode == "slow":
        assert "timeout" in reason.lower() or "timed out" in reason.lower()


def test_model_going_down_mid_run_fails_instead_of_simba_silently_scoring_zeros(database, instance):
    url, store = database
    before = store.list_prompts(AGENT)
    with OpenAIStub("dies", healthy_requests=3) as stub:
        result = materialize_candidate(instance, url, golden_frame(), language_model=http_model(stub))
    assert not result.success
    assert "LM calls failed during simba" in failure_reason(result)
    assert store.list_prompts(AGENT) == before


def test_transient_error_is_retried_with_backoff():
    with OpenAIStub("flaky") as stub:
        lm = http_model(stub, retries=1).build(Budget())
        preflight(lm)
    assert len(stub.requests) == 2  # one 503, one retry that succeeded


def test_preflight_without_retries_reports_the_server_error():
    with OpenAIStub("error") as stub:
        lm = http_model(stub).build(budget := Budget())
        with pytest.raises(TrainingFailed, match="preflight failed"):
            preflight(lm)
    assert budget.failures == 1 and len(stub.requests) == 1

"""The LM-judge metric, chosen by run config, drives the optimizer and the gate end to end."""

from __future__ import annotations

from bindu_pipelines.names import OFFLINE_MODEL
from bindu_pipelines.optimization.lm import LanguageModel
from tests.optimization.conftest import AGENT, candidate_metadata, materialize_candidate
from tests.optimization.golden_frames import golden_frame


def test_judge_metric_scores_with_the_language_model(database, instance):
    url, store = database
    reply_run = materialize_candidate(instance, url, golden_frame(), optimizer="simba")
    reply_calls = candidate_metadata(reply_run)["lm_calls"]
    store.rollback(AGENT, candidate_id=store.get_candidate_prompt(AGENT).id)

    judged = materialize_candidate(instance, url, golden_frame(), optimizer="simba", metric="judge",
                                   language_model=LanguageModel(model=OFFLINE_MODEL, num_threads=1))
    assert judged.success
    meta = candidate_metadata(judged)
    # Every evaluation now asks the model for a verdict: many more calls for the same optimizer budget.
    assert meta["lm_calls"] > reply_calls
    assert 0.0 <= meta["active_score"] <= 1.0 and 0.0 <= meta["candidate_score"] <= 1.0
    # The offline model, as judge, rates replies by their likeness to the reference: a real signal.
    assert meta["outcome"] == "candidate_started" and meta["candidate_score"] > meta["active_score"]
    assert store.get_candidate_prompt(AGENT).details["metric"] == "judge"

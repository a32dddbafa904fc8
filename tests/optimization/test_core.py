"""Pure DSPy pieces with the offline model: adapter, metric, gate, budget, offline model."""

from __future__ import annotations

import json

import dspy
import pytest
from dspy.utils.exceptions import AdapterParseError

from bindu_pipelines.optimization.adapter import DEMOS_HEADER, AgentReplyAdapter, render_system_prompt
from bindu_pipelines.optimization.examples import examples_from_frame
from bindu_pipelines.optimization.gate import EvaluationFailed, offline_gate, t_quantile
from bindu_pipelines.errors import NO_LANGUAGE_MODEL, LanguageModelNotConfigured
from bindu_pipelines.optimization.lm import Budget, BudgetExhausted, LanguageModel, offline_demo_resources_config
from bindu_runtime.errors import ConfigurationError
from bindu_pipelines.optimization.metric import ReplyMetric
from bindu_pipelines.optimization.offline_lm import OFFLINE_MODEL, OfflineLM, structured_reply
from bindu_pipelines.optimization.program import AgentProgram, AgentSignature, deployable_prompt
from bindu_pipelines.optimization.text import quote_rated_reply

from .golden_frames import disliked_reply, golden_frame, liked_reply

PROMPT = "  You are a support agent.\n\n  Answer briefly. "


def test_agent_sends_the_prompt_verbatim_as_system_message_and_the_raw_input():
    lm = OfflineLM()
    with dspy.context(lm=lm):
        reply = AgentProgram(PROMPT)(user_input="How do I reset my password?").agent_output
    messages = lm.history[-1]["messages"]
    assert messages == [
        {"role": "system", "content": PROMPT},
        {"role": "user", "content": "How do I reset my password?"},
    ]
    assert reply == lm.history[-1]["outputs"][0].strip()
    assert "[[ ##" not in reply


def test_demos_are_rendered_into_the_system_message_exactly_as_stored():
    program = AgentProgram("Be helpful.")
    program.respond.demos = [dspy.Example(user_input="Refund?", agent_output="1. Open Billing.\n2. Click refund.")]
    expected = f"Be helpful.\n\n{DEMOS_HEADER}\n\nUser: Refund?\nAssistant: 1. Open Billing.\n2. Click refund."
    assert deployable_prompt(program) == expected
    lm = OfflineLM()
    with dspy.context(lm=lm):
        program(user_input="Refund please")
    assert lm.history[-1]["messages"][0]["content"] == expected


def test_plain_adapter_is_scoped_to_the_agent_other_calls_keep_field_markers():
    lm = OfflineLM()
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        AgentProgram("Be helpful.")(user_input="hi")
        dspy.Predict("question -> answer")(question="hi")
    agent_call, structured_call = lm.history[-2:]
    assert "[[ ## " not in agent_call["messages"][0]["content"]
    assert "[[ ## question ## ]]" in structured_call["messages"][-1]["content"]


def test_empty_reply_is_a_parse_error_and_other_signatures_are_refused():
    adapter = AgentReplyAdapter()
    with pytest.raises(AdapterParseError):
        adapter.parse(AgentSignature, "   ")
    with pytest.raises(TypeError):
        adapter.format(dspy.Signature("question -> answer"), [], {"question": "x"})


def test_render_without_demos_is_the_identity():
    assert render_system_prompt(PROMPT, []) == PROMPT
    assert render_system_prompt(PROMPT, [dspy.Example(user_input="x")]) == PROMPT


# ------------------------------------------------------------------ metric


def _metric_and_examples():
    frame = golden_frame(n_train=8, n_validation=4)
    train = examples_from_frame(frame, "train")
    return ReplyMetric.from_examples(train), train


def test_metric_rewards_replies_like_the_highly_rated_reference():
    metric, train = _metric_and_examples()
    liked = next(ex for ex in train if ex.feedback_score >= 0.75)
    good = metric(liked, dspy.Prediction(agent_output=liked.agent_output))
    bland = metric(liked, dspy.Prediction(agent_output="I can help with that."))
    assert float(good) > 0.9 and float(bland) < 0.4
    assert quote_rated_reply(liked.agent_output, liked.feedback_score) in good.feedback
    assert bland.score < good.score and float(bland + good) == pytest.approx(bland.score + good.score)


def test_low_rating_never_reads_as_imitate_this():
    metric, train = _metric_and_examples()
    disliked = next(ex for ex in train if ex.feedback_score == 0.0)
    copy_of_bad = metric(disliked, dspy.Prediction(agent_output=disliked.agent_output)).score
    house_style = metric(disliked, dspy.Prediction(agent_output=liked_reply("Open Billing and choose Plan", "Click Cancel plan and confirm"))).score
    assert house_style > copy_of_bad
    assert "do not imitate" in metric(disliked, dspy.Prediction(agent_output="x")).feedback


def test_unrated_example_scores_against_the_pool_and_empty_reply_is_zero():
    metric, _ = _metric_and_examples()
    unrated = dspy.Example(user_input="How do I get a refund for my last invoice?", agent_output="whatever", feedback_score=None).with_inputs("user_input")
    good = metric(unrated, dspy.Prediction(agent_output=liked_reply("Open Billing and pick the invoice", "Click Request refund and confirm")))
    assert good.score > 0.5
    assert metric(unrated, dspy.Prediction(agent_output="")).score == 0.0
    assert metric(unrated, None).score == 0.0


# ------------------------------------------------------------------ gate


def test_t_quantile_matches_tables():
    for df, expected in [(1, 6.314), (2, 2.920), (4, 2.132), (9, 1.833), (29, 1.699)]:
        assert t_quantile(0.95, df) == pytest.approx(expected, abs=2e-3)


def test_gate_accepts_only_a_different_and_reliably_better_prompt():
    active, better, worse = [0.2, 0.3, 0.25, 0.1], [0.6, 0.7, 0.5, 0.55], [0.1, 0.2, 0.2, 0.05]
    accepted = offline_gate("A", "B", active, better)
    assert accepted.verdict == "accepted" and accepted.lower_bound > 0
    assert offline_gate("A", "A", active, better).verdict == "rejected"  # identical text
    rejected = offline_gate("A", "B", active, worse)
    assert rejected.verdict == "rejected" and rejected.candidate_score < rejected.active_score
    noisy = offline_gate("A", "B", [0.2, 0.9, 0.1, 0.8], [0.9, 0.2, 0.8, 0.3])
    assert noisy.verdict == "rejected" and "lower bound" in noisy.reason


def test_gate_refuses_all_zero_or_empty_evaluations():
    with pytest.raises(EvaluationFailed, match="all-zero"):
        offline_gate("A", "B", [0.0, 0.0], [0.0, 0.0])
    with pytest.raises(EvaluationFailed):
        offline_gate("A", "B", [], [])


# ------------------------------------------------------------------ budget and LM resource


def test_budget_caps_calls_across_copies_before_reaching_the_model():
    budget = Budget(max_calls=3)
    lm = OfflineLM(budget=budget)
    copy = lm.copy(rollout_id=1, temperature=1.0)
    lm("a"), copy("b"), lm("c")
    with pytest.raises(BudgetExhausted, match="3 calls reached the cap of 3"):
        copy("d")
    assert budget.calls == 3 and budget.tokens > 0 and len(lm.history) == 2 and len(copy.history) == 1


def test_budget_caps_tokens():
    budget = Budget(max_tokens=5)
    lm = OfflineLM(budget=budget)
    lm("a long enough prompt to pass five tokens at once")
    with pytest.raises(BudgetExhausted, match="tokens"):
        lm("again")


def test_the_offline_model_is_used_only_when_it_is_named(monkeypatch):
    monkeypatch.delenv("BINDU_LM", raising=False)
    monkeypatch.delenv("BINDU_LM_MODEL", raising=False)
    for refusal in (lambda: LanguageModel().build(Budget()), lambda: LanguageModel().describe(),
                    lambda: LanguageModel().configured()):
        with pytest.raises(LanguageModelNotConfigured) as error:
            refusal()
        assert str(error.value) == NO_LANGUAGE_MODEL and "\n" not in str(error.value)
    assert "set BINDU_LM" in NO_LANGUAGE_MODEL
    assert isinstance(error.value, ConfigurationError)  # a CLI catching BinduError prints the line

    monkeypatch.setenv("BINDU_LM", OFFLINE_MODEL)
    assert isinstance(LanguageModel().build(Budget()), OfflineLM)
    assert LanguageModel().describe()["offline_demo"] is True
    # The demo's way in: a per-run resource override, no environment change.
    monkeypatch.delenv("BINDU_LM")
    assert offline_demo_resources_config() == {"language_model": {"config": {"model": OFFLINE_MODEL}}}
    assert isinstance(LanguageModel(model=OFFLINE_MODEL).build(Budget()), OfflineLM)

    monkeypatch.setenv("BINDU_LM", "openai/my-model")
    monkeypatch.setenv("BINDU_LM_API_KEY", "sk-secret-value")
    resource = LanguageModel()
    lm = resource.build(Budget())
    assert not isinstance(lm, OfflineLM) and lm.model == "openai/my-model"
    assert resource.describe()["lm_offline"] is False and resource.describe()["offline_demo"] is False
    assert "sk-secret-value" not in json.dumps(resource.describe()) + json.dumps(lm.dump_state(), default=str)


# ------------------------------------------------------------------ offline model


def test_offline_proposals_come_from_the_rated_replies_it_is_shown():
    rated = json.dumps(
        [{"agent_output": liked_reply("Open Settings", "Click Save"), "feedback_score": 1.0},
         {"agent_output": liked_reply("Open Billing", "Click Refund"), "feedback_score": 0.75},
         {"agent_output": disliked_reply("q"), "feedback_score": 0.0}]
    )
    system = "Your input fields are:\n1. `basic_instruction` (str):\n2. `task_demos` (str):\nYour output fields are:\n1. `proposed_instruction` (str):\nAll interactions will be structured"
    user = f"[[ ## basic_instruction ## ]]\nBe helpful.\n\n[[ ## task_demos ## ]]\n{rated}"
    reply = structured_reply(system, user)
    proposal = reply.split("[[ ## proposed_instruction ## ]]\n", 1)[1].split("\n\n[[ ## completed")[0]
    assert proposal.startswith("Be helpful.")
    assert 'Begin the reply with "Good news: this is quick to fix."' in proposal
    assert "numbered steps" in proposal and "docs" not in proposal
    json_reply = structured_reply(system.replace("All interactions", "Outputs will be a JSON object. All interactions"), user)
    assert json.loads(json_reply)["proposed_instruction"] == proposal
    assert structured_reply(system, user) == reply  # deterministic


def test_offline_agent_follows_the_directives_of_its_prompt():
    lm = OfflineLM()
    with dspy.context(lm=lm):
        plain = AgentProgram("Be helpful.")(user_input="How do I reset my password?").agent_output
        styled = AgentProgram(
            'Be helpful. Begin the reply with "Good news: this is quick to fix.". Give the answer as numbered steps. '
            'End the reply with "Reply here if you get stuck.".'
        )(user_input="How do I reset my password?").agent_output
    assert styled.startswith("Good news: this is quick to fix.") and styled.endswith("Reply here if you get stuck.")
    assert "\n1. " in styled and not plain.startswith("Good news")

"""One training run for one agent: guard → program → optimize → evaluate → gate → candidate.

Dagster-free: the ``candidate_prompt`` asset, the seed-compatible ``train()`` and the tests all
call ``train_candidate``. A broken run (model down, timeouts, garbage replies, budget reached,
nothing but zero scores) raises ``TrainingFailed`` with a one-line reason and writes nothing.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import dspy

from bindu_runtime import PromptStore
from bindu_pipelines.errors import TrainingFailed
from bindu_runtime.errors import ExperimentRunning, StaleTransition

from .estimate import estimate_run
from .examples import (
    DEFAULT_MAX_TRAIN_EXAMPLES,
    DEFAULT_MAX_VALIDATION_EXAMPLES,
    cap_split,
    dataset_fingerprint,
    examples_from_frame,
)
from .gate import EvaluationFailed, GateResult, offline_gate, score_program
from .metering import Budget, BudgetExhausted, one_line
from .metric import JudgeMetric, ReplyMetric
from .optimizers import MIN_TRAIN_EXAMPLES, OptimizerConfig, optimize, settings_for
from .program import AgentProgram, deployable_prompt

if TYPE_CHECKING:
    import pandas as pd

    from .lm import LanguageModel  # the Dagster resource; used here only through its methods

MIN_VALIDATION_EXAMPLES = 2
# More than this share of failed LM calls during optimization means the optimizer learned from
# errors (SIMBA scores a failed call 0 and carries on), not from the model.
MAX_FAILED_CALL_SHARE = 0.2


@dataclass(frozen=True)
class TrainingOutcome:
    agent_id: str
    status: Literal["candidate_started", "rejected", "skipped"]
    reason: str
    optimizer: str
    active_prompt_id: str | None = None
    active_text: str | None = None
    candidate_text: str | None = None
    candidate_id: str | None = None
    gate: GateResult | None = None
    details: dict[str, Any] = field(default_factory=dict)


class PreflightAnswer(dspy.Signature):
    """Answer the question in a few words."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


def experiment_running(store: PromptStore, agent_id: str) -> str | None:
    """The guard: the reason not to train now, or None."""
    candidate = store.get_candidate_prompt(agent_id)
    if candidate is None:
        return None
    return f"an experiment is running for {agent_id!r}: candidate {candidate.id} at {candidate.traffic} traffic"


def preflight(lm: dspy.BaseLM) -> None:
    """One structured call through DSPy's chat format: the model answers and its reply parses."""
    try:
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
            answer = dspy.Predict(PreflightAnswer)(question="Is the service ready? Reply with one word.").answer
    except BudgetExhausted as exc:
        raise TrainingFailed(str(exc)) from exc
    except Exception as exc:
        raise TrainingFailed(f"language model preflight failed ({lm.model}): {one_line(exc)}") from exc
    if not isinstance(answer, str) or not answer.strip():
        raise TrainingFailed(f"language model preflight failed ({lm.model}): empty answer")


def prompt_diff_markdown(active: str, candidate: str) -> str:
    diff = difflib.unified_diff(
        active.splitlines(), candidate.splitlines(), "active", "candidate", lineterm="", n=2
    )
    body = "\n".join(diff) or "(no difference)"
    return f"```diff\n{body}\n```"


def _check_usage(budget: Budget, stage: str) -> None:
    if budget.exhausted:
        raise TrainingFailed(budget.exhausted)
    if budget.calls and budget.failures > MAX_FAILED_CALL_SHARE * budget.calls:
        raise TrainingFailed(
            f"{budget.failures} of {budget.calls} LM calls failed during {stage} (first: {budget.first_failure})"
        )


def train_candidate(
    store: PromptStore,
    agent_id: str,
    golden_dataset: pd.DataFrame,
    *,
    language_model: LanguageModel,
    config: OptimizerConfig,
    confidence: float = 0.95,
    metric_name: str = "reply",
    max_train_examples: int = DEFAULT_MAX_TRAIN_EXAMPLES,
    max_validation_examples: int = DEFAULT_MAX_VALIDATION_EXAMPLES,
) -> TrainingOutcome:
    """Optimize the agent's active prompt on its golden dataset; start an experiment if it wins.

    ``metric_name``: "reply" (offline similarity to highly rated references, the default) or
    "judge" (the run's language model rates each reply; costs one LM call per evaluation).

    The optimizer and the gate see at most ``max_train_examples`` / ``max_validation_examples``
    rows (stratified by score, deterministic; recorded in the details). Before the first LM call
    the run's calls, tokens and cost are estimated; over the budget, it is refused
    (``EstimateOverBudget``). Without a named model it raises ``LanguageModelNotConfigured``."""
    settings = language_model.configured()
    reason = experiment_running(store, agent_id)
    if reason:
        return TrainingOutcome(agent_id, "skipped", reason, config.name)
    active = store.get_active_prompt(agent_id)
    if active is None:
        raise TrainingFailed(f"agent {agent_id!r} has no active prompt to optimize")

    train_rows, train_cap = cap_split(golden_dataset, "train", max_train_examples, seed=config.seed)
    validation_rows, validation_cap = cap_split(golden_dataset, "validation", max_validation_examples, seed=config.seed)
    train = examples_from_frame(train_rows)
    validation = examples_from_frame(validation_rows)
    if len(train) < MIN_TRAIN_EXAMPLES or len(validation) < MIN_VALIDATION_EXAMPLES:
        return TrainingOutcome(
            agent_id, "skipped",
            f"not enough data: {len(train)} training and {len(validation)} validation examples "
            f"(need {MIN_TRAIN_EXAMPLES} and {MIN_VALIDATION_EXAMPLES})",
            config.name, active.id, active.prompt_text,
        )

    used = [*train, *validation]
    estimate = estimate_run(
        settings, config, n_train=len(train), n_validation=len(validation), metric=metric_name,
        prompt_chars=len(active.prompt_text),
        input_chars=sum(len(ex.user_input) for ex in used) / len(used),
        output_chars=sum(len(ex.agent_output) for ex in used) / len(used),
        available_train=train_cap["available"], available_validation=validation_cap["available"],
    )
    estimate.refuse_if_over_budget()
    budget = language_model.new_budget()
    lm = language_model.build(budget)
    metric = ReplyMetric.from_examples(train) if metric_name == "reply" else JudgeMetric(judge_lm=lm)
    program = AgentProgram(active.prompt_text)
    started = time.monotonic()
    # Scoped, not dspy.configure: Dagster may run this in any thread. The outer adapter is the
    # structured one the optimizers' own calls need; the agent program scopes its plain one.
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        preflight(lm)
        try:
            optimized = optimize(program, train, config=config, metric=metric, lm=lm)
        except (BudgetExhausted, TrainingFailed):
            _check_usage(budget, config.name)
            raise
        except Exception as exc:
            _check_usage(budget, config.name)
            raise TrainingFailed(f"{config.name} failed: {one_line(exc)}") from exc
        _check_usage(budget, config.name)
        optimize_seconds = time.monotonic() - started

        candidate_text = deployable_prompt(optimized)
        active_text = deployable_prompt(program)
        try:
            active_scores = score_program(program, validation, metric, num_threads=settings.num_threads)
            candidate_scores = score_program(optimized, validation, metric, num_threads=settings.num_threads)
            gate = offline_gate(active_text, candidate_text, active_scores, candidate_scores, confidence=confidence)
        except BudgetExhausted as exc:
            raise TrainingFailed(str(exc)) from exc
        except EvaluationFailed as exc:
            raise TrainingFailed(str(exc)) from exc
        except Exception as exc:
            raise TrainingFailed(f"evaluation on the validation split failed: {one_line(exc)}") from exc

    details = {
        "optimizer": settings_for(config, len(train)),
        "metric": metric_name,
        "dataset": {
            "fingerprint": dataset_fingerprint(golden_dataset),
            "train_examples": len(train),
            "validation_examples": len(validation),
            "examples_used": {"train": train_cap, "validation": validation_cap},
        },
        "estimate": estimate.as_dict(),
        "scores": {
            "active": round(gate.active_score, 4),
            "candidate": round(gate.candidate_score, 4),
            "mean_difference": round(gate.mean_difference, 4),
            "lower_bound": round(gate.lower_bound, 4) if gate.lower_bound != float("-inf") else None,
            "confidence": confidence,
            "verdict": gate.verdict,
        },
        "lm": language_model.describe(),
        "usage": {**budget.snapshot(), "optimize_seconds": round(optimize_seconds, 2)},
    }
    if gate.verdict != "accepted":
        return TrainingOutcome(
            agent_id, "rejected", gate.reason, config.name, active.id, active.prompt_text,
            candidate_text, None, gate, details,
        )
    try:
        candidate = store.start_experiment(
            agent_id, candidate_text, source=config.name, details=details, parent_id=active.id,
            statistics={"offline_gate": gate.as_dict()},
        )
    except (ExperimentRunning, StaleTransition) as exc:
        # Another run (or a promotion) got there first: nothing of ours was written.
        return TrainingOutcome(
            agent_id, "skipped", one_line(exc), config.name, active.id, active.prompt_text,
            candidate_text, None, gate, details,
        )
    return TrainingOutcome(
        agent_id, "candidate_started", gate.reason, config.name, active.id, active.prompt_text,
        candidate_text, candidate.id, gate, details,
    )

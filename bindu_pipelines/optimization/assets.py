"""``candidate_prompt``: the agent's next system prompt, tried offline before any user sees it.

For one agent (partition) it optimizes the active prompt on the golden dataset with DSPy and,
if the candidate beats the active prompt on the held-out validation split (the offline gate),
starts the canary experiment: candidate at 10 % of traffic, active at 90 %, in one transaction.
"""


import json
from typing import Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from bindu_pipelines.errors import LanguageModelNotConfigured, TrainingFailed
from bindu_pipelines.metadata import rounded_float
from bindu_pipelines.names import CANDIDATE_PROMPT, GOLDEN_DATASET, OFFLINE_GATE_CHECK, STAGE_TAG
from bindu_pipelines.names import CandidateMeta as M
from bindu_pipelines.partitions import agent_partitions
from bindu_pipelines.resources import BinduDatabase

from .examples import DEFAULT_MAX_TRAIN_EXAMPLES, DEFAULT_MAX_VALIDATION_EXAMPLES
from .gate import GateResult
from .lm import LanguageModel
from .optimizers import MIN_TRAIN_EXAMPLES, OptimizerConfig
from .training import MIN_VALIDATION_EXAMPLES, TrainingOutcome, prompt_diff_markdown, train_candidate

GROUP = "optimization"


class CandidatePromptConfig(dg.Config):
    """Which optimizer runs, and its size. Defaults: SIMBA with DSPy's (the seed's) settings."""

    optimizer: Literal["simba", "gepa", "miprov2"] = Field(default="simba", description="simba | gepa | miprov2")
    seed: int = 0
    max_steps: int = Field(default=8, ge=1, description="SIMBA steps")
    num_candidates: int = Field(default=6, ge=1, description="SIMBA candidates per step")
    bsize: int = Field(default=32, ge=1, description="SIMBA mini-batch (capped at the training split size)")
    max_demos: int = Field(default=4, ge=0, description="SIMBA demos per predictor")
    gepa_max_full_evals: int = Field(default=5, ge=1, description="GEPA budget in passes over the training split")
    mipro_num_candidates: int = Field(default=3, ge=1)
    mipro_num_trials: int = Field(default=6, ge=1)
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0, description="Offline gate's one-sided confidence")
    max_train_examples: int = Field(
        default=DEFAULT_MAX_TRAIN_EXAMPLES, ge=MIN_TRAIN_EXAMPLES,
        description="Most training examples the optimizer sees (stratified by score, deterministic)",
    )
    max_validation_examples: int = Field(
        default=DEFAULT_MAX_VALIDATION_EXAMPLES, ge=MIN_VALIDATION_EXAMPLES,
        description="Most validation examples the offline gate scores (stratified by score, deterministic)",
    )
    metric: Literal["reply", "judge"] = Field(
        default="reply",
        description="reply: offline similarity to highly rated reference replies; judge: the language model rates each reply",
    )

    def optimizer_config(self, num_threads: int) -> OptimizerConfig:
        return OptimizerConfig(
            name=self.optimizer,
            seed=self.seed,
            num_threads=num_threads,
            bsize=self.bsize,
            num_candidates=self.num_candidates,
            max_steps=self.max_steps,
            max_demos=self.max_demos,
            gepa_max_full_evals=self.gepa_max_full_evals,
            mipro_num_candidates=self.mipro_num_candidates,
            mipro_num_trials=self.mipro_num_trials,
        )


def outcome_metadata(outcome: TrainingOutcome) -> dict[str, object]:
    meta: dict[str, object] = {
        M.OUTCOME: outcome.status,
        M.REASON: outcome.reason,
        M.OPTIMIZER: outcome.optimizer,
    }
    if outcome.gate is not None:
        meta |= gate_metadata(outcome.gate)
    if outcome.active_text is not None and outcome.candidate_text is not None:
        meta[M.PROMPT_DIFF] = dg.MetadataValue.md(prompt_diff_markdown(outcome.active_text, outcome.candidate_text))
    if outcome.candidate_id:
        meta[M.CANDIDATE_PROMPT_ID] = outcome.candidate_id
    if outcome.details:
        usage = outcome.details.get("usage", {})
        lm = outcome.details["lm"]
        meta[M.LM_CALLS] = usage.get("lm_calls", 0)
        meta[M.LM_TOKENS] = usage.get("lm_tokens", 0)
        meta[M.LM_MODEL] = lm["lm_model"] + (" (offline demo model)" if lm["offline_demo"] else "")
        meta[M.LM_OFFLINE_DEMO] = bool(lm["offline_demo"])
        meta[M.OPTIMIZER_SETTINGS] = dg.MetadataValue.json(outcome.details["optimizer"])
        meta[M.DATASET_FINGERPRINT] = outcome.details["dataset"]["fingerprint"]
        meta[M.EXAMPLES_USED] = dg.MetadataValue.json(outcome.details["dataset"]["examples_used"])
        meta[M.ESTIMATE] = dg.MetadataValue.json(outcome.details["estimate"])
    return meta


def gate_metadata(gate: GateResult) -> dict[str, object]:
    metadata = {
        M.GATE_VERDICT: gate.verdict,
        M.ACTIVE_SCORE: rounded_float(gate.active_score),
        M.CANDIDATE_SCORE: rounded_float(gate.candidate_score),
        M.MEAN_DIFFERENCE: rounded_float(gate.mean_difference),
        M.LOWER_BOUND: rounded_float(gate.lower_bound),
        M.VALIDATION_EXAMPLES: gate.n,
    }
    return {key: value for key, value in metadata.items() if value is not None}


def offline_gate_check(outcome: TrainingOutcome) -> dg.AssetCheckResult:
    """The gate's verdict as the asset check a person sees pass or fail. It reports what
    ``train_candidate`` decided (and, on acceptance, wrote with the experiment start in one
    transaction); it never scores anything again."""
    if outcome.gate is None:
        return dg.AssetCheckResult(
            check_name=OFFLINE_GATE_CHECK, passed=False, severity=dg.AssetCheckSeverity.WARN,
            description=f"gate not run: {outcome.reason}", metadata={M.OUTCOME: outcome.status, M.REASON: outcome.reason},
        )
    metadata = gate_metadata(outcome.gate) | {M.OUTCOME: outcome.status, M.REASON: outcome.reason}
    if outcome.candidate_id:
        metadata[M.CANDIDATE_PROMPT_ID] = outcome.candidate_id
    if outcome.details:
        metadata[M.LM_OFFLINE_DEMO] = bool(outcome.details["lm"]["offline_demo"])
    return dg.AssetCheckResult(
        check_name=OFFLINE_GATE_CHECK,
        passed=outcome.gate.verdict == "accepted",
        severity=dg.AssetCheckSeverity.WARN,
        description=outcome.gate.reason,
        metadata=metadata,
    )


@dg.asset(
    partitions_def=agent_partitions,
    group_name=GROUP,
    kinds={"dspy"},
    ins={GOLDEN_DATASET: dg.AssetIn()},
    tags={STAGE_TAG: "training"},
    check_specs=[dg.AssetCheckSpec(
        OFFLINE_GATE_CHECK, asset=CANDIDATE_PROMPT,
        description="The candidate beats the active prompt on the held-out validation split (both scores in metadata).",
    )],
)
def candidate_prompt(
    context: dg.AssetExecutionContext,
    config: CandidatePromptConfig,
    golden_dataset: pd.DataFrame,
    bindu_db: BinduDatabase,
    language_model: LanguageModel,
) -> dg.MaterializeResult:
    """The agent's optimized system prompt, started as a 10 % canary only if it wins offline.

    Skipped (no failure, nothing written) while an experiment is running for the agent. A run
    whose model failed, timed out, answered garbage or ran out of budget fails with the reason.
    """
    agent_id = context.partition_key
    try:
        num_threads = language_model.configured().num_threads
    except LanguageModelNotConfigured as exc:
        raise dg.Failure(description=str(exc), metadata={M.REASON: str(exc)}, allow_retries=False) from None
    try:
        with bindu_db.failing_cleanly(f"training agent {agent_id!r}"):
            outcome = train_candidate(
                bindu_db.store(),
                agent_id,
                golden_dataset,
                language_model=language_model,
                config=config.optimizer_config(num_threads),
                confidence=config.confidence,
                metric_name=config.metric,
                max_train_examples=config.max_train_examples,
                max_validation_examples=config.max_validation_examples,
            )
    except TrainingFailed as exc:
        raise dg.Failure(description=str(exc), metadata={"reason": str(exc)}, allow_retries=False) from None
    level = context.log.warning if outcome.status == "skipped" else context.log.info
    level(f"candidate_prompt[{agent_id}]: {outcome.status}: {outcome.reason}")
    return dg.MaterializeResult(metadata=outcome_metadata(outcome), check_results=[offline_gate_check(outcome)])


def outcome_from_materialization(metadata: dict) -> dict[str, object]:
    """The outcome fields a caller (CLI, ``train()``) reads back from the run's event log."""
    def value(key):
        entry = metadata.get(key)
        return getattr(entry, "value", entry)

    return {k: value(k) for k in M.READ_BACK if k in metadata} | (
        {M.OPTIMIZER_SETTINGS: json.loads(json.dumps(value(M.OPTIMIZER_SETTINGS)))} if M.OPTIMIZER_SETTINGS in metadata else {}
    )

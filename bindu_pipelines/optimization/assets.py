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

from bindu_pipelines.partitions import agent_partitions
from bindu_pipelines.resources import BinduDatabase

from .lm import LanguageModel
from .optimizers import OptimizerConfig
from .training import TrainingFailed, TrainingOutcome, prompt_diff_markdown, train_candidate

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
        "outcome": outcome.status,
        "reason": outcome.reason,
        "optimizer": outcome.optimizer,
    }
    if outcome.gate is not None:
        meta |= {
            "gate_verdict": outcome.gate.verdict,
            "active_score": dg.MetadataValue.float(outcome.gate.active_score),
            "candidate_score": dg.MetadataValue.float(outcome.gate.candidate_score),
            "mean_difference": dg.MetadataValue.float(outcome.gate.mean_difference),
            "lower_bound": dg.MetadataValue.float(outcome.gate.lower_bound),
            "validation_examples": outcome.gate.n,
        }
    if outcome.active_text is not None and outcome.candidate_text is not None:
        meta["prompt_diff"] = dg.MetadataValue.md(prompt_diff_markdown(outcome.active_text, outcome.candidate_text))
    if outcome.candidate_id:
        meta["candidate_prompt_id"] = outcome.candidate_id
    if outcome.details:
        usage = outcome.details.get("usage", {})
        meta["lm_calls"] = usage.get("lm_calls", 0)
        meta["lm_tokens"] = usage.get("lm_tokens", 0)
        meta["lm_model"] = outcome.details["lm"]["lm_model"] + (" (offline demo model)" if outcome.details["lm"]["lm_offline"] else "")
        meta["optimizer_settings"] = dg.MetadataValue.json(outcome.details["optimizer"])
        meta["dataset_fingerprint"] = outcome.details["dataset"]["fingerprint"]
    return meta


@dg.asset(
    partitions_def=agent_partitions,
    group_name=GROUP,
    kinds={"dspy"},
    ins={"golden_dataset": dg.AssetIn()},
    tags={"bindu/stage": "training"},
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
    num_threads = language_model.settings().num_threads
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
            )
    except TrainingFailed as exc:
        raise dg.Failure(description=str(exc), metadata={"reason": str(exc)}, allow_retries=False) from None
    level = context.log.warning if outcome.status == "skipped" else context.log.info
    level(f"candidate_prompt[{agent_id}]: {outcome.status}: {outcome.reason}")
    return dg.MaterializeResult(metadata=outcome_metadata(outcome))


def outcome_from_materialization(metadata: dict) -> dict[str, object]:
    """The outcome fields a caller (CLI, ``train()``) reads back from the run's event log."""
    def value(key):
        entry = metadata.get(key)
        return getattr(entry, "value", entry)

    keys = ("outcome", "reason", "optimizer", "gate_verdict", "active_score", "candidate_score",
            "lower_bound", "candidate_prompt_id", "lm_calls", "lm_tokens", "lm_model")
    return {k: value(k) for k in keys if k in metadata} | (
        {"optimizer_settings": json.loads(json.dumps(value("optimizer_settings")))} if "optimizer_settings" in metadata else {}
    )

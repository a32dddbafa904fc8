"""Checks on the golden dataset, beside the asset.

``golden_dataset_has_enough_examples`` is blocking: when it fails, nothing downstream in the
run (the optimizer's ``candidate_prompt``) executes, so no prompt is trained on a failed dataset.
"""


import math
import warnings

import dagster as dg
import pandas as pd

from bindu_pipelines.partitions import agent_partitions

from .assets import GoldenDatasetConfig, golden_dataset
from .pii import find_pii
from .quality import TRAIN, VALIDATION, comparison_key

# Partitioned checks are "preview" in Dagster 1.13, and they are what we need: each agent's
# dataset is checked on its own partition. Silence that one notice, not Dagster's warnings.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)


def _split_counts(frame: pd.DataFrame) -> dict[str, int]:
    return {TRAIN: int((frame["split"] == TRAIN).sum()), VALIDATION: int((frame["split"] == VALIDATION).sum())}


@dg.asset_check(asset=golden_dataset, blocking=True, partitions_def=agent_partitions,
                description="Enough examples to train on and to validate with; blocks training otherwise.")
def golden_dataset_has_enough_examples(config: GoldenDatasetConfig, golden_dataset: pd.DataFrame) -> dg.AssetCheckResult:
    splits = _split_counts(golden_dataset)
    passed = len(golden_dataset) >= config.min_examples and splits[VALIDATION] >= config.min_validation_examples
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "rows": len(golden_dataset),
            "min_examples": config.min_examples,
            "validation_rows": splits[VALIDATION],
            "min_validation_examples": config.min_validation_examples,
        },
    )


@dg.asset_check(asset=golden_dataset, partitions_def=agent_partitions,
                description="Every feedback score is within 0..1 (and present when feedback is required).")
def golden_dataset_scores_in_range(config: GoldenDatasetConfig, golden_dataset: pd.DataFrame) -> dg.AssetCheckResult:
    scores = golden_dataset["feedback_score"]
    out_of_range = int(((scores < 0.0) | (scores > 1.0)).sum())
    missing = int(scores.isna().sum())
    passed = out_of_range == 0 and (missing == 0 or not config.require_feedback)
    return dg.AssetCheckResult(
        passed=passed,
        metadata={"out_of_range": out_of_range, "missing_scores": missing, "require_feedback": config.require_feedback},
    )


@dg.asset_check(asset=golden_dataset, partitions_def=agent_partitions,
                description="No (user_input, agent_output) pair appears twice, exactly or after normalisation.")
def golden_dataset_no_duplicate_pairs(golden_dataset: pd.DataFrame) -> dg.AssetCheckResult:
    exact = int(golden_dataset.duplicated(["user_input", "agent_output"]).sum())
    keys = pd.DataFrame({
        "u": golden_dataset["user_input"].map(comparison_key),
        "a": golden_dataset["agent_output"].map(comparison_key),
    })
    normalized = int(keys.duplicated().sum())
    return dg.AssetCheckResult(passed=normalized == 0, metadata={"exact_duplicates": exact, "normalized_duplicates": normalized})


@dg.asset_check(asset=golden_dataset, partitions_def=agent_partitions,
                description="No e-mail, phone, card number or API key is left in the texts.")
def golden_dataset_no_pii(golden_dataset: pd.DataFrame) -> dg.AssetCheckResult:
    found: dict[str, int] = {}
    rows_with_pii = []
    for task_id, user_input, agent_output in golden_dataset[["id", "user_input", "agent_output"]].itertuples(index=False, name=None):
        kinds = find_pii(user_input) + find_pii(agent_output)
        for kind in kinds:
            found[kind] = found.get(kind, 0) + 1
        if kinds:
            rows_with_pii.append(task_id)
    return dg.AssetCheckResult(
        passed=not found,
        metadata={"pii_found": dg.MetadataValue.json(found), "rows_with_pii": len(rows_with_pii),
                  "example_task_ids": dg.MetadataValue.json(rows_with_pii[:10])},
    )


def _previous_materialization_metadata(context: dg.AssetCheckExecutionContext) -> dict | None:
    """Metadata of this partition's latest golden_dataset materialization from an earlier run."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=golden_dataset.key, asset_partitions=[context.partition_key]), limit=5
    ).records
    for record in records:
        if record.run_id != context.run.run_id and record.asset_materialization is not None:
            return {k: v.value for k, v in record.asset_materialization.metadata.items()}
    return None


@dg.asset_check(asset=golden_dataset, partitions_def=agent_partitions,
                description="Warns when size or mean score moves sharply from the previous materialization.")
def golden_dataset_shift(
    context: dg.AssetCheckExecutionContext, config: GoldenDatasetConfig, golden_dataset: pd.DataFrame
) -> dg.AssetCheckResult:
    previous = _previous_materialization_metadata(context)
    rows = len(golden_dataset)
    scores = golden_dataset["feedback_score"].dropna()
    mean = float(scores.mean()) if len(scores) else math.nan
    if previous is None:
        return dg.AssetCheckResult(passed=True, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"rows": rows, "previous": "none: first materialization"})
    previous_rows = int(previous.get("dagster/row_count", 0))
    previous_mean = float(previous.get("mean_feedback_score", math.nan))
    row_shift = abs(rows - previous_rows) / max(previous_rows, 1)
    mean_shift = abs(mean - previous_mean) if not (math.isnan(mean) or math.isnan(previous_mean)) else 0.0
    passed = row_shift <= config.max_row_shift and mean_shift <= config.max_mean_score_shift
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "rows": rows, "previous_rows": previous_rows, "row_shift": round(row_shift, 4),
            "mean_score": mean, "previous_mean_score": previous_mean, "mean_score_shift": round(mean_shift, 4),
        },
    )


golden_dataset_checks = [
    golden_dataset_has_enough_examples,
    golden_dataset_scores_in_range,
    golden_dataset_no_duplicate_pairs,
    golden_dataset_no_pii,
    golden_dataset_shift,
]
CHECK_OP_NAMES = tuple(check.node_def.name for check in golden_dataset_checks)

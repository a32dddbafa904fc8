"""Checks on the golden dataset, beside the asset.

``has_enough_examples`` is blocking: when it fails, nothing downstream in the run (the
optimizer's ``candidate_prompt``) executes, so no prompt is trained on a failed dataset. Each
check reads the golden Parquet file in batches (a handle, not a frame): memory stays bounded.
Check names are short; Dagster prefixes the asset (``golden_dataset_has_enough_examples``).
"""


import hashlib
import math
import warnings

import dagster as dg

from bindu_pipelines.names import GOLDEN_DATASET_CHECKS
from bindu_pipelines.partitions import agent_partitions

from .assets import OPTIONS_RESOURCE, GoldenDatasetConfig, golden_dataset, score_histogram_of
from .pii import find_pii
from .quality import VALIDATION, comparison_key
from .stages import ParquetTable

# Partitioned checks are "preview" in Dagster 1.13, and they are what we need: each agent's
# dataset is checked on its own partition. Silence that one notice, not Dagster's warnings.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)

HAS_ENOUGH_EXAMPLES, SCORES_IN_RANGE, NO_DUPLICATE_PAIRS, NO_PII, SHIFT = GOLDEN_DATASET_CHECKS


def _pair_digest(user_input: str, agent_output: str) -> bytes:
    data = f"{len(user_input)}:{user_input}{agent_output}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=16).digest()


@dg.asset_check(asset=golden_dataset, name=HAS_ENOUGH_EXAMPLES, blocking=True, partitions_def=agent_partitions,
                resource_defs=OPTIONS_RESOURCE,
                description="Enough examples to train on and to validate with; blocks training otherwise.")
def has_enough_examples(golden_dataset_options: GoldenDatasetConfig, golden_dataset: ParquetTable) -> dg.AssetCheckResult:
    config = golden_dataset_options
    _, _, splits = score_histogram_of(golden_dataset)
    rows = golden_dataset.rows
    passed = rows >= config.min_examples and splits[VALIDATION] >= config.min_validation_examples
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "rows": rows,
            "min_examples": config.min_examples,
            "validation_rows": splits[VALIDATION],
            "min_validation_examples": config.min_validation_examples,
        },
    )


@dg.asset_check(asset=golden_dataset, name=SCORES_IN_RANGE, partitions_def=agent_partitions, resource_defs=OPTIONS_RESOURCE,
                description="Every feedback score is within 0..1 (and present when feedback is required).")
def scores_in_range(golden_dataset_options: GoldenDatasetConfig, golden_dataset: ParquetTable) -> dg.AssetCheckResult:
    out_of_range = missing = 0
    for batch in golden_dataset.iter_batches(["feedback_score"]):
        for score in batch.column(0).to_pylist():
            if score is None or score != score:
                missing += 1
            elif score < 0.0 or score > 1.0:
                out_of_range += 1
    require = golden_dataset_options.require_feedback
    passed = out_of_range == 0 and (missing == 0 or not require)
    return dg.AssetCheckResult(
        passed=passed, metadata={"out_of_range": out_of_range, "missing_scores": missing, "require_feedback": require},
    )


@dg.asset_check(asset=golden_dataset, name=NO_DUPLICATE_PAIRS, partitions_def=agent_partitions,
                description="No (user_input, agent_output) pair appears twice, exactly or after normalisation.")
def no_duplicate_pairs(golden_dataset: ParquetTable) -> dg.AssetCheckResult:
    # 16-byte digests of the pairs, not the texts: memory grows by ~100 bytes a row.
    exact_seen: set[bytes] = set()
    normalized_seen: set[bytes] = set()
    exact = normalized = 0
    for user_input, agent_output in golden_dataset.iter_rows(["user_input", "agent_output"]):
        digest = _pair_digest(user_input, agent_output)
        if digest in exact_seen:
            exact += 1
        exact_seen.add(digest)
        digest = _pair_digest(comparison_key(user_input), comparison_key(agent_output))
        if digest in normalized_seen:
            normalized += 1
        normalized_seen.add(digest)
    return dg.AssetCheckResult(passed=normalized == 0, metadata={"exact_duplicates": exact, "normalized_duplicates": normalized})


@dg.asset_check(asset=golden_dataset, name=NO_PII, partitions_def=agent_partitions,
                description="No e-mail, phone, card number or API key is left in the texts.")
def no_pii(golden_dataset: ParquetTable) -> dg.AssetCheckResult:
    found: dict[str, int] = {}
    rows_with_pii = 0
    example_task_ids = []
    for task_id, user_input, agent_output in golden_dataset.iter_rows(["id", "user_input", "agent_output"]):
        kinds = find_pii(user_input) + find_pii(agent_output)
        for kind in kinds:
            found[kind] = found.get(kind, 0) + 1
        if kinds:
            rows_with_pii += 1
            if len(example_task_ids) < 10:
                example_task_ids.append(task_id)
    return dg.AssetCheckResult(
        passed=not found,
        metadata={"pii_found": dg.MetadataValue.json(found), "rows_with_pii": rows_with_pii,
                  "example_task_ids": dg.MetadataValue.json(example_task_ids)},
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


@dg.asset_check(asset=golden_dataset, name=SHIFT, partitions_def=agent_partitions, resource_defs=OPTIONS_RESOURCE,
                description="Warns when size or mean score moves sharply from the previous materialization.")
def shift(
    context: dg.AssetCheckExecutionContext, golden_dataset_options: GoldenDatasetConfig, golden_dataset: ParquetTable
) -> dg.AssetCheckResult:
    config = golden_dataset_options
    previous = _previous_materialization_metadata(context)
    rows = golden_dataset.rows
    _, mean, _ = score_histogram_of(golden_dataset)
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
            "mean_score": round(mean, 4) if mean == mean else mean, "previous_mean_score": previous_mean,
            "mean_score_shift": round(mean_shift, 4),
        },
    )


golden_dataset_checks = [has_enough_examples, scores_in_range, no_duplicate_pairs, no_pii, shift]
CHECK_OP_NAMES = tuple(check.node_def.name for check in golden_dataset_checks)

"""Checks on the golden dataset, declared with the asset that writes it.

They judge the rows as they are written (``stages.GoldenFacts``): the one pass that writes the
file gathers what each check needs, so checking a million rows costs no second read. Each check
is still its own pass/fail in the UI, on the golden_dataset asset.

``has_enough_examples`` is blocking: when it fails, the step fails after the dataset is stored
and nothing downstream in the run (the optimizer's ``candidate_prompt``) executes, so no prompt
is trained on a failed dataset. ``shift`` only warns.
"""

import math
import warnings

import dagster as dg

from bindu_pipelines.names import GOLDEN_DATASET, GOLDEN_DATASET_CHECKS
from bindu_pipelines.partitions import agent_partitions

from .config import GoldenDatasetConfig
from .stages import GoldenFacts

# Partitioned checks are "preview" in Dagster 1.13, and they are what we need: each agent's
# dataset is checked on its own partition. Silence that one notice, not Dagster's warnings.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)

HAS_ENOUGH_EXAMPLES, SCORES_IN_RANGE, NO_DUPLICATE_PAIRS, NO_PII, SHIFT = GOLDEN_DATASET_CHECKS


def _spec(name: str, description: str, *, blocking: bool = False) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=GOLDEN_DATASET, blocking=blocking, description=description,
                             partitions_def=agent_partitions)


golden_dataset_check_specs = [
    _spec(HAS_ENOUGH_EXAMPLES, "Enough examples to train on and to validate with; blocks training otherwise.", blocking=True),
    _spec(SCORES_IN_RANGE, "Every feedback score is within 0..1 (and present when feedback is required)."),
    _spec(NO_DUPLICATE_PAIRS, "No (user_input, agent_output) pair appears twice, exactly or after normalisation."),
    _spec(NO_PII, "No e-mail, phone, card number or API key is left in the texts."),
    _spec(SHIFT, "Warns when size or mean score moves sharply from the previous materialization."),
]


def has_enough_examples(config: GoldenDatasetConfig, facts: GoldenFacts) -> dg.AssetCheckResult:
    passed = facts.rows >= config.min_examples and facts.validation_rows >= config.min_validation_examples
    return dg.AssetCheckResult(
        check_name=HAS_ENOUGH_EXAMPLES, passed=passed,
        metadata={"rows": facts.rows, "min_examples": config.min_examples,
                  "validation_rows": facts.validation_rows, "min_validation_examples": config.min_validation_examples},
    )


def scores_in_range(config: GoldenDatasetConfig, facts: GoldenFacts) -> dg.AssetCheckResult:
    require = config.require_feedback
    passed = facts.out_of_range_scores == 0 and (facts.missing_scores == 0 or not require)
    return dg.AssetCheckResult(
        check_name=SCORES_IN_RANGE, passed=passed,
        metadata={"out_of_range": facts.out_of_range_scores, "missing_scores": facts.missing_scores,
                  "require_feedback": require},
    )


def no_duplicate_pairs(facts: GoldenFacts) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=NO_DUPLICATE_PAIRS, passed=facts.normalized_duplicates == 0,
        metadata={"exact_duplicates": facts.exact_duplicates, "normalized_duplicates": facts.normalized_duplicates},
    )


def no_pii(facts: GoldenFacts) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=NO_PII, passed=not facts.pii_found,
        metadata={"pii_found": dg.MetadataValue.json(dict(sorted(facts.pii_found.items()))),
                  "rows_with_pii": facts.rows_with_pii,
                  "example_task_ids": dg.MetadataValue.json(facts.example_pii_task_ids)},
    )


def _previous_materialization_metadata(context: dg.AssetExecutionContext) -> dict | None:
    """Metadata of this partition's latest golden_dataset materialization from an earlier run."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(GOLDEN_DATASET), asset_partitions=[context.partition_key]), limit=5
    ).records
    for record in records:
        if record.run_id != context.run.run_id and record.asset_materialization is not None:
            return {k: v.value for k, v in record.asset_materialization.metadata.items()}
    return None


def shift(context: dg.AssetExecutionContext, config: GoldenDatasetConfig, rows: int, mean: float) -> dg.AssetCheckResult:
    previous = _previous_materialization_metadata(context)
    if previous is None:
        return dg.AssetCheckResult(check_name=SHIFT, passed=True, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"rows": rows, "previous": "none: first materialization"})
    previous_rows = int(previous.get("dagster/row_count", 0))
    previous_mean = float(previous.get("mean_feedback_score", math.nan))
    row_shift = abs(rows - previous_rows) / max(previous_rows, 1)
    mean_shift = abs(mean - previous_mean) if not (math.isnan(mean) or math.isnan(previous_mean)) else 0.0
    passed = row_shift <= config.max_row_shift and mean_shift <= config.max_mean_score_shift
    return dg.AssetCheckResult(
        check_name=SHIFT, passed=passed, severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "rows": rows, "previous_rows": previous_rows, "row_shift": round(row_shift, 4),
            "mean_score": round(mean, 4) if mean == mean else mean, "previous_mean_score": previous_mean,
            "mean_score_shift": round(mean_shift, 4),
        },
    )


def golden_dataset_check_results(
    context: dg.AssetExecutionContext, config: GoldenDatasetConfig, facts: GoldenFacts, mean: float
) -> list[dg.AssetCheckResult]:
    """Every check's verdict on the golden dataset just written, in ``GOLDEN_DATASET_CHECKS`` order."""
    return [
        has_enough_examples(config, facts),
        scores_in_range(config, facts),
        no_duplicate_pairs(facts),
        no_pii(facts),
        shift(context, config, facts.rows, mean),
    ]

"""The golden dataset as Dagster assets, one partition per agent.

raw_tasks -> normalized_feedback -> extracted_interactions -> golden_dataset

Four assets, one step: ``golden_dataset_stages`` reads the agent's tasks once and writes all four
Parquet files in that pass (``stages.write_golden_stages``), each a lineage node of its own with
its own metadata, and the golden dataset's checks beside it. One pass keeps the two cores busy
(reading, the per-row rules in worker processes, writing) where four steps in a row would each
wait for the last; memory holds a few batches, however many tasks there are.

The assets only wire and report: every rule lives in the Dagster-free modules beside them
(``feedback``, ``history``, ``strategies``, ``extractor``, ``quality``, ``dataset``, ``stages``).
"""

import shutil
import tempfile
from collections.abc import Iterator

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bindu_pipelines.errors import WorkerProcessDied
from bindu_pipelines.names import (
    EXTRACTED_INTERACTIONS,
    GOLDEN_DATASET,
    GOLDEN_DATASET_ASSETS,
    GOLDEN_DATASET_STAGES,
    NORMALIZED_FEEDBACK,
    PARQUET_IO_MANAGER,
    RAW_TASKS,
)
from bindu_pipelines.partitions import agent_partitions
from bindu_pipelines.resources import BinduDatabase

from .checks import golden_dataset_check_results, golden_dataset_check_specs
from .config import OPTIONS_RESOURCE, GoldenDatasetConfig, golden_dataset_run_config
from .dataset import GOLDEN_COLUMNS, INTERACTION_COLUMNS
from .quality import TRAIN, VALIDATION
from .reporting import SCORE_BINS, markdown_table, output_metadata
from .stages import FEEDBACK_SCHEMA, RAW_TASK_SCHEMA, ParquetTable, stage_paths, write_golden_stages
from .strategies import parse_strategy

GROUP = "golden_dataset"
IO_MANAGER_KEY = PARQUET_IO_MANAGER
RAW_TASK_COLUMNS = RAW_TASK_SCHEMA.names
FEEDBACK_COLUMNS = FEEDBACK_SCHEMA.names

__all__ = ["GoldenDatasetConfig", "golden_dataset_assets", "golden_dataset_run_config", "golden_dataset_stages"]

DESCRIPTIONS = {
    RAW_TASKS: """The agent's tasks, newest first, with their raw feedback rows (the database's JSON text of
``[id, created_at, feedback_data]``): exactly what users and the agent said, before any
judgement. A task belongs to the agent when its prompt_id is one of the agent's prompts (in the
agent's own schema, every task is its). Bounded by the query limit and the time window; texts
too long to ever pass are cut in the database.""",
    NORMALIZED_FEEDBACK: """One 0..1 satisfaction score per task: ratings 1-5 map to (r-1)/4, thumbs up/down to 1/0;
a valid rating beats thumbs, and the latest valid row wins when a user revised their verdict.
Invalid rows ("five", 0, 6, 4.5, "maybe", not an object) are dropped and counted; so is
feedback on a task that does not exist (database-wide: it belongs to no agent).""",
    EXTRACTED_INTERACTIONS: """(user_input -> agent_output) pairs cut from each conversation by the chosen strategy, with
PII scrubbed. Only user and agent text counts; tasks whose history is unusable (not a list,
no text, an enormous message, no user->agent turn) are dropped and counted.""",
    GOLDEN_DATASET: """The examples the optimizer trains on and the offline gate validates with: interactions that
pass the quality filter (feedback required, score threshold), validation (Unicode, whitespace,
lengths, input != output) and deduplication, each marked train or validation by a stable hash
of its task id. Columns: id, user_input, agent_output, feedback_score, feedback_type, split,
context_id, prompt_id.""",
}


def score_histogram_of(table: ParquetTable) -> tuple[dict[str, int], float, dict[str, int]]:
    """The golden file's score histogram, mean score and split counts, from two columns."""
    columns = pq.read_table(table.path, columns=["feedback_score", "split"])
    scores = columns.column("feedback_score")
    histogram = {}
    for low, high in SCORE_BINS:
        label = f"[{low:.1f}, {min(high, 1.0):.1f}{']' if high > 1 else ')'}"
        inside = pc.and_(pc.greater_equal(scores, low), pc.less(scores, high))
        histogram[label] = int(pc.sum(pc.cast(pc.fill_null(inside, False), "int64")).as_py() or 0)
    histogram["no score"] = scores.null_count
    mean = pc.mean(scores).as_py()
    split = columns.column("split")
    splits = {name: int(pc.sum(pc.cast(pc.equal(split, name), "int64")).as_py() or 0) for name in (TRAIN, VALIDATION)}
    return histogram, float("nan") if mean is None else float(mean), splits


@dg.multi_asset(
    name=GOLDEN_DATASET_STAGES,
    outs={
        name: dg.AssetOut(io_manager_key=IO_MANAGER_KEY, description=DESCRIPTIONS[name],
                          kinds={"sql", "parquet"} if name == RAW_TASKS else {"parquet"})
        for name in GOLDEN_DATASET_ASSETS
    },
    internal_asset_deps={
        RAW_TASKS: set(),
        NORMALIZED_FEEDBACK: {dg.AssetKey(RAW_TASKS)},
        EXTRACTED_INTERACTIONS: {dg.AssetKey(RAW_TASKS), dg.AssetKey(NORMALIZED_FEEDBACK)},
        GOLDEN_DATASET: {dg.AssetKey(EXTRACTED_INTERACTIONS)},
    },
    check_specs=golden_dataset_check_specs,
    partitions_def=agent_partitions,
    group_name=GROUP,
    resource_defs=OPTIONS_RESOURCE,
)
def golden_dataset_stages(
    context: dg.AssetExecutionContext, golden_dataset_options: GoldenDatasetConfig, bindu_db: BinduDatabase
) -> Iterator[dg.MaterializeResult]:
    """The agent's golden dataset and the three stages it is made from, in one read of its tasks."""
    config = golden_dataset_options
    agent_id = context.partition_key
    options = config.options()
    # Written beside nothing else; the Parquet IO manager moves each finished file into its storage.
    directory = tempfile.mkdtemp(prefix="bindu-golden-dataset-")
    paths = stage_paths(directory)
    try:
        with bindu_db.failing_cleanly(f"reading the tasks of agent {agent_id!r}"):
            try:
                run = write_golden_stages(bindu_db.engine(), agent_id, paths, options,
                                          chunk_size=config.chunk_size, workers=config.worker_count())
            except WorkerProcessDied as error:
                raise dg.Failure(description=f"building the golden dataset of agent {agent_id!r}: {error}") from error

        yield dg.MaterializeResult(
            asset_key=RAW_TASKS, value=run.raw_tasks.table,
            metadata=output_metadata(
                run.raw_tasks, RAW_TASK_COLUMNS, ["id", "prompt_id", "history"],
                agent_id=agent_id,
                since=str(options.since) if options.since else "all time",
                query_limit=options.limit or 0,
            ),
        )
        feedback = run.normalized_feedback
        yield dg.MaterializeResult(
            asset_key=NORMALIZED_FEEDBACK, value=feedback.table,
            metadata=output_metadata(
                feedback, FEEDBACK_COLUMNS, FEEDBACK_COLUMNS,
                tasks_with_score=feedback.rows,
                tasks_without_valid_feedback=feedback.extra["tasks"] - feedback.rows,
                by_type=dg.MetadataValue.json({str(k): int(v) for k, v in sorted(feedback.extra["by_type"].items())}),
            ),
        )
        report = run.extracted_interactions.reports[0]
        pii = {k.split(".", 1)[1]: v for k, v in sorted(report.notes.items()) if k.startswith("pii_scrubbed.")}
        yield dg.MaterializeResult(
            asset_key=EXTRACTED_INTERACTIONS, value=run.extracted_interactions.table,
            metadata=output_metadata(
                run.extracted_interactions, INTERACTION_COLUMNS, ["id", "user_input", "agent_output", "feedback_score"],
                strategy=repr(parse_strategy(config.strategy)),
                pii_scrubbing="on" if config.scrub_pii else "off",
                pii_scrubbed=dg.MetadataValue.json(pii),
                pii_scrubbed_total=sum(pii.values()),
            ),
        )
        golden = run.golden_dataset
        histogram, mean, splits = score_histogram_of(golden.table)
        yield dg.MaterializeResult(
            asset_key=GOLDEN_DATASET, value=golden.table,
            metadata=output_metadata(
                golden, GOLDEN_COLUMNS, ["id", "user_input", "agent_output", "feedback_score", "split"],
                train_rows=splits[TRAIN],
                validation_rows=splits[VALIDATION],
                mean_feedback_score=round(mean, 4) if mean == mean else mean,
                score_histogram=dg.MetadataValue.json(histogram),
                score_distribution=dg.MetadataValue.md(markdown_table(["score", "rows"], [[k, v] for k, v in histogram.items()])),
                strategy=repr(parse_strategy(config.strategy)),
                require_feedback=config.require_feedback,
                min_feedback_threshold=config.min_feedback_threshold,
            ),
            check_results=golden_dataset_check_results(context, config, run.facts, mean),
        )
    finally:
        # Each file has been handed to the IO manager by now, or the run failed: nothing to keep.
        shutil.rmtree(directory, ignore_errors=True)


ASSET_NAMES = GOLDEN_DATASET_ASSETS
golden_dataset_assets = [golden_dataset_stages]

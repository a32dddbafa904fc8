"""The golden dataset as Dagster assets, one partition per agent.

raw_tasks -> normalized_feedback -> extracted_interactions -> golden_dataset

The assets only wire and report: every rule lives in the Dagster-free modules beside them
(``feedback``, ``history``, ``strategies``, ``extractor``, ``quality``, ``dataset``). Between
assets the data travels as Parquet files (``parquet_io_manager``).
"""


import os
import tempfile
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from bindu_pipelines.names import GOLDEN_DATASET_ASSETS, GOLDEN_DATASET_OPTIONS, PARQUET_IO_MANAGER
from bindu_pipelines.partitions import agent_partitions
from bindu_pipelines.resources import BinduDatabase

from .dataset import INTERACTION_COLUMNS, GOLDEN_COLUMNS, GoldenDatasetOptions
from .fetch import DEFAULT_CHUNK_SIZE
from .history import DEFAULT_MAX_MESSAGE_CHARS
from .quality import TRAIN, VALIDATION
from .reporting import markdown_table, output_metadata
from .stages import (
    FEEDBACK_SCHEMA,
    OVER_QUERY_LIMIT,
    RAW_TASK_SCHEMA,
    ParquetTable,
    write_extracted_interactions,
    write_golden,
    write_normalized_feedback,
    write_raw_tasks,
)
from .strategies import parse_strategy

# Asset-level resource_defs are "beta" in Dagster 1.13; they let the one options resource come
# with the assets wherever they are materialized. Silence that one notice.
warnings.filterwarnings("ignore", message="Parameter `resource_defs`", category=dg.BetaWarning)

GROUP = "golden_dataset"
IO_MANAGER_KEY = PARQUET_IO_MANAGER
RAW_TASK_COLUMNS = RAW_TASK_SCHEMA.names
FEEDBACK_COLUMNS = FEEDBACK_SCHEMA.names
# Below this many batches a stage runs in this process: starting worker processes costs more.
WORKERS_FROM_BATCHES = 4


class GoldenDatasetConfig(dg.ConfigurableResource):
    """Options of a golden dataset run: one resource (``golden_dataset_options``) read by every
    golden dataset asset and check, configured once per run."""

    strategy: str = Field(default="last_turn", description="Extraction strategy, CLI syntax: name or name:arg[:arg].")
    require_feedback: bool = Field(default=True, description="Keep only interactions with a valid feedback score.")
    min_feedback_threshold: float = Field(default=0.0, ge=0.0, le=1.0, description="Drop interactions scored below this.")
    max_interactions_query_limit: int | None = Field(
        default=10_000, description="Most recent tasks read per agent (the seed's cap); null reads all."
    )
    since_days: float | None = Field(default=None, gt=0, description="Only tasks created in the last N days.")
    scrub_pii: bool = Field(default=True, description="Replace e-mails, phones, card numbers and keys before export.")
    rebuild_context: bool = Field(default=False, description="Rebuild conversations across the tasks of a context_id.")
    max_message_chars: int = Field(default=DEFAULT_MAX_MESSAGE_CHARS, ge=1, description="Tasks with a longer message are dropped.")
    unicode_form: str = Field(default="NFC", description="Unicode normalisation of the texts: NFC or NFKC.")
    validation_fraction: float = Field(default=0.2, ge=0.0, lt=1.0, description="Share of tasks held out for validation.")
    min_examples: int = Field(default=10, ge=1, description="Fewer examples fail the blocking check.")
    min_validation_examples: int = Field(default=2, ge=0, description="Fewer validation examples fail the blocking check.")
    max_row_shift: float = Field(default=0.5, ge=0.0, description="Warn when the row count moves by more than this share.")
    max_mean_score_shift: float = Field(default=0.15, ge=0.0, description="Warn when the mean score moves by more than this.")
    chunk_size: int = Field(default=DEFAULT_CHUNK_SIZE, ge=1, description="Tasks per batch: memory holds a few batches.")
    workers: int | None = Field(
        default=None, ge=1, description="Worker processes per stage (null: the CPU count, at most 4; 1: none)."
    )

    def options(self, now: datetime | None = None) -> GoldenDatasetOptions:
        now = now or datetime.now(UTC)
        limit = self.max_interactions_query_limit
        return GoldenDatasetOptions(
            strategy=self.strategy,
            require_feedback=self.require_feedback,
            min_feedback_threshold=self.min_feedback_threshold,
            limit=limit if limit and limit > 0 else None,
            since=now - timedelta(days=self.since_days) if self.since_days else None,
            scrub_pii=self.scrub_pii,
            rebuild_context=self.rebuild_context,
            max_message_chars=self.max_message_chars,
            unicode_form=self.unicode_form,
            validation_fraction=self.validation_fraction,
        )

    def worker_count(self) -> int:
        return self.workers or min(os.cpu_count() or 1, 4)

    def workers_for(self, table: ParquetTable) -> int:
        return self.worker_count() if pq.ParquetFile(table.path).num_row_groups >= WORKERS_FROM_BATCHES else 1


# The one instance every golden dataset asset and check declares (Dagster requires one object per key).
golden_dataset_options = GoldenDatasetConfig()
OPTIONS_RESOURCE = {GOLDEN_DATASET_OPTIONS: golden_dataset_options}


def golden_dataset_run_config(**options: Any) -> dict[str, Any]:
    """Run config giving the options to every golden dataset asset and check (one resource block)."""
    block = GoldenDatasetConfig(**options).model_dump(exclude_unset=True) if options else {}
    return {"ops": {}, "resources": {GOLDEN_DATASET_OPTIONS: {"config": block}}}


def _stage_file(asset: str, agent_id: str) -> str:
    # Written beside nothing else; the Parquet IO manager moves the finished file into its storage.
    return os.path.join(tempfile.mkdtemp(prefix=f"bindu-{asset}-"), f"{asset}.parquet")


@dg.asset(
    partitions_def=agent_partitions,
    group_name=GROUP,
    io_manager_key=IO_MANAGER_KEY,
    kinds={"sql", "parquet"},
    resource_defs=OPTIONS_RESOURCE,
)
def raw_tasks(context: dg.AssetExecutionContext, golden_dataset_options: GoldenDatasetConfig, bindu_db: BinduDatabase) -> dg.MaterializeResult:
    """The agent's tasks, newest first, with their raw feedback rows (the database's JSON text of
    ``[id, created_at, feedback_data]``): exactly what users and the agent said, before any
    judgement. A task belongs to the agent when its prompt_id is one of the agent's prompts.
    Bounded by the query limit and the time window. Read in batches (COPY on PostgreSQL, texts
    too long to ever pass cut in the database), written to Parquet a row group per batch."""
    config = golden_dataset_options
    agent_id = context.partition_key
    options = config.options()
    with bindu_db.failing_cleanly(f"reading the tasks of agent {agent_id!r}"):
        output = write_raw_tasks(bindu_db.engine(), agent_id, _stage_file("raw_tasks", agent_id), options,
                                 chunk_size=config.chunk_size, workers=config.worker_count())
    return dg.MaterializeResult(
        value=output.table,
        metadata=output_metadata(
            output, RAW_TASK_COLUMNS, ["id", "prompt_id", "history"],
            agent_id=agent_id,
            since=str(options.since) if options.since else "all time",
            query_limit=options.limit or 0,
        ),
    )


@dg.asset(partitions_def=agent_partitions, group_name=GROUP, io_manager_key=IO_MANAGER_KEY, kinds={"parquet"},
          resource_defs=OPTIONS_RESOURCE)
def normalized_feedback(
    context: dg.AssetExecutionContext, golden_dataset_options: GoldenDatasetConfig, bindu_db: BinduDatabase,
    raw_tasks: ParquetTable,
) -> dg.MaterializeResult:
    """One 0..1 satisfaction score per task: ratings 1-5 map to (r-1)/4, thumbs up/down to 1/0;
    a valid rating beats thumbs, and the latest valid row wins when a user revised their verdict.
    Invalid rows ("five", 0, 6, 4.5, "maybe", not an object) are dropped and counted; so is
    feedback on a task that does not exist (database-wide: it belongs to no agent)."""
    config = golden_dataset_options
    with bindu_db.failing_cleanly("counting feedback on missing tasks"):
        output = write_normalized_feedback(raw_tasks, _stage_file("normalized_feedback", context.partition_key),
                                           config.options(), engine=bindu_db.engine(), workers=config.workers_for(raw_tasks))
    return dg.MaterializeResult(
        value=output.table,
        metadata=output_metadata(
            output, FEEDBACK_COLUMNS, FEEDBACK_COLUMNS,
            tasks_with_score=output.rows,
            tasks_without_valid_feedback=output.extra["tasks"] - output.rows,
            by_type=dg.MetadataValue.json({str(k): int(v) for k, v in sorted(output.extra["by_type"].items())}),
        ),
    )


@dg.asset(partitions_def=agent_partitions, group_name=GROUP, io_manager_key=IO_MANAGER_KEY, kinds={"parquet"},
          resource_defs=OPTIONS_RESOURCE)
def extracted_interactions(
    context: dg.AssetExecutionContext,
    golden_dataset_options: GoldenDatasetConfig,
    raw_tasks: ParquetTable,
    normalized_feedback: ParquetTable,
) -> dg.MaterializeResult:
    """(user_input -> agent_output) pairs cut from each conversation by the chosen strategy, with
    PII scrubbed. Only user and agent text counts; tasks whose history is unusable (not a list,
    no text, an enormous message, no user->agent turn) are dropped and counted."""
    config = golden_dataset_options
    output = write_extracted_interactions(raw_tasks, normalized_feedback, _stage_file("extracted_interactions", context.partition_key),
                                          config.options(), workers=config.workers_for(raw_tasks))
    report = output.reports[0]
    pii = {k.split(".", 1)[1]: v for k, v in sorted(report.notes.items()) if k.startswith("pii_scrubbed.")}
    return dg.MaterializeResult(
        value=output.table,
        metadata=output_metadata(
            output, INTERACTION_COLUMNS, ["id", "user_input", "agent_output", "feedback_score"],
            strategy=repr(parse_strategy(config.strategy)),
            pii_scrubbing="on" if config.scrub_pii else "off",
            pii_scrubbed=dg.MetadataValue.json(pii),
            pii_scrubbed_total=sum(pii.values()),
        ),
    )


def score_histogram_of(table: ParquetTable) -> tuple[dict[str, int], float, dict[str, int]]:
    """The golden file's score histogram, mean score and split counts, from two columns."""
    from .reporting import SCORE_BINS

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


@dg.asset(partitions_def=agent_partitions, group_name=GROUP, io_manager_key=IO_MANAGER_KEY, kinds={"parquet"},
          resource_defs=OPTIONS_RESOURCE)
def golden_dataset(
    context: dg.AssetExecutionContext, golden_dataset_options: GoldenDatasetConfig, extracted_interactions: ParquetTable
) -> dg.MaterializeResult:
    """The examples the optimizer trains on and the offline gate validates with: interactions that
    pass the quality filter (feedback required, score threshold), validation (Unicode, whitespace,
    lengths, input != output) and deduplication, each marked train or validation by a stable hash
    of its task id. Columns: id, user_input, agent_output, feedback_score, feedback_type, split,
    context_id, prompt_id."""
    config = golden_dataset_options
    output = write_golden(extracted_interactions, _stage_file("golden_dataset", context.partition_key), config.options(),
                          workers=config.workers_for(extracted_interactions))
    histogram, mean, splits = score_histogram_of(output.table)
    return dg.MaterializeResult(
        value=output.table,
        metadata=output_metadata(
            output, GOLDEN_COLUMNS, ["id", "user_input", "agent_output", "feedback_score", "split"],
            train_rows=splits[TRAIN],
            validation_rows=splits[VALIDATION],
            mean_feedback_score=round(mean, 4) if mean == mean else mean,
            score_histogram=dg.MetadataValue.json(histogram),
            score_distribution=dg.MetadataValue.md(markdown_table(["score", "rows"], [[k, v] for k, v in histogram.items()])),
            strategy=repr(parse_strategy(config.strategy)),
            require_feedback=config.require_feedback,
            min_feedback_threshold=config.min_feedback_threshold,
        ),
    )


ASSET_NAMES = GOLDEN_DATASET_ASSETS
golden_dataset_assets = [raw_tasks, normalized_feedback, extracted_interactions, golden_dataset]

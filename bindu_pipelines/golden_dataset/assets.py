"""The golden dataset as Dagster assets, one partition per agent.

raw_tasks -> normalized_feedback -> extracted_interactions -> golden_dataset

The assets only wire and report: every rule lives in the Dagster-free modules beside them
(``feedback``, ``history``, ``strategies``, ``extractor``, ``quality``, ``dataset``). Between
assets the data travels as Parquet files (``parquet_io_manager``).
"""


import json
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from bindu_pipelines.names import GOLDEN_DATASET_ASSETS, GOLDEN_DATASET_CHECK_OPS
from bindu_pipelines.partitions import agent_partitions
from bindu_pipelines.resources import BinduDatabase

from .dataset import (
    INTERACTION_COLUMNS,
    GoldenDatasetOptions,
    GoldenDatasetPipeline,
    StageReport,
    golden_frame,
)
from .feedback import FEEDBACK_ON_MISSING_TASK, FeedbackRow
from .fetch import count_agent_tasks, count_orphan_feedback, decode_feedback_rows, iter_agent_task_chunks
from .history import DEFAULT_MAX_MESSAGE_CHARS
from .quality import TRAIN, VALIDATION
from .reporting import markdown_table, score_histogram, stage_metadata

GROUP = "golden_dataset"
IO_MANAGER_KEY = "parquet_io_manager"
OVER_QUERY_LIMIT = "over_query_limit"
RAW_TASK_COLUMNS = ["id", "context_id", "prompt_id", "created_at", "history", "feedback"]
FEEDBACK_COLUMNS = ["task_id", "feedback_score", "feedback_type", "valid_feedback_rows"]


class GoldenDatasetConfig(dg.Config):
    """Options of a golden dataset run (the same block is accepted by every asset and check)."""

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


def golden_dataset_run_config(**options: Any) -> dict[str, Any]:
    """Run config giving the same options to each golden dataset asset and check."""
    block = {"config": GoldenDatasetConfig(**options).model_dump(exclude_unset=True)} if options else {"config": {}}
    return {"ops": {name: block for name in (*GOLDEN_DATASET_ASSETS, *GOLDEN_DATASET_CHECK_OPS)}}


def _json_text(value: Any) -> str:
    # SQLite hands JSON columns back as text (kept verbatim); PostgreSQL decodes them.
    return value if isinstance(value, str) else json.dumps(value, default=str)


@dg.asset(
    partitions_def=agent_partitions,
    group_name=GROUP,
    io_manager_key=IO_MANAGER_KEY,
    kinds={"sql", "pandas"},
)
def raw_tasks(context: dg.AssetExecutionContext, config: GoldenDatasetConfig, bindu_db: BinduDatabase) -> dg.MaterializeResult:
    """The agent's tasks, newest first, with their raw feedback rows: exactly what users and the
    agent said, before any judgement. A task belongs to the agent when its prompt_id is one of
    the agent's prompts. Bounded by the query limit and the time window."""
    agent_id = context.partition_key
    options = config.options()
    engine = bindu_db.engine()
    records = []
    with bindu_db.failing_cleanly(f"reading the tasks of agent {agent_id!r}"):
        for chunk in iter_agent_task_chunks(
            engine, agent_id, since=options.since, limit=options.limit, rebuild_context=options.rebuild_context
        ):
            for task in chunk:
                feedback = [[row_id, str(created_at), data] for row_id, created_at, data in decode_feedback_rows(task.feedback)]
                records.append((task.id, task.context_id, task.prompt_id, task.created_at, _json_text(task.history),
                                json.dumps(feedback, default=str)))
        in_window = count_agent_tasks(engine, agent_id, since=options.since)
    frame = pd.DataFrame.from_records(records, columns=RAW_TASK_COLUMNS)
    report = StageReport("fetch", rows_in=in_window, rows_out=len(frame))
    if in_window > len(frame):
        report.drops[OVER_QUERY_LIMIT] = in_window - len(frame)
    return dg.MaterializeResult(
        value=frame,
        metadata=stage_metadata(
            [report], frame, ["id", "created_at", "history"],
            agent_id=agent_id,
            feedback_rows=int(sum(len(json.loads(f)) for f in frame["feedback"])),
            since=str(options.since) if options.since else "all time",
            query_limit=options.limit or 0,
        ),
    )


@dg.asset(partitions_def=agent_partitions, group_name=GROUP, io_manager_key=IO_MANAGER_KEY, kinds={"pandas"})
def normalized_feedback(
    context: dg.AssetExecutionContext, config: GoldenDatasetConfig, bindu_db: BinduDatabase, raw_tasks: pd.DataFrame
) -> dg.MaterializeResult:
    """One 0..1 satisfaction score per task: ratings 1-5 map to (r-1)/4, thumbs up/down to 1/0;
    a valid rating beats thumbs, and the latest valid row wins when a user revised their verdict.
    Invalid rows ("five", 0, 6, 4.5, "maybe", not an object) are dropped and counted."""
    pipeline = GoldenDatasetPipeline(config.options())
    records = []
    for task_id, feedback_json in zip(raw_tasks["id"], raw_tasks["feedback"]):
        rows = [FeedbackRow(*row) for row in json.loads(feedback_json)]
        result = pipeline.normalize_feedback(rows)
        if result.score is not None:
            records.append((task_id, result.score, result.feedback_type, result.valid_rows))
    frame = pd.DataFrame.from_records(records, columns=FEEDBACK_COLUMNS)
    frame["feedback_score"] = frame["feedback_score"].astype("float64")
    report = pipeline.reports["feedback"]
    # Feedback on a task that does not exist cannot be attributed to any agent: counted database-wide.
    with bindu_db.failing_cleanly("counting feedback on missing tasks"):
        orphans = count_orphan_feedback(bindu_db.engine())
    if orphans:
        report.drops[FEEDBACK_ON_MISSING_TASK] += orphans
        report.rows_in += orphans
    return dg.MaterializeResult(
        value=frame,
        metadata=stage_metadata(
            [report], frame, FEEDBACK_COLUMNS,
            tasks_with_score=len(frame),
            tasks_without_valid_feedback=int(len(raw_tasks) - len(frame)),
            by_type=dg.MetadataValue.json({str(k): int(v) for k, v in frame["feedback_type"].value_counts().items()}),
        ),
    )


@dg.asset(partitions_def=agent_partitions, group_name=GROUP, io_manager_key=IO_MANAGER_KEY, kinds={"pandas"})
def extracted_interactions(
    context: dg.AssetExecutionContext,
    config: GoldenDatasetConfig,
    raw_tasks: pd.DataFrame,
    normalized_feedback: pd.DataFrame,
) -> dg.MaterializeResult:
    """(user_input -> agent_output) pairs cut from each conversation by the chosen strategy, with
    PII scrubbed. Only user and agent text counts; tasks whose history is unusable (not a list,
    no text, an enormous message, no user->agent turn) are dropped and counted."""
    pipeline = GoldenDatasetPipeline(config.options())
    scores = dict(zip(normalized_feedback["task_id"], zip(normalized_feedback["feedback_score"], normalized_feedback["feedback_type"])))
    rows: list[tuple] = []
    for task_id, context_id, prompt_id, history in raw_tasks[["id", "context_id", "prompt_id", "history"]].itertuples(index=False, name=None):
        score, feedback_type = scores.get(task_id, (None, None))
        rows.extend(pipeline.extract(task_id, history, score, feedback_type, context_id, prompt_id))
    frame = pd.DataFrame.from_records(rows, columns=INTERACTION_COLUMNS)
    frame["feedback_score"] = frame["feedback_score"].astype("float64")
    report = pipeline.reports["extract"]
    pii = {k.split(".", 1)[1]: v for k, v in report.notes.items() if k.startswith("pii_scrubbed.")}
    return dg.MaterializeResult(
        value=frame,
        metadata=stage_metadata(
            [report], frame, ["id", "user_input", "agent_output", "feedback_score"],
            strategy=repr(pipeline.strategy),
            pii_scrubbing="on" if config.scrub_pii else "off",
            pii_scrubbed=dg.MetadataValue.json(pii),
            pii_scrubbed_total=sum(pii.values()),
        ),
    )


@dg.asset(partitions_def=agent_partitions, group_name=GROUP, io_manager_key=IO_MANAGER_KEY, kinds={"pandas"})
def golden_dataset(
    context: dg.AssetExecutionContext, config: GoldenDatasetConfig, extracted_interactions: pd.DataFrame
) -> dg.MaterializeResult:
    """The examples the optimizer trains on and the offline gate validates with: interactions that
    pass the quality filter (feedback required, score threshold), validation (Unicode, whitespace,
    lengths, input != output) and deduplication, each marked train or validation by a stable hash
    of its task id. Columns: id, user_input, agent_output, feedback_score, feedback_type, split,
    context_id, prompt_id."""
    pipeline = GoldenDatasetPipeline(config.options())
    rows = []
    for row in extracted_interactions[INTERACTION_COLUMNS].itertuples(index=False, name=None):
        golden = pipeline.finish(row)
        if golden is not None:
            rows.append(golden)
    frame = golden_frame(rows)
    reports = [pipeline.reports[s] for s in ("quality", "validate", "deduplicate")]
    histogram = score_histogram(frame["feedback_score"])
    splits = {TRAIN: int((frame["split"] == TRAIN).sum()), VALIDATION: int((frame["split"] == VALIDATION).sum())}
    scores = frame["feedback_score"].dropna()
    return dg.MaterializeResult(
        value=frame,
        metadata=stage_metadata(
            reports, frame, ["id", "user_input", "agent_output", "feedback_score", "split"],
            train_rows=splits[TRAIN],
            validation_rows=splits[VALIDATION],
            mean_feedback_score=float(scores.mean()) if len(scores) else float("nan"),
            score_histogram=dg.MetadataValue.json(histogram),
            score_distribution=dg.MetadataValue.md(markdown_table(["score", "rows"], [[k, v] for k, v in histogram.items()])),
            strategy=repr(pipeline.strategy),
            require_feedback=config.require_feedback,
            min_feedback_threshold=config.min_feedback_threshold,
        ),
    )


ASSET_NAMES = GOLDEN_DATASET_ASSETS
golden_dataset_assets = [raw_tasks, normalized_feedback, extracted_interactions, golden_dataset]

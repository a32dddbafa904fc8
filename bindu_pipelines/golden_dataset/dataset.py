"""The golden dataset pipeline, Dagster-free.

Stages, in the seed's order, each reporting rows in / out and drops by reason:

    fetch -> feedback (normalise) -> extract (strategy + PII scrub) -> quality (require_feedback,
    threshold) -> validate -> deduplicate -> split (train / validation)

``GoldenDatasetPipeline`` holds the per-row stage functions and their reports; the Dagster assets
call the stages one asset at a time, ``stream_golden_dataset`` runs them all in one pass over a
streamed read (bounded memory), and ``build_golden_dataset`` is the seed's async API on top.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from .extractor import InteractionExtractor
from .feedback import DEFAULT_SCALE, FeedbackScale, TaskFeedback, combine_task_feedback
from .fetch import DEFAULT_CHUNK_SIZE, RawTask, decode_feedback_rows, iter_agent_task_chunks, read_ahead
from .history import DEFAULT_MAX_MESSAGE_CHARS
from .models import Interaction
from .quality import TRAIN, VALIDATION, Deduplicator, QualitySettings, quality_drop_reason, split_for, validate_pair
from .strategies import BaseExtractionStrategy, parse_strategy

if TYPE_CHECKING:
    import dspy
    import pandas as pd
    import sqlalchemy as sa

INTERACTION_COLUMNS = ["id", "user_input", "agent_output", "feedback_score", "feedback_type", "context_id", "prompt_id"]
GOLDEN_COLUMNS = ["id", "user_input", "agent_output", "feedback_score", "feedback_type", "split", "context_id", "prompt_id"]
STAGES = ("feedback", "extract", "quality", "validate", "deduplicate", "split")


class GoldenDatasetSettings(BaseSettings):
    """The seed's ``app_settings.dspy`` knobs, from the environment (``BINDU_DSPY_…``)."""

    model_config = SettingsConfigDict(env_prefix="BINDU_DSPY_")

    min_feedback_threshold: float = 0.0
    max_interactions_query_limit: int = 10_000


@dataclass(frozen=True)
class GoldenDatasetOptions:
    """Everything that decides which examples a golden dataset contains."""

    strategy: str | BaseExtractionStrategy | None = "last_turn"
    require_feedback: bool = True
    min_feedback_threshold: float = 0.0
    limit: int | None = 10_000
    since: datetime | None = None
    until: datetime | None = None
    scrub_pii: bool = True
    rebuild_context: bool = False
    max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS
    unicode_form: str = "NFC"
    min_input_chars: int = 2
    min_output_chars: int = 2
    validation_fraction: float = 0.2
    feedback_scale: FeedbackScale = DEFAULT_SCALE

    def quality_settings(self) -> QualitySettings:
        return QualitySettings(
            require_feedback=self.require_feedback,
            min_feedback_threshold=self.min_feedback_threshold,
            unicode_form=self.unicode_form,  # type: ignore[arg-type]
            min_input_chars=self.min_input_chars,
            min_output_chars=self.min_output_chars,
            validation_fraction=self.validation_fraction,
        )


@dataclass
class StageReport:
    """What one stage did: rows in and out, rows dropped by reason, and other counts (notes)."""

    stage: str
    rows_in: int = 0
    rows_out: int = 0
    drops: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)

    def as_metadata(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped": dict(sorted(self.drops.items())),
            **({"notes": dict(sorted(self.notes.items()))} if self.notes else {}),
        }


class GoldenDatasetPipeline:
    """The stages as per-row functions sharing one set of reports (and one deduplicator)."""

    def __init__(self, options: GoldenDatasetOptions | None = None):
        self.options = options or GoldenDatasetOptions()
        self.strategy = parse_strategy(self.options.strategy)
        self.quality = self.options.quality_settings()
        self.extractor = InteractionExtractor(
            self.strategy, scrub_pii=self.options.scrub_pii, max_message_chars=self.options.max_message_chars
        )
        self.deduplicator = Deduplicator()
        self.reports = {stage: StageReport(stage) for stage in STAGES}

    # -- stage: feedback -------------------------------------------------------------------------
    def normalize_feedback(self, feedback_rows: Iterable) -> TaskFeedback:
        """One task's feedback rows -> its one score (rows in = feedback rows, out = scored tasks)."""
        rows = decode_feedback_rows(feedback_rows) if isinstance(feedback_rows, (str, bytes)) else list(feedback_rows)
        report = self.reports["feedback"]
        result = combine_task_feedback(rows, self.options.feedback_scale)
        report.rows_in += len(rows)
        report.drops.update(result.drops)
        if result.score is not None:
            report.rows_out += 1
        return result

    # -- stage: extract --------------------------------------------------------------------------
    def extract(
        self, task_id: str, history: Any, score: float | None, feedback_type: str | None,
        context_id: str | None = None, prompt_id: str | None = None,
    ) -> list[tuple]:
        """One task -> interaction rows (``INTERACTION_COLUMNS``); drops counted by reason."""
        report = self.reports["extract"]
        report.rows_in += 1
        outcome = self.extractor.extract_task(task_id, history, score, feedback_type)
        if outcome.message_drops:
            report.notes.update({f"messages_skipped.{k}": v for k, v in outcome.message_drops.items()})
        if outcome.pii_found:
            report.notes.update({f"pii_scrubbed.{k}": v for k, v in outcome.pii_found.items()})
        if outcome.drop_reason is not None:
            report.drops[outcome.drop_reason] += 1
            return []
        report.rows_out += len(outcome.interactions)
        return [
            (task_id, i.user_input, i.agent_output, score, feedback_type, context_id, prompt_id)
            for i in outcome.interactions
        ]

    # -- stages: quality, validate ----------------------------------------------------------------
    def clean(self, row: tuple) -> tuple | None:
        """An interaction row through quality -> validate (stateless: safe to run in parallel)."""
        task_id, user_input, agent_output, score, feedback_type, context_id, prompt_id = row
        if score is not None and isinstance(score, float) and math.isnan(score):
            score = None
        reports = self.reports
        reports["quality"].rows_in += 1
        reason = quality_drop_reason(score, self.quality)
        if reason is not None:
            reports["quality"].drops[reason] += 1
            return None
        reports["quality"].rows_out += 1
        reports["validate"].rows_in += 1
        user_input, agent_output, reason = validate_pair(user_input, agent_output, self.quality)
        if reason is not None:
            reports["validate"].drops[reason] += 1
            return None
        reports["validate"].rows_out += 1
        return (task_id, user_input, agent_output, score, feedback_type if score is not None else None, context_id, prompt_id)

    # -- stages: deduplicate, split -------------------------------------------------------------
    def admit(self, row: tuple) -> tuple | None:
        """A clean row through deduplicate -> split (stateful: runs in one process, in order)."""
        task_id, user_input, agent_output, score, feedback_type, context_id, prompt_id = row
        reports = self.reports
        reports["deduplicate"].rows_in += 1
        reason = self.deduplicator.drop_reason(user_input, agent_output)
        if reason is not None:
            reports["deduplicate"].drops[reason] += 1
            return None
        reports["deduplicate"].rows_out += 1
        split = split_for(task_id, self.quality.validation_fraction, self.quality.split_salt)
        reports["split"].rows_in += 1
        reports["split"].rows_out += 1
        reports["split"].notes[split] += 1
        return (task_id, user_input, agent_output, score, feedback_type, split, context_id, prompt_id)

    def finish(self, row: tuple) -> tuple | None:
        """An interaction row through quality -> validate -> deduplicate -> split (``GOLDEN_COLUMNS``)."""
        cleaned = self.clean(row)
        return None if cleaned is None else self.admit(cleaned)

    def prepare(self, task_id: str, context_id: str | None, prompt_id: str | None, history: Any, feedback: Any) -> list[tuple]:
        """The stateless stages for one task's fields: feedback, extract, quality, validate."""
        scored = self.normalize_feedback(feedback)
        rows = self.extract(task_id, history, scored.score, scored.feedback_type, context_id, prompt_id)
        return [cleaned for cleaned in map(self.clean, rows) if cleaned is not None]

    def prepare_task(self, task: RawTask) -> list[tuple]:
        """The stateless stages for one fetched task: feedback, extract, quality, validate."""
        return self.prepare(task.id, task.context_id, task.prompt_id, task.history, task.feedback)

    def process_task(self, task: RawTask) -> list[tuple]:
        """All stages for one fetched task."""
        return [golden for golden in map(self.admit, self.prepare_task(task)) if golden is not None]

    def merge_reports(self, reports: dict[str, "StageReport"]) -> None:
        for stage, report in reports.items():
            mine = self.reports[stage]
            mine.rows_in += report.rows_in
            mine.rows_out += report.rows_out
            mine.drops.update(report.drops)
            mine.notes.update(report.notes)

    def summary(self) -> dict[str, dict[str, Any]]:
        return {stage: report.as_metadata() for stage, report in self.reports.items()}


def golden_frame(rows: list[tuple]) -> "pd.DataFrame":
    """Rows as the golden dataset DataFrame (the optimization contract's columns and dtypes)."""
    import pandas as pd

    frame = pd.DataFrame.from_records(rows, columns=GOLDEN_COLUMNS)
    frame["feedback_score"] = frame["feedback_score"].astype("float64")
    for column in ("id", "user_input", "agent_output", "split"):
        frame[column] = frame[column].astype(object)
    return frame


class Fingerprint:
    """sha256 over rows in a canonical JSON form; the same content gives the same hex digest."""

    # What ``json.dumps(values, default=str, ensure_ascii=False)`` builds on every call, built once.
    _encode = json.JSONEncoder(default=str, ensure_ascii=False).encode

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, rows: Iterable[Iterable[Any]]) -> None:
        encode, update = self._encode, self._hash.update
        for row in rows:
            values = [None if isinstance(v, float) and math.isnan(v) else v for v in row]
            update((encode(values) + "\n").encode())

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def fingerprint_frame(frame: "pd.DataFrame") -> str:
    fingerprint = Fingerprint()
    fingerprint.update([list(frame.columns)])
    fingerprint.update(frame.itertuples(index=False, name=None))
    return fingerprint.hexdigest()


@dataclass
class StreamResult:
    rows: int
    fingerprint: str
    reports: dict[str, dict[str, Any]]
    tasks_read: int


_worker_pipeline: GoldenDatasetPipeline | None = None


def _init_worker(options: GoldenDatasetOptions) -> None:
    global _worker_pipeline
    _worker_pipeline = GoldenDatasetPipeline(options)


def _task_fields(chunk: list[RawTask]) -> list[tuple]:
    """What the stateless stages need of each task, as plain tuples: pickling a tuple of strings
    costs a fifth of pickling a dataclass instance, and ``created_at`` is not needed there."""
    return [(task.id, task.context_id, task.prompt_id, task.history, task.feedback) for task in chunk]


def _prepare_chunk(chunk: list[tuple]) -> tuple[list[tuple], dict[str, StageReport]]:
    pipeline = _worker_pipeline
    assert pipeline is not None, "worker not initialised"
    pipeline.reports = {stage: StageReport(stage) for stage in STAGES}
    rows: list[tuple] = []
    prepare = pipeline.prepare
    for fields in chunk:
        rows.extend(prepare(*fields))
    return rows, pipeline.reports


def stream_golden_dataset(
    engine: "sa.Engine",
    agent_id: str,
    options: GoldenDatasetOptions | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int = 1,
) -> Iterator[list[tuple]]:
    """Golden rows chunk by chunk, in one pass over a streamed read; memory stays bounded.

    ``workers > 1`` runs the stateless stages (feedback, extract, quality, validate) in that many
    processes while this one reads the next chunks; deduplication and the split stay here, in
    read order, so the result is the same as with one worker. At most ``workers + 1`` chunks are
    in flight. The generator's return value (``StopIteration.value``) is a ``StreamResult``; use
    ``write_golden_parquet`` or ``collect_golden_dataset`` rather than reading it by hand.
    """
    pipeline = GoldenDatasetPipeline(options)
    opts = pipeline.options
    fingerprint = Fingerprint()
    fingerprint.update([GOLDEN_COLUMNS])
    total = tasks_read = 0
    chunks = read_ahead(iter_agent_task_chunks(
        engine, agent_id, since=opts.since, until=opts.until, limit=opts.limit,
        chunk_size=chunk_size, rebuild_context=opts.rebuild_context,
    ))

    def admitted(prepared: list[tuple]) -> list[tuple]:
        out = [golden for golden in map(pipeline.admit, prepared) if golden is not None]
        fingerprint.update(out)
        return out

    if workers <= 1:
        for chunk in chunks:
            tasks_read += len(chunk)
            prepared: list[tuple] = []
            for task in chunk:
                prepared.extend(pipeline.prepare_task(task))
            out = admitted(prepared)
            total += len(out)
            yield out
    else:
        import multiprocessing
        from collections import deque
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(opts,)) as pool:
            pending: deque = deque()
            for chunk in chunks:
                tasks_read += len(chunk)
                pending.append(pool.submit(_prepare_chunk, _task_fields(chunk)))
                while len(pending) > workers:
                    rows, reports = pending.popleft().result()
                    pipeline.merge_reports(reports)
                    out = admitted(rows)
                    total += len(out)
                    yield out
            while pending:
                rows, reports = pending.popleft().result()
                pipeline.merge_reports(reports)
                out = admitted(rows)
                total += len(out)
                yield out
    return StreamResult(total, fingerprint.hexdigest(), pipeline.summary(), tasks_read)


def _drain(stream: Iterator[list[tuple]], sink) -> StreamResult:
    while True:
        try:
            sink(next(stream))
        except StopIteration as stop:
            return stop.value


def collect_golden_dataset(
    engine: "sa.Engine", agent_id: str, options: GoldenDatasetOptions | None = None,
    *, chunk_size: int = DEFAULT_CHUNK_SIZE, workers: int = 1,
) -> tuple[list[tuple], StreamResult]:
    """All golden rows in memory (fine for a bounded ``limit``) plus the run's result."""
    rows: list[tuple] = []
    result = _drain(stream_golden_dataset(engine, agent_id, options, chunk_size=chunk_size, workers=workers), rows.extend)
    return rows, result


def write_golden_parquet(
    engine: "sa.Engine", agent_id: str, path: str, options: GoldenDatasetOptions | None = None,
    *, chunk_size: int = DEFAULT_CHUNK_SIZE, workers: int = 1,
) -> StreamResult:
    """Stream the golden dataset into a Parquet file, one row group per chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ("id", pa.string()), ("user_input", pa.string()), ("agent_output", pa.string()),
        ("feedback_score", pa.float64()), ("feedback_type", pa.string()), ("split", pa.string()),
        ("context_id", pa.string()), ("prompt_id", pa.string()),
    ])
    with pq.ParquetWriter(path, schema) as writer:
        def sink(rows: list[tuple]) -> None:
            if rows:
                columns = list(zip(*rows))
                writer.write_table(pa.Table.from_arrays([pa.array(c, t.type) for c, t in zip(columns, schema)], schema=schema))
        return _drain(stream_golden_dataset(engine, agent_id, options, chunk_size=chunk_size, workers=workers), sink)


def rows_to_interactions(rows: Iterable[tuple]) -> list[Interaction]:
    return [
        Interaction(id=r[0], user_input=r[1], agent_output=r[2], feedback_score=r[3], feedback_type=r[4],
                    context_id=r[6], prompt_id=r[7])
        for r in rows
    ]


async def build_golden_dataset(
    agent_id: str,
    limit: int | None = None,
    strategy: BaseExtractionStrategy | str | None = None,
    require_feedback: bool = True,
    min_feedback_threshold: float = 0.0,
    *,
    engine: "sa.Engine | None" = None,
    database_url: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    scrub_pii: bool = True,
    rebuild_context: bool = False,
) -> list[Interaction]:
    """The seed's API plus the agent: high-quality interactions, ready for training.

    As in the seed, ``limit=None`` means ``max_interactions_query_limit`` (10 000 unless
    ``BINDU_DSPY_MAX_INTERACTIONS_QUERY_LIMIT`` says otherwise) and ``strategy=None`` means
    ``LastTurnStrategy()``. Unlike the seed, ``require_feedback`` is honoured. The database is
    ``engine``, else ``database_url``, else the configured default (``BINDU_DATABASE_URL`` /
    ``STORAGE__POSTGRES_URL``).
    """
    settings = GoldenDatasetSettings()
    options = GoldenDatasetOptions(
        strategy=strategy,
        require_feedback=require_feedback,
        min_feedback_threshold=min_feedback_threshold,
        limit=limit if limit is not None else settings.max_interactions_query_limit,
        since=since,
        until=until,
        scrub_pii=scrub_pii,
        rebuild_context=rebuild_context,
    )

    def run() -> list[Interaction]:
        from bindu_runtime.db import make_engine

        own_engine = engine is None
        active = engine if engine is not None else make_engine(database_url)
        try:
            rows, _ = collect_golden_dataset(active, agent_id, options)
        finally:
            if own_engine:
                active.dispose()
        return rows_to_interactions(rows)

    return await asyncio.to_thread(run)


def convert_to_dspy_examples(interactions: "Iterable[Interaction] | pd.DataFrame") -> "list[dspy.Example]":
    """Interactions (or the golden dataset DataFrame) as ``dspy.Example``s with ``user_input`` as input."""
    import dspy

    if hasattr(interactions, "itertuples"):
        records: Iterable[tuple[Any, Any, Any]] = interactions[["user_input", "agent_output", "feedback_score"]].itertuples(
            index=False, name=None
        )
    else:
        records = ((i.user_input, i.agent_output, i.feedback_score) for i in interactions)
    examples = []
    for user_input, agent_output, score in records:
        if score is not None and isinstance(score, float) and math.isnan(score):
            score = None
        examples.append(
            dspy.Example(user_input=user_input, agent_output=agent_output, feedback_score=score).with_inputs("user_input")
        )
    return examples


__all__ = [
    "GOLDEN_COLUMNS",
    "INTERACTION_COLUMNS",
    "TRAIN",
    "VALIDATION",
    "Fingerprint",
    "GoldenDatasetOptions",
    "GoldenDatasetPipeline",
    "GoldenDatasetSettings",
    "StageReport",
    "StreamResult",
    "build_golden_dataset",
    "collect_golden_dataset",
    "convert_to_dspy_examples",
    "fingerprint_frame",
    "golden_frame",
    "rows_to_interactions",
    "stream_golden_dataset",
    "write_golden_parquet",
]

"""The golden dataset pipeline, Dagster-free.

Stages, in the seed's order, each reporting rows in / out and drops by reason:

    fetch -> feedback (normalise) -> extract (strategy + PII scrub) -> quality (require_feedback,
    threshold) -> validate -> deduplicate -> split (train / validation)

``GoldenDatasetPipeline`` holds the per-row stage functions and their reports. Both readers of
the tasks run them over the same batches (``task_batches``) with the same worker
processes (``workers.py``): ``stages.write_golden_stages`` writes every stage's rows to its own
Parquet file (what the Dagster assets of the daily job run), ``stream_golden_dataset`` keeps only
the golden rows. Both hold a few batches in memory (plus the deduplicator's digests) and give the
same rows and drop counts (tested). ``build_golden_dataset`` is the seed's async API on the latter.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hashlib
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from pydantic_settings import BaseSettings, SettingsConfigDict

from .extractor import InteractionExtractor
from .feedback import DEFAULT_SCALE, FeedbackScale, TaskFeedback, combine_task_feedback
from .fetch import (
    DEFAULT_CHUNK_SIZE,
    RawTask,
    decode_feedback_rows,
    decode_task_block,
    iter_agent_task_blocks,
    iter_agent_task_fields,
    read_ahead,
)
from .history import DEFAULT_MAX_MESSAGE_CHARS
from .models import Interaction
from .quality import (
    TRAIN,
    VALIDATION,
    Deduplicator,
    QualitySettings,
    quality_drop_reason,
    split_for,
    validate_pair_with_keys,
)
from .strategies import BaseExtractionStrategy, parse_strategy
from .workers import in_order

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


class Candidate(NamedTuple):
    """A clean row (``GOLDEN_COLUMNS``, split included) and the digest deduplication needs,
    both computed where the row was cleaned (a worker process, when there are workers)."""

    row: tuple
    normalized_digest: int


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


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """The cyclic collector off for a batch: the stages make no reference cycles, so it would only
    walk the batch's short-lived objects again and again."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def task_batches(engine: "sa.Engine", agent_id: str, options: "GoldenDatasetOptions", chunk_size: int) -> Iterator[tuple[int, bytes | list[tuple]]]:
    """The tasks ``options`` select, as ``(row count, batch)`` pairs read ahead in the background:
    COPY blocks on PostgreSQL (``iter_agent_task_blocks``), else (SQLite, or contexts rebuilt
    across tasks) lists of ``iter_agent_task_fields`` tuples. The stages take either."""
    if engine.dialect.name == "postgresql" and not options.rebuild_context:
        return iter_agent_task_blocks(engine, agent_id, since=options.since, until=options.until, limit=options.limit,
                                      chunk_size=chunk_size, max_text_chars=options.max_message_chars)
    return ((len(chunk), chunk) for chunk in read_ahead(iter_agent_task_fields(
        engine, agent_id, since=options.since, until=options.until, limit=options.limit, chunk_size=chunk_size,
        rebuild_context=options.rebuild_context,
    )))


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
        self.reset_reports()

    def reset_reports(self) -> None:
        """Fresh, empty stage reports (a worker process starts each chunk with these)."""
        self.reports = {stage: StageReport(stage) for stage in STAGES}
        # Per-row stages update these directly: one attribute read instead of a dict lookup.
        self._quality, self._validate = self.reports["quality"], self.reports["validate"]

    # -- stage: feedback -------------------------------------------------------------------------
    def normalize_feedback(self, feedback_rows: Iterable) -> TaskFeedback:
        """One task's feedback rows -> its one score (rows in = feedback rows, out = scored tasks)."""
        rows = decode_feedback_rows(feedback_rows) if feedback_rows is None or isinstance(feedback_rows, (str, bytes)) else list(feedback_rows)
        report = self.reports["feedback"]
        result = combine_task_feedback(rows, self.options.feedback_scale)
        report.rows_in += len(rows)
        if result.drops:
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
        outcome = self.extractor.extract_texts(task_id, history)
        if outcome.message_drops:
            report.notes.update({f"messages_skipped.{k}": v for k, v in outcome.message_drops.items()})
        if outcome.pii_found:
            report.notes.update({f"pii_scrubbed.{k}": v for k, v in outcome.pii_found.items()})
        if outcome.drop_reason is not None:
            report.drops[outcome.drop_reason] += 1
            return []
        report.rows_out += len(outcome.pairs)
        return [
            (task_id, user_input, agent_output, score, feedback_type, context_id, prompt_id)
            for user_input, agent_output in outcome.pairs
        ]

    # -- stages: quality, validate ----------------------------------------------------------------
    def clean(self, row: tuple) -> Candidate | None:
        """An interaction row through quality -> validate, ready for the stateful stages
        (stateless: safe to run in parallel)."""
        task_id, user_input, agent_output, score, feedback_type, context_id, prompt_id = row
        if score is not None and isinstance(score, float) and math.isnan(score):
            score = None
        quality, validate = self._quality, self._validate
        quality.rows_in += 1
        reason = quality_drop_reason(score, self.quality)
        if reason is not None:
            quality.drops[reason] += 1
            return None
        quality.rows_out += 1
        validate.rows_in += 1
        user_input, agent_output, reason, keys = validate_pair_with_keys(user_input, agent_output, self.quality)
        if reason is not None:
            validate.drops[reason] += 1
            return None
        validate.rows_out += 1
        split = split_for(task_id, self.quality.validation_fraction, self.quality.split_salt)
        return Candidate(
            (task_id, user_input, agent_output, score, feedback_type if score is not None else None, split, context_id, prompt_id),
            Deduplicator.normalized_digest(*keys),
        )

    # -- stages: deduplicate, split -------------------------------------------------------------
    def admit(self, candidate: Candidate | tuple) -> tuple | None:
        """A clean row through deduplicate -> split (stateful: runs in one process, in read order)."""
        row, normalized_digest = candidate
        dedup = self.reports["deduplicate"]
        dedup.rows_in += 1
        reason = self.deduplicator.admit(row[1], row[2], normalized_digest)
        if reason is not None:
            dedup.drops[reason] += 1
            return None
        dedup.rows_out += 1
        split = self.reports["split"]
        split.rows_in += 1
        split.rows_out += 1
        split.notes[row[5]] += 1
        return row

    def finish(self, row: tuple) -> tuple | None:
        """An interaction row through quality -> validate -> deduplicate -> split (``GOLDEN_COLUMNS``)."""
        candidate = self.clean(row)
        return None if candidate is None else self.admit(candidate)

    def prepare_stages(
        self, task_id: str, context_id: str | None, prompt_id: str | None, history: Any, feedback: Any
    ) -> tuple[TaskFeedback, list[tuple], list[Candidate]]:
        """The stateless stages for one task's fields, with what each produced: the feedback
        score, the interaction rows, the clean candidates."""
        scored = self.normalize_feedback(feedback)
        rows = self.extract(task_id, history, scored.score, scored.feedback_type, context_id, prompt_id)
        return scored, rows, [candidate for candidate in map(self.clean, rows) if candidate is not None]

    def prepare(self, task_id: str, context_id: str | None, prompt_id: str | None, history: Any, feedback: Any) -> list[Candidate]:
        """The stateless stages for one task's fields: feedback, extract, quality, validate."""
        return self.prepare_stages(task_id, context_id, prompt_id, history, feedback)[2]

    def prepare_chunk(self, chunk: list[tuple] | bytes) -> tuple[list[tuple], list[bytes]]:
        """The stateless stages for a chunk of tasks (field tuples, or a COPY block of them): the
        candidates as plain tuples (a named tuple would be rebuilt through its class when it
        crosses to another process) and each candidate's fingerprint digest, in order."""
        if isinstance(chunk, bytes):
            chunk = decode_task_block(chunk)
        candidates: list[Candidate] = []
        prepare = self.prepare
        with cyclic_gc_paused():
            for fields in chunk:
                candidates.extend(prepare(*fields))
        return [tuple(candidate) for candidate in candidates], [Fingerprint.row_digest(c.row) for c in candidates]

    def prepare_task(self, task: RawTask) -> list[Candidate]:
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
    """sha256 over the sha256 of each row's canonical JSON form, in order: the same rows in the
    same order give the same hex digest. Hashing rows one by one lets worker processes do the
    costly part (encoding and hashing each row) while the order is kept where rows are admitted.

    The canonical form is orjson's compact JSON of the row's values: floats as Python floats
    (numpy's included), NaN as null, anything JSON lacks (timestamps) as ``str``.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    @staticmethod
    def row_digest(row: Iterable[Any]) -> bytes:
        """sha256 of a row's canonical JSON form."""
        values = [(None if v != v else float(v)) if isinstance(v, float) else v for v in row]
        return hashlib.sha256(orjson.dumps(values, default=str)).digest()

    def update(self, rows: Iterable[Iterable[Any]]) -> None:
        self.update_digests(map(self.row_digest, rows))

    def update_digests(self, digests: Iterable[bytes]) -> None:
        """Rows already hashed by ``row_digest`` (e.g. in worker processes), in order."""
        self._hash.update(b"".join(digests))

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


def _prepare_batch(pipeline: GoldenDatasetPipeline, chunk: list[tuple] | bytes) -> tuple[list[tuple], list[bytes], dict[str, StageReport]]:
    """``prepare_chunk`` with the chunk's own stage reports (in a worker process, or here)."""
    pipeline.reset_reports()
    return (*pipeline.prepare_chunk(chunk), pipeline.reports)


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
    chunks = task_batches(engine, agent_id, opts, chunk_size)

    def counted(source: Iterator[tuple[int, list[tuple] | bytes]]) -> Iterator[list[tuple] | bytes]:
        nonlocal tasks_read
        for count, chunk in source:
            tasks_read += count
            yield chunk

    def prepared() -> Iterator[tuple[list[tuple], list[bytes]]]:
        """Each chunk's candidates and fingerprint digests, in read order."""
        jobs = ((chunk,) for chunk in counted(chunks))
        for candidates, digests, reports in in_order(_prepare_batch, jobs, functools.partial(GoldenDatasetPipeline, opts), workers):
            pipeline.merge_reports(reports)
            yield candidates, digests

    admit = pipeline.admit
    with contextlib.closing(prepared()) as batches:  # a consumer that stops early shuts the pool down
        for candidates, digests in batches:
            out, kept = [], []
            for candidate, digest in zip(candidates, digests):
                golden = admit(candidate)
                if golden is not None:
                    out.append(golden)
                    kept.append(digest)
            fingerprint.update_digests(kept)
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
    """Stream the golden dataset into a Parquet file, one row group per chunk.

    The file appears at ``path`` only when the run is complete: rows go to ``path + ".partial"``,
    renamed at the end and removed if the run fails (a lost database, a bad option).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ("id", pa.string()), ("user_input", pa.string()), ("agent_output", pa.string()),
        ("feedback_score", pa.float64()), ("feedback_type", pa.string()), ("split", pa.string()),
        ("context_id", pa.string()), ("prompt_id", pa.string()),
    ])
    partial = f"{path}.partial"
    try:
        with pq.ParquetWriter(partial, schema) as writer:
            def sink(rows: list[tuple]) -> None:
                if rows:
                    columns = list(zip(*rows))
                    writer.write_table(pa.Table.from_arrays([pa.array(c, t.type) for c, t in zip(columns, schema)], schema=schema))
            result = _drain(stream_golden_dataset(engine, agent_id, options, chunk_size=chunk_size, workers=workers), sink)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
        raise
    os.replace(partial, path)
    return result


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
    "Candidate",
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

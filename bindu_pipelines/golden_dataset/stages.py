"""The golden dataset's four stages in one pass over the tasks, Dagster-free: what the
Dagster assets of the daily job run.

    tasks (database) -> raw_tasks.parquet               the tasks and their feedback rows, as read
                     -> normalized_feedback.parquet     one 0..1 score per scored task
                     -> extracted_interactions.parquet  (user_input -> agent_output) pairs, PII scrubbed
                     -> golden_dataset.parquet          quality, validation, deduplication, split

The tasks are read once, in bounded batches (COPY blocks from PostgreSQL, ``fetch.py``). Each
batch goes through every stage at once, in a worker process when there are workers: the worker
decodes the block and runs the stateless per-row rules of ``GoldenDatasetPipeline``
(``dataset.py``): feedback, extraction, quality and validation. It hands back the batch's rows
for each of the four files as Arrow IPC buffers (cheap to read back), with their fingerprint
digests and what the golden dataset's checks need. This process keeps the read order and does
the stateful part, deduplication and the split, then appends a row group to each file. Memory
holds a few batches, however many tasks there are.

The golden rows and drop counts are those of ``stream_golden_dataset`` / ``build_golden_dataset``,
which run the same per-row rules with the same workers (``workers.py``) and keep only the last
file's rows.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from bindu_pipelines.names import GOLDEN_DATASET_ASSETS

from .dataset import (
    GOLDEN_COLUMNS,
    INTERACTION_COLUMNS,
    Fingerprint,
    GoldenDatasetOptions,
    GoldenDatasetPipeline,
    StageReport,
    cyclic_gc_paused,
    task_batches,
)
from .feedback import FEEDBACK_ON_MISSING_TASK
from .fetch import (
    DEFAULT_CHUNK_SIZE,
    count_agent_tasks,
    count_orphan_feedback,
    decode_task_block,
)
from .pii import find_pii
from .quality import VALIDATION
from .workers import in_order

if TYPE_CHECKING:
    import sqlalchemy as sa

OVER_QUERY_LIMIT = "over_query_limit"
PREVIEW_ROWS = 5
DICTIONARY_COLUMNS = ("prompt_id", "feedback_type", "split")

RAW_TASK_SCHEMA = pa.schema([
    ("id", pa.string()), ("context_id", pa.string()), ("prompt_id", pa.string()),
    ("history", pa.string()), ("feedback", pa.string()),
])
FEEDBACK_SCHEMA = pa.schema([
    ("task_id", pa.string()), ("feedback_score", pa.float64()), ("feedback_type", pa.string()),
    ("valid_feedback_rows", pa.int64()),
])
INTERACTION_SCHEMA = pa.schema([
    ("id", pa.string()), ("user_input", pa.string()), ("agent_output", pa.string()),
    ("feedback_score", pa.float64()), ("feedback_type", pa.string()), ("context_id", pa.string()),
    ("prompt_id", pa.string()),
])
GOLDEN_SCHEMA = pa.schema([
    ("id", pa.string()), ("user_input", pa.string()), ("agent_output", pa.string()),
    ("feedback_score", pa.float64()), ("feedback_type", pa.string()), ("split", pa.string()),
    ("context_id", pa.string()), ("prompt_id", pa.string()),
])
assert INTERACTION_SCHEMA.names == INTERACTION_COLUMNS and GOLDEN_SCHEMA.names == GOLDEN_COLUMNS


class ParquetTable(os.PathLike):
    """A finished stage's Parquet file, handed between stages instead of its rows.

    The Parquet IO manager moves the file into its storage when an asset returns one, and hands
    one back to an asset that asks for this type (a pandas-typed input gets the frame)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)

    def __fspath__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"ParquetTable({self.path!r})"

    @property
    def rows(self) -> int:
        return pq.ParquetFile(self.path).metadata.num_rows

    def iter_batches(self, columns: list[str] | None = None, batch_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[pa.RecordBatch]:
        with pq.ParquetFile(self.path) as file:
            yield from file.iter_batches(batch_size=batch_size, columns=columns)

    def iter_rows(self, columns: list[str] | None = None, batch_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[tuple]:
        for batch in self.iter_batches(columns, batch_size):
            yield from zip(*(column.to_pylist() for column in batch.columns))


@dataclass
class StageOutput:
    """What a stage wrote: the file, its reports, a preview of its first rows, its fingerprint
    (``Fingerprint`` over the column names and the rows, as ``fingerprint_frame`` of the frame)."""

    table: ParquetTable
    rows: int
    reports: list[StageReport]
    preview: list[tuple]
    fingerprint: str
    extra: dict[str, Any] = field(default_factory=dict)


class _Writer:
    """Row groups into ``path + '.partial'``, renamed to ``path`` only when the stage completes."""

    def __init__(self, path: str, schema: pa.Schema):
        self.path, self.schema, self.partial = path, schema, f"{path}.partial"
        self.rows = 0
        self.preview: list[tuple] = []
        self.fingerprint = Fingerprint()
        self.fingerprint.update([schema.names])
        # Dictionary pages only for the few-valued columns: trying them on texts and ids costs
        # time and saves nothing.
        self._writer = pq.ParquetWriter(self.partial, schema, use_dictionary=[n for n in schema.names if n in DICTIONARY_COLUMNS])

    def write_rows(self, rows: list[tuple], digests: list[bytes] | None = None) -> None:
        if rows:
            self.write_table(_table(rows, self.schema), rows, digests)

    def write_table(self, table: pa.Table, rows: list[tuple] | None = None, digests: list[bytes] | None = None) -> None:
        if table.num_rows == 0:
            return
        self._writer.write_table(table)
        self.rows += table.num_rows
        if digests is not None:
            self.fingerprint.update_digests(digests)
        else:
            self.fingerprint.update(rows if rows is not None else zip(*(c.to_pylist() for c in table.columns)))
        if len(self.preview) < PREVIEW_ROWS:
            head = rows if rows is not None else list(zip(*(c.to_pylist() for c in table.slice(0, PREVIEW_ROWS).columns)))
            self.preview.extend(head[: PREVIEW_ROWS - len(self.preview)])

    def close(self, reports: list[StageReport], **extra: Any) -> StageOutput:
        self._writer.close()
        os.replace(self.partial, self.path)
        return StageOutput(ParquetTable(self.path), self.rows, reports, self.preview, self.fingerprint.hexdigest(), extra)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.partial)


@contextlib.contextmanager
def _writing(path: str, schema: pa.Schema) -> Iterator[_Writer]:
    writer = _Writer(path, schema)
    try:
        yield writer
    except BaseException:
        writer.abort()
        raise


# --------------------------------------------------------------- what the checks judge -----
@dataclass
class GoldenFacts:
    """What the golden dataset's checks judge, gathered from its rows as they are written (so
    the checks cost no second read of the file). Duplicates are counted apart from the
    deduplicator: exact pairs by a digest of their own, normalised pairs by the digest the
    cleaning computed, 8 bytes a row each, sorted once at the end. A pair the deduplication let
    through twice is caught."""

    rows: int = 0
    validation_rows: int = 0
    missing_scores: int = 0
    out_of_range_scores: int = 0
    exact_duplicates: int = 0
    normalized_duplicates: int = 0
    pii_found: dict[str, int] = field(default_factory=dict)
    rows_with_pii: int = 0
    example_pii_task_ids: list[str] = field(default_factory=list)
    _exact: array = field(default_factory=lambda: array("Q"), repr=False)
    _normalized: array = field(default_factory=lambda: array("Q"), repr=False)

    def observe(self, row: tuple, exact_digest: int, normalized_digest: int, pii: tuple[str, ...] | None) -> None:
        self.rows += 1
        if row[5] == VALIDATION:
            self.validation_rows += 1
        score = row[3]
        if score is None or score != score:
            self.missing_scores += 1
        elif not 0.0 <= score <= 1.0:
            self.out_of_range_scores += 1
        self._exact.append(exact_digest)
        self._normalized.append(normalized_digest)
        if pii:
            self.rows_with_pii += 1
            for kind in pii:
                self.pii_found[kind] = self.pii_found.get(kind, 0) + 1
            if len(self.example_pii_task_ids) < 10:
                self.example_pii_task_ids.append(row[0])

    def finish(self) -> "GoldenFacts":
        """Count the duplicates among the digests (rows beyond the first of each) and let them go."""
        import numpy as np

        def repeats(digests: array) -> int:
            ordered = np.sort(np.frombuffer(digests, dtype=np.uint64))
            return int(np.count_nonzero(ordered[1:] == ordered[:-1]))

        self.exact_duplicates, self.normalized_duplicates = repeats(self._exact), repeats(self._normalized)
        self._exact, self._normalized = array("Q"), array("Q")
        return self


def _exact_digest(user_input: str, agent_output: str) -> int:
    data = f"{len(user_input)}:{user_input}{agent_output}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, person=b"golden-check").digest(), "big")


# --------------------------------------------------------------- one batch, every stage ----
class _Batch(NamedTuple):
    """One batch of tasks through the stateless stages (``_stage_batch``), ready to be written."""

    tasks: int
    raw: Any  # Arrow IPC buffer (from a worker) or table of RAW_TASK_SCHEMA
    raw_digests: bytes  # the rows' fingerprint digests, concatenated
    feedback: Any
    feedback_digests: bytes
    feedback_types: dict[str, int]
    interactions: Any
    interaction_digests: bytes
    candidates: list[tuple]  # (golden row, normalized digest) for deduplication, in order
    candidate_digests: list[bytes]
    check_facts: list[tuple]  # per candidate: (exact digest, PII kinds or None)
    reports: dict[str, StageReport]


def _table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    columns = list(zip(*rows)) if rows else [[] for _ in schema]
    return pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(columns, schema)], schema=schema)


def _pack(rows: list[tuple], schema: pa.Schema, to_ipc: bool) -> Any:
    # A table crosses the pipe as an IPC buffer: reading it back costs a pointer, where an
    # unpickled table costs a copy of every buffer in this process.
    table = _table(rows, schema)
    if not to_ipc:
        return table
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as stream:
        stream.write_table(table)
    return sink.getvalue()


def _unpack(packed: Any) -> pa.Table:
    return packed if isinstance(packed, pa.Table) else pa.ipc.open_stream(packed).read_all()


def _digests(rows: Iterable[tuple]) -> bytes:
    return b"".join(map(Fingerprint.row_digest, rows))


def _json_text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    import orjson

    return orjson.dumps(value, default=str).decode()


def _stage_batch(pipeline: GoldenDatasetPipeline, batch: bytes | list[tuple], to_ipc: bool) -> _Batch:
    """Every stateless stage for one batch of tasks (a COPY block or field tuples)."""
    pipeline.reset_reports()
    if isinstance(batch, bytes):
        fields = raw = decode_task_block(batch)
    else:
        # SQLite hands JSON back as text (kept verbatim); a rebuilt context arrives as objects.
        fields = batch
        raw = [(i, c, p, _json_text(h), _json_text(f)) for i, c, p, h, f in batch]
    feedback_rows: list[tuple] = []
    feedback_types: dict[str, int] = {}
    interactions: list[tuple] = []
    candidates: list[tuple] = []
    prepare_stages = pipeline.prepare_stages
    with cyclic_gc_paused():
        for task_id, context_id, prompt_id, history, feedback in fields:
            scored, rows, clean = prepare_stages(task_id, context_id, prompt_id, history, feedback)
            if scored.score is not None:
                feedback_rows.append((task_id, float(scored.score), scored.feedback_type, scored.valid_rows))
                feedback_types[scored.feedback_type] = feedback_types.get(scored.feedback_type, 0) + 1
            interactions.extend(rows)
            candidates.extend(map(tuple, clean))
        golden_rows = [row for row, _ in candidates]
        check_facts = [
            (_exact_digest(row[1], row[2]), tuple(find_pii(row[1]) + find_pii(row[2])) or None) for row in golden_rows
        ]
        return _Batch(
            len(fields),
            _pack(raw, RAW_TASK_SCHEMA, to_ipc), _digests(raw),
            _pack(feedback_rows, FEEDBACK_SCHEMA, to_ipc), _digests(feedback_rows), feedback_types,
            _pack(interactions, INTERACTION_SCHEMA, to_ipc), _digests(interactions),
            candidates, list(map(Fingerprint.row_digest, golden_rows)), check_facts,
            pipeline.reports,
        )


# --------------------------------------------------------------- the four files ------------
@dataclass
class StagedRun:
    raw_tasks: StageOutput
    normalized_feedback: StageOutput
    extracted_interactions: StageOutput
    golden_dataset: StageOutput
    facts: GoldenFacts

    def reports(self) -> dict[str, dict[str, Any]]:
        """The stage reports keyed by stage, as ``StreamResult.reports``."""
        outputs = (self.normalized_feedback, self.extracted_interactions, self.golden_dataset)
        return {report.stage: report.as_metadata() for output in outputs for report in output.reports}


def stage_paths(directory: str) -> dict[str, str]:
    """Where ``write_golden_stages`` puts each asset's file in ``directory``."""
    return {asset: os.path.join(directory, f"{asset}.parquet") for asset in GOLDEN_DATASET_ASSETS}


def write_golden_stages(
    engine: "sa.Engine", agent_id: str, paths: dict[str, str], options: GoldenDatasetOptions | None = None,
    *, chunk_size: int = DEFAULT_CHUNK_SIZE, workers: int = 1,
) -> StagedRun:
    """The agent's tasks through every stage in one pass, into the four files of ``paths``
    (keyed by asset name, see ``stage_paths``). Each file appears only when the run completes.

    With ``workers > 1`` the stateless stages run in that many processes (not for a limit
    under four batches: the processes would cost more than they save)."""
    opts = options or GoldenDatasetOptions()
    if opts.limit is not None and opts.limit < 4 * chunk_size:
        workers = 1
    merged = GoldenDatasetPipeline(opts)
    admit = merged.admit
    facts = GoldenFacts()
    tasks = 0
    feedback_types: Counter = Counter()
    raw_name, feedback_name, extracted_name, golden_name = GOLDEN_DATASET_ASSETS
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(_writing(paths[raw_name], RAW_TASK_SCHEMA))
        feedback = stack.enter_context(_writing(paths[feedback_name], FEEDBACK_SCHEMA))
        extracted = stack.enter_context(_writing(paths[extracted_name], INTERACTION_SCHEMA))
        golden = stack.enter_context(_writing(paths[golden_name], GOLDEN_SCHEMA))
        jobs = ((batch, workers > 1) for _, batch in task_batches(engine, agent_id, opts, chunk_size))
        for batch in in_order(_stage_batch, jobs, functools.partial(GoldenDatasetPipeline, opts), workers):
            tasks += batch.tasks
            merged.merge_reports({stage: batch.reports[stage] for stage in ("feedback", "extract", "quality", "validate")})
            raw.write_table(_unpack(batch.raw), digests=[batch.raw_digests])
            feedback.write_table(_unpack(batch.feedback), digests=[batch.feedback_digests])
            feedback_types.update(batch.feedback_types)
            extracted.write_table(_unpack(batch.interactions), digests=[batch.interaction_digests])
            out, kept = [], []
            for candidate, digest, (exact_digest, pii) in zip(batch.candidates, batch.candidate_digests, batch.check_facts):
                row = admit(candidate)
                if row is not None:
                    out.append(row)
                    kept.append(digest)
                    facts.observe(row, exact_digest, candidate[1], pii)
            golden.write_rows(out, kept)
        facts.finish()
        fetched = StageReport("fetch", rows_in=tasks, rows_out=tasks)
        if opts.limit is not None and tasks >= opts.limit:
            # The limit cut the read: say how many tasks of the window it left out.
            in_window = count_agent_tasks(engine, agent_id, since=opts.since, until=opts.until)
            fetched.rows_in = in_window
            if in_window > tasks:
                fetched.drops[OVER_QUERY_LIMIT] = in_window - tasks
        feedback_report = merged.reports["feedback"]
        orphans = count_orphan_feedback(engine)
        if orphans:
            feedback_report.drops[FEEDBACK_ON_MISSING_TASK] += orphans
            feedback_report.rows_in += orphans
        return StagedRun(
            raw.close([fetched]),
            feedback.close([feedback_report], tasks=tasks, by_type=dict(feedback_types)),
            extracted.close([merged.reports["extract"]]),
            golden.close([merged.reports[s] for s in ("quality", "validate", "deduplicate", "split")]),
            facts,
        )


def run_golden_stages(
    engine: "sa.Engine", agent_id: str, directory: str, options: GoldenDatasetOptions | None = None,
    *, chunk_size: int = DEFAULT_CHUNK_SIZE, workers: int = 1,
) -> StagedRun:
    """``write_golden_stages`` into ``directory`` (one file per asset, named after it)."""
    return write_golden_stages(engine, agent_id, stage_paths(directory), options, chunk_size=chunk_size, workers=workers)

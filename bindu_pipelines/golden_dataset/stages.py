"""The golden dataset as four file-to-file stages, Dagster-free: what the Dagster assets run.

    raw tasks (database)  -> raw_tasks.parquet
    raw_tasks.parquet     -> normalized_feedback.parquet        (one 0..1 score per scored task)
    raw + feedback        -> extracted_interactions.parquet     (strategy + PII scrub)
    extracted             -> golden.parquet                     (quality, validate, dedup, split)

Every stage reads its input in bounded batches (COPY blocks from PostgreSQL, a Parquet row
group at a time from the previous stage) and writes Parquet a row group per batch, so memory
holds a few batches, however many tasks there are. The per-row rules are the ones of
``GoldenDatasetPipeline`` (``dataset.py``), the reading is ``fetch.py``'s: the rows and drop
counts are those of ``stream_golden_dataset`` / ``build_golden_dataset``, which run the same
stage functions in one pass. With ``workers > 1`` the stateless work of a stage runs in worker
processes, each reading its own row group from the input file (nothing big crosses a pipe but
the output), while this process keeps the order and the stateful deduplication.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from .dataset import (
    GOLDEN_COLUMNS,
    INTERACTION_COLUMNS,
    Fingerprint,
    GoldenDatasetOptions,
    GoldenDatasetPipeline,
    StageReport,
)
from .feedback import FEEDBACK_ON_MISSING_TASK
from .fetch import (
    DEFAULT_CHUNK_SIZE,
    count_agent_tasks,
    count_orphan_feedback,
    decode_task_block,
    iter_agent_task_blocks,
    iter_agent_task_fields,
    read_ahead,
)

if TYPE_CHECKING:
    import sqlalchemy as sa

OVER_QUERY_LIMIT = "over_query_limit"
PREVIEW_ROWS = 5

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

    def read_pandas(self):
        return pq.read_table(self.path).to_pandas()


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
        self._writer = pq.ParquetWriter(self.partial, schema)

    def write_rows(self, rows: list[tuple], digests: list[bytes] | None = None) -> None:
        if not rows:
            return
        columns = list(zip(*rows))
        self.write_table(pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(columns, self.schema)], schema=self.schema),
                         rows, digests)

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


# --------------------------------------------------------------- worker processes ----------
_worker_pipelines: dict[str, GoldenDatasetPipeline] = {}
_pools: dict[int, Any] = {}


def _worker_pipeline(options: GoldenDatasetOptions) -> GoldenDatasetPipeline:
    # One pipeline per distinct options in a worker (the options arrive with each job, pickled).
    key = repr(options)
    pipeline = _worker_pipelines.get(key)
    if pipeline is None:
        _worker_pipelines.clear()
        pipeline = _worker_pipelines[key] = GoldenDatasetPipeline(options)
    pipeline.reset_reports()
    return pipeline


def _run_in_worker(function: Callable, options: GoldenDatasetOptions, job: tuple) -> Any:
    return function(_worker_pipeline(options), *job)


def _pool(workers: int):
    """One pool of ``workers`` processes for the process's lifetime: the stages of a run (Dagster
    steps in one process) share it instead of starting processes for each stage. Workers fork
    from a server that has imported the stage code already."""
    pool = _pools.get(workers)
    if pool is None:
        import atexit
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
        else:
            context = multiprocessing.get_context("spawn")
        pool = _pools[workers] = ProcessPoolExecutor(max_workers=workers, mp_context=context)
        atexit.register(pool.shutdown, cancel_futures=True)
    return pool


def _in_order(function: Callable, jobs: Iterable[tuple], options: GoldenDatasetOptions, workers: int) -> Iterator[Any]:
    """``function(pipeline, *job)`` for each job, in order: here, or in ``workers`` processes
    (each with its own pipeline; at most ``workers + 1`` jobs in flight)."""
    if workers <= 1:
        pipeline = GoldenDatasetPipeline(options)
        for job in jobs:
            pipeline.reset_reports()
            yield function(pipeline, *job)
        return
    from collections import deque
    from concurrent.futures.process import BrokenProcessPool

    pool = _pool(workers)
    pending: deque = deque()
    try:
        for job in jobs:
            pending.append(pool.submit(_run_in_worker, function, options, job))
            while len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool:
        _pools.pop(workers, None)  # a worker died (killed, out of memory): the next run starts a new pool
        raise
    finally:
        for future in pending:
            future.cancel()


def _table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    columns = list(zip(*rows)) if rows else [[] for _ in schema]
    return pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(columns, schema)], schema=schema)


# --------------------------------------------------------------- stage 1: raw tasks --------
def _digests(rows: list[tuple]) -> list[bytes]:
    # The fingerprint's costly part, done where the rows are made (a worker, when there are workers).
    return [Fingerprint.row_digest(row) for row in rows]


def _decode_raw_block(pipeline: GoldenDatasetPipeline, block: bytes | list[tuple]) -> tuple[pa.Table, list[bytes]]:
    rows = decode_task_block(block) if isinstance(block, bytes) else block
    return _table(rows, RAW_TASK_SCHEMA), _digests(rows)


def write_raw_tasks(
    engine: "sa.Engine", agent_id: str, path: str, options: GoldenDatasetOptions | None = None,
    *, chunk_size: int = DEFAULT_CHUNK_SIZE, workers: int = 1,
) -> StageOutput:
    """The agent's tasks, newest first, with their feedback rows as the database's JSON text,
    read as ``stream_golden_dataset`` reads them (COPY blocks, huge texts cut in the database;
    with workers, the blocks are decoded there while this process writes)."""
    opts = options or GoldenDatasetOptions()
    postgres_blocks = engine.dialect.name == "postgresql" and not opts.rebuild_context
    if not postgres_blocks or (opts.limit is not None and opts.limit < 4 * chunk_size):
        workers = 1  # rows already decoded, or too few blocks to pay for the processes
    if postgres_blocks:
        blocks: Iterator = (block for _, block in iter_agent_task_blocks(
            engine, agent_id, since=opts.since, until=opts.until, limit=opts.limit,
            chunk_size=chunk_size, max_text_chars=opts.max_message_chars,
        ))
    else:
        # SQLite hands JSON columns back as text (kept verbatim); text ids from the reader.
        blocks = ([(i, c, p, _json_text(h), _json_text(f)) for i, c, p, h, f in chunk] for chunk in read_ahead(
            iter_agent_task_fields(engine, agent_id, since=opts.since, until=opts.until, limit=opts.limit,
                                   chunk_size=chunk_size, rebuild_context=opts.rebuild_context)))
    with _writing(path, RAW_TASK_SCHEMA) as writer:
        for table, digests in _in_order(_decode_raw_block, ((b,) for b in blocks), opts, workers):
            writer.write_table(table, digests=digests)
        in_window = count_agent_tasks(engine, agent_id, since=opts.since, until=opts.until)
        report = StageReport("fetch", rows_in=in_window, rows_out=writer.rows)
        if in_window > writer.rows:
            report.drops[OVER_QUERY_LIMIT] = in_window - writer.rows
        return writer.close([report])


def _json_text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    import orjson

    return orjson.dumps(value, default=str).decode()


# --------------------------------------------------------------- stage 2: feedback ---------
def _feedback_of_group(pipeline: GoldenDatasetPipeline, path: str, group: int) -> tuple[pa.Table, list[bytes], int, dict]:
    table = pq.ParquetFile(path).read_row_group(group, columns=["id", "feedback"])
    rows = []
    for task_id, feedback in zip(table.column("id").to_pylist(), table.column("feedback").to_pylist()):
        result = pipeline.normalize_feedback(feedback)
        if result.score is not None:
            rows.append((task_id, float(result.score), result.feedback_type, result.valid_rows))
    return _table(rows, FEEDBACK_SCHEMA), _digests(rows), table.num_rows, pipeline.reports


def write_normalized_feedback(
    raw_tasks: ParquetTable, path: str, options: GoldenDatasetOptions | None = None,
    *, engine: "sa.Engine | None" = None, workers: int = 1,
) -> StageOutput:
    """One 0..1 score per task with valid feedback (``GoldenDatasetPipeline.normalize_feedback``).
    With ``engine``, feedback on tasks that do not exist is counted too (database-wide)."""
    opts = options or GoldenDatasetOptions()
    merged = GoldenDatasetPipeline(opts)
    groups = pq.ParquetFile(raw_tasks.path).num_row_groups
    tasks = 0
    by_type: Counter = Counter()
    with _writing(path, FEEDBACK_SCHEMA) as writer:
        jobs = ((raw_tasks.path, g) for g in range(groups))
        for table, digests, task_count, reports in _in_order(_feedback_of_group, jobs, opts, workers):
            merged.merge_reports(reports)
            tasks += task_count
            by_type.update(table.column("feedback_type").to_pylist())
            writer.write_table(table, digests=digests)
        report = merged.reports["feedback"]
        if engine is not None:
            orphans = count_orphan_feedback(engine)
            if orphans:
                report.drops[FEEDBACK_ON_MISSING_TASK] += orphans
                report.rows_in += orphans
        return writer.close([report], tasks=tasks, by_type=dict(by_type))


# --------------------------------------------------------------- stage 3: extract ----------
def _extract_group(pipeline: GoldenDatasetPipeline, path: str, group: int, scores: dict) -> tuple[pa.Table, list[bytes], dict]:
    table = pq.ParquetFile(path).read_row_group(group, columns=["id", "context_id", "prompt_id", "history"])
    rows: list[tuple] = []
    extract = pipeline.extract
    for task_id, context_id, prompt_id, history in zip(*(c.to_pylist() for c in table.columns)):
        score, feedback_type = scores.get(task_id, (None, None))
        rows.extend(extract(task_id, history, score, feedback_type, context_id, prompt_id))
    return _table(rows, INTERACTION_SCHEMA), _digests(rows), pipeline.reports


def _scores_by_group(raw_tasks: ParquetTable, feedback: ParquetTable) -> Iterator[tuple[str, int, dict]]:
    """(raw file, row group, the group's scores): feedback rows are in raw order (a subset), so
    one pass over both files pairs them, a row group at a time."""
    raw = pq.ParquetFile(raw_tasks.path)
    pending = feedback.iter_rows(["task_id", "feedback_score", "feedback_type"])
    head = next(pending, None)
    for group in range(raw.num_row_groups):
        ids = raw.read_row_group(group, columns=["id"]).column("id").to_pylist()
        in_group = set(ids)
        scores = {}
        while head is not None and head[0] in in_group:
            scores[head[0]] = (head[1], head[2])
            head = next(pending, None)
        yield raw_tasks.path, group, scores
    if head is not None:
        raise ValueError(f"{feedback.path} holds task {head[0]!r}, not in {raw_tasks.path} (or out of its order)")


def write_extracted_interactions(
    raw_tasks: ParquetTable, normalized_feedback: ParquetTable, path: str,
    options: GoldenDatasetOptions | None = None, *, workers: int = 1,
) -> StageOutput:
    """(user_input -> agent_output) pairs cut by the strategy, PII scrubbed (``GoldenDatasetPipeline.extract``)."""
    opts = options or GoldenDatasetOptions()
    merged = GoldenDatasetPipeline(opts)
    with _writing(path, INTERACTION_SCHEMA) as writer:
        for table, digests, reports in _in_order(_extract_group, _scores_by_group(raw_tasks, normalized_feedback), opts, workers):
            merged.merge_reports(reports)
            writer.write_table(table, digests=digests)
        return writer.close([merged.reports["extract"]])


# --------------------------------------------------------------- stage 4: golden -----------
def _clean_group(pipeline: GoldenDatasetPipeline, path: str, group: int) -> tuple[list[tuple], list[bytes], dict]:
    table = pq.ParquetFile(path).read_row_group(group)
    candidates = []
    clean = pipeline.clean
    for row in zip(*(c.to_pylist() for c in table.columns)):
        candidate = clean(row)
        if candidate is not None:
            candidates.append(tuple(candidate))
    return candidates, _digests([c[0] for c in candidates]), pipeline.reports


def write_golden(
    extracted_interactions: ParquetTable, path: str, options: GoldenDatasetOptions | None = None, *, workers: int = 1,
) -> StageOutput:
    """Quality filter, validation (stateless: in workers), deduplication and split (here, in
    read order): ``GoldenDatasetPipeline.clean`` then ``admit``."""
    opts = options or GoldenDatasetOptions()
    pipeline = GoldenDatasetPipeline(opts)
    groups = pq.ParquetFile(extracted_interactions.path).num_row_groups
    admit = pipeline.admit
    with _writing(path, GOLDEN_SCHEMA) as writer:
        jobs = ((extracted_interactions.path, g) for g in range(groups))
        for candidates, digests, reports in _in_order(_clean_group, jobs, opts, workers):
            pipeline.merge_reports({stage: reports[stage] for stage in ("quality", "validate")})
            out, kept = [], []
            for candidate, digest in zip(candidates, digests):
                golden = admit(candidate)
                if golden is not None:
                    out.append(golden)
                    kept.append(digest)
            writer.write_rows(out, kept)
        return writer.close([pipeline.reports[s] for s in ("quality", "validate", "deduplicate", "split")])


@dataclass
class StagedRun:
    raw_tasks: StageOutput
    normalized_feedback: StageOutput
    extracted_interactions: StageOutput
    golden_dataset: StageOutput

    def reports(self) -> dict[str, dict[str, Any]]:
        """The stage reports keyed by stage, as ``StreamResult.reports``."""
        outputs = (self.normalized_feedback, self.extracted_interactions, self.golden_dataset)
        return {report.stage: report.as_metadata() for output in outputs for report in output.reports}


def run_golden_stages(
    engine: "sa.Engine", agent_id: str, directory: str, options: GoldenDatasetOptions | None = None,
    *, chunk_size: int = DEFAULT_CHUNK_SIZE, workers: int = 1,
) -> StagedRun:
    """The four stages into ``directory`` (what the Dagster assets do, one asset per stage)."""
    opts = options or GoldenDatasetOptions()
    raw = write_raw_tasks(engine, agent_id, os.path.join(directory, "raw_tasks.parquet"), opts,
                          chunk_size=chunk_size, workers=workers)
    feedback = write_normalized_feedback(raw.table, os.path.join(directory, "normalized_feedback.parquet"), opts,
                                         engine=engine, workers=workers)
    extracted = write_extracted_interactions(raw.table, feedback.table, os.path.join(directory, "extracted_interactions.parquet"),
                                             opts, workers=workers)
    golden = write_golden(extracted.table, os.path.join(directory, "golden_dataset.parquet"), opts, workers=workers)
    return StagedRun(raw, feedback, extracted, golden)


def shutdown_workers() -> None:
    """Stop the shared worker processes (they start again when a stage needs them)."""
    while _pools:
        _, pool = _pools.popitem()
        pool.shutdown(cancel_futures=True)

"""Reading an agent's tasks and their feedback from the Bindu database, in bounded chunks.

Everything is read in the agent's namespace (``bindu_runtime.layout``: its DID's schema, or the
shared ``public`` one), every statement naming it. An agent's tasks are those whose ``prompt_id``
is one of the agent's prompts and, where the namespace belongs to the agent alone
(``layout.owns_namespace``: a DID schema, a single-agent ``public`` or demo database, or when the
operator says so with ``include_unstamped=True``), also the tasks without a ``prompt_id``: Bindu
wrote them before the router existed, served by the agent's code prompt, and they are its
history. Tasks stamped with another agent's prompt never count. Tasks are read
newest first (so a ``limit`` keeps the most recent ones, as the seed did) through a server-side
cursor on PostgreSQL (``stream_results`` + ``yield_per``): memory holds one chunk, however many
tasks there are. Each task's feedback rows come along in the same row, aggregated by an indexed
correlated subquery in ``task_feedback.id`` order (the order that decides which row is the latest:
the database's insertion order, never a timestamp), so one streamed query does all the reading.

JSON arrives as text and is decoded where it is used (with orjson): text that is not valid JSON
(possible on SQLite) becomes a counted drop later, never an exception in the driver.

The golden dataset's one-pass read on PostgreSQL (``iter_agent_task_blocks``) uses ``COPY ... TO
STDOUT`` instead: blocks of raw rows that worker processes decode, and texts the parse would
reject as too long cut in the database (``_elided_history``).
"""

from __future__ import annotations

import codecs
import queue
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by

from bindu_runtime import layout
from bindu_runtime.schema import agent_prompts, task_feedback, tasks

from .history import join_context_histories, loads

DEFAULT_CHUNK_SIZE = 5_000

# A LIMIT no table reaches. PostgreSQL's planner postpones expensive output columns (the
# history and feedback subqueries) past the sort only when the query has a LIMIT; without it,
# every task's history and feedback JSON is built and sorted (spilled to disk) before the first
# row streams.
_POSTPONE_WIDE_COLUMNS = 2**63 - 1


@dataclass(slots=True)
class RawTask:
    """One task as read: history and feedback are whatever the database holds (validated later).

    ``feedback`` holds ``(id, created_at, feedback_data)`` rows, or the database's JSON text of
    them (decoded by ``decode_feedback_rows`` where the rows are used, so that worker processes,
    not the reading process, pay for it).
    """

    id: str
    context_id: str | None
    prompt_id: str | None
    created_at: Any
    history: Any
    feedback: list = field(default_factory=list)


def takes_unstamped_tasks(engine: sa.Engine, agent_id: str, *, include_unstamped: bool = False) -> bool:
    """Whether the agent's unstamped tasks count as its history (see the module docstring):
    ``include_unstamped`` is the operator naming the namespace's tasks as this agent's."""
    with layout.for_agent(engine, agent_id).connect() as connection:
        return layout.owns_namespace(connection, agent_id, assume_single_agent=include_unstamped)


def _agent_filter(agent_id: str, since: datetime | None, until: datetime | None, *, unstamped: bool = False) -> list:
    agent_prompt_ids = sa.select(agent_prompts.c.id).where(agent_prompts.c.agent_id == agent_id)
    stamped = tasks.c.prompt_id.in_(agent_prompt_ids.scalar_subquery())
    conditions = [sa.or_(stamped, tasks.c.prompt_id.is_(None)) if unstamped else stamped]
    if since is not None:
        conditions.append(tasks.c.created_at >= since)
    if until is not None:
        conditions.append(tasks.c.created_at < until)
    return conditions


# Python's ``str.strip()`` whitespace, for PostgreSQL's btrim: the database must cut a text
# exactly where Python would (see ``_elided_history``).
PYTHON_WHITESPACE = "".join(c for c in map(chr, range(0x110000)) if c.isspace())

_ELIDED_HISTORY = """
CASE
  WHEN task_history.history IS NULL
    OR pg_column_compression(task_history.history) IS NULL AND pg_column_size(task_history.history) <= :max_text_chars
    OR jsonb_typeof(task_history.history) <> 'array' OR current_setting('server_encoding') <> 'UTF8'
    THEN task_history.history::text
  ELSE (
    SELECT CASE WHEN first_long.path IS NULL THEN whole.history::text
                ELSE jsonb_set(whole.history, first_long.path,
                               to_jsonb(left(first_long.core, :max_text_chars) || right(first_long.core, 1)))::text END
      -- "|| '[]'" decompresses the history once for all the lookups below; OFFSET 0 keeps it that way.
      FROM (SELECT task_history.history || '[]'::jsonb AS history OFFSET 0) AS whole
      LEFT JOIN LATERAL (
        SELECT ARRAY[m::text, 'parts', p::text, 'text'] AS path, trimmed.core
          FROM generate_series(0, jsonb_array_length(whole.history) - 1) AS m,
               generate_series(0, COALESCE(jsonb_path_query_first(
                   whole.history, 'strict $[$m].parts.size()', jsonb_build_object('m', m), true)::int, 0) - 1) AS p,
               LATERAL (SELECT jsonb_path_query_first(
                   whole.history, 'strict $[$m].parts[$p].text', jsonb_build_object('m', m, 'p', p), true) AS text
                   OFFSET 0) AS part,
               LATERAL (SELECT btrim(left(part.text #>> '{}', 2 * :max_text_chars + 1), :whitespace) AS core
                   OFFSET 0) AS trimmed
         WHERE jsonb_typeof(part.text) = 'string' AND octet_length(part.text #>> '{}') > :max_text_chars
           AND length(trimmed.core) > :max_text_chars
         ORDER BY m, p
         LIMIT 1
      ) AS first_long ON true
  )
END
"""


def _elided_history(max_text_chars: int) -> sa.TextClause:
    """The history as JSON text, with its first text part longer than ``max_text_chars`` (after
    stripping) cut to ``max_text_chars + 1`` characters that keep its first and last one.

    The parse gives the same verdict on the cut history: such a part makes its message too long
    whatever else the message holds, a message the parse skips (no role, a system message, a
    part that is not text) ignores the text either way, and a message before it is parsed as
    before. Enormous pastes stop costing most of the read: PostgreSQL escapes JSON text
    character by character (in the benchmark, 0.4 % of the tasks held 62 % of the history text).

    Cheap tests come first: an inline, uncompressed history no longer than the limit in bytes
    cannot hold such a part, and the JSON path lookups run only on the rest. A part is cut only
    when its first ``2 * max_text_chars + 1`` characters already prove it too long (``btrim``
    with Python's whitespace, so both sides strip the same characters); otherwise it is sent whole.
    """
    return sa.text(_ELIDED_HISTORY).bindparams(
        sa.bindparam("max_text_chars", max_text_chars, type_=sa.Integer),
        sa.bindparam("whitespace", PYTHON_WHITESPACE, type_=sa.Text),
    )


def _task_columns(dialect: str, *, created_at: bool = True, max_text_chars: int | None = None) -> list:
    """id, context_id, prompt_id, [created_at], history (text), feedback (JSON text of [id, at, data] rows)."""
    feedback_of_task = task_feedback.c.task_id == tasks.c.id
    if dialect == "postgresql":
        # Text UUIDs (canonical form) and JSON text: no per-row uuid.UUID objects or driver-side decoding.
        ids = [sa.cast(tasks.c.id, sa.Text).label("id"), sa.cast(tasks.c.context_id, sa.Text).label("context_id")]
        # History by row address in a scalar subquery: with a LIMIT on the query, PostgreSQL
        # evaluates such expensive columns after the sort, so the sort carries narrow rows (not
        # the history JSON) and rows stream as soon as it is done (see ``_POSTPONE_WIDE_COLUMNS``).
        # The address (ctid) is read in the same snapshot, and a TID scan costs a third of a
        # primary-key lookup.
        task_history = tasks.alias("task_history")
        text = sa.cast(task_history.c.history, sa.Text) if max_text_chars is None else _elided_history(max_text_chars)
        history = (
            sa.select(text).select_from(task_history)
            .where(sa.literal_column("task_history.ctid") == sa.literal_column("tasks.ctid"))
            .scalar_subquery()
        ).label("history")
        feedback = (
            sa.select(sa.cast(sa.func.json_agg(aggregate_order_by(sa.func.json_build_array(
                task_feedback.c.id, task_feedback.c.created_at, task_feedback.c.feedback_data), task_feedback.c.id)), sa.Text))
            .where(feedback_of_task)
            .scalar_subquery()
        )
    else:
        # SQLite keeps UUIDs as 32 hex digits: let the column type turn them into uuid.UUID.
        ids = [tasks.c.id, tasks.c.context_id]
        history = sa.type_coerce(tasks.c.history, sa.Text).label("history")
        feedback = (
            sa.select(sa.func.json_group_array(sa.func.json_array(
                task_feedback.c.id, task_feedback.c.created_at, sa.type_coerce(task_feedback.c.feedback_data, sa.Text))))
            .where(feedback_of_task)
            .scalar_subquery()
        )
    return [*ids, tasks.c.prompt_id, *([tasks.c.created_at] if created_at else []), history, feedback.label("feedback")]


def count_agent_tasks(
    connectable: sa.Engine | sa.Connection, agent_id: str, *, since: datetime | None = None, until: datetime | None = None,
    include_unstamped: bool = False,
) -> int:
    """How many tasks of the agent fall in the window (before any limit)."""
    engine = connectable if isinstance(connectable, sa.Engine) else connectable.engine
    unstamped = takes_unstamped_tasks(engine, agent_id, include_unstamped=include_unstamped)
    query = sa.select(sa.func.count()).select_from(tasks).where(*_agent_filter(agent_id, since, until, unstamped=unstamped))
    if isinstance(connectable, sa.Engine):
        with layout.for_agent(connectable, agent_id).connect() as conn:
            return int(conn.execute(query).scalar_one())
    schema = layout.schema_of(connectable, agent_id)
    scoped = connectable.execution_options(schema_translate_map={None: schema}) if schema else connectable
    return int(scoped.execute(query).scalar_one())


def count_orphan_feedback(engine: sa.Engine, agent_id: str | None = None) -> int:
    """Feedback rows whose task is not in the agent's namespace (possible where foreign keys are
    not enforced, or where a row names a task of another schema): counted, never a crash. Without
    ``agent_id``, summed over every namespace holding Bindu's tables."""
    query = (
        sa.select(sa.func.count())
        .select_from(task_feedback.outerjoin(tasks, task_feedback.c.task_id == tasks.c.id))
        .where(tasks.c.id.is_(None))
    )
    if agent_id is not None:
        scoped_engines = [layout.for_agent(engine, agent_id)]
    else:
        with engine.connect() as conn:
            found = [ns.schema for ns in layout.bindu_namespaces(conn) if "task_feedback" in ns.tables]
        scoped_engines = [layout.for_schema(engine, schema) for schema in found]
    total = 0
    for scoped in scoped_engines:
        with scoped.connect() as conn:
            total += int(conn.execute(query).scalar_one())
    return total


def decode_feedback_rows(value: Any) -> list:
    """A task's aggregated feedback as ``[id, created_at, feedback_data]`` rows (text is decoded)."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        try:
            value = loads(value)
        except ValueError:
            return []
    if not isinstance(value, list):
        return []
    return [row for row in value if isinstance(row, (list, tuple)) and len(row) == 3]


def _context_conversations(conn: sa.Connection, chunk: list[tuple[str, str | None]]) -> dict[str, list]:
    """For each (task id, context id) in the chunk: the histories of its context's tasks up to and including it."""
    context_ids = list({uuid.UUID(context_id) for _, context_id in chunk if context_id})
    if not context_ids:
        return {}
    rows = conn.execute(
        sa.select(tasks.c.context_id, tasks.c.id, sa.type_coerce(tasks.c.history, sa.Text))
        .where(tasks.c.context_id.in_(context_ids))
        .order_by(tasks.c.context_id, tasks.c.created_at, tasks.c.id)
    ).all()
    by_context: dict[str, list] = defaultdict(list)
    for context_id, task_id, history in rows:
        by_context[str(context_id)].append((str(task_id), history))
    conversations = {}
    for task_id, context_id in chunk:
        histories = []
        for other_id, history in by_context.get(context_id or "", []):
            histories.append(history)
            if other_id == task_id:
                break
        conversations[task_id] = join_context_histories(histories)
    return conversations


def _task_query(
    dialect: str, agent_id: str, *, since: datetime | None, until: datetime | None, limit: int | None,
    chunk_size: int, created_at: bool, max_text_chars: int | None = None, unstamped: bool = False,
) -> sa.Select:
    """The agent's tasks, newest first: ``_task_columns`` under the agent filter and the limit
    (the reading options are checked here, for every reader)."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size!r}")
    query = (
        sa.select(*_task_columns(dialect, created_at=created_at, max_text_chars=max_text_chars))
        .where(*_agent_filter(agent_id, since, until, unstamped=unstamped))
        .order_by(tasks.c.created_at.desc(), tasks.c.id)
    )
    if limit is not None:
        return query.limit(limit)
    return query.limit(_POSTPONE_WIDE_COLUMNS) if dialect == "postgresql" else query


def _task_row_chunks(
    engine: sa.Engine,
    agent_id: str,
    *,
    since: datetime | None,
    until: datetime | None,
    limit: int | None,
    chunk_size: int,
    rebuild_context: bool,
    created_at: bool,
    include_unstamped: bool,
) -> Iterator[list[tuple]]:
    """The reading behind ``iter_agent_task_chunks`` and ``iter_agent_task_fields``: rows as plain
    tuples (id, context_id, prompt_id, [created_at], history, feedback), ids as strings."""
    dialect = engine.dialect.name
    unstamped = takes_unstamped_tasks(engine, agent_id, include_unstamped=include_unstamped)
    query = _task_query(
        dialect, agent_id, since=since, until=until, limit=limit, chunk_size=chunk_size, created_at=created_at,
        unstamped=unstamped,
    )
    engine = layout.for_agent(engine, agent_id)
    history_at = 4 if created_at else 3
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk_size).execute(query)
        lookup = engine.connect() if rebuild_context else None
        try:
            for rows in result.partitions():
                if dialect == "postgresql":
                    chunk = [tuple(row) for row in rows]  # ids are text already
                else:
                    chunk = [(str(row[0]), str(row[1]) if row[1] is not None else None, *row[2:]) for row in rows]
                if lookup is not None:
                    conversations = _context_conversations(lookup, [(row[0], row[1]) for row in chunk])
                    chunk = [
                        (*row[:history_at], conversations.get(row[0], row[history_at]), *row[history_at + 1:])
                        for row in chunk
                    ]
                yield chunk
        finally:
            if lookup is not None:
                lookup.close()


def iter_agent_task_chunks(
    engine: sa.Engine,
    agent_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    rebuild_context: bool = False,
    include_unstamped: bool = False,
) -> Iterator[list[RawTask]]:
    """The agent's tasks (newest first) with their feedback rows, ``chunk_size`` tasks at a time.

    ``rebuild_context`` replaces each task's history by the conversation across the tasks of its
    ``context_id`` up to that task (what the agent actually saw). ``include_unstamped``: the
    operator names the namespace's unstamped tasks as this agent's (see the module docstring).
    """
    for chunk in _task_row_chunks(
        engine, agent_id, since=since, until=until, limit=limit, chunk_size=chunk_size,
        rebuild_context=rebuild_context, created_at=True, include_unstamped=include_unstamped,
    ):
        yield [
            RawTask(task_id, context_id, prompt_id, at, history, feedback if feedback is not None else [])
            for task_id, context_id, prompt_id, at, history, feedback in chunk
        ]


def iter_agent_task_fields(
    engine: sa.Engine,
    agent_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    rebuild_context: bool = False,
    include_unstamped: bool = False,
) -> Iterator[list[tuple]]:
    """The same tasks as ``iter_agent_task_chunks``, as ``(id, context_id, prompt_id, history,
    feedback)`` tuples: what the dataset stages need, cheap to send to worker processes (no
    ``created_at``, no objects). On PostgreSQL, ``iter_agent_task_blocks`` reads them cheaper still.
    """
    yield from _task_row_chunks(
        engine, agent_id, since=since, until=until, limit=limit, chunk_size=chunk_size,
        rebuild_context=rebuild_context, created_at=False, include_unstamped=include_unstamped,
    )


def iter_agent_task_blocks(
    engine: sa.Engine,
    agent_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_text_chars: int | None = None,
    depth: int = 1,
    include_unstamped: bool = False,
) -> Iterator[tuple[int, bytes]]:
    """PostgreSQL only: the rows of ``iter_agent_task_fields`` as ``(row count, block)`` pairs,
    each block ``chunk_size`` rows of ``COPY ... TO STDOUT`` text (decode with ``decode_task_block``).

    The reading process never builds a Python object per row: a block is one bytes object, cheap
    to hand to a worker process, which decodes it. A background thread reads up to ``depth``
    blocks ahead while PostgreSQL produces the next rows.
    """
    if engine.dialect.name != "postgresql":
        raise ValueError("COPY blocks need PostgreSQL; use iter_agent_task_fields")
    query = _task_query(
        "postgresql", agent_id, since=since, until=until, limit=limit, chunk_size=chunk_size,
        created_at=False, max_text_chars=max_text_chars,
        unstamped=takes_unstamped_tasks(engine, agent_id, include_unstamped=include_unstamped),
    )
    # COPY runs the statement's text: the agent's schema is rendered into it here.
    compiled = query.compile(
        dialect=engine.dialect, schema_translate_map={None: layout.schema_of(engine, agent_id)}, render_schema_translate=True
    )

    driver_error = engine.dialect.loaded_dbapi.Error

    def produce(put: Callable[[Any], bool]) -> None:
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            # A consumer that stops early cancels the query: the driver would otherwise read (and
            # throw away) the rest of the table before the COPY ends.
            sink = _BlockSink(chunk_size, put, on_stop=raw.cancel)
            try:
                with raw.cursor() as cursor:
                    # JIT-compiling this plan costs PostgreSQL ~2 s (measured: 2.2 s of a 5.7 s read of
                    # 200 000 tasks) and buys nothing for per-row subqueries; LOCAL ends with the read.
                    cursor.execute("SET LOCAL jit = off")
                    # COPY takes no bind parameters: the driver quotes them into the statement.
                    statement = cursor.mogrify(str(compiled), compiled.params).decode()
                    cursor.copy_expert(f"COPY ({statement}) TO STDOUT", sink)
                    sink.flush()
            except driver_error as error:
                if sink.stopped and not raw.closed:  # the COPY ended by our cancel
                    raise _ConsumerStopped() from None
                # As SQLAlchemy would have it: a DBAPIError (without the statement's parameters),
                # and a connection that is broken is not handed out again. A connection lost in
                # the middle of a COPY leaves libpq with no message of its own: say what happened.
                lost = bool(getattr(raw, "closed", 0)) or "no message from the libpq" in str(error)
                if lost:
                    conn.invalidate()
                    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                    error = engine.dialect.loaded_dbapi.OperationalError(
                        f"connection to the database server lost while reading tasks ({reason})"
                    )
                raise sa.exc.DBAPIError.instance(
                    "COPY (golden dataset tasks) TO STDOUT", None, error, driver_error,
                    hide_parameters=True, dialect=engine.dialect,
                ) from error

    return _in_background(produce, depth)


class _BlockSink:
    """The file object ``copy_expert`` writes into (one write per row): ``chunk_size`` rows make
    one block. When ``put`` says the consumer has stopped, ``on_stop`` runs and the COPY is ended."""

    def __init__(self, chunk_size: int, put: Callable[[Any], bool], on_stop: Callable[[], None]):
        self.chunk_size, self.put, self.on_stop, self.rows = chunk_size, put, on_stop, []
        self.stopped = False

    def write(self, row: bytes) -> int:
        self.rows.append(row)
        if len(self.rows) >= self.chunk_size:
            self.flush()
        return len(row)

    def flush(self) -> None:
        if self.rows:
            block, count, self.rows = b"".join(self.rows), len(self.rows), []
            if not self.put((count, block)):
                self.stopped = True
                self.on_stop()
                raise _ConsumerStopped()


class _ConsumerStopped(Exception):
    """Ends a COPY early: the consumer has stopped reading."""


def decode_task_block(block: bytes) -> list[tuple]:
    """A block of ``iter_agent_task_blocks`` as ``(id, context_id, prompt_id, history, feedback)``
    tuples of strings (None for SQL NULL)."""
    return [
        tuple([field.decode() if b"\\" not in field else _unescape_copy_field(field) for field in line.split(b"\t")])
        for line in block.split(b"\n")
        if line
    ]


def _unescape_copy_field(field: bytes) -> str | None:
    # COPY's text format: \N is NULL; a backslash starts an escape (\\, \n, \t, \r, \b, \f, \v).
    if field == b"\\N":
        return None
    return codecs.escape_decode(field)[0].decode()


_END = object()


def _in_background(produce: Callable[[Callable[[Any], bool]], None], depth: int) -> Iterator[Any]:
    """The items ``produce(put)`` puts, produced by a background thread at most ``depth`` ahead.

    ``put`` returns False once the consumer has stopped; the producer should then return.
    Database drivers release the GIL while they wait for rows, so the database works on the
    next items while the consumer handles this one. Errors reach the consumer.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            produce(put)
        except _ConsumerStopped:
            pass
        except BaseException as error:  # handed to the consumer, which re-raises it
            put(error)
        else:
            put(_END)

    thread = threading.Thread(target=run, name="golden-dataset-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def read_ahead(chunks: Iterator[Any], depth: int = 1) -> Iterator[Any]:
    """``chunks``, read by a background thread up to ``depth`` chunks ahead (see ``_in_background``).
    A consumer that stops early stops the reader, and the reader closes ``chunks``."""

    def produce(put: Callable[[Any], bool]) -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    break
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    return _in_background(produce, depth)

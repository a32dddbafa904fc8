"""Which prompt served which task: the stamp on Bindu's task row, written off the request path.

A stamp sets ``tasks.prompt_id`` (the prompt that served the task) and ``tasks.prompt_unit`` (the
randomisation unit: a hash of the router key, see ``unit_of``), which is what the canary compares
prompts by. ``write_stamps`` is the one implementation of that write; the synchronous
``FeedbackCollector.stamp_task_prompt`` and the background ``StampWriter`` both use it.

A stamp is refused, never written, when its prompt is not one of this agent's (it would move the
task into another agent's data) or its task is not in this agent's schema; both are counted.

``StampWriter`` is what the request path uses, like a feature-flag SDK's event buffer: ``submit``
appends to a bounded in-memory queue and returns (it never blocks, never touches the database and
never raises); a daemon thread writes the queue in batches, one transaction per batch, retrying a
batch with backoff while the database is unreachable. When the queue is full new stamps are dropped
and counted (logged at most once a minute). ``close`` flushes what is queued.

The writer does as little Python per stamp as it can, since whatever it does holds the GIL the
request threads need: a batch stays three lists (task ids, prompt ids, keys, as queued), sent to
PostgreSQL as array literals built by one ``str.join`` each in the usual case; the server casts the
task ids, hashes the keys (``sha256`` of the UTF-8, exactly ``unit_of``; in Python instead for a
key with a NUL or a lone surrogate, or a server that is not UTF-8) and returns one count. No UUID
is parsed, no object is built per stamp, and the plan is a primary-key lookup per stamp.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import operator
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from .db import write_transaction
from .layout import for_agent, qualified_table
from .schema import agent_prompts, tasks

logger = logging.getLogger("bindu_runtime.stamps")

STAMP_QUEUE_LIMIT = 10_000  # stamps held while the database is slow or down, then dropped (counted)
STAMP_BATCH_SIZE = 500  # stamps per transaction; below SQLite's bound-parameter limit
STAMP_FLUSH_INTERVAL_S = 0.2  # how long a stamp may wait in the queue when the database is up
RETRY_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # waits between retries of a batch; the last repeats
LOG_INTERVAL_S = 60.0  # a recurring problem (drops, refusals, outage) is logged at most this often
CLOSE_TIMEOUT_S = 5.0


def key_text(key: Any) -> str | None:
    """The router key as text, or None when there is none. A key whose ``__str__`` raises counts
    as no key (the request is served by a random draw and stamped without a unit): a hostile or
    broken key must never fail a request."""
    if key is None or type(key) is str:
        return key
    try:
        return str(key)
    except Exception:
        return None


def unit_of(key: Any) -> str | None:
    """The randomisation unit of a key as stored in ``tasks.prompt_unit`` (None without a key).

    Lone surrogates (``json.loads`` produces them) are hashed as their code points
    ("surrogatepass"), so every key has a unit and the same key always the same one.
    """
    text = key_text(key)
    if text is None:
        return None
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def as_task_uuid(task_id: Any) -> uuid.UUID | None:
    """``task_id`` as a UUID, or None when it is not one."""
    if isinstance(task_id, uuid.UUID):
        return task_id
    if isinstance(task_id, str):
        try:
            return uuid.UUID(task_id)
        except ValueError:
            return None
    return None


class StampBatch:
    """Stamps as three parallel lists, the way the queue holds them: task ids (as given: a UUID, its
    text, or anything else, which is counted as an unknown task), prompt ids and router keys (as
    given to ``select``; None for no key). No object per stamp: the writer hands these lists to
    PostgreSQL as three array literals and lets it cast, hash and match."""

    __slots__ = ("task_ids", "prompt_ids", "keys")

    def __init__(self, task_ids: list, prompt_ids: list, keys: list):
        self.task_ids, self.prompt_ids, self.keys = task_ids, prompt_ids, keys

    def __len__(self) -> int:
        return len(self.task_ids)

    def only(self, keep: list[bool]) -> StampBatch:
        return StampBatch(*([value for value, kept in zip(column, keep) if kept]
                            for column in (self.task_ids, self.prompt_ids, self.keys)))


@dataclass(slots=True)
class StampOutcome:
    """What ``write_stamps`` did with a batch: every stamp is counted in exactly one of
    ``written``, ``unknown_task`` (no such task in the agent's schema, or not a UUID; the latter
    also in ``malformed_task_id``) and ``foreign_prompt`` (the prompt is not this agent's)."""

    written: int = 0
    unknown_task: int = 0
    malformed_task_id: int = 0
    foreign_prompt: int = 0
    foreign_example: str | None = None  # one refused prompt id, for the log
    own_prompt_ids: set[str] = field(default_factory=set)  # prompt ids confirmed as the agent's


def _could_be_prompt_id(value: Any) -> bool:
    return (isinstance(value, str) and value.isascii() and "\x00" not in value
            and 0 < len(value) <= agent_prompts.c.id.type.length)


_HEX = "[0-9a-fA-F]"
_UUID_TEXT = f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
# Task ids joined by commas, each in the hyphenated form that uuid.UUID and PostgreSQL both read.
_UUID_TEXT_LIST = re.compile(f"{_UUID_TEXT}(?:,{_UUID_TEXT})*")
_UUID_INT = operator.attrgetter("int")


def _task_id_literal(task_ids: list) -> tuple[str | list[str | None], list[bool] | None]:
    """The task ids as PostgreSQL reads them (an array literal), and which of them are UUIDs
    (None: all). Whole-list C operations in the usual cases (all UUID objects, or all UUID text);
    a mixed or odd batch is parsed id by id as ``as_task_uuid`` does."""
    types = set(map(type, task_ids))
    if types == {uuid.UUID}:
        return "{" + ",".join(map(format, map(_UUID_INT, task_ids), itertools.repeat("032x"))) + "}", None
    if types == {str}:
        joined = ",".join(task_ids)
        if _UUID_TEXT_LIST.fullmatch(joined):
            return "{" + joined + "}", None
    parsed = [as_task_uuid(task_id) for task_id in task_ids]
    return [None if task_uuid is None else format(task_uuid.int, "032x") for task_uuid in parsed], [
        task_uuid is not None for task_uuid in parsed]


def _text_list_literal(texts: list[str]) -> str | list[str]:
    """``texts`` (all str, no NUL) as a PostgreSQL text[] literal built by one join when none
    needs escaping (no quote or backslash); else the list, which psycopg2 quotes item by item."""
    joined = "".join(texts)
    if '"' in joined or "\\" in joined:
        return texts
    return '{"' + '","'.join(texts) + '"}' if texts else "{}"


def _key_texts(keys: list) -> tuple[list[str | None], bool, bool]:
    """The keys as text (``key_text``; None for no key), whether every key has a text, and
    whether all can be sent to PostgreSQL as text and hashed there exactly as ``unit_of`` hashes
    them (no NUL, no lone surrogate)."""
    if set(map(type, keys)) == {str}:
        texts, all_text, joined = keys, True, "".join(keys)
    else:
        texts = [key if type(key) is str else key_text(key) for key in keys]
        all_text, joined = None not in texts, "".join([text for text in texts if text])
    if "\x00" in joined:
        return texts, all_text, False
    if not joined.isascii():
        try:
            joined.encode("utf-8")
        except UnicodeEncodeError:
            return texts, all_text, False
    return texts, all_text, True


def _unit_of_text(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _hashes_as_utf8(connection: sa.Connection) -> bool:
    """Whether text sent on this connection reaches the server as the same UTF-8 bytes Python
    hashes (client and server encoding UTF8), so ``sha256`` in SQL gives ``unit_of``'s value."""
    try:
        dbapi_connection = connection.connection.dbapi_connection
        return (dbapi_connection.info.parameter_status("server_encoding") == "UTF8"
                and dbapi_connection.encoding == "UTF8")
    except Exception:
        return False


def write_stamps(
    connection: sa.Connection,
    agent_id: str,
    stamps: StampBatch,
    *,
    now: datetime,
    known_own_prompt_ids: Iterable[str] = (),
) -> StampOutcome:
    """Write ``stamps`` inside the caller's transaction on the agent's schema (``for_agent``).

    Only stamps whose prompt is the agent's and whose task exists are written; the rest are
    counted as refused. Of several stamps of one task the last is written. ``known_own_prompt_ids``
    spares the lookup of prompts already confirmed.
    """
    outcome = StampOutcome(own_prompt_ids=set(known_own_prompt_ids))
    if not stamps:
        return outcome
    own = outcome.own_prompt_ids
    try:
        named, unhashable = set(stamps.prompt_ids), False  # a batch usually names one or two
    except TypeError:  # an unhashable "prompt id" (a list, say): foreign, like any non-text value
        named, unhashable = {prompt_id for prompt_id in stamps.prompt_ids if isinstance(prompt_id, str)}, True
    # Ids that no prompt row could have are foreign without asking (PostgreSQL would reject NUL).
    to_check = [prompt_id for prompt_id in named - own if _could_be_prompt_id(prompt_id)]
    if to_check:
        own.update(connection.execute(
            sa.select(agent_prompts.c.id).where(agent_prompts.c.agent_id == agent_id, agent_prompts.c.id.in_(to_check))
        ).scalars())
    if unhashable or not named <= own:
        keep = [isinstance(prompt_id, str) and prompt_id in own for prompt_id in stamps.prompt_ids]
        outcome.foreign_prompt = keep.count(False)
        example = stamps.prompt_ids[keep.index(False)]
        outcome.foreign_example = example[:80] if isinstance(example, str) else f"<{type(example).__name__}>"
        stamps = stamps.only(keep)
    if stamps:
        update = _update_postgres if connection.dialect.name == "postgresql" else _update_other
        outcome.written, outcome.malformed_task_id = update(connection, agent_id, stamps, now)
        outcome.unknown_task = len(stamps) - outcome.written
    return outcome


# The agent's tasks stamped from three array literals in one statement. The last stamp of a task
# wins (DISTINCT ON by position); the unit is hashed here (sha256 of the key's UTF-8, as unit_of)
# unless given. ``t.id = ANY(...)`` with sequential scans off makes the plan a primary-key lookup
# per stamp whatever the table's statistics say: a batch costs the same on a million tasks as on
# a thousand (a hash join over the whole table was planned for a freshly loaded one). Returns the
# number of stamps whose task exists (and was written).
_UPDATE_POSTGRES = """SET LOCAL enable_seqscan = off;
WITH s AS (
  SELECT DISTINCT ON (task_id) task_id, prompt_id, key, unit
  FROM unnest(CAST(:task_ids AS uuid[]), CAST(:prompt_ids AS text[]), CAST(:keys AS text[]), CAST(:units AS text[]))
       WITH ORDINALITY AS s(task_id, prompt_id, key, unit, n)
  ORDER BY task_id, n DESC
), u AS (
  UPDATE {tasks} AS t
  SET prompt_id = s.prompt_id,
      prompt_unit = coalesce(s.unit, left(encode(sha256(convert_to(s.key, 'UTF8')), 'hex'), 32)),
      updated_at = :now
  FROM s WHERE t.id = s.task_id AND t.id = ANY(CAST(:task_ids AS uuid[]))
  RETURNING t.id
)
SELECT count(*) FROM unnest(CAST(:task_ids AS uuid[])) AS a(id) WHERE a.id IN (SELECT id FROM u)"""


def _update_postgres(connection: sa.Connection, agent_id: str, stamps: StampBatch, now: datetime) -> tuple[int, int]:
    """(stamps written, task ids that are not UUIDs) for one batch, in one statement."""
    task_ids, valid = _task_id_literal(stamps.task_ids)
    malformed = 0
    if valid is not None:
        malformed = valid.count(False)
        stamps = stamps.only(valid)
        task_ids = [task_id for task_id in task_ids if task_id is not None]
        if not stamps:
            return 0, malformed
    texts, all_text, sendable = _key_texts(stamps.keys)
    if sendable and _hashes_as_utf8(connection):
        keys: Any = _text_list_literal(texts) if all_text else texts  # psycopg2 sends None as NULL
        units = None
    else:  # a NUL or a lone surrogate, or a server that is not UTF-8: hashed here instead
        keys, units = None, [_unit_of_text(text) for text in texts]
    prompt_ids = _text_list_literal(stamps.prompt_ids)  # the agent's own ids: text without NUL
    written = connection.execute(
        sa.text(_UPDATE_POSTGRES.format(tasks=qualified_table(connection, agent_id, "tasks"))),
        {"task_ids": task_ids, "prompt_ids": prompt_ids, "keys": keys, "units": units, "now": now},
    ).scalar_one()
    return written, malformed


def _update_other(connection: sa.Connection, agent_id: str, stamps: StampBatch, now: datetime) -> tuple[int, int]:
    """The same on SQLite, stamp by stamp in Python (an executemany of one UPDATE)."""
    parsed = [as_task_uuid(task_id) for task_id in stamps.task_ids]
    existing = set(connection.execute(
        sa.select(tasks.c.id).where(tasks.c.id.in_(list({task_uuid for task_uuid in parsed if task_uuid is not None})))
    ).scalars())
    last = {task_uuid: (prompt_id, key) for task_uuid, prompt_id, key in zip(parsed, stamps.prompt_ids, stamps.keys)
            if task_uuid in existing}
    if last:
        connection.execute(
            tasks.update()
            .where(tasks.c.id == sa.bindparam("stamp_task_id"))
            .values(prompt_id=sa.bindparam("stamp_prompt_id"), prompt_unit=sa.bindparam("stamp_unit"), updated_at=now),
            [{"stamp_task_id": task_uuid, "stamp_prompt_id": prompt_id, "stamp_unit": unit_of(key)}
             for task_uuid, (prompt_id, key) in last.items()],
        )
    return sum(task_uuid in existing for task_uuid in parsed), parsed.count(None)


def is_transient(exc: BaseException) -> bool:
    """A database error worth retrying: the connection failed or SQLite's lock was busy."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError))


class _ThrottledLog:
    """Logs one line per kind of recurring problem at most every LOG_INTERVAL_S."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def warning(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -LOG_INTERVAL_S) >= LOG_INTERVAL_S:
            self._last[kind] = now
            logger.warning(message, *args)


class StampWriter:
    """Buffers one agent's stamps in memory and writes them in batches on its own thread."""

    def __init__(
        self,
        engine: sa.Engine,
        agent_id: str,
        *,
        queue_limit: int = STAMP_QUEUE_LIMIT,
        batch_size: int = STAMP_BATCH_SIZE,
        flush_interval: float = STAMP_FLUSH_INTERVAL_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.engine = engine
        self.agent_id = agent_id
        self.queue_limit = queue_limit
        self._slot_limit = 3 * queue_limit  # the queue holds three slots per stamp
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._clock = clock
        # Three slots per stamp (task_id, prompt_id, key): a queued tuple per stamp would be an object
        # the cyclic GC traverses, and with thousands queued its collections show in the request
        # path's p99 (measured in benchmarks/runtime_select.py).
        self._pending: deque = deque()
        self._reset()

    def _reset(self) -> None:
        """Empty queue, zero counters, no thread. Also what a forked child starts from: the stamps
        it inherited are the parent's to write."""
        self._pending.clear()
        self._held: StampBatch | None = None  # a batch that met an outage, written first next time
        self._stop = threading.Event()
        self._drain_lock = threading.Lock()  # one drain at a time: the thread's, or close()'s
        self._count_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._own_prompt_ids: set[str] = set()
        self._in_flight = 0  # stamps of the batch being written
        self._log = _ThrottledLog()
        self.written = 0
        self.dropped = 0  # the queue was full
        self.lost_at_close = 0  # still queued when close() gave up on an unreachable database
        self.refused_foreign_prompt = 0
        self.unknown_task = 0  # no such task in the agent's schema, or not a UUID
        self.failed = 0  # a batch the database refused for good (not an outage)
        self.retries = 0
        self.last_error: str | None = None
        self._in_outage = False  # the latest write attempt met a transient failure

    # ------------------------------------------------------------ request path

    def submit(self, task_id: Any, prompt_id: str, key: Any = None) -> None:
        """Queue a stamp. Never blocks, never raises; a full queue drops the stamp (counted).
        The check and the append are each atomic under the GIL; racing threads can overshoot
        the limit by at most their number."""
        if len(self._pending) < self._slot_limit:
            self._pending.extend((task_id, prompt_id, key))  # one C call: atomic under the GIL
        else:
            self.count_drop()

    def count_drop(self) -> None:
        """A stamp ``submit`` found no room for: counted, and logged at most once a minute."""
        with self._count_lock:
            self.dropped += 1
        self._log.warning("dropped", "stamp queue of agent %s is full (%d): %d stamps dropped so far",
                          self.agent_id, self.queue_limit, self.dropped)

    # ---------------------------------------------------------- writer thread

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"bindu-stamps-{self.agent_id}", daemon=True)
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self.flush(retry=True)

    def flush(self, *, retry: bool = False, deadline: float | None = None) -> bool:
        """Write everything queued now. With ``retry`` a batch that meets an outage is retried
        with backoff until it is written, the writer stops, or ``deadline`` (monotonic) passes;
        without it the batch goes back to the queue. True when the queue was emptied."""
        wait = -1 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._drain_lock.acquire(timeout=wait):
            return False
        try:
            while self._held is not None or self._pending:
                if self._held is not None:
                    batch, self._held = self._held, None
                else:
                    batch = self._take(min(self.batch_size, len(self._pending) // 3))
                self._in_flight = len(batch)
                written = self._write_with_retry(batch, retry=retry, deadline=deadline)
                self._in_flight = 0
                if not written:
                    self._held = batch  # order kept: written before anything queued after it
                    return False
            return True
        finally:
            self._drain_lock.release()

    def _take(self, count: int) -> StampBatch:
        """The oldest ``count`` stamps off the queue, as columns (no object per stamp)."""
        popleft = self._pending.popleft
        slots = [popleft() for _ in range(3 * count)]
        return StampBatch(slots[0::3], slots[1::3], slots[2::3])

    def _write_with_retry(self, stamps: StampBatch, *, retry: bool, deadline: float | None) -> bool:
        attempt = 0
        while True:
            try:
                self._write(stamps)
                self._in_outage = False
                return True
            except Exception as exc:  # the writer thread must outlive any failure
                self.last_error = type(exc).__name__
                self._in_outage = is_transient(exc)
                if not self._in_outage:
                    self.failed += len(stamps)
                    self._log.warning("failed", "stamps of agent %s refused by the database (%s): %d stamps lost so far",
                                      self.agent_id, type(exc).__name__, self.failed)
                    return True  # dropped: retrying a statement the database refuses cannot succeed
                self._log.warning("outage", "stamps of agent %s wait for the database (%s); %d queued",
                                  self.agent_id, type(exc).__name__, self.pending_count())
                wait = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
                attempt += 1
                if not retry or (deadline is not None and time.monotonic() + wait > deadline):
                    return False
                self.retries += 1
                if self._stop.wait(wait):  # close() takes over with its own deadline
                    return False

    def _write(self, stamps: StampBatch) -> None:
        if not stamps:
            return
        with write_transaction(for_agent(self.engine, self.agent_id)) as connection:
            outcome = write_stamps(connection, self.agent_id, stamps, now=self._clock(),
                                   known_own_prompt_ids=self._own_prompt_ids)
        self._own_prompt_ids = outcome.own_prompt_ids
        self.written += outcome.written
        if outcome.foreign_prompt:
            self.refused_foreign_prompt += outcome.foreign_prompt
            self._log.warning("foreign", "refused %d stamps of agent %s naming a prompt that is not the agent's (e.g. %r)",
                              self.refused_foreign_prompt, self.agent_id, outcome.foreign_example)
        if outcome.malformed_task_id:
            self._log.warning("bad-task-id", "%d stamps of agent %s in this batch name a task id that is not a UUID; not written",
                              outcome.malformed_task_id, self.agent_id)
        if outcome.unknown_task:
            self.unknown_task += outcome.unknown_task
            self._log.warning("unknown-task", "%d stamps of agent %s name a task not in its schema or not a UUID; not written",
                              self.unknown_task, self.agent_id)

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Stop the thread and write what is queued, for at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._stop = threading.Event()  # the final flush may wait between retries until the deadline
        if not self.flush(retry=True, deadline=deadline):
            lost = self.pending_count()
            self.lost_at_close += lost
            # Say why: an outage, or a backlog larger than the close timeout lets the writer drain.
            cause = (f"the database unreachable ({self.last_error})" if self._in_outage
                     else f"a backlog not written within the close timeout ({timeout:g} s)")
            logger.warning("stamp writer of agent %s closed with %s: %d stamps not written", self.agent_id, cause, lost)
            self._pending.clear()
            self._held = None
        self._stop.set()

    def pending_count(self) -> int:
        return len(self._pending) // 3 + len(self._held or ()) + self._in_flight

    def counters(self) -> dict[str, Any]:
        return {
            "stamps_pending": self.pending_count(),
            "stamps_written": self.written,
            "stamps_dropped": self.dropped,
            "stamps_lost_at_close": self.lost_at_close,
            "stamps_refused_foreign_prompt": self.refused_foreign_prompt,
            "stamps_unknown_task": self.unknown_task,
            "stamps_failed": self.failed,
            "stamp_retries": self.retries,
            "stamp_last_error": self.last_error,
        }

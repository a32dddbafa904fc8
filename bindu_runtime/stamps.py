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
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
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


@dataclass(frozen=True, slots=True)
class Stamp:
    task_id: uuid.UUID
    prompt_id: str
    unit: str | None


@dataclass(slots=True)
class StampOutcome:
    """What ``write_stamps`` did with a batch: every stamp is in exactly one list."""

    written: list[Stamp] = field(default_factory=list)
    unknown_task: list[Stamp] = field(default_factory=list)  # no such task in the agent's schema
    foreign_prompt: list[Stamp] = field(default_factory=list)  # the prompt is not this agent's
    own_prompt_ids: set[str] = field(default_factory=set)  # prompt ids confirmed as the agent's


def _could_be_prompt_id(value: Any) -> bool:
    return (isinstance(value, str) and value.isascii() and "\x00" not in value
            and 0 < len(value) <= agent_prompts.c.id.type.length)


def write_stamps(
    connection: sa.Connection,
    agent_id: str,
    stamps: Sequence[Stamp],
    *,
    now: datetime,
    known_own_prompt_ids: Iterable[str] = (),
) -> StampOutcome:
    """Write ``stamps`` inside the caller's transaction on the agent's schema (``for_agent``).

    Only stamps whose prompt is the agent's and whose task exists are written; the rest are
    returned as refused. ``known_own_prompt_ids`` spares the lookup of prompts already confirmed.
    """
    outcome = StampOutcome(own_prompt_ids=set(known_own_prompt_ids))
    if not stamps:
        return outcome
    # Ids that no prompt row could have are foreign without asking (PostgreSQL would reject NUL).
    to_check = {stamp.prompt_id for stamp in stamps if _could_be_prompt_id(stamp.prompt_id)} - outcome.own_prompt_ids
    if to_check:
        outcome.own_prompt_ids.update(connection.execute(
            sa.select(agent_prompts.c.id).where(agent_prompts.c.agent_id == agent_id, agent_prompts.c.id.in_(to_check))
        ).scalars())
    candidates = []
    for stamp in stamps:
        (candidates if stamp.prompt_id in outcome.own_prompt_ids else outcome.foreign_prompt).append(stamp)
    updated = _update_tasks(connection, agent_id, {stamp.task_id: stamp for stamp in candidates}.values(), now) if candidates else set()
    for stamp in candidates:
        (outcome.written if stamp.task_id in updated else outcome.unknown_task).append(stamp)
    return outcome


def _update_tasks(connection: sa.Connection, agent_id: str, stamps: Iterable[Stamp], now: datetime) -> set[uuid.UUID]:
    """Stamp the tasks (one stamp per task); the ids of the tasks that exist and were stamped."""
    stamps = list(stamps)
    if connection.dialect.name == "postgresql":
        # One statement per batch with three array parameters: psycopg2 runs an executemany
        # UPDATE as a round trip per row, and SQLAlchemy compiles a VALUES list anew every time.
        table = qualified_table(connection, agent_id, "tasks")
        return {uuid.UUID(str(task_id)) for task_id in connection.execute(
            sa.text(
                f"UPDATE {table} AS t SET prompt_id = s.prompt_id, prompt_unit = s.prompt_unit, updated_at = :now "
                "FROM unnest(CAST(:task_ids AS uuid[]), CAST(:prompt_ids AS text[]), CAST(:units AS text[])) "
                "AS s(task_id, prompt_id, prompt_unit) WHERE t.id = s.task_id RETURNING t.id"
            ),
            {"now": now, "task_ids": [str(s.task_id) for s in stamps], "prompt_ids": [s.prompt_id for s in stamps],
             "units": [s.unit for s in stamps]},
        ).scalars()}
    existing = set(connection.execute(sa.select(tasks.c.id).where(tasks.c.id.in_([s.task_id for s in stamps]))).scalars())
    rows = [{"stamp_task_id": s.task_id, "stamp_prompt_id": s.prompt_id, "stamp_unit": s.unit}
            for s in stamps if s.task_id in existing]
    if rows:
        connection.execute(
            tasks.update()
            .where(tasks.c.id == sa.bindparam("stamp_task_id"))
            .values(prompt_id=sa.bindparam("stamp_prompt_id"), prompt_unit=sa.bindparam("stamp_unit"), updated_at=now),
            rows,
        )
    return existing


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
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._clock = clock
        self._reset()

    def _reset(self) -> None:
        """Empty queue, zero counters, no thread. Also what a forked child starts from: the stamps
        it inherited are the parent's to write."""
        # Three slots per stamp (task_id, prompt_id, key): a queued tuple per stamp would be an object
        # the cyclic GC traverses, and with thousands queued its collections show in the request
        # path's p99 (measured in benchmarks/runtime_select.py).
        self._pending: deque = deque()
        self._held: list[Stamp] = []  # a prepared batch that met an outage, written first next time
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
        if len(self._pending) >= 3 * self.queue_limit:
            with self._count_lock:
                self.dropped += 1
            self._log.warning("dropped", "stamp queue of agent %s is full (%d): %d stamps dropped so far",
                              self.agent_id, self.queue_limit, self.dropped)
            return
        self._pending.extend((task_id, prompt_id, key))  # one C call: atomic under the GIL

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
            while self._held or self._pending:
                if self._held:
                    batch, self._held = self._held, []
                else:
                    popleft = self._pending.popleft
                    batch = self._prepare([(popleft(), popleft(), popleft())
                                           for _ in range(min(self.batch_size, len(self._pending) // 3))])
                self._in_flight = len(batch)
                written = self._write_with_retry(batch, retry=retry, deadline=deadline)
                self._in_flight = 0
                if not written:
                    self._held = batch  # order kept: written before anything queued after it
                    return False
            return True
        finally:
            self._drain_lock.release()

    def _write_with_retry(self, stamps: list[Stamp], *, retry: bool, deadline: float | None) -> bool:
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

    def _prepare(self, batch: list[tuple[Any, str, Any]]) -> list[Stamp]:
        """Queued (task_id, prompt_id, key) as stamps; task ids that are not UUIDs are counted and left out."""
        stamps = []
        for task_id, prompt_id, key in batch:
            task_uuid = as_task_uuid(task_id)
            if task_uuid is None:
                self.unknown_task += 1
                self._log.warning("bad-task-id", "stamp of agent %s names a task id that is not a UUID (%s); not written",
                                  self.agent_id, type(task_id).__name__)
                continue
            stamps.append(Stamp(task_uuid, prompt_id, unit_of(key)))
        return stamps

    def _write(self, stamps: list[Stamp]) -> None:
        if not stamps:
            return
        with write_transaction(for_agent(self.engine, self.agent_id)) as connection:
            outcome = write_stamps(connection, self.agent_id, stamps, now=self._clock(),
                                   known_own_prompt_ids=self._own_prompt_ids)
        self._own_prompt_ids = outcome.own_prompt_ids
        self.written += len(outcome.written)
        if outcome.foreign_prompt:
            self.refused_foreign_prompt += len(outcome.foreign_prompt)
            self._log.warning("foreign", "refused %d stamps of agent %s naming a prompt that is not the agent's (e.g. %r)",
                              self.refused_foreign_prompt, self.agent_id, outcome.foreign_prompt[0].prompt_id[:80])
        if outcome.unknown_task:
            self.unknown_task += len(outcome.unknown_task)
            self._log.warning("unknown-task", "%d stamps of agent %s name a task not in its schema; not written",
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
            self._held = []
        self._stop.set()

    def pending_count(self) -> int:
        return len(self._pending) // 3 + len(self._held) + self._in_flight

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

"""Which prompt an agent sends, decided in memory on every request.

Like a feature-flag SDK: the rules (the agent's active prompt, its candidate and the candidate's
share) are held in memory and refreshed by a background thread; ``select`` is a pure function of
that snapshot and the request key, so it never waits on the database. When the database is gone
the last good snapshot keeps serving; with no snapshot at all, ``default_prompt`` is served.
Which prompt served which task (``stamp_task``) is queued and written by a second background
thread in batches, so bookkeeping never blocks or fails a request.

Assignment is sticky and monotone: a key hashes (salted with the agent and the candidate's text) into one of
10 000 buckets, and buckets below the candidate's share go to the candidate. The same key stays on
its arm while the split holds, and raising the share only moves keys from active to candidate.

Process lifecycle, as the flag SDKs handle it:
- fork (gunicorn ``--preload``, celery prefork): in the child every router parks the connections
  it inherited (never used, never closed; a socket's descriptor is pointed at /dev/null so not
  even interpreter exit can send on the parent's session), starts a fresh pool, restarts its
  refresh and stamp threads and refreshes at once; until then it serves the inherited snapshot.
- a router that is never closed is reclaimed when it is garbage: a finalizer stops its threads,
  flushes its stamps and disposes the engine it created. The threads hold no strong reference to it.
- interpreter exit: the same finalizer flushes queued stamps (bounded by ``CLOSE_TIMEOUT_S``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from .bindu_adapter import bindu_handler
from .db import make_engine
from .feedback import FeedbackCollector, unstorable_text_reason
from .schema import agent_prompts
from .stamps import StampWriter, key_text, unit_of
from .store import Prompt, PromptStore

__all__ = ["BUCKETS", "PromptChoice", "PromptRouter", "bucket_of", "key_text", "unit_of"]

logger = logging.getLogger("bindu_runtime.router")

BUCKETS = 10_000


@dataclass(frozen=True, slots=True)
class PromptChoice:
    """The prompt to send. ``prompt_id`` is None only when serving the code's default prompt."""

    prompt_id: str | None
    text: str
    status: str  # "active", "candidate" or "default"


@dataclass(frozen=True, slots=True)
class _Snapshot:
    active: PromptChoice
    candidate: PromptChoice | None
    candidate_buckets: int
    salt: bytes
    loaded_at: float
    # blake2b keyed with the salt and nothing hashed yet: select() copies it, which costs about
    # half of building the salted hasher anew (bucket_of's way, same digest).
    hasher: Any = None


def experiment_salt(agent_id: str, candidate_text: str) -> bytes:
    """The salt of an experiment's buckets: the agent and the candidate's text, so each new
    candidate reaches a different slice of users while one candidate always splits its users the
    same way (a rerun of the same story, or the same text tried again, meets the same users)."""
    return hashlib.blake2b(f"{agent_id}\x00{candidate_text}".encode("utf-8", "surrogatepass"), digest_size=16).digest()


def bucket_of(key: str, salt: bytes = b"") -> int:
    """The key's bucket in 0..9999; stable across processes and Python versions. Lone surrogates
    hash as their code points ("surrogatepass"; for valid text the bytes are plain UTF-8)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, salt=salt[:16]).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def _choice(prompt: Prompt) -> PromptChoice:
    return PromptChoice(prompt_id=prompt.id, text=prompt.prompt_text, status=prompt.status)


MAX_AGENT_ID_LENGTH = agent_prompts.c.agent_id.type.length


def validate_agent_id(agent_id: Any) -> str:
    """The agent id, or ValueError: a non-empty string the prompt tables can store on both backends."""
    if not isinstance(agent_id, str) or not agent_id:
        raise ValueError("agent_id must be a non-empty string")
    if len(agent_id) > MAX_AGENT_ID_LENGTH:
        raise ValueError(f"agent_id is {len(agent_id)} characters; the limit is {MAX_AGENT_ID_LENGTH}")
    reason = unstorable_text_reason(agent_id)
    if reason:
        raise ValueError(f"agent_id {reason}")
    return agent_id


# ------------------------------------------------------------------------------------ fork safety

_LIVE_ROUTERS: weakref.WeakSet[PromptRouter] = weakref.WeakSet()
# Connections each engine opened, by id: on fork the child parks the ones it inherited.
_OPEN_CONNECTIONS: weakref.WeakKeyDictionary[sa.Engine, dict[int, Any]] = weakref.WeakKeyDictionary()
# Connections a forked child inherited: referenced forever so they are never closed from here.
_PARKED_CONNECTIONS: list[Any] = []


def _track_connections(engine: sa.Engine) -> None:
    if engine in _OPEN_CONNECTIONS:
        return
    open_connections: dict[int, Any] = {}
    _OPEN_CONNECTIONS[engine] = open_connections

    def opened(dbapi_connection, _record):
        open_connections[id(dbapi_connection)] = dbapi_connection

    def closed(dbapi_connection, *_args):
        open_connections.pop(id(dbapi_connection), None)

    event.listen(engine, "connect", opened)
    event.listen(engine, "close", closed)
    event.listen(engine, "close_detached", closed)


def _park_inherited_connections(engine: sa.Engine) -> None:
    """In a forked child: drop the pool without touching the parent's connections."""
    inherited = list(_OPEN_CONNECTIONS.get(engine, {}).values())
    _OPEN_CONNECTIONS.get(engine, {}).clear()
    _PARKED_CONNECTIONS.extend(inherited)
    if inherited:
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            for connection in inherited:
                fileno = getattr(connection, "fileno", None)  # psycopg2's socket; sqlite3 has none
                if callable(fileno):
                    try:
                        os.dup2(devnull, fileno())
                    except Exception:  # already closed in the parent: nothing to protect
                        pass
        finally:
            os.close(devnull)
    engine.dispose(close=False)


def _after_fork_in_child() -> None:
    for router in list(_LIVE_ROUTERS):
        router._restart_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Workers:
    """A router's threads and what its finalizer needs, without a reference to the router."""

    def __init__(self, engine: sa.Engine, owns_engine: bool, stamps: StampWriter):
        self.engine = engine
        self.owns_engine = owns_engine
        self.stamps = stamps
        self.stop = threading.Event()
        self.first_attempt = threading.Event()
        self.refresher: threading.Thread | None = None
        self.closed = False

    def shut_down(self) -> None:
        """Stop the refresh thread, flush the stamps, dispose the engine the router created."""
        if self.closed:
            return
        self.closed = True
        self.stop.set()
        refresher = self.refresher
        if refresher is not None and refresher is not threading.current_thread():
            refresher.join(timeout=5)
        self.stamps.close()
        if self.owns_engine:
            self.engine.dispose()


def _refresh_loop(router_ref: weakref.ref, stop: threading.Event, first_attempt: threading.Event) -> None:
    router = router_ref()
    if router is None:
        return
    interval, jitter = router.refresh_interval, router._random
    router.refresh()
    del router  # between refreshes the thread keeps the router alive only weakly
    first_attempt.set()
    while not stop.wait(interval * jitter.uniform(0.9, 1.1)):
        router = router_ref()
        if router is None:
            return
        router.refresh()
        del router




class PromptRouter:
    """Serves one agent's prompts from memory. Thread-safe and fork-safe; one per agent per process.

    Every public method either succeeds or raises the package's own error (``ValueError`` for
    constructor arguments); ``select`` and ``stamp_task`` never raise at all.
    """

    def __init__(
        self,
        database: str | sa.Engine | None = None,
        *,
        agent_id: str,
        default_prompt: str,
        refresh_interval: float = 2.0,
        connect_timeout: float = 2.0,
        startup_timeout: float = 1.0,
        bootstrap: bool = True,
        start: bool = True,
        stamp_queue_limit: int | None = None,
    ):
        self.agent_id = validate_agent_id(agent_id)
        if not isinstance(default_prompt, str) or not default_prompt.strip():
            raise ValueError("default_prompt must be the agent's non-empty system prompt from code")
        reason = unstorable_text_reason(default_prompt)
        if reason:
            raise ValueError(f"default_prompt {reason}")
        self.default = PromptChoice(prompt_id=None, text=default_prompt, status="default")
        self.refresh_interval = refresh_interval
        owns_engine = not isinstance(database, sa.Engine)
        # database=None reads BINDU_DATABASE_URL / STORAGE__POSTGRES_URL, else ConfigurationError.
        self.engine = database if isinstance(database, sa.Engine) else make_engine(database, connect_timeout=connect_timeout)
        _track_connections(self.engine)
        self.store = PromptStore(self.engine)
        self._feedback = FeedbackCollector(self.engine, agent_id=self.agent_id)
        stamp_options = {} if stamp_queue_limit is None else {"queue_limit": stamp_queue_limit}
        self._stamps = StampWriter(self.engine, self.agent_id, **stamp_options)
        self._workers = _Workers(self.engine, owns_engine, self._stamps)
        self._finalizer = weakref.finalize(self, self._workers.shut_down)
        self._bootstrap = bootstrap
        self._snapshot: _Snapshot | None = None
        self._random = random.Random()
        self.last_error: BaseException | None = None
        self.refresh_count = 0
        self._started = False
        _LIVE_ROUTERS.add(self)
        if start:
            self.start(startup_timeout)

    # ------------------------------------------------------------ request path

    def select(self, key: Any = None) -> PromptChoice:
        """The prompt for this request. ``key`` (a context or user id) makes the choice sticky;
        without one the arm is drawn at random with the current split. Never raises: a key whose
        ``str()`` raises counts as no key (random draw); any other key, lone surrogates included,
        hashes as its text."""
        snapshot = self._snapshot
        if snapshot is None:
            return self.default
        if snapshot.candidate is None:
            return snapshot.active
        text = key if type(key) is str else key_text(key)
        if text is None:
            bucket = self._random.randrange(BUCKETS)
        else:  # bucket_of(text, snapshot.salt)
            hasher = snapshot.hasher.copy()
            hasher.update(text.encode("utf-8", "surrogatepass"))
            bucket = int.from_bytes(hasher.digest(), "big") % BUCKETS
        return snapshot.candidate if bucket < snapshot.candidate_buckets else snapshot.active

    def stamp_task(self, task_id: Any, choice: PromptChoice, key: Any = None) -> None:
        """Record which prompt served a task; pass the ``key`` given to ``select`` so the canary
        knows the task's randomisation unit. Queued and written in the background (never blocks,
        never raises); skipped for the code default, which has no row. The writer refuses and
        counts a prompt that is not this agent's and a task that is not in the agent's schema;
        see ``status()``. ``FeedbackCollector.stamp_task_prompt`` is the synchronous form."""
        prompt_id = getattr(choice, "prompt_id", None)
        if prompt_id is not None:
            self._stamps.submit(task_id, prompt_id, key)

    def flush_stamps(self, timeout: float = 5.0) -> bool:
        """Write the queued stamps now (retrying an outage until ``timeout``); True when all are written."""
        return self._stamps.flush(retry=True, deadline=time.monotonic() + timeout)

    def record_feedback(self, task_id, **feedback) -> int:
        """See FeedbackCollector.record_feedback (rating=…, thumbs_up=…, feedback=…, metadata=…).
        Raises FeedbackError, UnknownTask or DatabaseFailure."""
        return self._feedback.record_feedback(task_id, **feedback)

    def bindu_handler(self, fn: Callable) -> Callable:
        """``fn(messages, system_prompt)`` as the one-parameter handler ``bindufy`` requires;
        see ``bindu_runtime.bindu_adapter.bindu_handler`` (how our system prompt and Bindu's own
        structured-response system message combine is documented there)."""
        return bindu_handler(self, fn)

    # ---------------------------------------------------------- refresh thread

    def start(self, startup_timeout: float = 1.0) -> None:
        """Start the refresh thread and the stamp writer (once); wait at most ``startup_timeout``
        for the first refresh so the first requests usually see the database's prompt."""
        if self._started:
            return
        self._started = True
        self._start_threads()
        self._workers.first_attempt.wait(startup_timeout)

    def _start_threads(self) -> None:
        workers = self._workers
        workers.refresher = threading.Thread(
            target=_refresh_loop, args=(weakref.ref(self), workers.stop, workers.first_attempt),
            name=f"bindu-router-{self.agent_id[:40]}", daemon=True,
        )
        workers.refresher.start()
        self._stamps.start()

    def _restart_after_fork(self) -> None:
        """In a forked child: new pool, new threads, stamps queued in the parent left to it."""
        workers = self._workers
        if workers.closed:
            return
        _park_inherited_connections(self.engine)
        workers.stop = threading.Event()
        workers.first_attempt = threading.Event()
        workers.refresher = None
        self._stamps._reset()
        self._random = random.Random()  # the parent's random state would repeat the same draws
        self.last_error = None
        self.refresh_count = 0
        if self._started:
            self._start_threads()

    def refresh(self) -> bool:
        """Reload the snapshot now. False (and the old snapshot kept) when the database fails."""
        try:
            state = self.store.serving_state(self.agent_id)
            active = state.active
            if active is None and self._bootstrap:
                active = self.store.bootstrap(self.agent_id, self.default.text)
            if active is None:
                self._snapshot = None
            else:
                candidate = state.candidate
                salt = experiment_salt(self.agent_id, candidate.prompt_text) if candidate else b""
                self._snapshot = _Snapshot(
                    active=_choice(active),
                    candidate=_choice(candidate) if candidate else None,
                    candidate_buckets=int(candidate.traffic * BUCKETS) if candidate else 0,
                    salt=salt,
                    loaded_at=time.monotonic(),
                    hasher=hashlib.blake2b(digest_size=8, salt=salt[:16]),
                )
        except Exception as exc:  # the router must outlive any database failure
            if self.last_error is None:
                logger.warning(
                    "prompt refresh for agent %s failed (%s); serving the %s",
                    self.agent_id,
                    type(exc).__name__,
                    "last good prompts" if self._snapshot else "default prompt",
                )
            self.last_error = exc
            return False
        if self.last_error is not None:
            logger.info("prompt refresh for agent %s recovered", self.agent_id)
        self.last_error = None
        self.refresh_count += 1
        return True

    @property
    def snapshot_age(self) -> float | None:
        """Seconds since the snapshot was loaded; None while serving the default."""
        snapshot = self._snapshot
        return None if snapshot is None else time.monotonic() - snapshot.loaded_at

    def status(self) -> Mapping[str, Any]:
        snapshot = self._snapshot
        return {
            "agent_id": self.agent_id,
            "serving": "database" if snapshot else "default",
            "active_id": snapshot.active.prompt_id if snapshot else None,
            "candidate_id": snapshot.candidate.prompt_id if snapshot and snapshot.candidate else None,
            "candidate_share": (snapshot.candidate_buckets / BUCKETS) if snapshot else 0.0,
            "snapshot_age_s": self.snapshot_age,
            "last_error": type(self.last_error).__name__ if self.last_error else None,
            "refresh_count": self.refresh_count,
            "refreshing": self._workers.refresher is not None and self._workers.refresher.is_alive(),
            **self._stamps.counters(),
        }

    def close(self) -> None:
        """Stop the threads, write the queued stamps, dispose the engine the router created."""
        self._finalizer()

    def __enter__(self) -> PromptRouter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


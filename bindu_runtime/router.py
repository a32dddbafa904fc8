"""Which prompt an agent sends, decided in memory on every request.

Like a feature-flag SDK: the rules (the agent's active prompt, its candidate and the candidate's
share) are held in memory and refreshed by a background thread; ``select`` is a pure function of
that snapshot and the request key, so it never waits on the database. When the database is gone
the last good snapshot keeps serving; with no snapshot at all, ``default_prompt`` is served.

Assignment is sticky and monotone: a key hashes (salted with the candidate's id) into one of
10 000 buckets, and buckets below the candidate's share go to the candidate. The same key stays on
its arm while the split holds, and raising the share only moves keys from active to candidate.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .db import make_engine
from .feedback import FeedbackCollector
from .store import Prompt, PromptStore

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


def bucket_of(key: str, salt: bytes = b"") -> int:
    """The key's bucket in 0..9999; stable across processes and Python versions."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, salt=salt[:16]).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def _choice(prompt: Prompt) -> PromptChoice:
    return PromptChoice(prompt_id=prompt.id, text=prompt.prompt_text, status=prompt.status)


class PromptRouter:
    """Serves one agent's prompts from memory. Thread-safe; one per agent per process."""

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
    ):
        if not agent_id or not isinstance(agent_id, str):
            raise ValueError("agent_id must be a non-empty string")
        if not isinstance(default_prompt, str) or not default_prompt.strip():
            raise ValueError("default_prompt must be the agent's non-empty system prompt from code")
        self.agent_id = agent_id
        self.default = PromptChoice(prompt_id=None, text=default_prompt, status="default")
        self.refresh_interval = refresh_interval
        self._owns_engine = not isinstance(database, sa.Engine)
        self.engine = database if isinstance(database, sa.Engine) else make_engine(database, connect_timeout=connect_timeout)
        self.store = PromptStore(self.engine)
        self._feedback = FeedbackCollector(self.engine)
        self._bootstrap = bootstrap
        self._snapshot: _Snapshot | None = None
        self._random = random.Random()
        self._stop = threading.Event()
        self._first_attempt = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: BaseException | None = None
        self.refresh_count = 0
        if start:
            self.start(startup_timeout)

    # ------------------------------------------------------------ request path

    def select(self, key: Any = None) -> PromptChoice:
        """The prompt for this request. ``key`` (a context or user id) makes the choice sticky;
        without one the arm is drawn at random with the current split."""
        snapshot = self._snapshot
        if snapshot is None:
            return self.default
        if snapshot.candidate is None:
            return snapshot.active
        if key is None:
            bucket = self._random.randrange(BUCKETS)
        else:
            bucket = bucket_of(str(key), snapshot.salt)
        return snapshot.candidate if bucket < snapshot.candidate_buckets else snapshot.active

    def record_feedback(self, task_id, **feedback) -> int:
        """See FeedbackCollector.record_feedback (rating=…, thumbs_up=…, feedback=…, metadata=…)."""
        return self._feedback.record_feedback(task_id, **feedback)

    def stamp_task(self, task_id, choice: PromptChoice) -> None:
        """Record which prompt served a task (skipped for the code default, which has no row)."""
        if choice.prompt_id is not None:
            self._feedback.stamp_task_prompt(task_id, choice.prompt_id)

    # ---------------------------------------------------------- refresh thread

    def start(self, startup_timeout: float = 1.0) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"bindu-router-{self.agent_id}", daemon=True)
        self._thread.start()
        # A bounded wait so the first requests usually see the database's prompt, never longer.
        self._first_attempt.wait(startup_timeout)

    def _run(self) -> None:
        self.refresh()
        self._first_attempt.set()
        while not self._stop.wait(self.refresh_interval * self._random.uniform(0.9, 1.1)):
            self.refresh()

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
                self._snapshot = _Snapshot(
                    active=_choice(active),
                    candidate=_choice(candidate) if candidate else None,
                    candidate_buckets=int(candidate.traffic * BUCKETS) if candidate else 0,
                    salt=hashlib.blake2b(candidate.id.encode(), digest_size=16).digest() if candidate else b"",
                    loaded_at=time.monotonic(),
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
        }

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> PromptRouter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

"""Prompt versions and their traffic, for the runtime and the pipelines alike.

Every change of status or traffic is one transaction that also appends its audit row to
``prompt_events``. Transitions are compare-and-set: the caller names the state it decided on
(the candidate's id, its traffic) and a transition whose premise no longer holds raises
``StaleTransition`` instead of applying twice. On PostgreSQL the agent's serving rows are locked
(``SELECT … FOR UPDATE``); on SQLite the write transaction holds the database lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from . import layout
from .db import write_transaction
from .errors import (
    ExperimentRunning,
    InvariantViolation,
    NoActivePrompt,
    NoExperiment,
    StaleTransition,
)
from .schema import PROMPT_STATUSES, SERVING_STATUSES, agent_prompts, prompt_events, registered_agents

TRAFFIC_QUANTUM = Decimal("0.0001")
FULL_TRAFFIC = Decimal("1.0000")
NO_TRAFFIC = Decimal("0.0000")
DEFAULT_CANDIDATE_TRAFFIC = Decimal("0.1")


def as_traffic(value: Decimal | float | int | str) -> Decimal:
    """An exact traffic share in 0..1. Floats go through their shortest repr, so 0.1 means 0.1."""
    try:
        share = Decimal(str(value)) if not isinstance(value, Decimal) else value
        share = share.quantize(TRAFFIC_QUANTUM)
    except (InvalidOperation, ValueError):
        raise InvariantViolation(f"traffic {value!r} is not a number") from None
    if not (NO_TRAFFIC <= share <= FULL_TRAFFIC):
        raise InvariantViolation(f"traffic {value!r} is outside 0..1")
    return share


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without a zone; everything we write is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Prompt:
    id: str
    agent_id: str
    prompt_text: str
    status: str
    traffic: Decimal
    parent_id: str | None
    source: str
    details: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Prompt:
        return cls(
            id=row["id"],
            agent_id=row["agent_id"],
            prompt_text=row["prompt_text"],
            status=row["status"],
            traffic=Decimal(row["traffic"]).quantize(TRAFFIC_QUANTUM),
            parent_id=row["parent_id"],
            source=row["source"],
            details=row["details"],
            created_at=as_utc(row["created_at"]),
            updated_at=as_utc(row["updated_at"]),
        )

    def as_dict(self) -> dict[str, Any]:
        """The seed's prompt dict shape (traffic as a float for JSON and for old callers)."""
        return {
            "id": self.id,
            "agent_id": self.agent_id,
            "prompt_text": self.prompt_text,
            "status": self.status,
            "traffic": float(self.traffic),
            "parent_id": self.parent_id,
            "source": self.source,
            "details": self.details,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class ServingState:
    """What an agent serves: its active prompt and, during an experiment, the candidate."""

    active: Prompt | None
    candidate: Prompt | None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


class PromptStore:
    """Prompts of every agent in the database, each read and written in its agent's namespace
    (``bindu_runtime.layout``): the DID's own schema on PostgreSQL, the shared one for other ids.

    ``agent_id`` binds the store to one agent: the calls that name only a prompt id
    (``get_prompt``, ``update_prompt_traffic``, ``update_prompt_status``) then look in that agent's
    namespace alone, which is all a role limited to that schema may read. Unbound, they look in
    every namespace the role can read (prompt ids are UUIDs, unique across them).
    """

    def __init__(self, engine: sa.Engine, *, agent_id: str | None = None, clock: Callable[[], datetime] = _utcnow):
        self.engine = engine
        self.agent_id = agent_id
        self._clock = clock

    def _scoped(self, agent_id: str) -> sa.Engine:
        """The engine whose statements name ``agent_id``'s schema."""
        return layout.for_agent(self.engine, agent_id)

    def _prompt_namespaces(self, agent_id: str | None) -> list[sa.Engine]:
        """Where a prompt of ``agent_id`` (or of the bound agent, or of anyone) may be."""
        agent_id = agent_id or self.agent_id
        if agent_id is not None:
            return [self._scoped(agent_id)]
        with self.engine.connect() as connection:
            found = [namespace.schema for namespace in layout.namespaces(connection) if "agent_prompts" in namespace.tables]
        return [layout.for_schema(self.engine, schema) for schema in found]

    # ------------------------------------------------------------------ reads

    def serving_state(self, agent_id: str) -> ServingState:
        with self._scoped(agent_id).connect() as connection:
            return self._serving(connection, agent_id, lock=False)

    def get_active_prompt(self, agent_id: str) -> Prompt | None:
        return self.serving_state(agent_id).active

    def get_candidate_prompt(self, agent_id: str) -> Prompt | None:
        return self.serving_state(agent_id).candidate

    def get_prompt(self, prompt_id: str, agent_id: str | None = None) -> Prompt | None:
        """The prompt with this id: in ``agent_id``'s namespace, the bound agent's, or any."""
        query = sa.select(agent_prompts).where(agent_prompts.c.id == prompt_id)
        for scoped in self._prompt_namespaces(agent_id):
            with scoped.connect() as connection:
                row = connection.execute(query).mappings().first()
            if row:
                return Prompt.from_row(row)
        return None

    def list_prompts(self, agent_id: str) -> list[Prompt]:
        query = (
            sa.select(agent_prompts)
            .where(agent_prompts.c.agent_id == agent_id)
            .order_by(agent_prompts.c.created_at.desc(), agent_prompts.c.id)
        )
        with self._scoped(agent_id).connect() as connection:
            return [Prompt.from_row(row) for row in connection.execute(query).mappings()]

    def list_agents(self) -> list[str]:
        """Every agent of the database, across its namespaces: the ids with prompts, and those
        recorded by ``db upgrade --agent`` before their first prompt. An id is listed only from the
        namespace it maps to, so each listed agent is one ``for_agent`` reaches."""
        agents: set[str] = set()
        with self.engine.connect() as connection:
            for namespace in layout.namespaces(connection):
                scoped = connection.execution_options(schema_translate_map={None: namespace.schema}) if namespace.schema else connection
                for table in (agent_prompts, registered_agents):
                    if table.name in namespace.tables:
                        ids = scoped.execute(sa.select(table.c.agent_id).distinct()).scalars()
                        agents.update(agent for agent in ids if layout.schema_of(connection, agent) == namespace.schema)
        return sorted(agents)

    def list_events(self, agent_id: str) -> list[dict[str, Any]]:
        query = (
            sa.select(prompt_events)
            .where(prompt_events.c.agent_id == agent_id)
            .order_by(prompt_events.c.id)
        )
        with self._scoped(agent_id).connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [{**row, "created_at": as_utc(row["created_at"])} for row in rows]

    def experiment_started_at(self, agent_id: str) -> datetime | None:
        """When the running experiment began (its start event), or None without one."""
        candidate = self.get_candidate_prompt(agent_id)
        if candidate is None:
            return None
        query = sa.select(sa.func.min(prompt_events.c.created_at)).where(
            prompt_events.c.prompt_id == candidate.id,
            prompt_events.c.event == "start_experiment",
        )
        with self._scoped(agent_id).connect() as connection:
            started = connection.execute(query).scalar()
        return as_utc(started) or candidate.created_at

    # ------------------------------------------------------------ transitions

    def bootstrap(self, agent_id: str, prompt_text: str, *, source: str = "bootstrap") -> Prompt:
        """Make ``prompt_text`` the agent's active prompt at 100 % if it has none; else return the
        active prompt as it is. Concurrent bootstraps create one row."""
        _require_text(prompt_text)
        try:
            with write_transaction(self._scoped(agent_id)) as connection:
                state = self._serving(connection, agent_id, lock=True)
                if state.active is not None:
                    return state.active
                prompt = self._insert(
                    connection, agent_id, prompt_text, "active", FULL_TRAFFIC,
                    source=source, parent_id=None, details=None,
                    event="bootstrap", statistics=None,
                )
                self._check_invariants(connection, agent_id)
                return prompt
        except IntegrityError:
            # Another router inserted the active prompt between our read and our insert.
            active = self.get_active_prompt(agent_id)
            if active is None:
                raise
            return active

    def start_experiment(
        self,
        agent_id: str,
        prompt_text: str,
        *,
        source: str,
        details: Mapping[str, Any] | None = None,
        parent_id: str | None = None,
        candidate_traffic: Decimal | float | str = DEFAULT_CANDIDATE_TRAFFIC,
        statistics: Mapping[str, Any] | None = None,
    ) -> Prompt:
        """Insert ``prompt_text`` as the candidate and split traffic (candidate 10 %, active 90 %
        by default), in one transaction. Raises ExperimentRunning if a candidate exists."""
        _require_text(prompt_text)
        share = as_traffic(candidate_traffic)
        if not (NO_TRAFFIC < share < FULL_TRAFFIC):
            raise InvariantViolation("a new candidate needs a traffic share strictly between 0 and 1")
        try:
            with write_transaction(self._scoped(agent_id)) as connection:
                state = self._serving(connection, agent_id, lock=True)
                if state.active is None:
                    raise NoActivePrompt(f"agent {agent_id!r} has no active prompt to experiment against")
                if state.candidate is not None:
                    raise ExperimentRunning(
                        f"agent {agent_id!r} already has candidate {state.candidate.id} "
                        f"at {state.candidate.traffic} traffic"
                    )
                if parent_id is not None and parent_id != state.active.id:
                    raise StaleTransition(
                        f"agent {agent_id!r}: the candidate was optimized from {parent_id}, "
                        f"but the active prompt is now {state.active.id}"
                    )
                self._update(
                    connection, state.active, "active", FULL_TRAFFIC - share,
                    event="start_experiment", statistics=statistics,
                )
                candidate = self._insert(
                    connection, agent_id, prompt_text, "candidate", share,
                    source=source, parent_id=state.active.id, details=details,
                    event="start_experiment", statistics=statistics,
                )
                self._check_invariants(connection, agent_id)
                return candidate
        except IntegrityError:
            if self.get_candidate_prompt(agent_id) is not None:
                raise ExperimentRunning(f"agent {agent_id!r} already has a candidate") from None
            raise

    def step_traffic(
        self,
        agent_id: str,
        *,
        candidate_id: str,
        expected_traffic: Decimal | float | str,
        new_traffic: Decimal | float | str,
        statistics: Mapping[str, Any] | None = None,
    ) -> ServingState:
        """Move the candidate from ``expected_traffic`` to ``new_traffic`` (the active prompt takes
        the rest). Reaching 1 promotes the candidate, reaching 0 rolls it back."""
        expected = as_traffic(expected_traffic)
        target = as_traffic(new_traffic)
        if target == FULL_TRAFFIC:
            return self.promote(agent_id, candidate_id=candidate_id, expected_traffic=expected, statistics=statistics)
        if target == NO_TRAFFIC:
            return self.rollback(agent_id, candidate_id=candidate_id, expected_traffic=expected, statistics=statistics)
        with write_transaction(self._scoped(agent_id)) as connection:
            state = self._locked_experiment(connection, agent_id, candidate_id, expected)
            self._update(connection, state.active, "active", FULL_TRAFFIC - target, event="step", statistics=statistics)
            self._update(connection, state.candidate, "candidate", target, event="step", statistics=statistics)
            self._check_invariants(connection, agent_id)
            return self._serving(connection, agent_id, lock=False)

    def promote(
        self,
        agent_id: str,
        *,
        candidate_id: str,
        expected_traffic: Decimal | float | str | None = None,
        statistics: Mapping[str, Any] | None = None,
    ) -> ServingState:
        """The candidate becomes the active prompt at 100 %; the old active is deprecated."""
        return self._conclude(agent_id, candidate_id, expected_traffic, statistics, candidate_wins=True)

    def rollback(
        self,
        agent_id: str,
        *,
        candidate_id: str,
        expected_traffic: Decimal | float | str | None = None,
        statistics: Mapping[str, Any] | None = None,
    ) -> ServingState:
        """The candidate is rolled back at 0 %; the active prompt serves 100 % again."""
        return self._conclude(agent_id, candidate_id, expected_traffic, statistics, candidate_wins=False)

    def _conclude(self, agent_id, candidate_id, expected_traffic, statistics, *, candidate_wins: bool) -> ServingState:
        """End the experiment: the winner serves 100 % as the active prompt, the loser is archived."""
        expected = None if expected_traffic is None else as_traffic(expected_traffic)
        event = "promote" if candidate_wins else "rollback"
        with write_transaction(self._scoped(agent_id)) as connection:
            state = self._locked_experiment(connection, agent_id, candidate_id, expected)
            winner, loser = (state.candidate, state.active) if candidate_wins else (state.active, state.candidate)
            # Archive first: the one-active index is checked statement by statement.
            archived = "deprecated" if candidate_wins else "rolled_back"
            self._update(connection, loser, archived, NO_TRAFFIC, event=event, statistics=statistics)
            self._update(connection, winner, "active", FULL_TRAFFIC, event=event, statistics=statistics)
            self._check_invariants(connection, agent_id)
            return self._serving(connection, agent_id, lock=False)

    # ------------------------------------------- the seed's Prompt Manager API

    def insert_prompt(
        self,
        agent_id: str,
        prompt_text: str,
        status: str = "candidate",
        traffic: Decimal | float | str | None = None,
        *,
        source: str = "manual",
        details: Mapping[str, Any] | None = None,
    ) -> str:
        """Seed-compatible insert. A candidate starts an experiment (the active prompt takes the
        rest of the traffic); an active prompt is only inserted for an agent without one."""
        if status == "candidate":
            share = DEFAULT_CANDIDATE_TRAFFIC if traffic is None else traffic
            return self.start_experiment(agent_id, prompt_text, source=source, details=details, candidate_traffic=share).id
        if status == "active":
            if traffic is not None and as_traffic(traffic) != FULL_TRAFFIC:
                raise InvariantViolation("an agent's only active prompt serves all traffic (1.0)")
            if self.get_active_prompt(agent_id) is not None:
                raise InvariantViolation(f"agent {agent_id!r} already has an active prompt: promote a candidate instead")
            return self.bootstrap(agent_id, prompt_text, source=source).id
        if status in ("deprecated", "rolled_back"):
            if traffic is not None and as_traffic(traffic) != NO_TRAFFIC:
                raise InvariantViolation(f"a {status} prompt carries no traffic")
            _require_text(prompt_text)
            with write_transaction(self._scoped(agent_id)) as connection:
                prompt = self._insert(
                    connection, agent_id, prompt_text, status, NO_TRAFFIC,
                    source=source, parent_id=None, details=details, event="archive", statistics=None,
                )
            return prompt.id
        raise InvariantViolation(f"unknown status {status!r}; expected one of {', '.join(PROMPT_STATUSES)}")

    def update_prompt_traffic(self, prompt_id: str, traffic: Decimal | float | str) -> ServingState:
        """Set one serving prompt's share; the other arm of the experiment takes the rest."""
        prompt = self._require_prompt(prompt_id)
        share = as_traffic(traffic)
        candidate = self.get_candidate_prompt(prompt.agent_id)
        if prompt.status == "candidate":
            return self.step_traffic(prompt.agent_id, candidate_id=prompt.id, expected_traffic=prompt.traffic, new_traffic=share)
        if prompt.status == "active" and candidate is not None:
            return self.step_traffic(
                prompt.agent_id, candidate_id=candidate.id,
                expected_traffic=candidate.traffic, new_traffic=FULL_TRAFFIC - share,
            )
        if prompt.status == "active" and share == FULL_TRAFFIC:
            return self.serving_state(prompt.agent_id)
        raise InvariantViolation(
            f"prompt {prompt_id} is {prompt.status}; without an experiment its traffic cannot become {share}"
        )

    def update_prompt_status(self, prompt_id: str, status: str) -> ServingState:
        """Seed-compatible status change, mapped onto the named transitions."""
        prompt = self._require_prompt(prompt_id)
        if status == prompt.status:
            return self.serving_state(prompt.agent_id)
        candidate = self.get_candidate_prompt(prompt.agent_id)
        if prompt.status == "candidate" and status == "active":
            return self.promote(prompt.agent_id, candidate_id=prompt.id)
        if prompt.status == "candidate" and status in ("rolled_back", "deprecated"):
            return self.rollback(prompt.agent_id, candidate_id=prompt.id)
        if prompt.status == "active" and status == "deprecated" and candidate is not None:
            return self.promote(prompt.agent_id, candidate_id=candidate.id)
        raise InvariantViolation(f"prompt {prompt_id} cannot go from {prompt.status} to {status}")

    def zero_out_all_except(self, agent_id: str, keep_prompt_ids: Iterable[str]) -> int:
        """Check that only the kept prompts carry traffic; returns how many prompts carry none.

        Archived prompts already hold 0 (the database refuses anything else), so this never has to
        write; a serving prompt outside ``keep_prompt_ids`` is an error, not something to zero silently.
        """
        keep = set(keep_prompt_ids)
        prompts = self.list_prompts(agent_id)
        stray = [p.id for p in prompts if p.id not in keep and p.status in SERVING_STATUSES]
        if stray:
            raise InvariantViolation(f"prompts {stray} still serve traffic; promote or roll back instead")
        return sum(1 for p in prompts if p.id not in keep)

    # --------------------------------------------------------------- internals

    def _require_prompt(self, prompt_id: str) -> Prompt:
        prompt = self.get_prompt(prompt_id)
        if prompt is None:
            raise NoActivePrompt(f"no prompt with id {prompt_id!r}")
        return prompt

    @staticmethod
    def _serving(connection: sa.Connection, agent_id: str, *, lock: bool) -> ServingState:
        query = sa.select(agent_prompts).where(
            agent_prompts.c.agent_id == agent_id,
            agent_prompts.c.status.in_(SERVING_STATUSES),
        )
        if lock:
            query = query.with_for_update()
        by_status = {row["status"]: Prompt.from_row(row) for row in connection.execute(query).mappings()}
        return ServingState(active=by_status.get("active"), candidate=by_status.get("candidate"))

    def _locked_experiment(
        self, connection: sa.Connection, agent_id: str, candidate_id: str, expected: Decimal | None
    ) -> ServingState:
        state = self._serving(connection, agent_id, lock=True)
        if state.candidate is None:
            raise NoExperiment(f"agent {agent_id!r} has no running experiment (candidate {candidate_id} is gone)")
        if state.candidate.id != candidate_id:
            raise StaleTransition(f"agent {agent_id!r}: the running candidate is {state.candidate.id}, not {candidate_id}")
        if expected is not None and state.candidate.traffic != expected:
            raise StaleTransition(
                f"agent {agent_id!r}: candidate traffic is {state.candidate.traffic}, not the expected {expected}"
            )
        if state.active is None:
            raise InvariantViolation(f"agent {agent_id!r} has a candidate but no active prompt")
        return state

    def _insert(
        self,
        connection: sa.Connection,
        agent_id: str,
        prompt_text: str,
        status: str,
        traffic: Decimal,
        *,
        source: str,
        parent_id: str | None,
        details: Mapping[str, Any] | None,
        event: str,
        statistics: Mapping[str, Any] | None,
    ) -> Prompt:
        now = self._clock()
        row = {
            "id": str(uuid.uuid4()),
            "agent_id": agent_id,
            "prompt_text": prompt_text,
            "status": status,
            "traffic": traffic,
            "parent_id": parent_id,
            "source": source,
            "details": _jsonable(dict(details)) if details is not None else None,
            "created_at": now,
            "updated_at": now,
        }
        connection.execute(agent_prompts.insert().values(**row))
        self._audit(connection, row["id"], agent_id, event, None, status, None, traffic, statistics, now)
        return Prompt.from_row(row)

    def _update(
        self,
        connection: sa.Connection,
        prompt: Prompt,
        status: str,
        traffic: Decimal,
        *,
        event: str,
        statistics: Mapping[str, Any] | None,
    ) -> None:
        if prompt.status == status and prompt.traffic == traffic:
            return
        now = self._clock()
        connection.execute(
            agent_prompts.update()
            .where(agent_prompts.c.id == prompt.id)
            .values(status=status, traffic=traffic, updated_at=now)
        )
        self._audit(connection, prompt.id, prompt.agent_id, event, prompt.status, status, prompt.traffic, traffic, statistics, now)

    @staticmethod
    def _audit(connection, prompt_id, agent_id, event, from_status, to_status, from_traffic, to_traffic, statistics, now):
        connection.execute(
            prompt_events.insert().values(
                agent_id=agent_id,
                prompt_id=prompt_id,
                event=event,
                from_status=from_status,
                to_status=to_status,
                from_traffic=from_traffic,
                to_traffic=to_traffic,
                details=_jsonable(dict(statistics)) if statistics else None,
                created_at=now,
            )
        )

    @classmethod
    def _check_invariants(cls, connection: sa.Connection, agent_id: str) -> None:
        """The commit-time rule, checked before commit on every database (PostgreSQL's deferred
        trigger checks it again; SQLite has nothing else that would)."""
        state = cls._serving(connection, agent_id, lock=False)
        if state.candidate is not None and state.active is None:
            raise InvariantViolation(f"agent {agent_id!r}: a candidate prompt needs an active prompt")
        if state.active is None:
            return
        total = state.active.traffic + (state.candidate.traffic if state.candidate else NO_TRAFFIC)
        if total != FULL_TRAFFIC:
            raise InvariantViolation(f"agent {agent_id!r}: active + candidate traffic would be {total}, not 1")


    # ------------------------------------------- canary holdback (issue 15; owner: CANARY)
    # After a promotion with a holdback the old active prompt stays as the agent's candidate row
    # at the holdback share: the one-active / one-candidate indexes and the traffic-sum rule hold
    # throughout, and the phase is the candidate's last audit event ("holdback_start").

    def promote_with_holdback(
        self,
        agent_id: str,
        *,
        candidate_id: str,
        holdback_share: Decimal | float | str,
        expected_traffic: Decimal | float | str | None = None,
        statistics: Mapping[str, Any] | None = None,
    ) -> ServingState:
        """The candidate becomes active at 1 - holdback_share; the old active is held back as the
        candidate at holdback_share. One transaction, audited as 'promote' and 'holdback_start'."""
        share = as_traffic(holdback_share)
        if not NO_TRAFFIC < share < FULL_TRAFFIC:
            raise InvariantViolation(f"a holdback share must be strictly between 0 and 1, got {share}")
        expected = None if expected_traffic is None else as_traffic(expected_traffic)
        with write_transaction(self._scoped(agent_id)) as connection:
            state = self._locked_experiment(connection, agent_id, candidate_id, expected)
            old, new = state.active, state.candidate
            now = self._clock()
            # The old active leaves the active slot first (the indexes are checked per statement);
            # its net change, active -> candidate, is what the audit records.
            connection.execute(
                agent_prompts.update().where(agent_prompts.c.id == old.id).values(status="deprecated", traffic=NO_TRAFFIC, updated_at=now)
            )
            self._update(connection, new, "active", FULL_TRAFFIC - share, event="promote", statistics=statistics)
            connection.execute(
                agent_prompts.update().where(agent_prompts.c.id == old.id).values(status="candidate", traffic=share, updated_at=now)
            )
            self._audit(connection, old.id, agent_id, "holdback_start", old.status, "candidate", old.traffic, share, statistics, now)
            self._check_invariants(connection, agent_id)
            return self._serving(connection, agent_id, lock=False)

    def end_holdback(
        self,
        agent_id: str,
        *,
        held_back_id: str,
        revert: bool,
        expected_traffic: Decimal | float | str | None = None,
        statistics: Mapping[str, Any] | None = None,
    ) -> ServingState:
        """End a holdback in one transaction: ``revert`` brings the held-back prompt back as the
        active at 100 % and rolls the promoted one back; otherwise the held-back prompt is
        deprecated and the promoted one serves 100 %."""
        expected = None if expected_traffic is None else as_traffic(expected_traffic)
        event = "holdback_revert" if revert else "holdback_conclude"
        with write_transaction(self._scoped(agent_id)) as connection:
            state = self._locked_experiment(connection, agent_id, held_back_id, expected)
            held_back, promoted = state.candidate, state.active
            if revert:
                self._update(connection, promoted, "rolled_back", NO_TRAFFIC, event=event, statistics=statistics)
                self._update(connection, held_back, "active", FULL_TRAFFIC, event=event, statistics=statistics)
            else:
                self._update(connection, held_back, "deprecated", NO_TRAFFIC, event=event, statistics=statistics)
                self._update(connection, promoted, "active", FULL_TRAFFIC, event=event, statistics=statistics)
            self._check_invariants(connection, agent_id)
            return self._serving(connection, agent_id, lock=False)

def _require_text(prompt_text: str) -> None:
    if not isinstance(prompt_text, str) or not prompt_text.strip():
        raise InvariantViolation("a prompt needs non-empty text")

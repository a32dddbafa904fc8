"""What "the prompt state is whole" means, checked straight from the tables.

Used after crashes, connection cuts and load: the invariants of ``agent_prompts`` and the
agreement of the append-only audit table ``prompt_events`` with it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa

from bindu_runtime import PromptStore
from bindu_runtime.schema import agent_prompts, prompt_events

SERVING = ("active", "candidate")


def _traffic(value) -> Decimal | None:
    return None if value is None else Decimal(value).quantize(Decimal("0.0001"))


def prompt_rows(engine: sa.Engine, agent: str) -> list[dict]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(agent_prompts).where(agent_prompts.c.agent_id == agent).order_by(agent_prompts.c.created_at)
        ).mappings().all()
    return [{**row, "traffic": _traffic(row["traffic"])} for row in rows]


def event_rows(engine: sa.Engine, agent: str) -> list[dict]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(prompt_events).where(prompt_events.c.agent_id == agent).order_by(prompt_events.c.id)
        ).mappings().all()
    return [
        {**row, "from_traffic": _traffic(row["from_traffic"]), "to_traffic": _traffic(row["to_traffic"])}
        for row in rows
    ]


def state_violations(engine: sa.Engine, agent: str) -> list[str]:
    """Every way the agent's prompt rows and audit rows break the invariants; empty when whole.

    - an agent with prompts has exactly one active, at most one candidate, active + candidate
      traffic exactly 1, archived prompts at 0;
    - every prompt has audit events, the latest one's to_status/to_traffic equals the row, each
      event starts where the previous event of that prompt ended, and no event names a missing prompt.
    """
    rows = prompt_rows(engine, agent)
    events = event_rows(engine, agent)
    problems: list[str] = []
    if rows:
        statuses = [row["status"] for row in rows]
        if statuses.count("active") != 1:
            problems.append(f"{statuses.count('active')} active prompts")
        if statuses.count("candidate") > 1:
            problems.append(f"{statuses.count('candidate')} candidate prompts")
        total = sum(row["traffic"] for row in rows if row["status"] in SERVING)
        if total != Decimal("1"):
            problems.append(f"active + candidate traffic is {total}")
        problems += [f"archived prompt {row['id']} has traffic {row['traffic']}" for row in rows
                     if row["status"] not in SERVING and row["traffic"] != 0]
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        by_prompt[event["prompt_id"]].append(event)
    known = {row["id"] for row in rows}
    problems += [f"audit events for missing prompt {prompt_id}" for prompt_id in by_prompt if prompt_id not in known]
    for row in rows:
        history = by_prompt.get(row["id"], [])
        if not history:
            problems.append(f"prompt {row['id']} has no audit event")
            continue
        latest = history[-1]
        if (latest["to_status"], latest["to_traffic"]) != (row["status"], row["traffic"]):
            problems.append(
                f"prompt {row['id']} is {row['status']}@{row['traffic']} but its latest event says "
                f"{latest['to_status']}@{latest['to_traffic']}"
            )
        if (history[0]["from_status"], history[0]["from_traffic"]) != (None, None):
            problems.append(f"prompt {row['id']}'s first event does not start from nothing")
        for before, after in zip(history, history[1:]):
            if (after["from_status"], after["from_traffic"]) != (before["to_status"], before["to_traffic"]):
                problems.append(f"prompt {row['id']}: event {after['id']} does not start where event {before['id']} ended")
    return problems


def state_signature(engine: sa.Engine, agent: str) -> tuple:
    """The agent's state without ids and clocks: what must be identical to "before" or to "after"."""
    rows = prompt_rows(engine, agent)
    text_of = {row["id"]: row["prompt_text"] for row in rows}
    return (
        tuple(sorted((row["prompt_text"], row["status"], row["traffic"]) for row in rows)),
        tuple(
            (text_of.get(e["prompt_id"], "<missing>"), e["event"], e["from_status"], e["to_status"],
             e["from_traffic"], e["to_traffic"])
            for e in event_rows(engine, agent)
        ),
    )


def wait_until(condition, timeout: float = 10.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


# The five transitions of PromptStore, each with the state it starts from and the one that follows it.
@dataclass(frozen=True)
class Transition:
    setup: Callable[[PromptStore, str], dict]
    act: Callable[[PromptStore, str, dict], object]
    follow_up: Callable[[PromptStore, str], object]  # the next transition once ``act`` is applied


def _experiment(store: PromptStore, agent: str) -> dict:
    store.bootstrap(agent, "v1")
    return {"candidate_id": store.start_experiment(agent, "v2", source="crash-test").id}


TRANSITIONS = {
    "bootstrap": Transition(
        setup=lambda store, agent: {},
        act=lambda store, agent, ctx: store.bootstrap(agent, "v1"),
        follow_up=lambda store, agent: store.start_experiment(agent, "v2", source="crash-test"),
    ),
    "start_experiment": Transition(
        setup=lambda store, agent: {"active_id": store.bootstrap(agent, "v1").id},
        act=lambda store, agent, ctx: store.start_experiment(
            agent, "v2", source="crash-test", parent_id=ctx["active_id"], candidate_traffic="0.1",
            statistics={"reason": "crash test"},
        ),
        follow_up=lambda store, agent: store.step_traffic(
            agent, candidate_id=store.get_candidate_prompt(agent).id, expected_traffic="0.1", new_traffic="0.2"
        ),
    ),
    "step_traffic": Transition(
        setup=_experiment,
        act=lambda store, agent, ctx: store.step_traffic(
            agent, candidate_id=ctx["candidate_id"], expected_traffic="0.1", new_traffic="0.2",
            statistics={"p": 0.01},
        ),
        follow_up=lambda store, agent: store.promote(agent, candidate_id=store.get_candidate_prompt(agent).id),
    ),
    "promote": Transition(
        setup=_experiment,
        act=lambda store, agent, ctx: store.promote(agent, candidate_id=ctx["candidate_id"], expected_traffic="0.1"),
        follow_up=lambda store, agent: store.start_experiment(agent, "v3", source="crash-test"),
    ),
    "rollback": Transition(
        setup=_experiment,
        act=lambda store, agent, ctx: store.rollback(agent, candidate_id=ctx["candidate_id"], expected_traffic="0.1"),
        follow_up=lambda store, agent: store.start_experiment(agent, "v3", source="crash-test"),
    ),
}

"""router.bindu_handler: the one-parameter handler bindufy requires, keyed by the conversation,
stamping the task, for every kind of function Bindu accepts."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa

from bindu_runtime import PromptRouter, PromptStore
from bindu_runtime.bindu_adapter import call_ids
from bindu_runtime.router import unit_of
from bindu_runtime.schema import tasks
from tests.runtime.test_feedback import make_task

BINDU_SYSTEM = {"role": "system", "content": "Bindu's structured-response instructions"}


def bindu_messages(task_id, context_id, *, camel: bool = False) -> list[dict]:
    ids = {"taskId": str(task_id), "contextId": str(context_id)} if camel else {"task_id": str(task_id), "context_id": str(context_id)}
    return [BINDU_SYSTEM, {"kind": "message", "role": "user", "parts": [{"kind": "text", "text": "hi"}], "message_id": "m1", **ids}]


@pytest.fixture
def router(engine):
    store = PromptStore(engine)
    store.bootstrap("bot", "active prompt")
    store.start_experiment("bot", "candidate prompt", source="simba", candidate_traffic="0.5")
    with PromptRouter(engine, agent_id="bot", default_prompt="code prompt", start=False) as router:
        router.refresh()
        yield router


def stamped(engine, task_id) -> tuple[str | None, str | None]:
    with engine.connect() as connection:
        row = connection.execute(sa.select(tasks.c.prompt_id, tasks.c.prompt_unit).where(tasks.c.id == task_id)).one()
    return row.prompt_id, row.prompt_unit


def test_handler_has_the_one_parameter_bindufy_requires(router):
    def agent(messages, system_prompt):
        """The agent's description."""
        return system_prompt

    handler = router.bindu_handler(agent)
    assert list(inspect.signature(handler).parameters) == ["messages"]
    assert handler.__name__ == "agent" and inspect.getdoc(handler) == "The agent's description."
    assert not inspect.iscoroutinefunction(handler)


@pytest.mark.parametrize("camel", [False, True])
def test_handler_selects_by_context_stamps_the_task_and_passes_messages_unchanged(engine, router, camel):
    seen = []

    def agent(messages, system_prompt):
        seen.append((messages, system_prompt))
        return f"reply under {system_prompt}"

    handler = router.bindu_handler(agent)
    context_id = uuid.uuid4()
    task_ids = [make_task(engine, context_id=context_id) for _ in range(5)]
    replies = [handler(bindu_messages(task_id, context_id, camel=camel)) for task_id in task_ids]
    expected = router.select(str(context_id))
    assert replies == [f"reply under {expected.text}"] * 5  # one conversation, one arm
    assert seen[0][0] == bindu_messages(task_ids[0], context_id, camel=camel)  # Bindu's system message kept, first
    assert router.flush_stamps()
    assert {stamped(engine, task_id) for task_id in task_ids} == {(expected.prompt_id, unit_of(str(context_id)))}


def test_conversations_split_between_the_arms(engine, router):
    handler = router.bindu_handler(lambda messages, system_prompt: system_prompt)
    served = [handler(bindu_messages(uuid.uuid4(), uuid.uuid4())) for _ in range(400)]
    assert 0.4 < served.count("candidate prompt") / len(served) < 0.6


def test_async_and_streaming_functions_give_handlers_of_their_kind(engine, router):
    async def coroutine_agent(messages, system_prompt):
        await asyncio.sleep(0)
        return system_prompt

    def generator_agent(messages, system_prompt):
        yield "a"
        yield system_prompt

    async def async_generator_agent(messages, system_prompt):
        yield system_prompt

    async def drain(stream):
        return [chunk async for chunk in stream]

    context_id = uuid.uuid4()
    expected = router.select(str(context_id)).text
    handlers = {name: router.bindu_handler(fn) for name, fn in
                [("coroutine", coroutine_agent), ("generator", generator_agent), ("async_generator", async_generator_agent)]}
    for handler in handlers.values():
        assert list(inspect.signature(handler).parameters) == ["messages"]
    assert inspect.iscoroutinefunction(handlers["coroutine"])
    assert inspect.isgeneratorfunction(handlers["generator"])
    assert inspect.isasyncgenfunction(handlers["async_generator"])
    task_ids = [make_task(engine, context_id=context_id) for _ in range(3)]
    assert asyncio.run(handlers["coroutine"](bindu_messages(task_ids[0], context_id))) == expected
    assert list(handlers["generator"](bindu_messages(task_ids[1], context_id))) == ["a", expected]
    assert asyncio.run(drain(handlers["async_generator"](bindu_messages(task_ids[2], context_id)))) == [expected]
    assert router.flush_stamps() and router.status()["stamps_written"] == 3


@pytest.mark.parametrize("messages", [[], None, [BINDU_SYSTEM], ["not a mapping"], [{"context_id": None, "task_id": None}], 42])
def test_odd_message_lists_are_served_without_a_key_or_stamp(router, messages):
    handler = router.bindu_handler(lambda messages, system_prompt: system_prompt)
    assert handler(messages) in {"active prompt", "candidate prompt"}
    assert call_ids(messages) == (None, None)
    assert router.status()["stamps_pending"] == 0


def test_importing_the_adapter_needs_no_bindu():
    code = ("import sys, bindu_runtime.bindu_adapter, bindu_runtime.router; "
            "assert 'bindu' not in sys.modules, 'bindu imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

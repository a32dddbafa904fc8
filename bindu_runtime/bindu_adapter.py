"""A ``bindufy`` handler around a function that also takes the router's system prompt.

Bindu (``bindu.penguin.bindufy``) calls its handler with exactly one parameter named ``messages``
and accepts plain, coroutine, generator and async-generator functions. ``bindu_handler(router, fn)``
returns such a handler, of the same kind as ``fn``. Per call it reads the ids Bindu puts on every
message: the key is the last message's ``context_id`` (a conversation stays on one arm), the task
is the last message's ``task_id`` (camelCase ``contextId``/``taskId`` are accepted too). It
selects the prompt, queues the stamp (never blocking or failing the request) and returns
``fn(messages, system_prompt)``.

How our system prompt and Bindu's combine: ``messages`` reaches ``fn`` exactly as Bindu built it.
Bindu usually puts its own structured-response system message first (``messages[0]``, role
``system``, no ids; turned off by the manifest's ``enable_system_message``). Our prompt is passed
separately and ``fn`` decides. The usual choice puts ours first and keeps Bindu's instructions
after it::

    [{"role": "system", "content": system_prompt}, *messages]

or replaces Bindu's with ours: ``[system, *(m for m in messages if m.get("role") != "system")]``.
The prompt being trained is ours alone; Bindu's message is the same on every arm, so the canary's
comparison is unaffected by either choice.

Importing this module needs no ``bindu`` install.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol

CONTEXT_ID_FIELDS = ("context_id", "contextId")
TASK_ID_FIELDS = ("task_id", "taskId")


class _Router(Protocol):
    def select(self, key: Any = None) -> Any: ...

    def stamp_task(self, task_id: Any, choice: Any, key: Any = None) -> None: ...


def _first_present(message: Mapping, names: tuple[str, ...]) -> Any:
    for name in names:
        value = message.get(name)
        if value is not None:
            return value
    return None


def call_ids(messages: Any) -> tuple[Any, Any]:
    """(key, task_id) of one Bindu call: the last message's context and task ids, None when
    absent. Never raises: an odd message list is served like a call without ids."""
    try:
        last = messages[-1] if messages else None
        if isinstance(last, Mapping):
            return _first_present(last, CONTEXT_ID_FIELDS), _first_present(last, TASK_ID_FIELDS)
    except Exception:
        pass
    return None, None


def serve_call(router: _Router, messages: Any) -> str:
    """Select the prompt for one Bindu call and queue its stamp; the system prompt's text."""
    key, task_id = call_ids(messages)
    choice = router.select(key)
    if task_id is not None:
        router.stamp_task(task_id, choice, key=key)
    return choice.text


def bindu_handler(router: _Router, fn: Callable) -> Callable:
    """``fn(messages, system_prompt)`` as a handler whose only parameter is ``messages``."""
    if inspect.isasyncgenfunction(fn):
        async def handler(messages):
            async for chunk in fn(messages, serve_call(router, messages)):
                yield chunk
    elif inspect.iscoroutinefunction(fn):
        async def handler(messages):
            return await fn(messages, serve_call(router, messages))
    elif inspect.isgeneratorfunction(fn):
        def handler(messages):
            yield from fn(messages, serve_call(router, messages))
    else:
        def handler(messages):
            return fn(messages, serve_call(router, messages))
    # Not functools.wraps: its __wrapped__ would make inspect.signature report fn's two
    # parameters, and bindufy checks for exactly one, named ``messages``. Bindu names the agent
    # and describes it from the handler's name and docstring, so those are fn's.
    for attribute in ("__name__", "__qualname__", "__doc__", "__module__"):
        try:
            setattr(handler, attribute, getattr(fn, attribute))
        except (AttributeError, TypeError):
            pass
    return handler

"""Parsing a task's ``history`` (A2A / Bindu messages) into clean conversation turns.

A message is ``{"role": "user"|"assistant"|"agent"|"system", "parts": [{"kind": "text", "text": ...}, ...]}``.
Bindu stores agent replies as ``assistant``; A2A says ``agent``: both are agent turns. Only text
parts carry training text (file and data parts are skipped). System messages are not turns.
Consecutive messages of one role are merged (an agent that answers in two messages gave one
answer), so turns strictly alternate user -> assistant.

Nothing here raises on bad data: every malformed message is skipped and counted with a reason,
and a task that cannot be used at all gets one task-level reason.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from orjson import loads  # 2-3x faster than the standard library's json

DEFAULT_MAX_MESSAGE_CHARS = 20_000

USER = "user"
ASSISTANT = "assistant"
_ROLE_ALIASES = {"user": USER, "assistant": ASSISTANT, "agent": ASSISTANT}
_IGNORED_ROLES = frozenset({"system"})

# Task-level drop reasons.
HISTORY_NOT_LIST = "history_not_list"
MESSAGE_TOO_LONG = "message_too_long"
NO_TEXT_MESSAGES = "no_text_messages"
NO_COMPLETE_TURN = "no_user_agent_turn"

# Message-level reasons (the message is skipped, the task may still be used).
MESSAGE_NOT_OBJECT = "message_not_object"
MESSAGE_WITHOUT_ROLE = "message_without_role"
MESSAGE_UNKNOWN_ROLE = "message_unknown_role"
MESSAGE_WITHOUT_PARTS = "message_without_parts"
MESSAGE_NO_TEXT = "message_without_text"


class ParsedHistory(NamedTuple):
    """Clean messages (``{"role", "content"}``, roles user/assistant) and what was skipped."""

    messages: list[dict[str, str]]
    message_drops: dict[str, int]
    drop_reason: str | None


def decode_history(history: Any) -> list | None:
    """The history as a list, decoding JSON text once if a driver handed back a string."""
    if isinstance(history, (str, bytes)):
        try:
            history = loads(history)
        except ValueError:
            return None
    return history if isinstance(history, list) else None


def message_text(message: dict) -> str | None:
    """Concatenated text of a message's text parts, ``None`` if it has no usable parts list."""
    parts = message.get("parts")
    if not isinstance(parts, list):
        content = message.get("content")  # older clients: plain "content" string
        return content if isinstance(content, str) else None
    if len(parts) == 1 and isinstance(parts[0], dict):
        # The usual message, one part: no list to build and join.
        text = parts[0].get("text")
        return text if isinstance(text, str) and parts[0].get("kind", "text") == "text" else ""
    texts = []
    for part in parts:
        if isinstance(part, dict):
            text = part.get("text")
            if isinstance(text, str) and part.get("kind", "text") == "text":
                texts.append(text)
    return "\n".join(texts)


def parse_history(history: Any, max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS) -> ParsedHistory:
    """Parse one task's history; see the module docstring for the rules."""
    items = decode_history(history)
    if items is None:
        return ParsedHistory([], {}, HISTORY_NOT_LIST)
    drops: dict[str, int] = {}
    messages: list[dict[str, str]] = []
    last: dict[str, str] | None = None
    for item in items:
        if not isinstance(item, dict):
            drops[MESSAGE_NOT_OBJECT] = drops.get(MESSAGE_NOT_OBJECT, 0) + 1
            continue
        raw_role = item.get("role")
        # Well-formed roles are looked up directly; anything else takes the tolerant path.
        role = _ROLE_ALIASES.get(raw_role) if raw_role.__class__ is str else None
        if role is None:
            if not isinstance(raw_role, str) or not raw_role.strip():
                drops[MESSAGE_WITHOUT_ROLE] = drops.get(MESSAGE_WITHOUT_ROLE, 0) + 1
                continue
            role_key = raw_role.strip().lower()
            role = _ROLE_ALIASES.get(role_key)
            if role is None:
                if role_key not in _IGNORED_ROLES:
                    drops[MESSAGE_UNKNOWN_ROLE] = drops.get(MESSAGE_UNKNOWN_ROLE, 0) + 1
                continue
        text = message_text(item)
        if text is None:
            drops[MESSAGE_WITHOUT_PARTS] = drops.get(MESSAGE_WITHOUT_PARTS, 0) + 1
            continue
        text = text.strip()
        if not text:
            drops[MESSAGE_NO_TEXT] = drops.get(MESSAGE_NO_TEXT, 0) + 1
            continue
        if len(text) > max_message_chars:
            # A truncated message would teach a wrong answer; one this size is a paste or a dump.
            return ParsedHistory([], drops, MESSAGE_TOO_LONG)
        if last is not None and last["role"] == role:
            last["content"] += "\n\n" + text
        else:
            last = {"role": role, "content": text}
            messages.append(last)
    if not messages:
        return ParsedHistory([], drops, NO_TEXT_MESSAGES)
    return ParsedHistory(messages, drops, None)


def clean_messages(history: Any, max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS) -> list[dict[str, str]]:
    """Seed API: the history's valid messages as ``{"role", "content"}`` dicts (empty if unusable)."""
    return parse_history(history, max_message_chars).messages


def parse_turns(messages: list[dict[str, str]]) -> list[tuple[str, str]]:
    """(user, agent) pairs from clean messages: each user message with the reply that follows it."""
    turns: list[tuple[str, str]] = []
    pending_user: str | None = None
    for message in messages:
        role = message["role"]
        if role == USER:
            pending_user = message["content"]
        elif role == ASSISTANT and pending_user is not None:
            turns.append((pending_user, message["content"]))
            pending_user = None
    return turns


def join_context_histories(histories: list[Any]) -> list:
    """One conversation from the histories of a context's tasks, oldest first.

    Messages that appear in more than one task (A2A clients may resend earlier messages)
    are kept once, by ``message_id``.
    """
    seen: set[str] = set()
    joined: list = []
    for history in histories:
        items = decode_history(history)
        if items is None:
            continue
        for item in items:
            message_id = item.get("message_id") if isinstance(item, dict) else None
            if isinstance(message_id, str):
                if message_id in seen:
                    continue
                seen.add(message_id)
            joined.append(item)
    return joined

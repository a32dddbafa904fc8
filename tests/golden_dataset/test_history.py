import json

from hypothesis import given
from hypothesis import strategies as st

from bindu_pipelines.golden_dataset.history import (
    HISTORY_NOT_LIST,
    MESSAGE_NO_TEXT,
    MESSAGE_NOT_OBJECT,
    MESSAGE_TOO_LONG,
    MESSAGE_UNKNOWN_ROLE,
    MESSAGE_WITHOUT_PARTS,
    MESSAGE_WITHOUT_ROLE,
    NO_TEXT_MESSAGES,
    join_context_histories,
    parse_history,
    parse_turns,
)

from .helpers import agent, msg, user


def test_only_text_parts_are_training_text():
    history = [
        msg("user", "look at this", extra_parts=[{"kind": "file", "file": {"uri": "x"}}, {"kind": "data", "data": {"a": 1}}]),
        msg("agent", "first", "second"),
    ]
    parsed = parse_history(history)
    assert parsed.messages == [
        {"role": "user", "content": "look at this"},
        {"role": "assistant", "content": "first\nsecond"},
    ]
    assert parsed.drop_reason is None


def test_malformed_messages_are_skipped_and_counted():
    history = [
        "not a message",
        {"parts": [{"kind": "text", "text": "no role"}]},
        {"role": "user"},
        {"role": "tool", "parts": [{"kind": "text", "text": "?"}]},
        {"role": "user", "parts": [{"kind": "file", "file": {}}]},
        {"role": 5, "parts": []},
        user("real question"),
        agent("real answer"),
    ]
    parsed = parse_history(history)
    assert parsed.messages == [{"role": "user", "content": "real question"}, {"role": "assistant", "content": "real answer"}]
    assert parsed.message_drops == {
        MESSAGE_NOT_OBJECT: 1,
        MESSAGE_WITHOUT_ROLE: 2,
        MESSAGE_WITHOUT_PARTS: 1,
        MESSAGE_UNKNOWN_ROLE: 1,
        MESSAGE_NO_TEXT: 1,
    }


def test_task_level_reasons():
    assert parse_history({"role": "user"}).drop_reason == HISTORY_NOT_LIST
    assert parse_history(None).drop_reason == HISTORY_NOT_LIST
    assert parse_history("{oops").drop_reason == HISTORY_NOT_LIST
    assert parse_history([msg("user", extra_parts=[{"kind": "file"}])]).drop_reason == NO_TEXT_MESSAGES
    assert parse_history([user("x" * 20_001), agent("ok")]).drop_reason == MESSAGE_TOO_LONG
    assert parse_history([user("x" * 20_000), agent("ok")]).drop_reason is None
    # JSON text (a driver that does not decode) is decoded once.
    assert parse_history(json.dumps([user("a"), agent("b")])).messages[1]["content"] == "b"


def test_join_context_histories_keeps_each_message_once():
    first = [dict(user("q1"), message_id="m1"), dict(agent("a1"), message_id="m2")]
    second = [dict(user("q1"), message_id="m1"), dict(user("q2"), message_id="m3"), dict(agent("a2"), message_id="m4")]
    joined = join_context_histories([first, "broken", second])
    assert [m["message_id"] for m in joined] == ["m1", "m2", "m3", "m4"]
    assert parse_turns(parse_history(joined).messages) == [("q1", "a1"), ("q2", "a2")]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
message_like = st.fixed_dictionaries(
    {},
    optional={
        "role": st.one_of(st.sampled_from(["user", "assistant", "agent", "system", "USER", "tool", ""]), json_values),
        "parts": st.one_of(
            st.lists(
                st.one_of(
                    st.fixed_dictionaries({"kind": st.sampled_from(["text", "file", "data"]), "text": st.one_of(st.text(max_size=30), json_values)}),
                    json_values,
                ),
                max_size=3,
            ),
            json_values,
        ),
    },
)


@given(st.one_of(json_values, st.lists(st.one_of(message_like, json_values), max_size=8)))
def test_parsing_is_total_and_clean(history):
    parsed = parse_history(history, max_message_chars=25)
    assert (parsed.drop_reason is None) == bool(parsed.messages)
    for previous, current in zip(parsed.messages, parsed.messages[1:]):
        assert previous["role"] != current["role"]  # merged: roles alternate
    for message in parsed.messages:
        assert message["role"] in ("user", "assistant")
        assert message["content"] and message["content"] == message["content"].strip()
    for user_text, agent_text in parse_turns(parsed.messages):
        assert user_text and agent_text

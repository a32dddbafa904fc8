import pytest

from bindu_pipelines.golden_dataset import Interaction
from bindu_pipelines.golden_dataset.history import clean_messages
from bindu_pipelines.golden_dataset.strategies import (
    BaseExtractionStrategy,
    ContextWindowStrategy,
    FirstNTurnsStrategy,
    FullHistoryStrategy,
    KeyTurnsStrategy,
    LastNTurnsStrategy,
    LastTurnStrategy,
    SimilarityStrategy,
    SlidingWindowStrategy,
    SummaryContextStrategy,
    parse_strategy,
)

from .helpers import agent, conversation, msg, user

FOUR_TURNS = clean_messages(
    conversation(
        ("How do I install Python?", "Download it from python.org."),
        ("What is pip?", "Pip installs packages."),
        ("How do I make a virtual environment?", "Run python -m venv env."),
        ("How do I install packages into the virtual environment?", "Activate env, then pip install."),
    )
)


def pair(strategy, messages=FOUR_TURNS):
    interaction = strategy.extract("t1", messages, 0.75, "rating")
    return None if interaction is None else (interaction.user_input, interaction.agent_output)


def test_last_turn():
    assert pair(LastTurnStrategy()) == (
        "How do I install packages into the virtual environment?",
        "Activate env, then pip install.",
    )


def test_last_turn_keeps_id_and_feedback():
    interaction = LastTurnStrategy().extract("t1", FOUR_TURNS, 0.75, "rating")
    assert interaction == Interaction(
        id="t1",
        user_input="How do I install packages into the virtual environment?",
        agent_output="Activate env, then pip install.",
        feedback_score=0.75,
        feedback_type="rating",
    )


def test_full_history():
    messages = clean_messages(conversation(("Hi there", "Hello!"), ("Weather?", "Sunny.")))
    assert pair(FullHistoryStrategy(), messages) == (
        "Hi there",
        "Assistant: Hello!\nUser: Weather?\nAssistant: Sunny.",
    )
    assert pair(FullHistoryStrategy(max_chars=20), messages) is None


def test_last_n_turns():
    assert pair(LastNTurnsStrategy(n_turns=2)) == (
        "User: How do I make a virtual environment?\n"
        "Assistant: Run python -m venv env.\n\n"
        "User: How do I install packages into the virtual environment?",
        "Activate env, then pip install.",
    )
    assert pair(LastNTurnsStrategy(n_turns=1)) == pair(LastTurnStrategy())


def test_first_n_turns():
    assert pair(FirstNTurnsStrategy(n_turns=2)) == (
        "User: How do I install Python?\nAssistant: Download it from python.org.\n\nUser: What is pip?",
        "Pip installs packages.",
    )


def test_context_window_joins_user_messages_and_carries_system_prompt():
    interaction = ContextWindowStrategy(n_turns=2, system_prompt="Be brief.").extract("t1", FOUR_TURNS)
    assert interaction.user_input == (
        "How do I make a virtual environment?\n\nHow do I install packages into the virtual environment?"
    )
    assert interaction.agent_output == "Activate env, then pip install."
    assert interaction.system_prompt == "Be brief."
    numbered = ContextWindowStrategy(n_turns=4).extract("t1", FOUR_TURNS).user_input
    assert numbered.startswith("[Turn 1] How do I install Python?\n\n[Turn 2] What is pip?")


def test_similarity_picks_the_turn_closest_to_the_query():
    assert pair(SimilarityStrategy(query="what is pip")) == ("What is pip?", "Pip installs packages.")
    # Off-topic conversations give nothing when a minimum similarity is asked for.
    assert pair(SimilarityStrategy(query="tax return deadline", min_similarity=0.2)) is None


def test_similarity_without_query_uses_the_final_question():
    # Final question shares "virtual environment" with turn 3 most.
    assert pair(SimilarityStrategy(use_both_messages=False)) == (
        "How do I make a virtual environment?",
        "Run python -m venv env.",
    )


def test_key_turns_keeps_most_similar_in_order():
    assert pair(KeyTurnsStrategy(n_turns=2, use_both_messages=False)) == (
        "[Key context 1]\n"
        "User: How do I make a virtual environment?\n"
        "Assistant: Run python -m venv env.\n\n"
        "[Current query]\n"
        "User: How do I install packages into the virtual environment?",
        "Activate env, then pip install.",
    )


def test_sliding_window_all_windows():
    strategy = SlidingWindowStrategy(window_size=2, stride=1)
    windows = [(i.user_input, i.agent_output) for i in strategy.extract_all("t1", FOUR_TURNS)]
    assert windows == [
        ("How do I install Python?\n\nWhat is pip?", "Pip installs packages."),
        ("What is pip?\n\nHow do I make a virtual environment?", "Run python -m venv env."),
        (
            "How do I make a virtual environment?\n\nHow do I install packages into the virtual environment?",
            "Activate env, then pip install.",
        ),
    ]
    assert len(SlidingWindowStrategy(window_size=2, stride=2).extract_all("t1", FOUR_TURNS)) == 2
    assert len(SlidingWindowStrategy(window_size=2, stride=1, start_offset=1).extract_all("t1", FOUR_TURNS)) == 2
    assert pair(strategy) == windows[-1]


def test_summary_context():
    interaction = SummaryContextStrategy(summary_turns=2, recent_turns=2).extract("t1", FOUR_TURNS)
    assert interaction.user_input == (
        "[Previous conversation summary]\n"
        "- Turn 1: Asked: How do I install Python?; Answered: Download it from python.org.\n"
        "- Turn 2: Asked: What is pip?; Answered: Pip installs packages.\n\n"
        "[Recent conversation]\n"
        "User: How do I make a virtual environment?\n"
        "Assistant: Run python -m venv env.\n"
        "User: How do I install packages into the virtual environment?"
    )
    assert interaction.agent_output == "Activate env, then pip install."


def test_agent_role_and_merged_consecutive_messages():
    history = [
        user("first part"),
        user("second part"),
        msg("agent", "answer one"),
        msg("assistant", "answer two"),
        msg("system", "ignored"),
    ]
    assert pair(LastTurnStrategy(), clean_messages(history)) == (
        "first part\n\nsecond part",
        "answer one\n\nanswer two",
    )


def test_no_complete_turn_gives_nothing():
    only_user = clean_messages([user("hello?")])
    for strategy in (LastTurnStrategy(), LastNTurnsStrategy(2), ContextWindowStrategy(), KeyTurnsStrategy(),
                     SimilarityStrategy(), SummaryContextStrategy(), FirstNTurnsStrategy(2)):
        assert strategy.extract("t", only_user) is None, strategy
    assert SlidingWindowStrategy().extract_all("t", only_user) == []


@pytest.mark.parametrize(
    ("spec", "expected_type", "attrs"),
    [
        ("last_turn", LastTurnStrategy, {}),
        ("full_history:500", FullHistoryStrategy, {"max_chars": 500}),
        ("last_n:3", LastNTurnsStrategy, {"n_turns": 3}),
        ("last_n_turns:4", LastNTurnsStrategy, {"n_turns": 4}),
        ("first_n:2", FirstNTurnsStrategy, {"n_turns": 2}),
        ("context_window:2:Be helpful: and brief", ContextWindowStrategy, {"n_turns": 2, "system_prompt": "Be helpful: and brief"}),
        ("similarity:pip install:0.3", SimilarityStrategy, {"query": "pip install", "min_similarity": 0.3}),
        ("key_turns:4:weighted", KeyTurnsStrategy, {"n_turns": 4, "similarity_method": "weighted"}),
        ("sliding_window:3:2:1", SlidingWindowStrategy, {"window_size": 3, "stride": 2, "start_offset": 1}),
        ("summary_context:4:1", SummaryContextStrategy, {"summary_turns": 4, "recent_turns": 1}),
    ],
)
def test_parse_strategy(spec, expected_type, attrs):
    strategy = parse_strategy(spec)
    assert type(strategy) is expected_type
    for name, value in attrs.items():
        assert getattr(strategy, name) == value


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("best_turn", "unknown strategy 'best_turn'"),
        ("last_n:three", "n_turns must be an integer, got 'three'"),
        ("last_n:0", "n_turns must be a positive integer"),
        ("last_turn:1", "takes at most 0 argument"),
        ("sliding_window:2:1:0:9", "takes at most 3 argument"),
        ("key_turns:3:cosine", "unknown similarity method 'cosine'"),
        ("similarity:x:2", "min_similarity must be within 0..1"),
        ("", "non-empty string"),
    ],
)
def test_parse_strategy_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_strategy(spec)


def test_custom_strategy_through_base_class():
    class Shout(BaseExtractionStrategy):
        @property
        def name(self):
            return "shout"

        def extract(self, task_id, messages, feedback_score=None, feedback_type=None):
            return Interaction(id=task_id, user_input=messages[0]["content"], agent_output=messages[-1]["content"].upper())

    assert parse_strategy(Shout()).extract_all("t", clean_messages(conversation(("a b", "ok"))))[0].agent_output == "OK"


def test_similarity_with_a_caller_supplied_embedder():
    """An embedding function replaces word overlap (a toy one: does the text start with 'z'?)."""
    messages = clean_messages(conversation(("zzz", "Sleep well."), ("pizza please", "Ordered."), ("what is pip", "A package tool.")))
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return [[1.0, 0.0] if text.startswith("z") else [0.0, 1.0] for text in texts]

    chosen = SimilarityStrategy(query="zebra", embed=embed, use_both_messages=False).extract("t", messages)
    assert (chosen.user_input, chosen.agent_output) == ("zzz", "Sleep well.")
    assert calls == [["zebra", "zzz", "pizza please", "what is pip"]]
    # Word overlap finds no turn sharing a word with "zebra": all score 0 and the latest turn wins.
    assert SimilarityStrategy(query="zebra", use_both_messages=False).extract("t", messages).user_input == "what is pip"


@pytest.mark.parametrize("spec", ["last_turn", "full_history", "last_n:2", "first_n:2", "context_window:2:Be brief.",
                                  "similarity", "key_turns:2", "sliding_window:2", "summary_context:1:1"])
def test_extract_texts_are_the_texts_of_extract_all(spec):
    """The dataset pipeline's fast path gives exactly the texts of the seed's interactions."""
    from bindu_pipelines.golden_dataset.strategies import parse_strategy

    strategy = parse_strategy(spec)
    for messages in (FOUR_TURNS, FOUR_TURNS[:2], FOUR_TURNS[1:], [], clean_messages(conversation(("a b", "ok")))):
        expected = [(i.user_input, i.agent_output) for i in strategy.extract_all("t1", messages)]
        assert strategy.extract_texts("t1", messages) == expected

"""Extraction strategies: how a conversation becomes (user_input -> agent_output) examples.

All nine strategies of the seed, under the seed's class names, plus ``parse_strategy`` for the
CLI syntax ``name`` or ``name:arg[:arg]``:

=====================  ===============================================  ======================
spec                   meaning                                          class
=====================  ===============================================  ======================
last_turn              final user message -> its reply                  LastTurnStrategy
full_history[:CHARS]   first user message -> rest of the conversation   FullHistoryStrategy
last_n:N               last N turns, earlier ones as context            LastNTurnsStrategy
first_n:N              first N turns, earlier ones as context           FirstNTurnsStrategy
context_window:N[:SP]  user messages of last N turns (+ system prompt)  ContextWindowStrategy
similarity[:Q[:MIN[:M]]]  turn most similar to query Q                  SimilarityStrategy
key_turns:N[:M]        N turns most similar to the final one            KeyTurnsStrategy
sliding_window:W[:S[:O]]  every window of W turns, stride S, offset O   SlidingWindowStrategy
summary_context[:S[:R]]  S turns summarised + R recent turns            SummaryContextStrategy
=====================  ===============================================  ======================
"""

from __future__ import annotations

from typing import Any

from .base import BaseExtractionStrategy, parse_turns
from .similarity import (
    SIMILARITY_METHODS,
    KeyTurnsStrategy,
    SimilarityMethod,
    SimilarityStrategy,
    compute_similarity,
    jaccard_similarity,
    overlap_similarity,
    weighted_similarity,
)
from .turns import (
    ContextWindowStrategy,
    FirstNTurnsStrategy,
    FullHistoryStrategy,
    LastNTurnsStrategy,
    LastTurnStrategy,
)
from .windows import SlidingWindowStrategy, SummaryContextStrategy

STRATEGIES: dict[str, type[BaseExtractionStrategy]] = {
    "last_turn": LastTurnStrategy,
    "full_history": FullHistoryStrategy,
    "last_n": LastNTurnsStrategy,
    "first_n": FirstNTurnsStrategy,
    "context_window": ContextWindowStrategy,
    "similarity": SimilarityStrategy,
    "key_turns": KeyTurnsStrategy,
    "sliding_window": SlidingWindowStrategy,
    "summary_context": SummaryContextStrategy,
}
# The seed's registry spelled two of them out.
_ALIASES = {"last_n_turns": "last_n", "first_n_turns": "first_n"}

# Per strategy: (parameter name, converter) for each positional CLI argument.
_CLI_ARGS: dict[str, list[tuple[str, Any]]] = {
    "last_turn": [],
    "full_history": [("max_chars", int)],
    "last_n": [("n_turns", int)],
    "first_n": [("n_turns", int)],
    "context_window": [("n_turns", int), ("system_prompt", str)],
    "similarity": [("query", str), ("min_similarity", float), ("similarity_method", str)],
    "key_turns": [("n_turns", int), ("similarity_method", str)],
    "sliding_window": [("window_size", int), ("stride", int), ("start_offset", int)],
    "summary_context": [("summary_turns", int), ("recent_turns", int)],
}


def get_strategy(name: str, **kwargs: Any) -> BaseExtractionStrategy:
    """A strategy by name with keyword parameters (the seed's factory)."""
    key = _ALIASES.get(name, name)
    if key not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; available: {', '.join(STRATEGIES)}")
    return STRATEGIES[key](**kwargs)


def parse_strategy(spec: str | BaseExtractionStrategy | None) -> BaseExtractionStrategy:
    """A strategy from the CLI syntax ``name`` or ``name:arg[:arg]`` (``None`` -> last_turn).

    Raises ValueError naming the problem: unknown strategy, too many arguments, or an argument
    that is not a number where one is needed.
    """
    if spec is None:
        return LastTurnStrategy()
    if isinstance(spec, BaseExtractionStrategy):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"strategy must be a non-empty string like 'last_n:3', got {spec!r}")
    name, *raw_args = spec.strip().split(":")
    key = _ALIASES.get(name, name)
    if key not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r} in {spec!r}; available: {', '.join(STRATEGIES)}")
    params = _CLI_ARGS[key]
    if key == "context_window" and len(raw_args) > 2:
        # The system prompt is free text and may itself contain colons.
        raw_args = [raw_args[0], ":".join(raw_args[1:])]
    if len(raw_args) > len(params):
        usage = ":".join([key] + [p.upper() for p, _ in params])
        raise ValueError(f"strategy {spec!r} takes at most {len(params)} argument(s): {usage}")
    kwargs: dict[str, Any] = {}
    for (param, convert), raw in zip(params, raw_args):
        if raw == "" and convert is str:
            continue
        try:
            kwargs[param] = convert(raw)
        except ValueError:
            kind = "an integer" if convert is int else "a number"
            raise ValueError(f"strategy {spec!r}: {param} must be {kind}, got {raw!r}") from None
    try:
        return STRATEGIES[key](**kwargs)
    except ValueError as exc:
        raise ValueError(f"strategy {spec!r}: {exc}") from None


def strategy_spec(strategy: Any) -> str | None:
    """The CLI syntax (``last_n:3``) of a strategy name or of one of the nine strategy instances.

    A run's configuration is text, so an instance travels as its spec; the spec is checked to
    rebuild an equal strategy. A custom strategy class cannot run through Dagster: ValueError.
    """
    if strategy is None:
        return None
    if isinstance(strategy, str):
        parse_strategy(strategy)  # refused here, before any run starts
        return strategy.strip()
    if not isinstance(strategy, BaseExtractionStrategy):
        raise ValueError(f"strategy must be a strategy name like 'last_n:3' or a strategy instance, got {strategy!r}")
    key = next((name for name, cls in STRATEGIES.items() if type(strategy) is cls), None)
    if key is None:
        raise ValueError(
            f"custom strategy {type(strategy).__name__} cannot be sent to a Dagster run: use one of "
            f"{', '.join(STRATEGIES)} (or build_golden_dataset(strategy=…) in Python)"
        )
    params = [name for name, _ in _CLI_ARGS[key]]
    values = [getattr(strategy, name, None) for name in params]
    while values and values[-1] is None:
        values.pop()
    spec = ":".join([key, *("" if v is None else str(v) for v in values)])
    if vars(parse_strategy(spec)) != vars(strategy):
        raise ValueError(f"strategy {strategy!r} has settings the CLI syntax cannot carry ({spec!r})")
    return spec


__all__ = [
    "BaseExtractionStrategy",
    "ContextWindowStrategy",
    "FirstNTurnsStrategy",
    "FullHistoryStrategy",
    "KeyTurnsStrategy",
    "LastNTurnsStrategy",
    "LastTurnStrategy",
    "SIMILARITY_METHODS",
    "STRATEGIES",
    "SimilarityMethod",
    "SimilarityStrategy",
    "SlidingWindowStrategy",
    "SummaryContextStrategy",
    "compute_similarity",
    "get_strategy",
    "jaccard_similarity",
    "overlap_similarity",
    "parse_strategy",
    "parse_turns",
    "strategy_spec",
    "weighted_similarity",
]

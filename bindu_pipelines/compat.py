"""The seed's Python API in one import: ``from bindu_pipelines.compat import …`` replaces
``from bindu.dspy import …`` (and its submodules). Each name takes the seed's parameters plus the
agent it acts for; the README's API table maps every one of them.
"""

from bindu_pipelines.canary import (
    compare_metrics,
    ensure_system_stable,
    promote_step,
    rollback_step,
    run_canary_controller,
)
from bindu_pipelines.golden_dataset import (
    BaseExtractionStrategy,
    ContextWindowStrategy,
    FirstNTurnsStrategy,
    FullHistoryStrategy,
    Interaction,
    InteractionExtractor,
    KeyTurnsStrategy,
    LastNTurnsStrategy,
    LastTurnStrategy,
    SimilarityStrategy,
    SlidingWindowStrategy,
    SummaryContextStrategy,
    build_golden_dataset,
    clean_messages,
    convert_to_dspy_examples,
)
from bindu_pipelines.optimization import AgentProgram, AgentSignature, train, train_async
from bindu_runtime import PromptStore, select_prompt_with_canary

__all__ = [
    "AgentProgram",
    "AgentSignature",
    "BaseExtractionStrategy",
    "ContextWindowStrategy",
    "FirstNTurnsStrategy",
    "FullHistoryStrategy",
    "Interaction",
    "InteractionExtractor",
    "KeyTurnsStrategy",
    "LastNTurnsStrategy",
    "LastTurnStrategy",
    "PromptStore",
    "SimilarityStrategy",
    "SlidingWindowStrategy",
    "SummaryContextStrategy",
    "build_golden_dataset",
    "clean_messages",
    "compare_metrics",
    "convert_to_dspy_examples",
    "ensure_system_stable",
    "promote_step",
    "rollback_step",
    "run_canary_controller",
    "select_prompt_with_canary",
    "train",
    "train_async",
]

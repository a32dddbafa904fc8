"""Every name the seed README documents is importable from one place, with the seed's parameters."""

import inspect

import bindu_pipelines.compat as compat

SEED_NAMES = [
    "train", "train_async", "build_golden_dataset", "convert_to_dspy_examples", "BaseExtractionStrategy",
    "InteractionExtractor", "clean_messages", "select_prompt_with_canary", "run_canary_controller",
    "compare_metrics", "promote_step", "rollback_step", "ensure_system_stable", "LastTurnStrategy",
    "FullHistoryStrategy", "LastNTurnsStrategy", "FirstNTurnsStrategy", "ContextWindowStrategy",
    "SimilarityStrategy", "KeyTurnsStrategy", "SlidingWindowStrategy", "SummaryContextStrategy",
    "AgentSignature", "AgentProgram", "Interaction",
]
PROMPT_MANAGER = ["get_active_prompt", "get_candidate_prompt", "insert_prompt", "update_prompt_traffic",
                  "update_prompt_status", "zero_out_all_except"]


def test_seed_names_exist_with_the_seed_parameters():
    missing = [name for name in SEED_NAMES if not hasattr(compat, name)]
    assert missing == []
    assert {"optimizer", "strategy", "require_feedback"} <= set(inspect.signature(compat.train_async).parameters)
    assert inspect.iscoroutinefunction(compat.train_async) and inspect.iscoroutinefunction(compat.build_golden_dataset)
    assert {"limit", "strategy", "require_feedback", "min_feedback_threshold"} <= set(inspect.signature(compat.build_golden_dataset).parameters)
    assert inspect.iscoroutinefunction(compat.select_prompt_with_canary)
    assert all(callable(getattr(compat.PromptStore, name)) for name in PROMPT_MANAGER)

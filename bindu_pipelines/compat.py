"""The seed's Python API in one import: ``from bindu_pipelines.compat import …`` replaces
``from bindu.dspy import …`` (and its submodules). Each name takes the seed's parameters plus the
agent it acts for; the README's API table maps every one of them.
"""

from collections.abc import Callable
from typing import Any

import dspy.teleprompt as _dspy_teleprompt

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
    clean_messages,
    convert_to_dspy_examples,
)
from bindu_pipelines.golden_dataset import build_golden_dataset as _build_golden_dataset
from bindu_pipelines.optimization import AgentProgram, AgentSignature, train, train_async
from bindu_runtime import PromptStore, select_prompt_with_canary


async def build_golden_dataset(
    limit: int | None = None,
    strategy: BaseExtractionStrategy | str | None = None,
    require_feedback: bool = True,
    min_feedback_threshold: float = 0.0,
    *,
    agent_id: str,
    **options: Any,
) -> list[Interaction]:
    """The seed's ``build_golden_dataset(limit, strategy, require_feedback, min_feedback_threshold)``
    with its positional order, plus the agent (keyword); ``options`` as the pipeline's own
    ``build_golden_dataset`` (``engine``, ``database_url``, ``since``, ``until``, …)."""
    return await _build_golden_dataset(
        agent_id=agent_id, limit=limit, strategy=strategy, require_feedback=require_feedback,
        min_feedback_threshold=min_feedback_threshold, **options,
    )  # fmt: skip


def _pipeline_metric(example: Any, prediction: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None) -> float:
    """Placeholder for optimizers built the seed's way (``SIMBA()``): the training run always
    optimizes with its own metric, so this one is never called."""
    raise RuntimeError("the training run supplies the metric; this optimizer object only carries settings")


class SIMBA(_dspy_teleprompt.SIMBA):
    """DSPy's SIMBA that can be built the seed's way, ``SIMBA()``: the metric is the pipeline's."""

    def __init__(self, *, metric: Callable | None = None, **settings: Any):
        super().__init__(metric=metric or _pipeline_metric, **settings)


class GEPA(_dspy_teleprompt.GEPA):
    """DSPy's GEPA that can be built without a metric (the pipeline's is used)."""

    def __init__(self, metric: Callable | None = None, **settings: Any):
        if not any(settings.get(k) for k in ("auto", "max_full_evals", "max_metric_calls")):
            settings["max_full_evals"] = 5  # GEPA needs a budget; the training run's default
        if settings.get("reflection_lm") is None:
            # The training run reflects with the configured model (BINDU_LM); this object only carries settings.
            settings.setdefault("instruction_proposer", _pipeline_metric)
        super().__init__(metric or _pipeline_metric, **settings)


class MIPROv2(_dspy_teleprompt.MIPROv2):
    """DSPy's MIPROv2 that can be built without a metric (the pipeline's is used)."""

    def __init__(self, metric: Callable | None = None, **settings: Any):
        import dspy

        if dspy.settings.lm is None and not (settings.get("prompt_model") and settings.get("task_model")):
            # MIPROv2 insists on a model at construction; the training run uses the configured one.
            placeholder = dspy.LM("bindu/settings-only")
            settings.setdefault("prompt_model", placeholder)
            settings.setdefault("task_model", placeholder)
        super().__init__(metric or _pipeline_metric, **settings)

__all__ = [
    "AgentProgram",
    "AgentSignature",
    "BaseExtractionStrategy",
    "ContextWindowStrategy",
    "FirstNTurnsStrategy",
    "FullHistoryStrategy",
    "GEPA",
    "MIPROv2",
    "SIMBA",
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

"""SIMBA (default), GEPA and MIPROv2, set up so they run on the small datasets agents have.

All DSPy optimizer code lives here. Each optimizer gets the same metric (``metric.ReplyMetric``)
and runs inside the caller's ``dspy.context(lm=…)``. ``settings_for`` records what actually ran.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import dspy

from bindu_pipelines.names import OPTIMIZER_NAMES

from .program import AgentProgram

OptimizerName = Literal["simba", "gepa", "miprov2"]
OPTIMIZERS: tuple[str, ...] = OPTIMIZER_NAMES
MIN_TRAIN_EXAMPLES = 2


@dataclass(frozen=True)
class OptimizerConfig:
    """Knobs per optimizer. SIMBA's are the seed's (DSPy's) defaults, capped by the data size."""

    name: OptimizerName = "simba"
    seed: int = 0
    num_threads: int = 4
    # SIMBA (DSPy defaults: bsize 32, num_candidates 6, max_steps 8, max_demos 4)
    bsize: int = 32
    num_candidates: int = 6
    max_steps: int = 8
    max_demos: int = 4
    # GEPA: budget in full passes over the training split; the reflection LM runs at this temperature
    gepa_max_full_evals: int = 5
    gepa_reflection_temperature: float = 1.0
    # MIPROv2: explicit small search instead of auto="light" (which wants ~100 validation examples)
    mipro_num_candidates: int = 3
    mipro_num_trials: int = 6
    mipro_max_bootstrapped_demos: int = 2
    mipro_metric_threshold: float = 0.3

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; choose one of {', '.join(OPTIMIZERS)}")


def settings_for(config: OptimizerConfig, train_size: int) -> dict[str, Any]:
    """The settings that actually run for ``train_size`` examples (stored in the prompt details)."""
    if config.name == "simba":
        bsize = min(config.bsize, train_size)
        return {
            "optimizer": "simba",
            "bsize": bsize,
            "num_candidates": config.num_candidates,
            "max_steps": config.max_steps,
            "max_demos": config.max_demos,
            "seed": config.seed,
        }
    if config.name == "gepa":
        return {
            "optimizer": "gepa",
            "max_metric_calls": config.gepa_max_full_evals * train_size,
            "reflection_minibatch_size": min(3, train_size),
            "reflection_temperature": config.gepa_reflection_temperature,
            "seed": config.seed,
        }
    valset_size = max(1, int(train_size * 0.8))
    return {
        "optimizer": "miprov2",
        "auto": None,
        "num_candidates": config.mipro_num_candidates,
        "num_trials": config.mipro_num_trials,
        "max_bootstrapped_demos": config.mipro_max_bootstrapped_demos,
        "max_labeled_demos": 0,  # raw examples include poorly rated replies: never show them as demos
        "minibatch": valset_size > 35,
        "minibatch_size": min(35, valset_size),
        "metric_threshold": config.mipro_metric_threshold,
        "seed": config.seed,
    }


def optimize(
    program: AgentProgram,
    trainset: Sequence[dspy.Example],
    *,
    config: OptimizerConfig,
    metric: Callable[..., Any],
    lm: dspy.BaseLM,
) -> AgentProgram:
    """Run the chosen optimizer; returns the optimized program (the input is left untouched)."""
    trainset = list(trainset)
    if len(trainset) < MIN_TRAIN_EXAMPLES:
        raise ValueError(f"{config.name} needs at least {MIN_TRAIN_EXAMPLES} training examples, got {len(trainset)}")
    s = settings_for(config, len(trainset))
    if config.name == "simba":
        optimizer = dspy.SIMBA(
            metric=metric,
            bsize=s["bsize"],
            num_candidates=s["num_candidates"],
            max_steps=s["max_steps"],
            max_demos=s["max_demos"],
            prompt_model=lm,
            num_threads=config.num_threads,
        )
        return optimizer.compile(program, trainset=trainset, seed=config.seed)
    if config.name == "gepa":
        optimizer = dspy.GEPA(
            metric=metric,
            max_metric_calls=s["max_metric_calls"],
            reflection_minibatch_size=s["reflection_minibatch_size"],
            reflection_lm=lm.copy(temperature=config.gepa_reflection_temperature),
            num_threads=config.num_threads,
            seed=config.seed,
            track_stats=False,
        )
        return optimizer.compile(program, trainset=trainset)
    optimizer = dspy.MIPROv2(
        metric=metric,
        prompt_model=lm,
        task_model=lm,
        auto=None,
        num_candidates=s["num_candidates"],
        max_bootstrapped_demos=s["max_bootstrapped_demos"],
        max_labeled_demos=s["max_labeled_demos"],
        metric_threshold=s["metric_threshold"],
        num_threads=config.num_threads,
        seed=config.seed,
        verbose=False,
        track_stats=False,
    )
    return optimizer.compile(
        program,
        trainset=trainset,
        num_trials=s["num_trials"],
        minibatch=s["minibatch"],
        minibatch_size=s["minibatch_size"],
        view_data_batch_size=min(10, len(trainset)),
    )


def config_dict(config: OptimizerConfig) -> dict[str, Any]:
    return asdict(config)

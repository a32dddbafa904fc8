"""The seed's ``train()`` / ``train_async()``, plus the agent they act for, run through Dagster.

Same path as the CLI and the schedule: the training job for the agent's partition, recorded in
the ``DAGSTER_HOME`` instance (so it shows in the UI's run history).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from bindu_runtime.errors import ExperimentRunning

from .jobs import TRAINING_JOB, training_tags

_OPTIMIZER_CLASSES = {"SIMBA": "simba", "GEPA": "gepa", "MIPROv2": "miprov2"}


class TrainingRunFailed(RuntimeError):
    """The training run failed; the message is the run's one-line reason."""


class TrainingInProgress(ExperimentRunning):
    """A training run for this agent is queued or running."""


@dataclass(frozen=True)
class TrainingResult:
    agent_id: str
    run_id: str
    outcome: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def optimizer_name(optimizer: Any) -> str:
    """``"simba"`` etc., or a DSPy optimizer instance/class (the seed passed ``SIMBA()``)."""
    if optimizer is None:
        return "simba"
    if isinstance(optimizer, str):
        name = optimizer.lower()
    else:
        cls = optimizer if isinstance(optimizer, type) else type(optimizer)
        name = _OPTIMIZER_CLASSES.get(cls.__name__, cls.__name__.lower())
    if name not in ("simba", "gepa", "miprov2"):
        raise ValueError(f"unsupported optimizer {optimizer!r}: use simba, gepa or miprov2")
    return name


def _strategy_text(strategy: Any) -> str | None:
    if strategy is None or isinstance(strategy, str):
        return strategy
    spec = getattr(strategy, "spec", None) or getattr(strategy, "cli_spec", None)
    if isinstance(spec, str):
        return spec
    raise ValueError("pass the strategy in CLI syntax (e.g. 'last_n:3') or a strategy with a .spec")


def training_run_config(
    *, optimizer: Any = None, strategy: Any = None, require_feedback: bool = True, **candidate_config: Any
) -> dict[str, Any]:
    from bindu_pipelines.golden_dataset.assets import golden_dataset_run_config

    options: dict[str, Any] = {"require_feedback": require_feedback}
    if (text := _strategy_text(strategy)) is not None:
        options["strategy"] = text
    config = golden_dataset_run_config(**options)
    config["ops"]["candidate_prompt"] = {"config": {"optimizer": optimizer_name(optimizer), **candidate_config}}
    return config


@contextlib.contextmanager
def dspy_progress_hidden(hidden: bool = True) -> Iterator[None]:
    """DSPy's optimizers draw a progress bar per evaluation on stdout (explicitly enabled, so
    TQDM_DISABLE does not reach them); a command that prints its own outcome hides them."""
    if not hidden:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def launch_training(
    agent_id: str,
    *,
    optimizer: Any = None,
    strategy: Any = None,
    require_feedback: bool = True,
    instance: dg.DagsterInstance | None = None,
    definitions: dg.Definitions | None = None,
    quiet: bool = False,
    **candidate_config: Any,
) -> TrainingResult:
    """Run the training job for ``agent_id`` through Dagster; ``quiet`` keeps Dagster's console log to warnings."""
    from bindu_pipelines.launch import in_progress_runs, run_job_for_agent, step_failure_reason

    instance = instance or dg.DagsterInstance.get()
    tags = training_tags(agent_id)
    running = in_progress_runs(instance, TRAINING_JOB, tags)
    if running:
        raise TrainingInProgress(f"a training run for {agent_id!r} is already in progress (run {running[0].run_id})")
    run_config = training_run_config(
        optimizer=optimizer, strategy=strategy, require_feedback=require_feedback, **candidate_config
    )
    if quiet:
        run_config["loggers"] = {"console": {"config": {"log_level": "WARNING"}}}
    with dspy_progress_hidden(quiet):
        result = run_job_for_agent(
            TRAINING_JOB,
            agent_id,
            run_config=run_config,
            tags=tags,
            instance=instance,
            definitions=definitions,
        )
    if not result.success:
        raise TrainingRunFailed(step_failure_reason(result, default="the training run failed"))
    from .assets import outcome_from_materialization

    materializations = [
        e.event_specific_data.materialization
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
        and e.event_specific_data.materialization.asset_key == dg.AssetKey("candidate_prompt")
    ]
    meta = outcome_from_materialization(dict(materializations[-1].metadata)) if materializations else {}
    return TrainingResult(agent_id, result.run_id, str(meta.get("outcome", "unknown")), str(meta.get("reason", "")), meta)


def train(
    optimizer: Any = None,
    strategy: Any = None,
    require_feedback: bool = True,
    *,
    agent_id: str,
    **kwargs: Any,
) -> TrainingResult:
    """The seed's synchronous ``train``; do not call from async code (use ``train_async``)."""
    return launch_training(agent_id, optimizer=optimizer, strategy=strategy, require_feedback=require_feedback, **kwargs)


async def train_async(
    optimizer: Any = None,
    strategy: Any = None,
    require_feedback: bool = True,
    *,
    agent_id: str,
    **kwargs: Any,
) -> TrainingResult:
    """The seed's ``train_async``: the same run, in a worker thread."""
    return await asyncio.to_thread(
        launch_training, agent_id, optimizer=optimizer, strategy=strategy, require_feedback=require_feedback, **kwargs
    )

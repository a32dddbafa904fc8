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

from bindu_pipelines.errors import ExperimentActive, TrainingInProgress, TrainingRunFailed
from bindu_pipelines.golden_dataset.strategies import strategy_spec
from bindu_pipelines.names import OPTIMIZER_NAMES

from .jobs import TRAINING_JOB, training_tags

_OPTIMIZER_CLASSES = {"SIMBA": "simba", "GEPA": "gepa", "MIPROv2": "miprov2"}
OPTIMIZERS = OPTIMIZER_NAMES
# An optimizer instance's settings that the training run honours: (attribute, run-config key).
_OPTIMIZER_SETTINGS = {
    "simba": (("max_steps", "max_steps"), ("num_candidates", "num_candidates"), ("bsize", "bsize"), ("max_demos", "max_demos")),
    "gepa": (("max_full_evals", "gepa_max_full_evals"),),
    "miprov2": (("num_candidates", "mipro_num_candidates"),),
}


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
        name = optimizer.strip().lower()
    else:
        classes = optimizer.__mro__ if isinstance(optimizer, type) else type(optimizer).__mro__
        name = next((_OPTIMIZER_CLASSES[c.__name__] for c in classes if c.__name__ in _OPTIMIZER_CLASSES), type(optimizer).__name__)
    if name not in OPTIMIZERS:
        raise ValueError(f"unsupported optimizer {optimizer!r}: use simba, gepa or miprov2 (a name or a DSPy optimizer)")
    return name


def optimizer_settings(optimizer: Any) -> dict[str, int]:
    """The run-config settings an optimizer instance carries (``SIMBA(max_steps=4)`` → max_steps 4)."""
    if optimizer is None or isinstance(optimizer, (str, type)):
        return {}
    settings = {}
    for attribute, key in _OPTIMIZER_SETTINGS[optimizer_name(optimizer)]:
        value = getattr(optimizer, attribute, None)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            settings[key] = value
    return settings


def training_run_config(
    *, optimizer: Any = None, strategy: Any = None, require_feedback: bool = True, **candidate_config: Any
) -> dict[str, Any]:
    from bindu_pipelines.golden_dataset.assets import golden_dataset_run_config

    options: dict[str, Any] = {"require_feedback": require_feedback}
    if (text := strategy_spec(strategy)) is not None:
        options["strategy"] = text
    config = golden_dataset_run_config(**options)
    settings = optimizer_settings(optimizer) | candidate_config
    config["ops"]["candidate_prompt"] = {"config": {"optimizer": optimizer_name(optimizer), **settings}}
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


def _metadata_values(metadata: Any) -> dict[str, Any]:
    return {key: getattr(value, "value", value) for key, value in dict(metadata or {}).items()}


def dataset_drops(result: dg.ExecuteInProcessResult) -> dict[str, int]:
    """Rows the golden-dataset stages of a run dropped, by reason, summed over the stages."""
    drops: dict[str, int] = {}
    for event in result.get_asset_materialization_events():
        metadata = _metadata_values(event.event_specific_data.materialization.metadata)
        for reason, count in (metadata.get("dropped_by_reason") or {}).items():
            if isinstance(count, (int, float)) and count:
                drops[reason] = drops.get(reason, 0) + int(count)
    return drops


def failed_check_reason(result: dg.ExecuteInProcessResult, agent_id: str) -> str | None:
    """A blocking check that stopped the run, in one line with its numbers: "golden dataset for
    support-bot has 4 examples, needs 10: no feedback 3, …" (None when no check failed)."""
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.passed:
            continue
        metadata = _metadata_values(evaluation.metadata)
        if evaluation.description:
            return evaluation.description.strip().splitlines()[0]
        rows, needed = metadata.get("rows"), metadata.get("min_examples")
        if rows is None or needed is None:
            return f"check {evaluation.check_name} failed for {agent_id}"
        text = f"golden dataset for {agent_id} has {rows:.0f} examples, needs {needed:.0f}"
        if (validation := metadata.get("validation_rows")) is not None and metadata.get("min_validation_examples"):
            text += f" ({validation:.0f} held out for validation, needs {metadata['min_validation_examples']:.0f})"
        drops = sorted(dataset_drops(result).items(), key=lambda item: -item[1])
        if drops:
            text += ": dropped " + ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in drops)
        return text + "; collect more rated tasks or lower min_examples"
    return None


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

    from bindu_runtime import PromptStore, make_engine

    from .training import experiment_running

    # Refused before a run is launched: the guard, and options a run would only fail on.
    run_config = training_run_config(
        optimizer=optimizer, strategy=strategy, require_feedback=require_feedback, **candidate_config
    )
    if definitions is None:
        from bindu_pipelines.definitions import defs as definitions
    engine = make_engine(getattr((definitions.resources or {}).get("bindu_db"), "url", None))
    try:
        guard = experiment_running(PromptStore(engine), agent_id)
    finally:
        engine.dispose()
    if guard:
        raise ExperimentActive(f"{guard}; the canary decides it first (bindu-dspy status --agent {agent_id})")
    from bindu_pipelines.instance import open_instance  # storage initialised once, under a lock

    instance = instance or open_instance()
    tags = training_tags(agent_id)
    running = in_progress_runs(instance, TRAINING_JOB, tags)
    if running:
        raise TrainingInProgress(f"a training run for {agent_id!r} is already in progress (run {running[0].run_id})")
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
        raise TrainingRunFailed(failed_check_reason(result, agent_id) or step_failure_reason(result, default="the training run failed"))
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

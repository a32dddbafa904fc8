"""Dagster and database helpers for the optimization tests (ephemeral instance, in-process runs)."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pandas as pd
import pytest

from bindu_pipelines.optimization.assets import candidate_prompt
from bindu_pipelines.names import OFFLINE_MODEL
from bindu_pipelines.optimization.lm import LanguageModel
from bindu_pipelines.partitions import agent_partitions
from bindu_pipelines.resources import BinduDatabase
from bindu_runtime import PromptStore, make_engine, upgrade

AGENT = "support-bot"
ACTIVE_PROMPT = "You are a helpful support agent for a SaaS product."
# SIMBA small enough for seconds on two shared cores; the other optimizers use their defaults.
SMALL = {
    "simba": {"max_steps": 2, "num_candidates": 2, "bsize": 4},
    "gepa": {"gepa_max_full_evals": 4},
    "miprov2": {"mipro_num_candidates": 2, "mipro_num_trials": 3},
}


def golden_dataset_stub(frame: pd.DataFrame) -> dg.AssetsDefinition:
    @dg.asset(name="golden_dataset", partitions_def=agent_partitions, io_manager_key="io_manager")
    def golden_dataset() -> pd.DataFrame:
        return frame

    return golden_dataset


@pytest.fixture
def database(sqlite_url) -> Iterator[tuple[str, PromptStore]]:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    store = PromptStore(engine)
    store.bootstrap(AGENT, ACTIVE_PROMPT)
    yield sqlite_url, store
    engine.dispose()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(agent_partitions.name, [AGENT])
        yield instance


def materialize_candidate(
    instance: dg.DagsterInstance,
    url: str,
    frame: pd.DataFrame,
    *,
    optimizer: str = "simba",
    language_model: LanguageModel | None = None,
    **config,
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [golden_dataset_stub(frame), candidate_prompt],
        partition_key=AGENT,
        instance=instance,
        resources={
            "bindu_db": BinduDatabase(url=url),
            "language_model": language_model or LanguageModel(model=OFFLINE_MODEL, num_threads=1),
            "io_manager": dg.mem_io_manager,
        },
        run_config={"ops": {"candidate_prompt": {"config": {"optimizer": optimizer, **SMALL[optimizer], **config}}}},
        raise_on_error=False,
    )


def candidate_metadata(result: dg.ExecuteInProcessResult) -> dict:
    [materialization] = [
        m for m in result.asset_materializations_for_node("candidate_prompt")
    ]
    return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}


def failure_reason(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return failure.event_specific_data.error.message

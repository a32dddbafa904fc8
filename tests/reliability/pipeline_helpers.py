"""Helpers for the pipeline fault, isolation and secret tests: Dagster runs on a chosen database,
statement-level fault points through the TcpProxy, and everything a run left behind as text."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event

from bindu_pipelines.golden_dataset.assets import ASSET_NAMES, golden_dataset_assets, golden_dataset_run_config
from bindu_pipelines.io_managers import ParquetIOManager
from bindu_pipelines.optimization.assets import candidate_prompt
from bindu_pipelines.names import OFFLINE_MODEL
from bindu_pipelines.optimization.lm import LanguageModel
from bindu_pipelines.resources import BinduDatabase
from bindu_runtime.schema import agent_prompts, prompt_events, task_feedback, tasks

# SIMBA small enough for seconds on two shared cores (the optimization tests' size).
SMALL_SIMBA = {"optimizer": "simba", "max_steps": 2, "num_candidates": 2, "bsize": 4}


class StatementFaults:
    """Counts the SQL statements sent to one port (the proxy's) and can act at the k-th point.

    Points are ``before`` and ``after`` each cursor execution, numbered in order. ``at_point``
    maps a point index to an action (e.g. ``proxy.cut``); ``points`` lists (phase, statement head).
    Listens on every Engine (the resources build their own), filtered by port.
    """

    def __init__(self, port: int):
        self.port = port
        self.points: list[tuple[str, str]] = []
        self.actions: dict[int, Callable[[], None]] = {}
        self.on_statement: Callable[[str, str], None] | None = None
        self._lock = threading.Lock()

    def _point(self, phase: str, conn: sa.Connection, statement: str) -> None:
        if conn.engine.url.port != self.port:
            return
        head = " ".join(statement.split())[:60]
        with self._lock:
            index = len(self.points)
            self.points.append((phase, head))
        if self.on_statement is not None:
            self.on_statement(phase, head)
        action = self.actions.get(index)
        if action is not None:
            action()

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        self._point("before", conn, statement)

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        self._point("after", conn, statement)

    def __enter__(self) -> StatementFaults:
        event.listen(sa.engine.Engine, "before_cursor_execute", self._before)
        event.listen(sa.engine.Engine, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *exc) -> None:
        event.remove(sa.engine.Engine, "before_cursor_execute", self._before)
        event.remove(sa.engine.Engine, "after_cursor_execute", self._after)


def golden_config(**options) -> dict:
    """The golden dataset options for its step and checks (one resource block)."""
    return golden_dataset_run_config(**options)


def materialize_golden(url: str, parquet_dir: str, instance: dg.DagsterInstance, agent: str, **options) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        golden_dataset_assets,
        partition_key=agent,
        instance=instance,
        resources={"bindu_db": BinduDatabase(url=url, connect_timeout=2),
                   "parquet_io_manager": ParquetIOManager(base_dir=parquet_dir)},
        run_config=golden_config(**options),
        raise_on_error=False,
    )


def materialize_training(
    url: str, instance: dg.DagsterInstance, agent: str, frame, *, language_model: LanguageModel | None = None,
) -> dg.ExecuteInProcessResult:
    """candidate_prompt on a given golden dataset frame, with the offline model unless told otherwise."""
    from tests.optimization.conftest import golden_dataset_stub

    return dg.materialize(
        [golden_dataset_stub(frame), candidate_prompt],
        partition_key=agent,
        instance=instance,
        resources={"bindu_db": BinduDatabase(url=url, connect_timeout=2), "io_manager": dg.mem_io_manager,
                   "language_model": language_model or LanguageModel(model=OFFLINE_MODEL, num_threads=1)},
        run_config={"ops": {"candidate_prompt": {"config": SMALL_SIMBA}}},
        raise_on_error=False,
    )


def step_failures(result: dg.ExecuteInProcessResult) -> list[tuple[str, str]]:
    """(step key, reason) of each failed step: a ``dg.Failure``'s description, else the error message."""
    failures = []
    for e in result.all_events:
        if e.event_type_value == "STEP_FAILURE":
            user = e.event_specific_data.user_failure_data
            failures.append((e.step_key, user.description if user and user.description else e.event_specific_data.error.message))
    return failures


def materialized_assets(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def stored_frame(result: dg.ExecuteInProcessResult, asset: str) -> pd.DataFrame:
    """The rows the IO manager stored for ``asset`` in this run (its materialization's ``path``)."""
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return pd.read_parquet(event.materialization.metadata["path"].value)


def table_counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table.name: connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in (tasks, task_feedback, agent_prompts, prompt_events)
        }


def run_texts(instance: dg.DagsterInstance, run_id: str) -> str:
    """Everything Dagster stored about a run, as text: the run (config, tags) and every event
    (log messages, materialization metadata, failures with their stack traces)."""
    run = instance.get_run_by_id(run_id)
    parts = [json.dumps(run.run_config, default=str), json.dumps(run.tags, default=str)]
    for record in instance.all_logs(run_id):
        parts.append(record.user_message or "")
        parts.append(repr(record.dagster_event) if record.dagster_event else "")
    return "\n".join(parts)

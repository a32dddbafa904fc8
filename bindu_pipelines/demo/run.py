"""The whole loop on the embedded default, as `make demo` runs it.

1. Create the SQLite database under DAGSTER_HOME and seed Bindu-shaped history for the agents.
2. Materialize the asset graph per agent through Dagster (the `training_job`: golden dataset and
   candidate prompt, optimized by DSPy with the offline demo model), recorded in the instance so
   the runs are in the UI.
3. Play live traffic hour by simulated hour: users are routed by the real PromptRouter, answered by
   the offline model with the prompt they were served, and rate the replies through the real
   FeedbackCollector; after each hour the `canary_job` decides, until every experiment is decided.
4. Report dataset counts and drops, gate scores, the prompt diff, the canary trajectory, the end state.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import dagster as dg
from tqdm import tqdm

from bindu_pipelines.canary.assets import CANARY_AGENT_TAG
from bindu_pipelines.demo.catalog import agent_named
from bindu_pipelines.demo.seed import seed_demo_data
from bindu_pipelines.demo.traffic import UserTaste, play_hour
from bindu_pipelines.launch import run_job_for_agent, step_failure_reason
from bindu_pipelines.optimization.api import dspy_progress_hidden, training_run_config
from bindu_pipelines.optimization.jobs import TRAINING_JOB, training_tags
from bindu_pipelines.optimization.offline_lm import OFFLINE_MODEL, agent_reply
from bindu_pipelines.status import agent_status
from bindu_runtime import PromptRouter, PromptStore, make_engine, upgrade
from bindu_runtime.config import redact_url, resolve_database_url

QUIET_LOGS = {"console": {"config": {"log_level": "WARNING"}}}
GOLDEN_ASSETS = ("raw_tasks", "normalized_feedback", "extracted_interactions", "golden_dataset")


@dataclass
class AgentReport:
    agent_id: str
    training_run_id: str = ""
    dataset: dict[str, dict[str, Any]] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    trajectory: list[dict[str, Any]] = field(default_factory=list)
    served: dict[str, list[int]] = field(default_factory=dict)  # status -> [served, rated, rating sum]
    final: dict[str, Any] = field(default_factory=dict)


def _value(entry: Any) -> Any:
    return getattr(entry, "value", entry)


def _materializations(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    found = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        found[materialization.asset_key.to_user_string()] = {k: _value(v) for k, v in materialization.metadata.items()}
    return found


def train_agent(agent_id: str, instance: dg.DagsterInstance, *, optimizer: str, max_steps: int) -> AgentReport:
    report = AgentReport(agent_id)
    run_config = training_run_config(optimizer=optimizer, max_steps=max_steps) | {"loggers": QUIET_LOGS}
    with dspy_progress_hidden():
        result = run_job_for_agent(TRAINING_JOB, agent_id, run_config=run_config, tags=training_tags(agent_id), instance=instance)
    report.training_run_id = result.run_id
    materialized = _materializations(result)
    report.dataset = {name: materialized.get(name, {}) for name in GOLDEN_ASSETS}
    report.training = materialized.get("candidate_prompt", {})
    if not result.success:
        report.training = {"outcome": "failed", "reason": step_failure_reason(result, default="the training run failed")}
    return report


def decide(agent_id: str, instance: dg.DagsterInstance, as_of) -> dict[str, Any]:
    run_config = {"ops": {"traffic_decision": {"config": {"as_of": as_of.isoformat()}}}, "loggers": QUIET_LOGS}
    result = run_job_for_agent("canary_job", agent_id, run_config=run_config, tags={CANARY_AGENT_TAG: agent_id}, instance=instance)
    if not result.success:
        raise RuntimeError(f"canary run for {agent_id} failed (run {result.run_id})")
    return _materializations(result).get("traffic_decision", {})


def run_demo(
    *,
    agents: int = 2,
    tasks_per_agent: int = 200,
    seed: int = 7,
    optimizer: str = "simba",
    max_steps: int = 4,
    requests_per_hour: int = 80,
    max_hours: int = 200,
    database_url: str | None = None,
    instance: dg.DagsterInstance | None = None,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> list[AgentReport]:
    started = time.monotonic()
    url = resolve_database_url(database_url)
    engine = make_engine(url)
    instance = instance or dg.DagsterInstance.get()
    try:
        upgrade(engine)
        seeded = seed_demo_data(engine, agents=agents, tasks_per_agent=tasks_per_agent, seed=seed)
        say(f"[1/4] database {redact_url(url)}: {seeded['tasks']} demo tasks, {seeded['feedback_rows']} feedback rows "
            f"for {', '.join(seeded['agents'])}" + (" (already seeded)" if seeded["already_seeded"] else ""))

        say(f"[2/4] training through Dagster ({optimizer}, model {OFFLINE_MODEL} — the offline demo model)")
        reports = []
        for agent_id in tqdm(seeded["agents"], desc="training", unit="agent", disable=not progress):
            reports.append(train_agent(agent_id, instance, optimizer=optimizer, max_steps=max_steps))

        store = PromptStore(engine)
        live = [r for r in reports if store.get_candidate_prompt(r.agent_id) is not None]
        say(f"[3/4] live traffic and hourly canary decisions for {', '.join(r.agent_id for r in live) or 'no agent'}")
        if live:
            _play(engine, store, instance, live, requests_per_hour, max_hours, seed, progress)

        for report in reports:
            report.final = agent_status(engine, report.agent_id)
        say("[4/4] report\n")
        say(render_report(reports, time.monotonic() - started))
        return reports
    finally:
        engine.dispose()


def _play(engine, store, instance, live, requests_per_hour, max_hours, seed, progress) -> None:
    clock_start = max(store.experiment_started_at(r.agent_id) for r in live) + timedelta(minutes=1)
    routers = {
        r.agent_id: PromptRouter(engine, agent_id=r.agent_id, default_prompt=agent_named(r.agent_id).code_prompt, start=False)
        for r in live
    }
    rng, taste = random.Random(seed), UserTaste()
    running = {r.agent_id: r for r in live}
    try:
        with tqdm(total=max_hours, desc="simulated hours", unit="h", disable=not progress) as bar:
            for hour in range(max_hours):
                if not running:
                    break
                hour_start = clock_start + timedelta(hours=hour)
                for agent_id, report in list(running.items()):
                    tally = play_hour(
                        engine, routers[agent_id], agent_named(agent_id), start=hour_start,
                        requests=requests_per_hour, reply=agent_reply, taste=taste, rng=rng,
                    )  # fmt: skip
                    for status, arm in tally.by_status.items():
                        totals = report.served.setdefault(status, [0, 0, 0])
                        totals[0] += arm.served
                        totals[1] += arm.rated
                        totals[2] += arm.rating_sum
                    decision = decide(agent_id, instance, hour_start + timedelta(hours=1))
                    report.trajectory.append({"hour": hour + 1, **decision})
                    if store.get_candidate_prompt(agent_id) is None:
                        del running[agent_id]
                bar.update(1)
    finally:
        for router in routers.values():
            router.close()


def _pct(value: Any) -> str:
    return "—" if value is None else f"{float(value):.0%}"


def render_report(reports: list[AgentReport], seconds: float) -> str:
    lines: list[str] = []
    for report in reports:
        lines.append(f"=== {report.agent_id} " + "=" * max(0, 60 - len(report.agent_id)))
        lines.append("golden dataset (rows in → out, drops by reason):")
        for name, meta in report.dataset.items():
            drops = meta.get("dropped_by_reason") or {}
            drop_text = ", ".join(f"{reason} {count}" for reason, count in drops.items()) or "none"
            lines.append(f"  {name:24} {meta.get('rows_in', '?')!s:>5} → {meta.get('dagster/row_count', '?')!s:<5} drops: {drop_text}")
        training = report.training
        lines.append(f"training: {training.get('outcome', '?')} — {training.get('reason', '')}")
        if "active_score" in training:
            lines.append(
                f"  offline gate: active {training['active_score']:.3f} → candidate {training['candidate_score']:.3f} "
                f"(95% lower bound {training.get('lower_bound', float('nan')):+.3f}); "
                f"{training.get('lm_calls', 0)} LM calls, {training.get('lm_tokens', 0)} tokens, {training.get('lm_model', '')}"
            )
        if training.get("prompt_diff"):
            lines.append("  prompt diff:")
            lines.extend("    " + line for line in str(training["prompt_diff"]).strip().splitlines())
        if report.trajectory:
            lines.append("canary trajectory (simulated hour: candidate traffic, decision):")
            changes = [step for step in report.trajectory if step.get("traffic_before") != step.get("traffic_after")]
            for step in changes or report.trajectory[-1:]:
                lines.append(
                    f"  h{step['hour']:>3}: {_pct(step.get('traffic_before'))} → {_pct(step.get('traffic_after'))}  "
                    f"{step.get('decision', '?')}: {step.get('reason', '')}"
                )
            lines.append(f"  {len(report.trajectory)} hourly decisions in all")
            for status, (served, rated, total) in sorted(report.served.items()):
                lines.append(f"  served by {status}: {served} requests, {rated} ratings, mean {total / rated if rated else float('nan'):.2f}/5")
        lines.append("final state:")
        for prompt in report.final.get("prompts", []):
            lines.append(f"  {prompt['status']:11} {prompt['traffic']:>6.0%}  {prompt['source']:10} {prompt['id']}")
        lines.append("")
    lines.append(f"demo finished in {seconds:.0f} s. See it in the Dagster UI: `make ui`, then http://127.0.0.1:3000")
    return "\n".join(lines)

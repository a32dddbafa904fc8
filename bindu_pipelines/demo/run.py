"""The whole loop on the embedded default, as `make demo` runs it — a story that ends now.

The story spans ``hours`` simulated hours that end at the moment the demo starts, so nothing in
the database lies in the future:

1. A fresh SQLite demo database under DAGSTER_HOME (``reset``), seeded with 30 days of Bindu-shaped
   history that end when the story begins.
2. The asset graph per agent through Dagster (``training_job``: golden dataset and candidate prompt,
   optimized by DSPy with the offline demo model), recorded in the instance so the runs are in the
   UI; the candidate starts its canary at the story's first hour.
3. Live traffic hour by simulated hour: users are routed by the real PromptRouter, answered by the
   offline model with the prompt they were served, and rate the replies through the real
   FeedbackCollector; after each hour the ``canary_job`` decides (as of that hour) while an
   experiment runs; afterwards the winner keeps serving until the story reaches now.
4. The report: dataset counts and drops, gate scores, the prompt diff, the canary trajectory, the
   end state. Scores are on one scale everywhere: the mean feedback score 0..1 (a rating r of 1-5
   is (r-1)/4, thumbs up 1, thumbs down 0).
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from tqdm import tqdm

from bindu_pipelines.canary.assets import CANARY_AGENT_TAG
from bindu_pipelines.canary.chart import decision_label, from_the_new_prompt
from bindu_pipelines.demo.catalog import agent_named
from bindu_pipelines.demo.seed import demo_agents, seed_demo_data
from bindu_pipelines.demo.traffic import UserTaste, play_hour
from bindu_pipelines.errors import DemoDatabaseInUse
from bindu_pipelines.launch import run_job_for_agent, step_failure_reason
from bindu_pipelines.optimization.api import dspy_progress_hidden, training_run_config
from bindu_pipelines.optimization.jobs import TRAINING_JOB, training_tags
from bindu_pipelines.optimization.offline_lm import OFFLINE_MODEL, agent_reply
from bindu_pipelines.resources import BinduDatabase
from bindu_pipelines.status import agent_status
from bindu_runtime import PromptRouter, PromptStore, make_engine, upgrade
from bindu_runtime.config import redact_url
from bindu_runtime.schema import tasks

DEMO_DATABASE_FILENAME = "bindu.sqlite"


class StoryClockDatabase(BinduDatabase):
    """The Bindu database with the prompt store's clock at the story's moment, so the candidate the
    training run inserts starts its canary when the story says, not when the demo happens to run."""

    clock_at: str = ""

    def store(self) -> PromptStore:
        moment = datetime.fromisoformat(self.clock_at)
        return PromptStore(self.engine(), clock=lambda: moment)


def demo_database_url() -> str:
    """The embedded demo database: ``$DAGSTER_HOME/bindu.sqlite`` (the only place the demo's
    SQLite default is set; ``make ui`` points the UI at the same file)."""
    home = Path(os.environ.get("DAGSTER_HOME") or "dagster_home").resolve()
    return f"sqlite:///{home / DEMO_DATABASE_FILENAME}"


def _sqlite_file(url: str) -> Path | None:
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    return Path(parsed.database) if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") else None


def reset_demo_database(url: str) -> None:
    """Delete the SQLite demo database file (and its journal files); nothing else is ever deleted."""
    path = _sqlite_file(url)
    if path is None:
        raise ValueError("--reset deletes an SQLite demo database file only; point --database-url at an empty database instead")
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"), path.with_name(path.name + "-journal")):
        candidate.unlink(missing_ok=True)


@contextlib.contextmanager
def offline_model() -> Iterator[None]:
    """Inside the demo the offline model is the explicit choice (issue 13: never a silent default)."""
    previous = os.environ.get("BINDU_LM")
    os.environ["BINDU_LM"] = OFFLINE_MODEL
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("BINDU_LM", None)
        else:
            os.environ["BINDU_LM"] = previous


QUIET_LOGS = {"console": {"config": {"log_level": "CRITICAL"}}}
GOLDEN_ASSETS = ("raw_tasks", "normalized_feedback", "extracted_interactions", "golden_dataset")


@dataclass
class AgentReport:
    agent_id: str
    training_run_id: str = ""
    dataset: dict[str, dict[str, Any]] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    trajectory: list[dict[str, Any]] = field(default_factory=list)
    served: dict[str, list[float]] = field(default_factory=dict)  # prompt id -> [served, rated, score sum (0..1)]
    final: dict[str, Any] = field(default_factory=dict)


def _value(entry: Any) -> Any:
    return getattr(entry, "value", entry)


def _materializations(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    found = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        found[materialization.asset_key.to_user_string()] = {k: _value(v) for k, v in materialization.metadata.items()}
    return found


def story_definitions(url: str, moment: datetime) -> dg.Definitions:
    from dagster_shared.record import copy

    from bindu_pipelines.definitions import defs

    # Definitions.merge refuses two values for one resource key; a copy replaces it.
    return copy(defs, resources={**(defs.resources or {}), "bindu_db": StoryClockDatabase(url=url, clock_at=moment.isoformat())})


def train_agent(agent_id: str, instance: dg.DagsterInstance, *, optimizer: str, max_steps: int, definitions: dg.Definitions) -> AgentReport:
    report = AgentReport(agent_id)
    # No few-shot demos: SIMBA's demos are the model's own replies, and the prompt may quote only
    # replies users rated (its examples header says so); the offline model's are nobody's.
    run_config = training_run_config(optimizer=optimizer, max_steps=max_steps, max_demos=0) | {"loggers": QUIET_LOGS}
    with dspy_progress_hidden():
        result = run_job_for_agent(
            TRAINING_JOB, agent_id, run_config=run_config, tags=training_tags(agent_id), instance=instance, definitions=definitions
        )
    report.training_run_id = result.run_id
    materialized = _materializations(result)
    report.dataset = {name: materialized.get(name, {}) for name in GOLDEN_ASSETS}
    report.training = materialized.get("candidate_prompt", {})
    if not result.success:
        report.training = {"outcome": "failed", "reason": step_failure_reason(result, default="the training run failed")}
    return report


# The demo compresses weeks into simulated hours, so it tunes the policy the way an operator would
# (docs/CANARY.md): its simulated users answer within the hour, and a stage needs hours, not days.
DEMO_CANARY_SETTINGS = {"maturity_hours": "1", "min_stage_hours": "4", "holdback_hours": "6"}


def decide(agent_id: str, instance: dg.DagsterInstance, as_of: datetime, definitions: dg.Definitions) -> dict[str, Any]:
    config = {"as_of": as_of.isoformat(), "settings": DEMO_CANARY_SETTINGS}
    run_config = {"ops": {"traffic_decision": {"config": config}}, "loggers": QUIET_LOGS}
    result = run_job_for_agent(
        "canary_job", agent_id, run_config=run_config, tags={CANARY_AGENT_TAG: agent_id}, instance=instance, definitions=definitions
    )
    if not result.success:
        raise RuntimeError(f"canary run for {agent_id} failed (run {result.run_id}): {step_failure_reason(result)}")
    return _materializations(result).get("traffic_decision", {})


def _holds_demo_data(engine, agents: int) -> list[str]:
    import sqlalchemy as sa

    store = PromptStore(engine)
    try:
        known = set(store.list_agents())
    except sa.exc.DBAPIError:
        return []
    with engine.connect() as connection:
        has_tasks = connection.execute(sa.select(tasks.c.id).limit(1)).first() is not None
    return [a.agent_id for a in demo_agents(agents) if a.agent_id in known] if has_tasks else []


def run_demo(
    *,
    agents: int = 2,
    tasks_per_agent: int = 200,
    seed: int = 7,
    optimizer: str = "simba",
    max_steps: int = 4,
    requests_per_hour: int = 80,
    hours: int = 48,
    database_url: str | None = None,
    reset: bool = False,
    instance: dg.DagsterInstance | None = None,
    progress: bool = True,
    say: Callable[[str], None] = print,
    progress_file: Any = None,
) -> list[AgentReport]:
    started = time.monotonic()
    url = database_url or demo_database_url()
    if reset:
        reset_demo_database(url)
    now = datetime.now(UTC).replace(microsecond=0)
    story_start = now - timedelta(hours=hours)
    engine = make_engine(url)
    from bindu_pipelines.instance import open_instance  # storage initialised once, under a lock

    instance = instance or open_instance()
    bars = {"disable": not progress, "file": progress_file, "mininterval": 1.0}
    try:
        upgrade(engine)
        if taken := _holds_demo_data(engine, agents):
            raise DemoDatabaseInUse(
                f"the demo database {redact_url(url)} already holds a demo run ({', '.join(taken)}): "
                "run bindu-dspy demo run --reset (what make demo does) to start over on a fresh one"
            )
        seeded = seed_demo_data(engine, agents=agents, tasks_per_agent=tasks_per_agent, seed=seed, now=story_start)
        say(f"[1/4] fresh demo database {redact_url(url)}: {seeded['tasks']} Bindu-shaped tasks and "
            f"{seeded['feedback_rows']} feedback rows over 30 days for {', '.join(seeded['agents'])}")  # fmt: skip

        say(f"[2/4] training through Dagster: golden dataset, then {optimizer.upper()} with {OFFLINE_MODEL} "
            "(the offline demo model, a rule-based stand-in for an LLM)")  # fmt: skip
        definitions = story_definitions(url, story_start)
        reports = []
        with offline_model():
            for agent_id in tqdm(seeded["agents"], desc="training", unit="agent", **bars):
                reports.append(train_agent(agent_id, instance, optimizer=optimizer, max_steps=max_steps, definitions=definitions))

        store = PromptStore(engine)
        live = [r for r in reports if store.get_candidate_prompt(r.agent_id) is not None]
        say(f"[3/4] {hours} simulated hours of live traffic ({requests_per_hour} requests per agent and hour), "
            f"the canary deciding hourly for {', '.join(r.agent_id for r in live) or 'no agent'}")  # fmt: skip
        _play(engine, store, instance, reports, live, requests_per_hour, story_start, hours, seed, bars, definitions)

        for report in reports:
            report.final = agent_status(engine, report.agent_id)
        say("[4/4] report\n")
        say(render_report(reports, time.monotonic() - started, story_start=story_start, hours=hours))
        return reports
    finally:
        engine.dispose()


def _play(engine, store, instance, reports, live, requests_per_hour, story_start, hours, seed, bars, definitions) -> None:
    routers = {
        r.agent_id: PromptRouter(engine, agent_id=r.agent_id, default_prompt=agent_named(r.agent_id).code_prompt, start=False)
        for r in reports
    }
    rng, taste = random.Random(seed), UserTaste()
    deciding = {r.agent_id for r in live}
    try:
        with tqdm(total=hours, desc="simulated hours", unit="h", **bars) as bar:
            for hour in range(hours):
                hour_start = story_start + timedelta(hours=hour)
                for report in reports:
                    tally = play_hour(
                        engine, routers[report.agent_id], agent_named(report.agent_id), start=hour_start,
                        requests=requests_per_hour, reply=agent_reply, taste=taste, rng=rng,
                    )  # fmt: skip
                    for prompt_id, arm in tally.by_prompt.items():
                        totals = report.served.setdefault(prompt_id, [0, 0, 0.0])
                        totals[0] += arm.served
                        totals[1] += arm.rated
                        totals[2] += arm.score_sum
                    if report.agent_id in deciding:
                        decision = decide(report.agent_id, instance, hour_start + timedelta(hours=1), definitions)
                        report.trajectory.append({"hour": hour + 1, **decision})
                        if store.get_candidate_prompt(report.agent_id) is None:
                            deciding.discard(report.agent_id)
                bar.update(1)
    finally:
        for router in routers.values():
            router.close()


def _pct(value: Any) -> str:
    return "—" if value is None else f"{float(value):.0%}"


def _count(value: Any) -> str:
    return f"{value:.0f}" if isinstance(value, (int, float)) else "?"


def render_report(reports: list[AgentReport], seconds: float, *, story_start: datetime, hours: int) -> str:
    lines: list[str] = [
        f"Story: {story_start:%Y-%m-%d %H:%M} UTC to now ({hours} simulated hours). "
        "Scores: mean feedback score on 0..1 (rating r of 1-5 -> (r-1)/4; thumbs up 1, down 0).",
        "",
    ]
    for report in reports:
        lines.append(f"=== {report.agent_id} " + "=" * max(0, 60 - len(report.agent_id)))
        lines.append("golden dataset (rows in → out, drops by reason):")
        for name, meta in report.dataset.items():
            drops = meta.get("dropped_by_reason") or {}
            drop_text = ", ".join(f"{reason} {count}" for reason, count in drops.items() if count) or "none"
            lines.append(f"  {name:24} {_count(meta.get('rows_in')):>5} → {_count(meta.get('dagster/row_count')):<5} drops: {drop_text}")
        training = report.training
        lines.append(f"training: {training.get('outcome', '?')} — {training.get('reason', '')}")
        if "active_score" in training:
            lines.append(
                f"  offline gate on the held-out split: active {training['active_score']:.3f} → candidate "
                f"{training['candidate_score']:.3f} (95% lower bound of the gain {training.get('lower_bound', float('nan')):+.3f})"
            )
            lines.append(f"  {training.get('lm_calls', 0)} calls to {training.get('lm_model', '')}, {training.get('lm_tokens', 0)} tokens")
        if training.get("prompt_diff"):
            lines.append("  prompt diff (active → candidate):")
            lines.extend("    " + line for line in str(training["prompt_diff"]).strip().splitlines())
        if report.trajectory:
            lines.append("canary (hour of the story: candidate traffic, decision):")
            changes = [step for step in report.trajectory if step.get("traffic_before") != step.get("traffic_after")]
            for step in map(from_the_new_prompt, changes or report.trajectory[-1:]):
                lines.append(
                    f"  h{step['hour']:>3}: {_pct(step.get('traffic_before'))} → {_pct(step.get('traffic_after'))}  "
                    f"{decision_label(step) or '?'}: {step.get('reason', '')}"
                )
            lines.append(f"  {len(report.trajectory)} hourly decisions while the experiment ran")
        lines.append("final state (live traffic of the story per prompt):")
        for prompt in report.final.get("prompts", []):
            served, rated, total = report.served.get(prompt["id"], (0, 0, 0.0))
            mean = f"mean score {total / rated:.2f}" if rated else "no ratings"
            lines.append(
                f"  {prompt['status']:11} {prompt['traffic']:>6.0%}  {prompt['source']:10} {prompt['id']}  "
                f"{served:.0f} served, {rated:.0f} rated, {mean}"
            )
        lines.append("")
    lines.append(f"demo finished in {seconds:.0f} s. See it in the Dagster UI: `make ui`, then http://127.0.0.1:3000")
    return "\n".join(lines)

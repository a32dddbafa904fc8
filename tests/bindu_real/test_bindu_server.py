"""End to end against the real ``bindu`` server (PyPI 2026.36.7, in ``.venv-bindu``): two agents
in one PostgreSQL database, every task and every feedback row written by Bindu through its own
JSON-RPC API.

Agent A's story, one check per step (a step that fails makes the later ones fail with its name):
historic traffic before any router (a plain handler) rated through ``tasks/feedback`` →
``bindu-dspy db upgrade`` → ``bindu-dspy train`` (offline model) on that unstamped history → a
candidate at 10 % → traffic through the server again, its handler wrapped by
``PromptRouter.bindu_handler``: split ~90/10 by context, every task stamped in the agent's own
schema → feedback through ``tasks/feedback`` → ``bindu-dspy canary`` decides from it and the
decision is in ``prompt_events``. Agent B (a DID long enough that Bindu hashes its schema name)
lives in the same database; no row of one ever reaches the other.

Only one Bindu server runs at a time: the work-around for Bindu's ``search_path`` bug sets the
database default to the running server's schema (see conftest).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from bindu_pipelines.demo.catalog import QUESTION_TEMPLATES, agent_named
from bindu_pipelines.demo.traffic import UserTaste
from bindu_pipelines.golden_dataset.dataset import build_golden_dataset
from bindu_runtime.layout import sanitize_did_for_schema
from bindu_runtime.stamps import unit_of
from tests.bindu_real.agent_server import make_answer
from tests.bindu_real.harness import BinduAgentServer, BinduServerError, reply_text, run_cli

pytestmark = [pytest.mark.bindu, pytest.mark.postgres]

MAX_SCHEMA_LENGTH = 63
CANDIDATE_SHARE = 0.10
CANARY_SETTINGS = {"maturity_hours": 0, "min_stage_hours": 0, "min_events_per_arm": 20}
RATED_PER_ARM = CANARY_SETTINGS["min_events_per_arm"]
ROUTER_BATCH = 40
MAX_ROUTER_BATCHES = 12
FOLLOW_UPS_PER_BATCH = 4
# Agent B only shows where its rows go: a little history, then a few routed tasks (its router
# bootstraps B's code prompt, so every one is stamped with B's own prompt).
B_ROUTED_TASKS = 20
# Served by A's router before the experiment (all on the bootstrapped code prompt): training may
# use them, the canary must not count them.
WARM_UP_TASKS = 10
ROUTER_REFRESH_WAIT_S = 2.0
SIMBA_STEPS = 2  # the offline model finds the house style in the first steps; fewer keep the test short  # the agent's router refreshes every 0.5 s
STAMP_WAIT_S = 15.0


@dataclass(frozen=True)
class AgentSpec:
    key: str
    author: str
    name: str
    demo_agent: str
    historic_tasks: int


AGENT_A = AgentSpec("a", "qa@x.io", "bot", "support-bot", historic_tasks=60)
AGENT_B = AgentSpec(
    "b", "platform-team@a-very-long-company-name.example.com", "travel-planner-assistant", "travel-planner",
    historic_tasks=20,
)  # fmt: skip
A, B = AGENT_A.key, AGENT_B.key


@dataclass
class Conversation:
    context_id: uuid.UUID
    task_id: uuid.UUID
    question: str
    reply: str = ""
    rating: int | None = None


@dataclass
class AgentRun:
    spec: AgentSpec
    did: str = ""
    schema: str = ""
    historic: list[Conversation] = field(default_factory=list)
    warm_up: list[Conversation] = field(default_factory=list)
    routed: list[Conversation] = field(default_factory=list)
    train_output: dict = field(default_factory=dict)
    canary_output: dict = field(default_factory=dict)


class StepFailed(Exception):
    pass


def _talk(server: BinduAgentServer, conversations: list[Conversation], rng: random.Random, taste: UserTaste) -> None:
    """Send every conversation's message, wait for the replies, rate each through ``tasks/feedback``."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda c: server.send_message(c.question, context_id=c.context_id, task_id=c.task_id), conversations))
        done = server.wait_for_tasks([c.task_id for c in conversations], pool=pool)
        for conversation in conversations:
            task = done[conversation.task_id]
            assert task["status"]["state"] == "completed", task["status"]
            conversation.reply = reply_text(task)
            conversation.rating = taste.rating(conversation.reply, rng)
        list(pool.map(lambda c: server.give_feedback(c.task_id, rating=c.rating, metadata={"source": "e2e"}), conversations))


def _questions(spec: AgentSpec, rng: random.Random, count: int, contexts=None) -> list[Conversation]:
    topics = agent_named(spec.demo_agent).topics
    out = []
    for index in range(count):
        topic = rng.choice(topics)
        question = rng.choice(QUESTION_TEMPLATES).format(subject=topic.subject)
        context_id = contexts[index] if contexts else uuid.UUID(int=rng.getrandbits(128), version=4)
        out.append(Conversation(context_id, uuid.UUID(int=rng.getrandbits(128), version=4), question))
    return out


class Scenario:
    """The story's steps, each run once on first use; a failed step fails every later one."""

    def __init__(self, database, workdir: Path):
        self.db = database
        self.workdir = workdir
        self.dagster_home = workdir / "dagster_home"
        self.dagster_home.mkdir(parents=True)
        self.runs = {spec.key: AgentRun(spec) for spec in (AGENT_A, AGENT_B)}
        self.rng = random.Random(12)
        self.taste = UserTaste(feedback_rate=1.0)
        self._done: dict[str, object] = {}
        self.upgrade_output = ""
        self.live: BinduAgentServer | None = None
        self.seconds: dict[str, float] = {}  # each step's own time, printed at the end (pytest -s)

    def step(self, name: str):
        if name not in self._done:
            started = time.monotonic()
            try:
                self._done[name] = getattr(self, f"_{name}")()
                self.seconds[name] = time.monotonic() - started
            except BaseException as exc:
                self._done[name] = StepFailed(f"step {name!r} failed: {type(exc).__name__}: {exc}")
                raise
        result = self._done[name]
        if isinstance(result, StepFailed):
            raise result
        return result

    def server(self, run: AgentRun, mode: str) -> BinduAgentServer:
        return BinduAgentServer(
            workdir=self.workdir / run.spec.key, author=run.spec.author, name=run.spec.name,
            bindu_postgres_url=self.db.bindu_url, demo_agent=run.spec.demo_agent, mode=mode,
            agent_did=run.did or None, router_database_url=self.db.url if mode == "router" else None,
        )  # fmt: skip

    def cli(self, *args: str, extra_env: dict | None = None) -> str:
        result = run_cli(*args, database_url=self.db.url, dagster_home=self.dagster_home, extra_env=extra_env)
        if result.returncode != 0:
            raise AssertionError(f"bindu-dspy {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    # ------------------------------------------------------------------ steps

    def _historic(self) -> None:
        for run in self.runs.values():
            with self.server(run, "plain") as server:
                run.did = server.agent_did
                run.schema = sanitize_did_for_schema(run.did)
                self.db.point_search_path_at(run.schema)
                run.historic = _questions(run.spec, self.rng, run.spec.historic_tasks)
                _talk(server, run.historic, self.rng, self.taste)

    def _upgrade(self) -> None:
        self.step("historic")
        self.upgrade_output = self.cli("db", "upgrade")

    def _deploy(self) -> None:
        """Both agents restarted with the adapter-wrapped handler: each router bootstraps its code
        prompt (active, 100 %) and stamps what it serves. B serves its few tasks and stops; A keeps
        running (it is the live agent the training and the experiment happen under)."""
        self.step("upgrade")
        b = self.runs[B]
        self.db.point_search_path_at(b.schema)
        with self.server(b, "router") as server:
            b.routed = _questions(b.spec, self.rng, B_ROUTED_TASKS)
            _talk(server, b.routed, self.rng, self.taste)
            self.wait_for_stamps(b, b.routed)
        a = self.runs[A]
        self.db.point_search_path_at(a.schema)
        self.live = self.server(a, "router").start()
        a.warm_up = _questions(a.spec, self.rng, WARM_UP_TASKS)
        _talk(self.live, a.warm_up, self.rng, self.taste)
        self.wait_for_stamps(a, a.warm_up)

    def _train(self) -> None:
        self.step("deploy")
        run = self.runs[A]
        run.train_output = json.loads(self.cli("train", "--agent", run.did, "--max-steps", str(SIMBA_STEPS), "--json"))

    def _route(self) -> None:
        """Traffic after the experiment started (the live router picks it up on its next refresh),
        until both arms hold enough rated tasks for the canary; then the server is stopped by PID."""
        self.step("train")
        run = self.runs[A]
        time.sleep(ROUTER_REFRESH_WAIT_S)
        for _ in range(MAX_ROUTER_BATCHES):
            batch = _questions(run.spec, self.rng, ROUTER_BATCH)
            _talk(self.live, batch, self.rng, self.taste)
            # Second turns in the same conversations: the key is the context, so they stay on its arm.
            follow_ups = _questions(run.spec, self.rng, FOLLOW_UPS_PER_BATCH, [c.context_id for c in batch])
            _talk(self.live, follow_ups, self.rng, self.taste)
            run.routed += batch + follow_ups
            arms = self.wait_for_stamps(run, run.routed)
            if len(arms) == 2 and min(arms.values()) >= RATED_PER_ARM:
                break
        self.live.stop()

    def _canary(self) -> None:
        self.step("route")
        run = self.runs[A]
        # The default (sequential) policy, tuned for minutes instead of days through the operator's
        # settings file: every feedback row counts at once, no dwell per stage, 20 rated tasks per arm.
        settings = self.workdir / "canary.json"
        settings.write_text(json.dumps({run.did: CANARY_SETTINGS}))
        run.canary_output = json.loads(
            self.cli("canary", "--agent", run.did, "--json", extra_env={"BINDU_CANARY_SETTINGS": str(settings)})
        )

    # ------------------------------------------------------------ database views

    def table(self, run: AgentRun, name: str) -> str:
        return f'"{run.schema}"."{name}"'

    def rows(self, sql: str, **params) -> list:
        with self.db.engine.connect() as connection:
            return connection.execute(sa.text(sql), params).all()

    def stamps(self, run: AgentRun) -> dict[uuid.UUID, tuple[str | None, str | None]]:
        return {r.id: (r.prompt_id, r.prompt_unit) for r in self.rows(f"SELECT id, prompt_id, prompt_unit FROM {self.table(run, 'tasks')}")}

    def wait_for_stamps(self, run: AgentRun, conversations: list[Conversation]) -> dict[str, int]:
        """Stamps are written in the background: wait (bounded) until every one of these tasks has
        one; the tasks per prompt."""
        deadline = time.monotonic() + STAMP_WAIT_S
        while True:
            stamps = self.stamps(run)
            missing = [c.task_id for c in conversations if stamps.get(c.task_id, (None,))[0] is None]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not missing, f"{len(missing)} of {len(conversations)} routed tasks unstamped after {STAMP_WAIT_S} s"
        arms: dict[str, int] = {}
        for conversation in conversations:
            prompt_id = stamps[conversation.task_id][0]
            arms[prompt_id] = arms.get(prompt_id, 0) + 1
        return arms

    def prompts(self, run: AgentRun) -> dict[str, sa.Row]:
        return {r.id: r for r in self.rows(f"SELECT * FROM {self.table(run, 'agent_prompts')}")}


@pytest.fixture
def scenario(bindu_database, tmp_path) -> Iterator[Scenario]:
    story = Scenario(bindu_database, tmp_path)
    yield story
    if story.live is not None:
        story.live.stop()
    print("\nbindu e2e steps (s):", {name: round(seconds, 1) for name, seconds in story.seconds.items()})


def check_historic_traffic_is_written_by_bindu_in_each_agents_own_schema(scenario):
    scenario.step("historic")
    a, b = scenario.runs[A], scenario.runs[B]
    assert a.did.startswith("did:bindu:qa_at_x_io:bot:")
    assert len(a.schema) <= MAX_SCHEMA_LENGTH and a.schema == a.did.lower().replace(":", "_").replace("-", "_")
    # B's DID is long enough that Bindu cut and hashed its schema name.
    assert len(b.did) > MAX_SCHEMA_LENGTH and len(b.schema) == MAX_SCHEMA_LENGTH
    schemas = {r.nspname for r in scenario.rows("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'did_%'")}
    assert schemas == {a.schema, b.schema}  # our rule names exactly the schemas Bindu created
    for run in (a, b):
        tasks = scenario.rows(f"SELECT id, state, history, artifacts FROM {scenario.table(run, 'tasks')}")
        assert {t.id for t in tasks} == {c.task_id for c in run.historic}
        assert {t.state for t in tasks} == {"completed"}
        feedback = scenario.rows(f"SELECT task_id, feedback_data FROM {scenario.table(run, 'task_feedback')}")
        assert {f.task_id: f.feedback_data["rating"] for f in feedback} == {c.task_id: c.rating for c in run.historic}
        assert set(feedback[0].feedback_data) == {"task_id", "feedback", "rating", "metadata", "timestamp"}
        columns = {r.column_name for r in scenario.rows(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = :s AND table_name = 'tasks'", s=run.schema)}  # fmt: skip
        assert "prompt_id" not in columns  # Bindu's own table, before our upgrade
    # The handler before any router answered with the code prompt; rated by the simulated users.
    answer = make_answer(AGENT_A.demo_agent)
    code_prompt = agent_named(AGENT_A.demo_agent).code_prompt
    for conversation in a.historic:
        assert conversation.reply == answer([{"role": "user", "parts": [{"kind": "text", "text": conversation.question}]}], code_prompt)


def check_db_upgrade_adds_prompt_id_and_our_tables_in_every_agent_schema(scenario):
    scenario.step("upgrade")
    for run in scenario.runs.values():
        assert run.schema in scenario.upgrade_output
        columns = {r.column_name: r.is_nullable for r in scenario.rows(
            "SELECT column_name, is_nullable FROM information_schema.columns WHERE table_schema = :s AND table_name = 'tasks'",
            s=run.schema)}  # fmt: skip
        assert columns["prompt_id"] == "YES" and columns["prompt_unit"] == "YES"
        tables = {r.table_name for r in scenario.rows("SELECT table_name FROM information_schema.tables WHERE table_schema = :s", s=run.schema)}
        assert {"agent_prompts", "prompt_events", "tasks", "task_feedback"} <= tables
        # Bindu's rows are untouched: still all there, none stamped.
        assert set(scenario.stamps(run).values()) == {(None, None)}
    public = {r.table_name for r in scenario.rows("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
    assert not public & {"tasks", "agent_prompts", "prompt_events"}


def check_restarted_with_the_adapter_each_agent_bootstraps_its_code_prompt_and_stamps_every_task(scenario):
    scenario.step("deploy")
    for run, served in ((scenario.runs[A], scenario.runs[A].warm_up), (scenario.runs[B], scenario.runs[B].routed)):
        (prompt,) = scenario.prompts(run).values()
        assert (prompt.agent_id, prompt.status, float(prompt.traffic)) == (run.did, "active", 1.0)
        assert prompt.prompt_text == agent_named(run.spec.demo_agent).code_prompt
        stamps = scenario.stamps(run)
        assert {stamps[c.task_id] for c in served} == {(prompt.id, unit_of(str(c.context_id))) for c in served}


def check_training_on_unstamped_history_starts_a_10_percent_candidate(scenario):
    scenario.step("train")
    for run in (scenario.runs[A],):
        prompts = scenario.prompts(run)
        by_status = {p.status: p for p in prompts.values()}
        assert set(by_status) == {"active", "candidate"}, run.train_output
        assert float(by_status["candidate"].traffic) == pytest.approx(CANDIDATE_SHARE)
        assert float(by_status["active"].traffic) == pytest.approx(1 - CANDIDATE_SHARE)
        assert by_status["active"].prompt_text == agent_named(run.spec.demo_agent).code_prompt
        assert {p.agent_id for p in prompts.values()} == {run.did}
        events = scenario.rows(f"SELECT event, prompt_id FROM {scenario.table(run, 'prompt_events')}")
        assert by_status["candidate"].id in {e.prompt_id for e in events}


def check_traffic_through_the_adapter_is_split_and_every_task_stamped(scenario):
    scenario.step("route")
    run = scenario.runs[A]
    prompts = scenario.prompts(run)
    stamps = scenario.stamps(run)
    answer = make_answer(run.spec.demo_agent)
    arm_of_context: dict[uuid.UUID, str] = {}
    for conversation in run.routed:
        prompt_id, unit = stamps[conversation.task_id]
        assert prompt_id in prompts, conversation
        assert unit == unit_of(str(conversation.context_id))
        # The reply is the one the stamped prompt produces: the stamp names the prompt that served.
        message = {"role": "user", "parts": [{"kind": "text", "text": conversation.question}]}
        assert conversation.reply == answer([message], prompts[prompt_id].prompt_text)
        assert arm_of_context.setdefault(conversation.context_id, prompt_id) == prompt_id  # sticky by context
    # The historic tasks keep no stamp; the warm-up before the experiment all went to the code prompt.
    assert all(stamps[c.task_id] == (None, None) for c in run.historic)
    candidate = next(p.id for p in prompts.values() if p.status == "candidate")
    active = next(p.id for p in prompts.values() if p.status == "active")
    assert {stamps[c.task_id][0] for c in run.warm_up} == {active}
    # The split by context is ~10 % (within 4 standard deviations).
    contexts = len(arm_of_context)
    on_candidate = sum(1 for p in arm_of_context.values() if p == candidate)
    assert abs(on_candidate - CANDIDATE_SHARE * contexts) <= 4 * (contexts * CANDIDATE_SHARE * (1 - CANDIDATE_SHARE)) ** 0.5


def check_canary_decides_from_feedback_written_by_tasks_feedback(scenario):
    scenario.step("canary")
    run = scenario.runs[A]
    output = run.canary_output
    assert output["status"] == "applied", json.dumps(output, indent=1, default=str)
    events = scenario.rows(
        f"SELECT event, from_traffic, to_traffic, details FROM {scenario.table(run, 'prompt_events')} ORDER BY id"
    )
    decision = events[-1]
    assert decision.details["controller"] == "canary" and decision.details["policy"] == "sequential"
    assert float(decision.from_traffic) == pytest.approx(CANDIDATE_SHARE) and decision.to_traffic != decision.from_traffic
    # It counted exactly agent A's rated routed tasks, per arm.
    stamps = scenario.stamps(run)
    candidate = next(p.id for p in scenario.prompts(run).values() if p.status == "candidate" or p.id == output.get("candidate_id"))
    on_candidate = sum(1 for c in run.routed if stamps[c.task_id][0] == candidate)
    assert output["candidate_feedback_tasks"] == on_candidate
    assert output["active_feedback_tasks"] == len(run.routed) - on_candidate


def check_two_agents_in_one_database_never_see_each_others_rows(scenario):
    scenario.step("canary")
    a, b = scenario.runs[A], scenario.runs[B]
    for run, other in ((a, b), (b, a)):
        own_prompts = scenario.prompts(run)
        assert {p.agent_id for p in own_prompts.values()} == {run.did}
        stamps = scenario.stamps(run)
        # Every task in the schema is the agent's own, every stamp one of its own prompts.
        assert set(stamps) == {c.task_id for c in run.historic + run.warm_up + run.routed}
        assert {p for p, _ in stamps.values() if p} <= set(own_prompts)
        assert not set(stamps) & {c.task_id for c in other.historic + other.warm_up + other.routed}
        feedback_tasks = {r.task_id for r in scenario.rows(f"SELECT task_id FROM {scenario.table(run, 'task_feedback')}")}
        assert feedback_tasks == set(stamps)
        events = scenario.rows(f"SELECT DISTINCT agent_id FROM {scenario.table(run, 'prompt_events')}")
        assert {e.agent_id for e in events} == {run.did}
    # Each agent's golden dataset holds its own tasks only (duplicate pairs keep the latest task,
    # so the later routed tasks may stand in for historic ones with the same question and reply).
    for run, other in ((a, b), (b, a)):
        rows = asyncio.run(build_golden_dataset(agent_id=run.did, database_url=scenario.db.url))
        task_ids = {uuid.UUID(row.id) for row in rows}
        assert task_ids and task_ids <= {c.task_id for c in run.historic + run.warm_up + run.routed}
        assert not task_ids & {c.task_id for c in other.historic + other.warm_up + other.routed}
    # B's router bootstrapped B's code prompt in B's schema; A's experiment and canary never touched it.
    (b_prompt,) = scenario.prompts(b).values()
    assert (b_prompt.status, float(b_prompt.traffic)) == ("active", 1.0)
    assert b_prompt.prompt_text == agent_named(AGENT_B.demo_agent).code_prompt
    assert {p for p, _ in scenario.stamps(b).values() if p} == {b_prompt.id}


def test_a_bindu_agent_becomes_self_improving_and_two_agents_stay_apart(scenario):
    """One test, so that pytest-xdist never splits the story over two workers (two servers at
    once); each check names its step, and a failed step names the step that failed first."""
    check_historic_traffic_is_written_by_bindu_in_each_agents_own_schema(scenario)
    check_db_upgrade_adds_prompt_id_and_our_tables_in_every_agent_schema(scenario)
    check_restarted_with_the_adapter_each_agent_bootstraps_its_code_prompt_and_stamps_every_task(scenario)
    check_training_on_unstamped_history_starts_a_10_percent_candidate(scenario)
    check_traffic_through_the_adapter_is_split_and_every_task_stamped(scenario)
    check_canary_decides_from_feedback_written_by_tasks_feedback(scenario)
    check_two_agents_in_one_database_never_see_each_others_rows(scenario)

"""Database faults inside pipeline runs: the golden dataset assets, candidate_prompt's write and
traffic_decision (the canary controller through Dagster), all talking to PostgreSQL through a
TcpProxy. The connection is cut at a chosen SQL statement of the run (before or after it runs,
or just after the server answered the COMMIT). Each faulted run must fail with a one-line reason
that names the lost connection and leave nothing half-written; the retry after the restore must
succeed, with no duplicate prompt, audit or feedback rows.
"""

from __future__ import annotations

import re
from datetime import timedelta

import dagster as dg
import pytest

from bindu_pipelines.canary.assets import traffic_decision
from bindu_pipelines.demo.seed import seed_demo_data
from bindu_pipelines.names import GOLDEN_DATASET_STAGES
from bindu_pipelines.partitions import agent_partitions
from bindu_pipelines.resources import BinduDatabase
from bindu_runtime import PromptStore
from bindu_runtime.store import as_utc
from tests.canary.conftest import T0, start_experiment, write_rate
from tests.optimization.conftest import ACTIVE_PROMPT
from tests.optimization.golden_frames import golden_frame
from tests.reliability.helpers import state_signature, state_violations
from tests.reliability.pipeline_helpers import (
    StatementFaults,
    materialize_golden,
    materialize_training,
    materialized_assets,
    step_failures,
    stored_frame,
    table_counts,
)
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

AGENT = "support-bot"
LOST_CONNECTION = ("server closed the connection", "connection", "terminat", "could not receive")
# Every statement names its schema (the session's own, e.g. "t_1a2b.agent_prompts").
INSERT_PROMPT = re.compile(r"INSERT INTO (?:\S+\.)?agent_prompts\b")


@pytest.fixture
def proxy_url(postgres_url):
    proxy, url = TcpProxy.for_url(postgres_url)
    yield proxy, url
    proxy.close()


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def first_line_reason(result: dg.ExecuteInProcessResult) -> tuple[str, str]:
    [(step, message)] = step_failures(result)
    return step, message.strip().splitlines()[0]


def assert_lost_connection(reason: str) -> None:
    assert any(marker in reason.lower() for marker in LOST_CONNECTION), reason


def test_golden_dataset_run_cut_at_every_statement_fails_cleanly_and_retry_matches(direct, proxy_url, instance, tmp_path):
    proxy, url = proxy_url
    seed_demo_data(direct, agents=2, tasks_per_agent=40, seed=3)
    instance.add_dynamic_partitions(agent_partitions.name, [AGENT])
    counts = table_counts(direct)
    with StatementFaults(proxy.port) as faults:
        clean = materialize_golden(url, str(tmp_path / "clean"), instance, AGENT, min_examples=1)
        assert clean.success, step_failures(clean)
        points = list(faults.points)
        expected = stored_frame(clean, "golden_dataset")
        faults.points.clear()
        assert len(points) >= 4  # the streamed read, the orphan-feedback count and their lookups
        failures = {}
        for k, (phase, statement) in enumerate(points):
            faults.points.clear()
            faults.actions = {k: proxy.cut}
            result = materialize_golden(url, str(tmp_path / f"cut{k}"), instance, AGENT, min_examples=1)
            assert not result.success, (k, phase, statement)
            step, reason = first_line_reason(result)
            assert_lost_connection(reason)
            failures[(k, phase, statement)] = step
            # The one step writes the four files in one pass: a failed pass stores none of them.
            assert step == GOLDEN_DATASET_STAGES and materialized_assets(result) == set(), (k, materialized_assets(result))
            proxy.restore()
            faults.actions = {}
            retry = materialize_golden(url, str(tmp_path / f"cut{k}"), instance, AGENT, min_examples=1)
            assert retry.success, step_failures(retry)
            assert stored_frame(retry, "golden_dataset").equals(expected)
    assert table_counts(direct) == counts  # the golden dataset only reads
    steps = sorted(set(failures.values()))
    print(f"\nPIPELINE_FAULTS job=golden_dataset cut_points={len(points)} failed_cleanly={len(failures)} "
          f"failing_steps={steps} retries_identical={len(failures)} db_rows_changed=0")


def _candidate_rows(store: PromptStore, agent: str) -> list:
    return [p for p in store.list_prompts(agent) if p.source != "bootstrap"]


def test_training_run_cut_inside_candidate_prompt_write_leaves_one_candidate(direct, proxy_url, instance):
    """Cuts before each statement candidate_prompt sends (guard reads, each statement of
    start_experiment) and a lost COMMIT answer; the retry always ends with exactly one candidate."""
    proxy, url = proxy_url
    frame = golden_frame()
    store = PromptStore(direct)

    def new_agent(name: str) -> str:
        store.bootstrap(name, ACTIVE_PROMPT)
        instance.add_dynamic_partitions(agent_partitions.name, [name])
        return name

    with StatementFaults(proxy.port) as faults:
        clean = materialize_training(url, instance, new_agent("scratch"), frame)
        assert clean.success, step_failures(clean)
        assert _candidate_outcome(clean) == "candidate_started"
        points = list(faults.points)
        assert any(INSERT_PROMPT.match(sql) for _, sql in points), points
        scenarios = [(f"cut before {sql[:50]}", {k: proxy.cut}) for k, (phase, sql) in enumerate(points) if phase == "before"]
        scenarios.append(("lost COMMIT answer of start_experiment", None))
        outcomes = []
        for n, (label, actions) in enumerate(scenarios):
            agent = new_agent(f"bot-{n}")
            before = state_signature(direct, agent)
            faults.points.clear()
            if actions is None:
                def arm(phase, sql):
                    if phase == "before" and INSERT_PROMPT.match(sql):
                        proxy.cut_after_reply_to(b"COMMIT")
                faults.on_statement, faults.actions = arm, {}
            else:
                faults.on_statement, faults.actions = None, actions
            result = materialize_training(url, instance, agent, frame)
            faults.on_statement, faults.actions = None, {}
            assert not result.success, label
            step, reason = first_line_reason(result)
            assert step == "candidate_prompt" and reason.startswith(f"training agent {agent!r}: database error: "), (label, reason)
            assert_lost_connection(reason)
            committed = actions is None
            if not committed:
                assert state_signature(direct, agent) == before, label  # nothing half-written
            proxy.restore()
            retry = materialize_training(url, instance, agent, frame)
            assert retry.success, (label, step_failures(retry))
            retry_outcome = _candidate_outcome(retry)
            # After a lost commit the candidate exists: the guard skips instead of writing a second one.
            assert retry_outcome == ("skipped" if committed else "candidate_started"), (label, retry_outcome)
            assert len(_candidate_rows(store, agent)) == 1 and store.get_candidate_prompt(agent) is not None, label
            assert state_violations(direct, agent) == [], label
            created = [e for e in store.list_events(agent) if e["from_status"] is None and e["to_status"] == "candidate"]
            assert len(created) == 1, label  # one audited insert of a candidate
            outcomes.append(retry_outcome)
    print(f"\nPIPELINE_FAULTS job=training(candidate_prompt) cut_points={len(scenarios)} "
          f"(before each of {len(scenarios) - 1} statements + lost COMMIT) failed_cleanly={len(scenarios)} partial_writes=0 "
          f"retries_ok={len(outcomes)} candidates_per_agent=1 retry_outcomes={dict((o, outcomes.count(o)) for o in sorted(set(outcomes)))}")


def _candidate_outcome(result: dg.ExecuteInProcessResult) -> str:
    [materialization] = result.asset_materializations_for_node("candidate_prompt")
    return materialization.metadata["outcome"].value


def test_traffic_decision_cut_at_every_statement_applies_the_decision_exactly_once(direct, proxy_url, instance):
    proxy, url = proxy_url
    as_of = (T0 + timedelta(hours=4)).isoformat()

    def setup(agent: str) -> str:
        active, candidate = start_experiment(direct, agent)
        write_rate(direct, active.id, T0 + timedelta(hours=1), 400, 0.80)
        write_rate(direct, candidate.id, T0 + timedelta(hours=1), 60, 0.30)  # clearly worse: rolled back
        instance.add_dynamic_partitions(agent_partitions.name, [agent])
        return candidate.id

    def run(agent: str) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [traffic_decision], partition_key=agent, instance=instance,
            resources={"bindu_db": BinduDatabase(url=url, connect_timeout=2)},
            run_config={"ops": {"traffic_decision": {"config": {"as_of": as_of}}}}, raise_on_error=False,
        )

    store = PromptStore(direct)
    with StatementFaults(proxy.port) as faults:
        setup("scratch")
        clean = run("scratch")
        assert clean.success, step_failures(clean)
        points = list(faults.points)
        decision = clean.asset_materializations_for_node("traffic_decision")[0].metadata["decision"].value
        assert decision == "rollback", decision
        scenarios = [(f"{phase} {sql[:40]}", {k: proxy.cut}) for k, (phase, sql) in enumerate(points)]
        scenarios.append(("lost COMMIT answer", "commit"))
        for n, (label, actions) in enumerate(scenarios):
            agent = f"canary-{n}"
            candidate_id = setup(agent)
            before = state_signature(direct, agent)
            faults.points.clear()
            if actions == "commit":
                faults.actions = {}
                proxy.cut_after_reply_to(b"COMMIT")
            else:
                faults.actions = actions
            result = run(agent)
            faults.actions = {}
            assert not result.success, label
            step, reason = first_line_reason(result)
            assert step == "traffic_decision" and "the database failed during the canary run" in reason, (label, reason)
            assert "no partial change was written" in reason or actions == "commit"
            if actions != "commit":
                assert state_signature(direct, agent) == before, label
            proxy.restore()
            retry = run(agent)
            assert retry.success, (label, step_failures(retry))
            rollbacks = [e for e in store.list_events(agent) if e["event"] == "rollback" and e["prompt_id"] == candidate_id]
            assert len(rollbacks) == 1 and store.get_candidate_prompt(agent) is None, label
            assert state_violations(direct, agent) == [], label
            assert as_utc(rollbacks[0]["created_at"]) == T0 + timedelta(hours=4)
            retry_status = retry.asset_materializations_for_node("traffic_decision")[0].metadata["status"].value
            assert retry_status == ("no_experiment" if actions == "commit" else "applied"), (label, retry_status)
    print(f"\nPIPELINE_FAULTS job=canary cut_points={len(scenarios)} (statements {len(points)} + lost COMMIT 1) "
          f"failed_cleanly={len(scenarios)} partial_writes=0 decisions_applied_once={len(scenarios)}")

"""A run whose process dies no longer blocks its agent; two runs started together → one runs.

The real command, in real processes: ``bindu-dspy train`` on an SQLite database seeded with the
demo's data, the offline model named explicitly (``BINDU_LM=bindu/offline-demo``), a fresh
``DAGSTER_HOME``. A run is SIGKILLed once Dagster records it STARTED; it stays STARTED in the
instance (nothing in the process can report its own SIGKILL) — before this change every later
``train`` for the agent then failed with "already in progress", forever.

Run with ``-s`` for the summary lines recorded in docs/RELIABILITY.md; ``BINDU_TEST_KILLS`` sets
how many kills (default 3).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from bindu_pipelines.definitions import defs
from bindu_pipelines.demo.seed import seed_demo_data
from bindu_pipelines.instance import CLAIM_TAG, HOST_TAG, PID_TAG, claim_agent_run, claim_name
from bindu_pipelines.launch import in_progress_runs
from bindu_pipelines.names import OFFLINE_MODEL, TRAINING_AGENT_TAG, TRAINING_JOB
from bindu_runtime import make_engine, upgrade

AGENT = "support-bot"
REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "bindu_pipelines.cli"]
IN_PROGRESS = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


@pytest.fixture
def home(tmp_path, sqlite_url, monkeypatch) -> Path:
    """A seeded SQLite database and a fresh DAGSTER_HOME with the shipped dagster.yaml."""
    engine = make_engine(sqlite_url)
    upgrade(engine)
    seed_demo_data(engine, agents=1, tasks_per_agent=60, seed=7)
    engine.dispose()
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text((REPO / "dagster_home" / "dagster.yaml").read_text())
    for name, value in {"DAGSTER_HOME": str(dagster_home), "BINDU_DATABASE_URL": sqlite_url,
                        "BINDU_LM": OFFLINE_MODEL, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    return dagster_home


def _train(*extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "train", "--agent", AGENT, "--max-steps", "1", *extra],
        cwd=REPO, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _training_runs(instance: dg.DagsterInstance, statuses=None) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(job_name=TRAINING_JOB, tags={TRAINING_AGENT_TAG: AGENT}, statuses=statuses)))


def _wait_for_started_run(instance: dg.DagsterInstance, process: subprocess.Popen, known: set[str], timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in _training_runs(instance, [dg.DagsterRunStatus.STARTED]):
            if run.run_id not in known:
                return run
        if process.poll() is not None:
            pytest.fail(f"train ended before it could be killed: {process.communicate()}")
        time.sleep(0.02)
    pytest.fail("no STARTED training run appeared")


@pytest.mark.timeout(1800)  # real CLI processes: each start imports DSPy and Dagster (~10 s on 2 shared cores)
def test_sigkilled_train_runs_are_marked_failed_and_the_next_train_succeeds(home, capsys):
    kills = int(os.environ.get("BINDU_TEST_KILLS", "3"))
    instance = dg.DagsterInstance.get()
    killed: list[str] = []
    left_stuck = 0
    for _ in range(kills):
        process = _train()
        run = _wait_for_started_run(instance, process, set(killed))
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        assert process.returncode == -signal.SIGKILL
        killed.append(run.run_id)
        recorded = instance.get_run_by_id(run.run_id)
        left_stuck += recorded.status in IN_PROGRESS
        assert recorded.tags[PID_TAG] == str(process.pid) and recorded.tags[HOST_TAG] == socket.gethostname()

    # Every kill left its run recorded as in progress: what used to block the agent for good.
    assert left_stuck == kills
    process = _train()
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert out.startswith(f"{AGENT}: candidate_started")

    instance = dg.DagsterInstance.get()
    stuck_after = [run.run_id for run in _training_runs(instance, IN_PROGRESS)]
    failed = {run.run_id: run for run in _training_runs(instance, [dg.DagsterRunStatus.FAILURE])}
    assert stuck_after == []
    assert set(killed) <= set(failed)
    for run_id in killed:
        [failure] = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert "Marked failed by bindu-dspy" in failure.message and "is gone" in failure.message
    with capsys.disabled():
        print(f"\nDEAD RUNS kills={kills} left_recorded_in_progress={left_stuck} "
              f"marked_failed={len(set(killed) & set(failed))} stuck_after_next_train={len(stuck_after)} next_train_exit=0")  # fmt: skip


@pytest.mark.timeout(1800)
def test_two_trains_started_together_exactly_one_runs(home, capsys):
    pairs = int(os.environ.get("BINDU_TEST_TRAIN_PAIRS", "1"))
    refused_lines = []
    for pair in range(pairs):
        first, second = _train(), _train()
        results = [(p.wait(300), *p.communicate()) for p in (first, second)]
        codes = sorted(code for code, _, _ in results)
        assert codes == [0, 1], results
        [(_, _, refused)] = [r for r in results if r[0] == 1]
        assert len(refused.strip().splitlines()) == 1 and "already in progress" in refused, refused
        refused_lines.append(refused.strip())
        if pair + 1 < pairs:  # the next pair starts from no experiment again
            from bindu_runtime import PromptStore

            engine = make_engine(os.environ["BINDU_DATABASE_URL"])
            store = PromptStore(engine)
            candidate = store.get_candidate_prompt(AGENT)
            store.rollback(AGENT, candidate_id=candidate.id)
            engine.dispose()
    instance = dg.DagsterInstance.get()
    runs = _training_runs(instance)
    # The refused one never created a run: one run per pair, all finished.
    assert len(runs) == pairs and all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
    with capsys.disabled():
        print(f"\nTRAIN PAIRS pairs={pairs} both_ran=0 one_ran_one_refused={pairs} runs_recorded={len(runs)} "
              f"refusal={refused_lines[0]!r}")  # fmt: skip


# --- the check itself, on recorded runs (no subprocess) ------------------------------------


def _recorded_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> dg.DagsterRun:
    return instance.create_run_for_job(
        defs.resolve_job_def(TRAINING_JOB), status=dg.DagsterRunStatus.STARTED,
        tags={TRAINING_AGENT_TAG: AGENT, **tags},
    )  # fmt: skip


def test_the_check_fails_only_runs_whose_process_is_certainly_gone():
    with dg.instance_for_test() as instance:
        here, claim = socket.gethostname(), claim_name(TRAINING_JOB, AGENT)
        released = _recorded_run(instance, {HOST_TAG: here, PID_TAG: str(os.getpid()), CLAIM_TAG: claim})
        gone_pid = _exited_pid()
        pid_only = _recorded_run(instance, {HOST_TAG: here, PID_TAG: str(gone_pid)})
        elsewhere = _recorded_run(instance, {HOST_TAG: "another-machine", PID_TAG: "1", CLAIM_TAG: claim})
        daemon = _recorded_run(instance, {})
        with claim_agent_run(instance, TRAINING_JOB, "another-agent") as held:
            alive = _recorded_run(instance, {**held})
            alive_ids = {run.run_id for run in in_progress_runs(instance, TRAINING_JOB, {})}
        assert alive_ids == {elsewhere.run_id, daemon.run_id, alive.run_id}
        for run in (released, pid_only):
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        for run in (elsewhere, daemon, alive):
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED


def _exited_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_claim_is_exclusive_across_processes_and_released_by_sigkill(tmp_path):
    """The claim itself: a second process is refused while the first holds it, and a SIGKILL frees it."""
    script = (
        "import sys, time, dagster as dg\n"
        "from bindu_pipelines.instance import claim_agent_run, RunClaimed\n"
        "instance = dg.DagsterInstance.from_config(sys.argv[1])\n"
        "try:\n"
        "    with claim_agent_run(instance, 'training_job', 'a'):\n"
        "        print('claimed', flush=True); time.sleep(float(sys.argv[2]))\n"
        "except RunClaimed:\n"
        "    print('refused', flush=True)\n"
    )
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), "60"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert holder.stdout.readline().strip() == "claimed"
    second = subprocess.run([sys.executable, "-c", script, str(tmp_path), "0"], capture_output=True, text=True, cwd=REPO)
    assert second.stdout.strip() == "refused"
    holder.send_signal(signal.SIGKILL)
    holder.wait(30)
    third = subprocess.run([sys.executable, "-c", script, str(tmp_path), "0"], capture_output=True, text=True, cwd=REPO)
    assert third.stdout.strip() == "claimed"


def test_operator_lists_clears_dead_and_fails_a_lost_machines_run(tmp_path, monkeypatch, capsys):
    from bindu_pipelines.cli import main

    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    instance = dg.DagsterInstance.get()
    here = socket.gethostname()
    dead = _recorded_run(instance, {HOST_TAG: here, PID_TAG: "4242", CLAIM_TAG: claim_name(TRAINING_JOB, AGENT), "dagster/partition": AGENT})
    lost = _recorded_run(instance, {HOST_TAG: "host-2", PID_TAG: "77", "dagster/partition": AGENT})

    assert main(["runs", "--agent", AGENT]) == 0
    listing = capsys.readouterr().out
    assert f"{dead.run_id}" in listing and "dead" in listing.split(dead.run_id)[1].splitlines()[0]
    assert "unknown" in listing.split(lost.run_id)[1].splitlines()[0]
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.STARTED  # listing changes nothing

    assert main(["runs", "--clear-dead"]) == 0
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(lost.run_id).status == dg.DagsterRunStatus.STARTED

    assert main(["runs", "--fail", lost.run_id, "--reason", "host-2 lost"]) == 0
    assert instance.get_run_by_id(lost.run_id).status == dg.DagsterRunStatus.FAILURE
    [failure] = instance.all_logs(lost.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert "host-2 lost" in failure.message
    capsys.readouterr()
    assert main(["runs", "--fail", lost.run_id]) == 1
    assert "already FAILURE" in capsys.readouterr().err
    assert main(["runs"]) == 0
    assert "no unfinished" in capsys.readouterr().out

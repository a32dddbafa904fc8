"""The Dagster instance at ``DAGSTER_HOME``: opened race-free, and the run claims kept there.

Two things every process that runs our jobs shares through ``DAGSTER_HOME``:

* **Initialisation.** On a new ``DAGSTER_HOME`` the first ``DagsterInstance.get()`` creates the
  SQLite run, event-log and schedule storages and stamps their alembic versions. Two processes
  doing it at once (two cron lines at 02:00) collide: ``table runs already exists``,
  ``UNIQUE constraint failed: alembic_version``, or for good two alembic heads. ``open_instance()``
  does that first opening once, under an exclusive ``fcntl.flock`` on ``DAGSTER_HOME/.init.lock``,
  and records it in ``DAGSTER_HOME/.initialised`` (the dagster version and a digest of
  ``dagster.yaml``), so every later opening skips the lock. A changed ``dagster.yaml`` (say, a move
  to PostgreSQL storage, whose first opening races the same way) is initialised again under the lock.

* **Run claims.** One run of a job per agent at a time, for runs this machine starts itself
  (``bindu-dspy train``/``canary``, ``train()``): ``claim_agent_run`` takes an exclusive,
  non-blocking ``flock`` on ``DAGSTER_HOME/claims/<job>-<digest of agent>.lock`` and holds it for
  the whole run. The kernel releases it when the process ends in any way (SIGKILL and OOM
  included), so a claim can never outlive its run, and a run recorded as in progress whose claim
  file is not locked on its host is dead by construction — no guess from a pid that may have been
  reused. The daemon's runs are covered by Dagster's run monitoring (``dagster.yaml``) and the
  per-agent tag concurrency limits.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from bindu_pipelines.errors import RunClaimed

INIT_LOCK = ".init.lock"
INIT_MARK = ".initialised"
CLAIMS_DIR = "claims"
# A claim is tried for this long before it is refused: another process probing the same claim
# file (``dead_reason``) holds its lock for microseconds, which must not refuse a run.
CLAIM_PATIENCE_SECONDS = 0.5

# Run tags recorded by the launcher (this machine's runs), read back by the dead-run check.
HOST_TAG = "bindu/host"
PID_TAG = "bindu/pid"
CLAIM_TAG = "bindu/claim"


def dagster_home() -> Path | None:
    home = os.environ.get("DAGSTER_HOME")
    return Path(home).expanduser().resolve() if home else None


def open_instance() -> dg.DagsterInstance:
    """``DagsterInstance.get()``, after the home's storage was initialised once under a lock.

    Every path that opens the instance for a command goes through here (the CLI's train and
    canary, ``train()``, the demo). Without ``DAGSTER_HOME`` Dagster's own error is raised.
    """
    home = dagster_home()
    if home is not None:
        initialise_home(home)
    return dg.DagsterInstance.get()


def _signature(home: Path) -> str:
    config = home / "dagster.yaml"
    digest = hashlib.sha256(config.read_bytes() if config.exists() else b"").hexdigest()
    return f"dagster {dg.__version__} dagster.yaml sha256:{digest}\n"


def _initialised(home: Path, signature: str) -> bool:
    try:
        return (home / INIT_MARK).read_text() == signature
    except OSError:
        return False


def initialise_home(home: Path) -> None:
    """Create the instance's storage at ``home`` once, whoever else starts at the same moment."""
    signature = _signature(home)
    if _initialised(home, signature):
        return
    home.mkdir(parents=True, exist_ok=True)
    with open(home / INIT_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # blocks while another process initialises
        try:
            if _initialised(home, signature):  # it did: nothing left to do
                return
            # Opening the instance creates and stamps the run, event-log and schedule storages.
            instance = dg.DagsterInstance.from_config(str(home))
            try:
                instance.get_runs(limit=1)  # proves the storage answers
            finally:
                instance.dispose()
            partial = home / f"{INIT_MARK}.{os.getpid()}"
            partial.write_text(signature)
            os.replace(partial, home / INIT_MARK)  # readers see the old mark or the whole new one
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- run claims


def claim_name(job_name: str, agent_id: str) -> str:
    """The file name of a job's claim for one agent (agent ids may hold any character)."""
    return f"{job_name}-{hashlib.sha256(agent_id.encode('utf-8', 'surrogatepass')).hexdigest()[:24]}.lock"


def _claim_path(instance: dg.DagsterInstance, name: str) -> Path:
    # Beside the instance's storage (DAGSTER_HOME; an ephemeral instance's own temp directory).
    return Path(instance.root_directory) / CLAIMS_DIR / name


@contextlib.contextmanager
def claim_agent_run(instance: dg.DagsterInstance, job_name: str, agent_id: str) -> Iterator[dict[str, str]]:
    """Hold the claim for one run of ``job_name`` for ``agent_id``; RunClaimed at once if taken.

    Yields the tags the run records (host, pid, claim), read back by ``dead_reason``.
    """
    name = claim_name(job_name, agent_id)
    path = _claim_path(instance, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        deadline = time.monotonic() + CLAIM_PATIENCE_SECONDS
        while not _try_lock(lock):
            if time.monotonic() >= deadline:
                raise RunClaimed(name)
            time.sleep(0.02)
        try:
            yield {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), CLAIM_TAG: name}
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _claim_held(instance: dg.DagsterInstance, name: str) -> bool:
    """Whether some process (this one included: flock locks belong to open files) holds the claim."""
    path = _claim_path(instance, name)
    if not path.exists():
        return False
    with open(path, "a") as probe:
        if not _try_lock(probe):
            return True
        fcntl.flock(probe, fcntl.LOCK_UN)
        return False


def _try_lock(file) -> bool:
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def dead_reason(instance: dg.DagsterInstance, run: dg.DagsterRun, *, held_claim: str | None = None) -> str | None:
    """Why a run recorded as in progress is certainly dead, or None when it may be alive.

    Only runs started on this machine can be judged here: their claim is not held (the kernel
    dropped it with the process), or, for a run tagged with a pid but no claim, that pid is gone.
    ``held_claim``: the claim this process holds right now — a recorded run under it is not ours
    (ours is created after the check), so its process is gone. Runs of other machines and of the
    daemon are left to Dagster's run monitoring.
    """
    tags = run.tags
    if tags.get(HOST_TAG) != socket.gethostname():
        return None
    pid = tags.get(PID_TAG, "?")
    if tags.get(CLAIM_TAG):
        if tags[CLAIM_TAG] != held_claim and _claim_held(instance, tags[CLAIM_TAG]):
            return None
        return f"its process (pid {pid} on {tags[HOST_TAG]}) is gone: the run's claim was released without the run finishing"
    if pid.isdigit() and not _pid_alive(int(pid)):
        return f"its process (pid {pid} on {tags[HOST_TAG]}) is gone"
    return None


def fail_dead_run(instance: dg.DagsterInstance, run: dg.DagsterRun, reason: str) -> None:
    """Record a dead run as failed, with the reason in its event log (visible in the UI)."""
    instance.report_run_failed(run, f"Marked failed by bindu-dspy: {reason} (killed, out of memory or machine lost).")

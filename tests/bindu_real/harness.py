"""Start a real ``bindu`` agent server (``agent_server.py`` in ``.venv-bindu``) and talk to it
through its own JSON-RPC API, as a client of a deployed Bindu agent would.

Every wait is bounded; a server is stopped by its PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BINDU_PYTHON = Path(os.environ.get("BINDU_REAL_PYTHON", REPO_ROOT / ".venv-bindu" / "bin" / "python"))
AGENT_SCRIPT = Path(__file__).with_name("agent_server.py")
START_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 10.0
ACCEPTED_OUTPUT_MODES = ["text/plain", "application/json"]
TERMINAL_STATES = {"completed", "failed", "canceled", "rejected"}


class BinduServerError(RuntimeError):
    pass


def require_bindu_python() -> Path:
    """The real Bindu venv's interpreter; fails (never skips) with the command that builds it."""
    if not BINDU_PYTHON.exists():
        raise BinduServerError(f"{BINDU_PYTHON} is missing: run `make bindu-venv` (make test builds it)")
    return BINDU_PYTHON


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post_json(url: str, payload: dict, timeout: float = REQUEST_TIMEOUT_S) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class BinduAgentServer:
    """One ``bindufy`` server process. ``workdir`` is its cwd (no ``.env`` there: Bindu reads ``./.env``)."""

    workdir: Path
    author: str
    name: str
    bindu_postgres_url: str
    demo_agent: str
    mode: str = "plain"
    agent_did: str | None = None
    router_database_url: str | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"server-{self.name}-{self.mode}-{self.port}.log"

    def start(self) -> BinduAgentServer:
        python = require_bindu_python()
        self.workdir.mkdir(parents=True, exist_ok=True)
        spec = {
            "port": self.port, "author": self.author, "name": self.name, "mode": self.mode,
            "bindu_postgres_url": self.bindu_postgres_url, "key_dir": str(self.workdir / "keys"),
            "demo_agent": self.demo_agent, "agent_did": self.agent_did,
            "router_database_url": self.router_database_url,
        }  # fmt: skip
        spec_path = self.workdir / f"spec-{self.name}-{self.mode}.json"
        spec_path.write_text(json.dumps(spec))
        # A clean environment: no database URL, model or Bindu setting leaks in from the test run.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir),
            "PYTHONPATH": str(REPO_ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1",
        }  # fmt: skip
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(python), str(AGENT_SCRIPT), str(spec_path)], cwd=self.workdir, env=env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        self._wait_until_healthy()
        return self

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BinduServerError(f"bindu server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    health = json.loads(response.read())
                did = health.get("application", {}).get("agent_did") or _find_key(health, "agent_did")
                if did:
                    if self.agent_did not in (None, did):
                        raise BinduServerError(f"server DID {did} is not the expected {self.agent_did}")
                    self.agent_did = did
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            time.sleep(0.2)
        self.stop()
        raise BinduServerError(f"bindu server not healthy after {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM by PID (the router flushes its queued stamps at exit), SIGKILL after 15 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self) -> BinduAgentServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- JSON-RPC

    def call(self, method: str, params: dict) -> dict:
        """One JSON-RPC call; its ``result``, or BinduServerError with the error (ids must be UUIDs)."""
        reply = _post_json(self.url + "/", {"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": method, "params": params})
        if "error" in reply:
            raise BinduServerError(f"{method} failed: {reply['error']}")
        return reply["result"]

    def send_message(self, text: str, *, context_id: uuid.UUID, task_id: uuid.UUID) -> dict:
        message = {
            "kind": "message", "role": "user", "parts": [{"kind": "text", "text": text}],
            "messageId": str(uuid.uuid4()), "contextId": str(context_id), "taskId": str(task_id),
        }  # fmt: skip
        return self.call("message/send", {"message": message, "configuration": {"acceptedOutputModes": ACCEPTED_OUTPUT_MODES}})

    def wait_for_tasks(self, task_ids, timeout: float = 120.0, pool=None) -> dict[uuid.UUID, dict]:
        """Poll ``tasks/get`` (through ``pool``, an executor, when given) until every task is in a
        terminal state; the tasks by id."""
        pending, done = set(task_ids), {}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for task in (pool.map if pool else map)(lambda t: self.call("tasks/get", {"taskId": str(t)}), list(pending)):
                if task["status"]["state"] in TERMINAL_STATES:
                    task_id = uuid.UUID(task["id"])
                    done[task_id] = task
                    pending.discard(task_id)
            if pending:
                time.sleep(0.1)
        if pending:
            raise BinduServerError(f"{len(pending)} tasks not finished after {timeout} s")
        return done

    def give_feedback(self, task_id: uuid.UUID, *, rating: int, feedback: str = "", metadata: dict | None = None) -> dict:
        """Bindu's own ``tasks/feedback`` (it reads ``rating`` and ``metadata`` without defaults)."""
        return self.call(
            "tasks/feedback",
            {"taskId": str(task_id), "feedback": feedback, "rating": rating, "metadata": metadata or {}},
        )


def reply_text(task: dict) -> str:
    """The agent's reply in a ``tasks/get`` result: the text of its ``result`` artifact."""
    for artifact in task.get("artifacts") or []:
        texts = [part.get("text", "") for part in artifact.get("parts", []) if part.get("kind") == "text"]
        if texts:
            return "".join(texts)
    return ""


def _find_key(value, key):
    if isinstance(value, dict):
        if key in value:
            return value[key]
        for inner in value.values():
            found = _find_key(inner, key)
            if found:
                return found
    return None


def run_cli(
    *args: str, database_url: str, dagster_home: Path, extra_env: dict | None = None, timeout: float = 180.0
) -> subprocess.CompletedProcess:
    """``bindu-dspy`` from the main venv (the pipelines side), offline model, our database only."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BINDU_", "STORAGE__"))},
        "BINDU_DATABASE_URL": database_url, "BINDU_LM": "bindu/offline-demo",
        "DAGSTER_HOME": str(dagster_home), "LITELLM_LOCAL_MODEL_COST_MAP": "True", **(extra_env or {}),
    }  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "bindu_pipelines.cli", *args], env=env, cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip

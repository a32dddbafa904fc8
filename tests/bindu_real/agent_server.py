"""A real ``bindufy``'d agent for the end-to-end tests: run by ``.venv-bindu/bin/python`` (the real
``bindu`` from PyPI needs CPython >= 3.12), never imported by the test process.

Usage: ``python agent_server.py SPEC.json``. The spec names the port, Bindu's PostgreSQL URL, the key
directory, the demo agent whose topics it answers about, and the mode:

- ``"plain"``: the agent as it was before bindu-dspy — its code prompt, no router;
- ``"router"``: the same answer function wrapped by ``PromptRouter.bindu_handler`` (needs the
  agent's DID and our database URL), so every task is routed and stamped.

The answer is deterministic and follows the system prompt it is given: a prompt that asks for
numbered steps gets the numbered reply users like; otherwise the old agent's uneven replies
(good, rambling or vague, fixed by the question's text). The catalog is pure Python, so importing it
needs none of the pipelines' dependencies.
"""

from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

from bindu_pipelines.demo.catalog import VAGUE_REPLIES, agent_named, good_reply, rambling_reply


def _last_user_text(messages: list[dict]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return " ".join(part.get("text", "") for part in message.get("parts", []) if part.get("kind") == "text")
    return ""


def make_answer(demo_agent_id: str):
    topics = agent_named(demo_agent_id).topics

    def answer(messages: list[dict], system_prompt: str) -> str:
        question = _last_user_text(messages)
        topic = next((t for t in topics if t.subject in question), topics[0])
        if "numbered steps" in system_prompt.lower():
            return good_reply(topic)
        draw = zlib.crc32(question.encode()) % 20
        if draw < 9:
            return good_reply(topic)
        if draw < 15:
            return rambling_reply(topic)
        return VAGUE_REPLIES[draw % len(VAGUE_REPLIES)]

    return answer


def main(spec_path: str) -> None:
    from bindu.penguin.bindufy import bindufy  # here, so the tests can import make_answer without bindu

    spec = json.loads(Path(spec_path).read_text())
    demo_agent = agent_named(spec["demo_agent"])
    answer = make_answer(spec["demo_agent"])
    if spec["mode"] == "router":
        from bindu_runtime import PromptRouter

        router = PromptRouter(
            spec["router_database_url"], agent_id=spec["agent_did"], default_prompt=demo_agent.code_prompt,
            refresh_interval=0.5,
        )  # fmt: skip
        handler = router.bindu_handler(answer)
    else:

        def handler(messages):
            return answer(messages, demo_agent.code_prompt)

    config = {
        "author": spec["author"],
        "name": spec["name"],
        "description": f"bindu-dspy end-to-end test agent ({spec['mode']})",
        "version": "1.0.0",
        "deployment": {"url": f"http://127.0.0.1:{spec['port']}", "expose": True},
        "storage": {"type": "postgres", "postgres_url": spec["bindu_postgres_url"]},
        "scheduler": {"type": "memory"},
        "telemetry": False,
        "recreate_keys": False,
        "capabilities": {},
    }
    bindufy(config, handler, run_server=True, key_dir=spec["key_dir"], launch=False)


if __name__ == "__main__":
    main(sys.argv[1])

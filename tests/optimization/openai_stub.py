"""A tiny OpenAI-compatible server on 127.0.0.1 (stdlib only) for the real HTTP path.

``mode``: "ok" answers with the offline model's logic (so DSPy formats round-trip over HTTP),
"error" always 500, "garbage" 200 with unparseable text, "slow" sleeps ``delay`` seconds first,
"flaky" fails the first request with 503 then behaves like "ok", "dies" answers
``healthy_requests`` requests and then returns 500 for ever (the model going down mid-run).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bindu_pipelines.optimization.offline_lm import agent_reply, structured_reply


def _content(message) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content


class OpenAIStub:
    def __init__(self, mode: str = "ok", delay: float = 0.0, healthy_requests: int = 0):
        self.mode, self.delay, self.healthy_requests = mode, delay, healthy_requests
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                stub.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": "not found"}})
                dead = stub.mode == "dies" and len(stub.requests) > stub.healthy_requests
                if stub.mode == "error" or dead or (stub.mode == "flaky" and len(stub.requests) == 1):
                    code = 503 if stub.mode == "flaky" else 500
                    return self._send(code, {"error": {"message": "model backend is down", "type": "server_error"}})
                if stub.mode == "slow":
                    time.sleep(stub.delay)
                messages = body.get("messages", [])
                system = "\n".join(_content(m) for m in messages if m.get("role") == "system")
                users = [_content(m) for m in messages if m.get("role") == "user"]
                user = users[-1] if users else ""
                if stub.mode == "garbage":
                    text = "¯\\_(ツ)_/¯ %%% <<<>>> ..."
                elif "[[ ## " in user or "Your output fields are:" in system:
                    text = structured_reply(system, user)
                else:
                    text = agent_reply(system, user)
                n_in, n_out = sum(len(_content(m).split()) for m in messages), len(text.split())
                self._send(200, {
                    "id": f"chatcmpl-{len(stub.requests)}", "object": "chat.completion", "created": 0,
                    "model": body.get("model", "stub"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out},
                })

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> OpenAIStub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

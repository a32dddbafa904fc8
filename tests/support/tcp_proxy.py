"""A TCP proxy between the code under test and PostgreSQL that can cut, stall and restore.

- ``cut()``: every open connection is closed and new ones are closed on accept (database gone).
- ``stall()``: connections stay open but no bytes move (a hung network or server).
- ``restore()``: traffic flows again for new connections.
- ``cut_after_reply_to(marker)``: the next client message containing ``marker`` (e.g. ``b"COMMIT"``)
  reaches the server and is answered, the answer is dropped and everything is cut: the client never
  learns whether its commit happened (added for tests/reliability).
- ``bytes_from_server``: how much the server has sent through the proxy so far.
"""

from __future__ import annotations

import select
import socket
import threading
from urllib.parse import quote

import sqlalchemy as sa


class TcpProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._mode = "open"
        self._lock = threading.Lock()
        self._connections: list[tuple[socket.socket, socket.socket]] = []
        self._closed = threading.Event()
        self.accepted = 0
        self._cut_after: bytes | None = None
        self.replies_dropped = 0
        self.bytes_from_server = 0
        threading.Thread(target=self._accept_loop, name="tcp-proxy-accept", daemon=True).start()

    @classmethod
    def for_url(cls, url: str) -> tuple[TcpProxy, str]:
        """A proxy in front of the database of ``url`` and the URL that goes through it."""
        parsed = sa.make_url(url)
        proxy = cls(parsed.host or "127.0.0.1", parsed.port or 5432)
        proxied = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        # make_url keeps query options (search_path); render them back unescaped-safe.
        if "options" in parsed.query:
            proxied = proxied.split("?")[0] + "?options=" + quote(parsed.query["options"])
        return proxy, proxied

    @property
    def mode(self) -> str:
        return self._mode

    def cut(self) -> None:
        with self._lock:
            self._mode = "cut"
            connections, self._connections = self._connections, []
        for pair in connections:
            for sock in pair:
                _close(sock)

    def stall(self) -> None:
        with self._lock:
            self._mode = "stall"

    def cut_after_reply_to(self, marker: bytes) -> None:
        with self._lock:
            self._cut_after = marker

    def restore(self) -> None:
        with self._lock:
            self._mode = "open"

    def close(self) -> None:
        self._closed.set()
        self.cut()
        _close(self._listener)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self._mode == "cut":
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._connections.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        try:
            while not self._closed.is_set():
                readable, _, _ = select.select(list(peers), [], [], 0.2)
                if self._mode == "stall":
                    continue
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is upstream:
                        self.bytes_from_server += len(data)
                    peers[sock].sendall(data)
                    if sock is client and self._cut_after is not None and self._cut_after in data:
                        self._cut_after = None
                        upstream.recv(65536)  # the server's answer: it has acted on the message
                        self.replies_dropped += 1
                        self.cut()
                        return
        except (OSError, ValueError):
            return
        finally:
            _close(client)
            _close(upstream)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class SilentServer:
    """Listens and never answers: a connect attempt hangs until the client's timeout."""

    def __init__(self):
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self._listener.getsockname()[1]

    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/test"

    def close(self) -> None:
        _close(self._listener)

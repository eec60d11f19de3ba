"""A real HTTP server on 127.0.0.1 that speaks OpenAI chat completions, scripted per request.

Each request to ``POST /v1/chat/completions`` takes the next scripted :class:`Reply` (or
the default one): a canned completion with usage, a 429 with ``retry-after``, a 503, a
body that is not JSON, a reply held back until the client gave up. Every request is
recorded with its arrival time, headers and JSON body so tests can check what the client
really sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HELD_AT_MOST = 120.0
"""How long a held reply waits at most: a client whose timeout never fires gets it then."""


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    held: bool = False
    """Answer only when the server stops (or after two minutes): a reply that is always
    later than the client's timeout, however slow the machine."""


def completion(
    text: str, *, prompt_tokens: int = 12, completion_tokens: int = 8, model: str = "fake-model"
) -> Reply:
    """A successful chat completion carrying ``text`` and a usage block."""
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return Reply(200, json.dumps(body).encode(), {"content-type": "application/json"})


def error(status: int, message: str, **headers: str) -> Reply:
    """An OpenAI-style error body with ``status`` and extra headers (``retry_after=...``)."""
    body = json.dumps({"error": {"message": message, "type": "fake_error"}}).encode()
    names = {k.replace("_", "-"): v for k, v in headers.items()}
    return Reply(status, body, {"content-type": "application/json", **names})


@dataclass(frozen=True)
class Seen:
    """A request as the server received it."""

    at: float  # time.monotonic() on arrival
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None


class ChatServer:
    """Start with ``with ChatServer() as server:``; ``server.base_url`` ends in ``/v1``."""

    def __init__(self, default: Reply | None = None) -> None:
        self.default = default or completion("hello from the fake model")
        self.script: deque[Reply] = deque()
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="chat-server")

    @property
    def base_url(self) -> str:
        """Where clients point ``base_url``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def queue(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order."""
        with self._lock:
            self.script.extend(replies)

    def _next(self, seen: Seen) -> Reply:
        with self._lock:
            self.seen.append(seen)
            return self.script.popleft() if self.script else self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                arrived = time.monotonic()
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = server._next(Seen(arrived, self.path, headers, body))
                if self.path != "/v1/chat/completions":
                    reply = error(404, f"no route {self.path}")
                if reply.held:
                    server._released.wait(HELD_AT_MOST)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        return Handler

    def start(self) -> ChatServer:
        """Serve on a thread owned by this object."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and join the server and its request threads."""
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""A scripted OpenAI-compatible chat server on 127.0.0.1, for tests and benchmarks.

The LLM generator is tested through litellm's real HTTP path, so the only thing
faked is the model: each test scripts what the "model" answers (a text, an HTTP
status, garbage, a delay) and afterwards reads what was sent. Nothing here imports
litellm or poet_runtime.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Answer:
    """A normal completion; ``text`` may be a callable taking the request body."""

    text: str | Callable[[dict], str]
    prompt_tokens: int = 100
    completion_tokens: int = 50


@dataclass
class Status:
    """An error status with an OpenAI-style error body (429, 500, ...)."""

    code: int
    message: str = "scripted error"
    headers: dict = field(default_factory=dict)


@dataclass
class Garbage:
    """A 200 response whose body is not JSON."""

    body: bytes = b"<html>this is not json{"


@dataclass
class Delay:
    """Wait ``seconds`` before sending ``then`` (a client timeout shorter than this fails)."""

    seconds: float
    then: Any = None


class FakeOpenAI:
    """Start with ``FakeOpenAI().start()``; ``script(...)`` queues answers; ``requests`` lists bodies."""

    def __init__(self):
        self.queue: deque = deque()
        self.default: Any = Status(500, "nothing scripted")
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0  # most requests being answered at once (generation slots tests)
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # -- control -----------------------------------------------------------------------

    def start(self) -> "FakeOpenAI":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"raw": raw.decode("utf-8", "replace")}
                body["_path"] = self.path
                with owner.lock:
                    owner.requests.append(body)
                    item = owner.queue.popleft() if owner.queue else owner.default
                    owner.in_flight += 1
                    owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
                try:
                    owner._respond(self, item, body)
                finally:
                    with owner.lock:
                        owner.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-openai", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *items, default: Any = None) -> None:
        with self.lock:
            self.queue.clear()
            self.queue.extend(items)
            self.requests.clear()
            self.max_in_flight = 0
            if default is not None:
                self.default = default

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until no request is being answered (a delayed answer an earlier client gave up on)."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)

    def prompts(self) -> list[str]:
        """All message texts of every request, joined per request."""
        return ["\n".join(m.get("content") or "" for m in r.get("messages", [])) for r in self.requests]

    # -- responses ---------------------------------------------------------------------

    def _respond(self, handler, item, body: dict) -> None:
        if isinstance(item, Delay):
            time.sleep(item.seconds)
            item = item.then if item.then is not None else Status(504, "late")
        if isinstance(item, str) or callable(item) and not isinstance(item, (Answer, Status, Garbage)):
            item = Answer(item)
        if isinstance(item, Answer):
            text = item.text(body) if callable(item.text) else item.text
            payload = {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": item.prompt_tokens, "completion_tokens": item.completion_tokens,
                          "total_tokens": item.prompt_tokens + item.completion_tokens},
            }
            self._send(handler, 200, json.dumps(payload).encode(), {"Content-Type": "application/json"})
        elif isinstance(item, Status):
            payload = {"error": {"message": item.message, "type": "server_error", "code": item.code}}
            self._send(handler, item.code, json.dumps(payload).encode(),
                       {"Content-Type": "application/json", **item.headers})
        elif isinstance(item, Garbage):
            self._send(handler, 200, item.body, {"Content-Type": "application/json"})
        else:
            raise TypeError(f"cannot answer with {item!r}")

    @staticmethod
    def _send(handler, code: int, data: bytes, headers: dict) -> None:
        try:
            handler.send_response(code)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)


def refused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

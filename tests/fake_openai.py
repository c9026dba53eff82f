"""A scripted OpenAI-compatible chat server on 127.0.0.1, for tests and benchmarks.

The LLM generator is tested through litellm's real HTTP path, so the only thing
faked is the model: each test scripts what the "model" answers (a text, an HTTP
status, garbage, a delay) and afterwards reads what was sent. Nothing here imports
litellm or poet_runtime.

Like llama.cpp's server it streams when asked (``stream: true``, server-sent events,
usage in the last chunk with ``stream_options.include_usage``), honours ``max_tokens``
(an answer longer than that is cut, ``finish_reason: "length"``; one token is 4
characters here), stops generating when the client disconnects (``cancelled`` counts
them; a ``Slow`` answer streams piece by piece and notices), says its context size at
``/props`` and ``/v1/models`` (``context``), and refuses a prompt larger than it
(400, as llama.cpp does).
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
class Slow:
    """Stream ``then`` (an Answer or text) one piece every ``interval`` seconds, like a slow model."""

    then: Any
    interval: float = 0.1
    pieces: int = 20
    gate: Any = None  # a threading.Event: the answer's end is sent only once it is set (a test's timing)


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
        self.cancelled = 0  # answers stopped because the client went away
        self.finished = 0  # answers sent to the end
        # tokens (a large-context server by default); None: no /props, no context in /v1/models, no refusal
        self.context: int | None = 16384
        self.chars_per_token = 4
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

            def do_GET(self):
                if self.path.rstrip("/") == "/props" and owner.context:
                    payload = {"default_generation_settings": {"n_ctx": owner.context}}
                elif self.path.rstrip("/") == "/v1/models":
                    entry = {"id": "fake-coder", "object": "model", "owned_by": "fake"}
                    if owner.context:
                        entry["meta"] = {"n_ctx_train": owner.context * 4}
                        entry["context_length"] = owner.context
                    payload = {"object": "list", "data": [entry]}
                else:
                    owner._send(self, 404, b'{"error": "not found"}', {"Content-Type": "application/json"})
                    return
                owner._send(self, 200, json.dumps(payload).encode(), {"Content-Type": "application/json"})

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
            self.cancelled = self.finished = 0
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

    def prompt_tokens(self, body: dict) -> int:
        text = "".join(m.get("content") or "" for m in body.get("messages", []))
        return len(text) // self.chars_per_token + 1

    def _respond(self, handler, item, body: dict) -> None:
        if isinstance(item, Delay):
            if self._wait_or_gone(handler, item.seconds):
                self.cancelled += 1
                return
            item = item.then if item.then is not None else Status(504, "late")
        interval, pieces, gate = 0.0, 1, None
        if isinstance(item, Slow):
            interval, pieces, gate, item = item.interval, item.pieces, item.gate, item.then
        if isinstance(item, str) or callable(item) and not isinstance(item, (Answer, Status, Garbage)):
            item = Answer(item)
        if isinstance(item, Answer) and self.context and self.prompt_tokens(body) > self.context:
            item = Status(400, f"the request exceeds the available context size ({self.prompt_tokens(body)} "
                               f"tokens > {self.context}), try increasing it")
        if isinstance(item, Answer):
            text = item.text(body) if callable(item.text) else item.text
            finish = "stop"
            limit = body.get("max_tokens")
            completion = item.completion_tokens
            if isinstance(limit, int) and len(text) > limit * self.chars_per_token:
                text, finish, completion = text[:limit * self.chars_per_token], "length", limit
            if body.get("stream"):
                self._stream(handler, body, text, finish, item.prompt_tokens, completion, interval, pieces, gate)
                return
            if interval and self._wait_or_gone(handler, interval * pieces):
                self.cancelled += 1
                return
            payload = {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [{"index": 0, "finish_reason": finish,
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": item.prompt_tokens, "completion_tokens": completion,
                          "total_tokens": item.prompt_tokens + completion},
            }
            if self._send(handler, 200, json.dumps(payload).encode(), {"Content-Type": "application/json"}):
                self.finished += 1
        elif isinstance(item, Status):
            payload = {"error": {"message": item.message, "type": "server_error", "code": item.code}}
            self._send(handler, item.code, json.dumps(payload).encode(),
                       {"Content-Type": "application/json", **item.headers})
        elif isinstance(item, Garbage):
            self._send(handler, 200, item.body, {"Content-Type": "application/json"})
        else:
            raise TypeError(f"cannot answer with {item!r}")

    @staticmethod
    def _gone(handler) -> bool:
        """True when the client closed its end (a read would return EOF at once)."""
        import select

        connection = handler.connection
        try:
            readable, _, _ = select.select([connection], [], [], 0)
            if not readable:
                return False
            return connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _wait_or_gone(self, handler, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._gone(handler):
                return True
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
        return False

    def _stream(self, handler, body, text, finish, prompt_tokens, completion, interval, pieces, gate=None) -> None:
        name = f"chatcmpl-{len(self.requests)}"
        model = body.get("model", "fake")

        def chunk(delta, reason=None, usage=None):
            data = {"id": name, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}
            if usage is not None:
                data["usage"] = usage
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "text/event-stream")
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.close_connection = True
            handler.wfile.write(chunk({"role": "assistant", "content": ""}))
            handler.wfile.flush()
            size = max(1, -(-len(text) // max(1, pieces)))
            for start in range(0, max(len(text), 1), size):
                if interval:
                    if self._wait_or_gone(handler, interval):
                        self.cancelled += 1
                        return
                elif self._gone(handler):
                    self.cancelled += 1
                    return
                handler.wfile.write(chunk({"content": text[start:start + size]}))
                handler.wfile.flush()
            while gate is not None and not gate.wait(0.05):
                if self._gone(handler):
                    self.cancelled += 1
                    return
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                     "total_tokens": prompt_tokens + completion}
            include = (body.get("stream_options") or {}).get("include_usage")
            handler.wfile.write(chunk({}, finish, usage if include else None))
            handler.wfile.write(b"data: [DONE]\n\n")
            handler.wfile.flush()
            self.finished += 1
        except (BrokenPipeError, ConnectionResetError):
            self.cancelled += 1

    @staticmethod
    def _send(handler, code: int, data: bytes, headers: dict) -> bool:
        try:
            handler.send_response(code)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False  # the client gave up (a timeout test)


def refused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

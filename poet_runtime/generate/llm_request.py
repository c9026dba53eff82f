"""One request to the model: streamed, under one deadline, closed when the deadline passes.

Why streamed: a llama.cpp-style server keeps generating for a client that gave up on
a plain request (the next request waits behind it, even after our process exited),
but stops when the client closes a stream. So an answer is read as a stream and the
connection is closed as soon as the request's time is up; one attempt is one
request (no transport retries here: the caller backs off between attempts).

What comes back is the text, the token counts (the server's usage when it sends
them, else a count of the streamed pieces) and ``finish_reason`` (``length`` means
the answer was cut off at ``max_tokens``).
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("poet_runtime")


class Unavailable(Exception):
    """No answer could be had from the model (transport or provider error)."""

    def __init__(self, reason: str, detail: str, *, status: int | None = None, transient: bool = False,
                 retry_after: float | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.status = status
        self.transient = transient  # worth another attempt after a back-off
        self.retry_after = retry_after


class Answer:
    __slots__ = ("text", "tokens", "finish_reason", "latency_ms")

    def __init__(self, text: str, tokens: dict, finish_reason: str | None, latency_ms: float):
        self.text, self.tokens, self.finish_reason, self.latency_ms = text, tokens, finish_reason, latency_ms


def ask(litellm, request: dict, timeout_s: float) -> Answer:
    """Send ``request`` (litellm.completion keyword arguments) and read the streamed answer."""
    import openai

    started = time.monotonic()
    deadline = started + timeout_s
    request = {**request, "stream": True, "stream_options": {"include_usage": True}, "timeout": timeout_s}
    try:
        stream = litellm.completion(**request)
    except openai.OpenAIError as error:
        raise _unavailable(error, openai, deadline) from None
    except Exception as error:  # anything else litellm raises: a configuration problem, not transient
        raise Unavailable("llm_error", f"{type(error).__name__}: {str(error)[:300]}") from None
    pieces: list[str] = []
    finish = None
    usage = None
    chunks = 0
    try:
        for chunk in stream:
            chunks += 1
            choices = getattr(chunk, "choices", None) or ()
            if choices:
                choice = choices[0]
                delta = getattr(choice, "delta", None)
                content = getattr(delta, "content", None) if delta is not None else None
                if content:
                    pieces.append(content)
                finish = getattr(choice, "finish_reason", None) or finish
            usage = getattr(chunk, "usage", None) or usage
            if time.monotonic() > deadline:
                raise Unavailable("llm_timeout", f"no complete answer within {timeout_s:g}s "
                                                 f"({len(''.join(pieces))} characters so far); the request was closed")
    except Unavailable:
        _close(stream)
        raise
    except openai.OpenAIError as error:
        _close(stream)
        raise _unavailable(error, openai, deadline) from None
    except Exception as error:  # a broken stream (garbage, a dropped connection)
        _close(stream)
        if time.monotonic() >= deadline:
            raise Unavailable("llm_timeout", f"no complete answer within {timeout_s:g}s; the request was closed") from None
        raise Unavailable("llm_unavailable", f"{type(error).__name__}: {str(error)[:300]}", transient=True) from None
    _close(stream)
    text = "".join(pieces)
    tokens = {"prompt": int(getattr(usage, "prompt_tokens", 0) or 0),
              "completion": int(getattr(usage, "completion_tokens", 0) or 0) or max(0, chunks - 1)}
    return Answer(text, tokens, finish, round((time.monotonic() - started) * 1000, 3))


def _close(stream) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        try:
            close()  # closes the HTTP response: the server sees the client leave
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


def _unavailable(error, openai, deadline: float) -> Unavailable:
    status = getattr(error, "status_code", None)
    name = type(error).__name__
    message = str(error)[:300]
    if isinstance(error, openai.APITimeoutError) or time.monotonic() >= deadline:
        return Unavailable("llm_timeout", f"{name}: {message}; the request was closed", status=status)
    transient = isinstance(error, (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)) or \
        status in (408, 409, 429) or (isinstance(status, int) and status >= 500)
    if not transient and _context_exceeded(message):
        return Unavailable("llm_context", f"{name} ({status}): {message}", status=status)
    retry_after = None
    response = getattr(error, "response", None)
    try:
        retry_after = float(response.headers.get("retry-after")) if response is not None else None
    except (TypeError, ValueError, AttributeError):
        retry_after = None
    return Unavailable("llm_unavailable" if transient else "llm_error", f"{name} ({status}): {message}",
                       status=status, transient=transient, retry_after=retry_after)


def _context_exceeded(message: str) -> bool:
    text = message.lower()
    return "context" in text and any(word in text for word in ("exceed", "too long", "maximum", "window"))

"""The host side of a call whose generated phases run in a sandbox.

The sandbox (a restricted worker, a WASM guest) runs Perceive, the retry policy
and Enforce; when ``operate_prime`` calls the logic, the request comes back here
and the user's own function object runs in the caller's thread, on the caller's
own objects. ``HostCall`` keeps, for one call, every top-level value the host
sent or produced under a token, so that what the sandbox passes on unchanged is
the host's object again (see ``poet_sandbox.crossing`` and docs/CONTRACTS.md).

A backend drives it as a loop: send ``start()``'s message, and while the sandbox
answers ``{"status": "logic"}``, send back ``run_logic(answer)`` (or
``await run_logic_async(answer)``); the last answer goes through ``finish``.
Nothing here is untrusted-safe by accident: tokens are bounds-checked, data is
decoded by the sandbox's own codec, and an answer of the wrong shape is a
``PhaseError`` (the sandbox failed, the caller is not affected).
"""

from __future__ import annotations

import builtins

from poet_runtime.resources import load_facility

_facility = load_facility()
from poet_sandbox.driver import AfterLogic  # noqa: E402
from poet_sandbox.timeouts import call_with_timeout, call_with_timeout_async  # noqa: E402

PhaseError = _facility.PhaseError
_MISSING = object()


def type_names(value) -> list[str]:
    """``module.qualname`` along the MRO of ``value``'s type (what a HostRef carries)."""
    return [f"{cls.__module__}.{cls.__qualname__}" for cls in type(value).__mro__][:32]


def nearest_builtin(error: BaseException) -> str:
    for cls in type(error).__mro__:
        if getattr(builtins, cls.__name__, None) is cls:
            return cls.__name__
    return "Exception"


class HostCall:
    """One call crossing a sandbox: tokens, the logic runs, the outcome."""

    __slots__ = ("logic", "values", "encode", "decode", "not_data", "last_result", "last_error", "runs")

    def __init__(self, logic, encode, decode, not_data=(TypeError,)):
        self.logic = logic
        self.values: list = []  # token -> host object
        self.encode, self.decode, self.not_data = encode, decode, not_data
        self.last_result = _MISSING
        self.last_error = None
        self.runs = 0

    # -- values ---------------------------------------------------------------------
    def send_value(self, value) -> list:
        """Token the value and say how it enters the sandbox: data, or a reference."""
        self.values.append(value)
        try:
            return ["d", self.encode(value)]
        except self.not_data:
            return ["r", type_names(value)]
        except RecursionError:
            return ["r", type_names(value)]

    def start(self, args: tuple, kwargs: dict) -> tuple[list, dict]:
        """The call's arguments as they enter the sandbox (tokens 0.. in order)."""
        sent_args = [self.send_value(value) for value in args]
        sent_kwargs = {name: self.send_value(value) for name, value in kwargs.items()}
        return sent_args, sent_kwargs

    def resolve(self, item):
        """A value the sandbox sent back: the host's own object, or decoded data."""
        if type(item) is not list or len(item) != 2:
            raise PhaseError("the sandbox sent a value that is not a [kind, payload] pair")
        kind, payload = item
        if kind == "h":
            if type(payload) is not int or not 0 <= payload < len(self.values):
                raise PhaseError("the sandbox named a value the host never sent")
            return self.values[payload]
        if kind == "d":
            try:
                return self.decode(payload)
            except (*self.not_data, ValueError, RecursionError) as error:
                raise PhaseError(f"the sandbox sent malformed data: {error}") from None
        raise PhaseError(f"the sandbox sent a value of unknown kind {kind!r}")

    def _request(self, answer: dict):
        args = answer.get("args")
        kwargs = answer.get("kwargs")
        timeout = answer.get("timeout")
        if type(args) is not list or type(kwargs) is not dict:
            raise PhaseError("the sandbox asked for the logic with malformed arguments")
        if timeout is not None and (type(timeout) not in (int, float) or not timeout > 0):
            raise PhaseError("the sandbox asked for the logic with a bad timeout")
        return [self.resolve(a) for a in args], {str(k): self.resolve(v) for k, v in kwargs.items()}, timeout

    # -- the logic, in the caller's thread ---------------------------------------------
    def _returned(self, result) -> dict:
        self.last_result, self.last_error = result, None
        token = len(self.values)
        return {"op": "logic_return", "token": token, "result": self.send_value(result)}

    def _raised(self, error: Exception) -> dict:
        self.last_error = error
        token = len(self.values)
        self.values.append(error)
        try:
            message = str(error)[:2000]
        except Exception:
            message = "<unprintable>"
        return {"op": "logic_raise", "token": token, "builtin": nearest_builtin(error),
                "type": f"{type(error).__module__}.{type(error).__qualname__}", "message": message}

    def run_logic(self, answer: dict) -> dict:
        """Run the logic for a sandbox's request; the answer to send back.

        An exception that is not an ``Exception`` (KeyboardInterrupt, SystemExit)
        propagates: the backend abandons the sandbox's call and it reaches the caller.
        """
        args, kwargs, timeout = self._request(answer)
        self.runs += 1
        try:
            if timeout is None:
                result = self.logic(*args, **kwargs)
            else:
                result = call_with_timeout(self.logic, args, kwargs, timeout)
        except Exception as error:
            return self._raised(error)
        return self._returned(result)

    async def run_logic_async(self, answer: dict) -> dict:
        args, kwargs, timeout = self._request(answer)
        self.runs += 1
        try:
            if timeout is None:
                result = await self.logic(*args, **kwargs)
            else:
                result = await call_with_timeout_async(self.logic, args, kwargs, timeout)
        except Exception as error:
            return self._raised(error)
        return self._returned(result)

    # -- the outcome -----------------------------------------------------------------
    def result(self, item):
        """The final result the sandbox sent: the host's own object when Enforce kept it."""
        return self.resolve(item)

    def raised(self, token):
        """The logic's own exception object that the sandbox says ended the call."""
        if type(token) is not int or not 0 <= token < len(self.values) or not isinstance(self.values[token], BaseException):
            raise PhaseError("the sandbox named an exception the logic never raised")
        return self.values[token]

    def after_logic(self, reason: str, detail: str) -> AfterLogic:
        """A phase failed after the logic ran: the error that tells the host to return
        the logic's own result (or raise its own exception) instead of re-running it."""
        result = AfterLogic.NOTHING if self.last_result is _MISSING else self.last_result
        return AfterLogic(str(reason)[:60] or "after_logic", str(detail)[:2000], result, self.last_error)

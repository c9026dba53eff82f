"""Runs one call through a loaded enhancement: Perceive, Operate', Enforce, Train.

The same driver serves the host and the sandbox harnesses, so a call means the
same thing wherever it runs. The logic is given to each call: in the host it is
the user's own function object; inside a sandbox it is a ``crossing.LogicProxy``
that runs that object back in the host.

It decides the questions the host cannot answer alone:
- whose exception is this? One raised by the logic (found on the error or its
  chain, in case generated code replaced it) is the user's and is raised as that
  very object; one raised only by generated code is ours, ``PhaseError``;
- did the logic already run? A phase failing after the logic returned raises
  ``AfterLogic``: the host then returns the logic's own result, because running
  the original again would run the user's code twice.
"""

import inspect
import time

from poet_sandbox.crossing import LogicProxy
from poet_sandbox.errors import CircuitOpenError, PhaseError
from poet_sandbox.validate import take_notes

_clock = time.perf_counter_ns

CONTRACT = ("perceive", "operate_prime", "enforce")


class InternalError(PhaseError):
    """Generated code failed on its own (not through the user's logic)."""

    def __init__(self, phase: str, error: BaseException):
        super().__init__(f"{phase}: {type(error).__name__}: {error}")
        self.phase = phase
        self.__cause__ = error


class AfterLogic(PhaseError):
    """A phase failed after the logic returned: the caller gets the logic's own result."""

    phase = "after_logic"
    NOTHING = object()  # ``result`` when the logic raised (``error``) or is not known here

    def __init__(self, reason: str, detail: str, result=NOTHING, error=None):
        super().__init__(detail)
        self.reason = reason
        self.result = result  # the logic's own result
        self.error = error  # or the logic's own exception


def passed_through(error: BaseException, code) -> bool:
    """True when ``code`` (the user's logic) is on the error's traceback."""
    if code is None:
        return False
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return True
        tb = tb.tb_next
    return False


def logic_exception(error: BaseException, logic):
    """The exception the logic raised, on ``error`` or its chain, or None."""
    session = getattr(logic, "session", None) if isinstance(logic, LogicProxy) else None
    code = None if session is not None else getattr(logic, "__code__", None)
    seen = 0
    current = error
    while current is not None and seen < 50:
        if session is not None:
            if session.token_of(current) is not None:
                return current
        elif passed_through(current, code):
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None


_signatures = {}


def rebind(perceive, args: tuple, kwargs: dict, repairs: dict):
    """``(args, kwargs)`` with the repaired parameters replaced, bound by ``perceive``'s
    signature (the original's): positional stays positional where it can."""
    signature = _signatures.get(perceive.__code__)
    if signature is None:
        signature = _signatures[perceive.__code__] = inspect.signature(perceive)
    bound = signature.bind(*args, **kwargs)
    for name, value in repairs.items():
        parameter = signature.parameters.get(name)
        if parameter is None or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise PhaseError(f"perceive: repaired {name!r}, which is not a named parameter")
        bound.arguments[name] = value
    return bound.args, bound.kwargs


def _merge(first, second):
    if first is None:
        return second
    if second is None:
        return first
    return first + second


class Enhancement:
    """The phases of one generated module, ready to call."""

    __slots__ = ("perceive", "operate_prime", "enforce", "train", "namespace", "is_async", "train_error")

    def __init__(self, namespace: dict, logic_name=None):  # logic_name: contract 1, ignored
        missing = [name for name in CONTRACT if not callable(namespace.get(name))]
        if missing:
            raise ValueError(f"generated module does not define {', '.join(missing)}")
        self.namespace = namespace
        self.perceive = namespace["perceive"]
        self.operate_prime = namespace["operate_prime"]
        self.enforce = namespace["enforce"]
        self.train = namespace.get("train")
        self.is_async = bool(self.operate_prime.__code__.co_flags & 0x80)  # CO_COROUTINE
        self.train_error = None

    def _perceive(self, args, kwargs):
        try:
            repairs = self.perceive(*args, **kwargs)
        except PhaseError:
            take_notes()
            raise
        except Exception as error:
            take_notes()
            raise InternalError("perceive", error) from None
        notes = take_notes()
        if repairs:
            try:
                args, kwargs = rebind(self.perceive, args, kwargs, repairs)
            except PhaseError:
                raise
            except Exception as error:
                raise InternalError("perceive", error) from None
        return args, kwargs, notes

    def _operate_failed(self, error, logic, ran):
        """The exception to raise for a failure of Operate'."""
        if not isinstance(error, Exception):
            return error  # KeyboardInterrupt, SystemExit, ...: never ours to swallow
        if isinstance(error, CircuitOpenError):
            return error  # the breaker's own refusal (its cause is the logic's last failure)
        own = logic_exception(error, logic)
        if own is not None:
            return own
        if isinstance(error, TimeoutError):
            return error
        if ran:
            return AfterLogic("operate_prime_error", f"operate_prime: {type(error).__name__}: {error}",
                              getattr(logic, "result", AfterLogic.NOTHING))
        return InternalError("operate_prime", error)

    def _enforce(self, result, notes):
        try:
            checked = self.enforce(result)
        except PhaseError as error:
            take_notes()
            reason = "enforce_rejected" if error.phase == "enforce" else "enforce_error"
            raise AfterLogic(reason, str(error), result) from None
        except Exception as error:
            take_notes()
            raise AfterLogic("enforce_error", f"enforce: {type(error).__name__}: {error}", result) from None
        return checked, _merge(notes, take_notes())

    def call(self, logic, args: tuple, kwargs: dict):
        """Return ``(result, t0, t1, t2, t3, notes)``; the marks are ``perf_counter_ns``."""
        t0 = _clock()
        args, kwargs, notes = self._perceive(args, kwargs)
        t1 = _clock()
        failure = None
        try:
            result = self.operate_prime(logic, args, kwargs)
        except BaseException as error:
            failure = error
        if failure is not None:  # raised outside the handler: no chaining onto the user's error
            raise self._operate_failed(failure, logic, _logic_returned(logic))
        t2 = _clock()
        result, notes = self._enforce(result, notes)
        if self.train is not None:
            self._train(args, kwargs, result, t1, t2)
        return result, t0, t1, t2, _clock(), notes

    async def call_async(self, logic, args: tuple, kwargs: dict):
        t0 = _clock()
        args, kwargs, notes = self._perceive(args, kwargs)
        t1 = _clock()
        failure = None
        try:
            result = await self.operate_prime(logic, args, kwargs)
        except BaseException as error:
            failure = error
        if failure is not None:
            raise self._operate_failed(failure, logic, _logic_returned(logic))
        t2 = _clock()
        result, notes = self._enforce(result, notes)
        if self.train is not None:
            self._train(args, kwargs, result, t1, t2)
        return result, t0, t1, t2, _clock(), notes

    def _train(self, args, kwargs, result, t1: int, t2: int) -> None:
        """Train never changes a result: its failure is kept for the host to report."""
        try:
            self.train((args, kwargs), result, {"duration_ms": (t2 - t1) / 1e6})
        except Exception as error:
            self.train_error = error


def _logic_returned(logic) -> bool:
    """Inside a sandbox the proxy knows whether its last logic call returned; in the
    host a plain function cannot tell (the host passes a counting logic when it must)."""
    session = getattr(logic, "session", None) if isinstance(logic, LogicProxy) else None
    if session is not None:
        return session.returned
    return bool(getattr(logic, "returned", False))

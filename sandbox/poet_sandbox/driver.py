"""Runs one call through a loaded enhancement: Perceive, Operate', Enforce, Train.

The same driver serves the host (backend ``none``) and the sandbox harnesses, so a
call means the same thing wherever it runs. It decides one question the host
cannot: whose exception is this? An exception that passed through a frame of the
user's own logic is the user's and propagates unchanged; one raised only by
generated code is an internal failure, reported as ``PhaseError`` so the host can
fall back to the original function.
"""

import time

from poet_sandbox.errors import CircuitOpenError, PhaseError

_clock = time.perf_counter_ns

CONTRACT = ("perceive", "operate_prime", "enforce")


class InternalError(PhaseError):
    """Generated code failed on its own (not through the user's logic)."""

    def __init__(self, phase: str, error: BaseException):
        super().__init__(f"{phase}: {type(error).__name__}: {error}")
        self.phase = phase
        self.__cause__ = error


def passed_through(error: BaseException, code) -> bool:
    """True when ``code`` (the user's logic) is on the error's traceback."""
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return True
        tb = tb.tb_next
    return False


class Enhancement:
    """The phases of one generated module, ready to call."""

    __slots__ = ("perceive", "operate_prime", "enforce", "train", "logic_code", "namespace", "is_async", "train_error")

    def __init__(self, namespace: dict, logic_name: str):
        missing = [name for name in CONTRACT if not callable(namespace.get(name))]
        if missing:
            raise ValueError(f"generated module does not define {', '.join(missing)}")
        self.namespace = namespace
        self.perceive = namespace["perceive"]
        self.operate_prime = namespace["operate_prime"]
        self.enforce = namespace["enforce"]
        self.train = namespace.get("train")
        logic = namespace.get(logic_name)
        self.logic_code = getattr(logic, "__code__", None)
        self.is_async = bool(self.operate_prime.__code__.co_flags & 0x80)  # CO_COROUTINE
        self.train_error = None

    def _classify(self, error: BaseException) -> BaseException:
        """The exception the caller should see for a failure of Operate'."""
        if not isinstance(error, Exception):
            return error  # KeyboardInterrupt, SystemExit, ...: never ours to swallow
        if isinstance(error, (CircuitOpenError, TimeoutError)) or passed_through(error, self.logic_code):
            return error
        if isinstance(error, PhaseError):
            return error
        return InternalError("operate_prime", error)

    def call(self, args: tuple, kwargs: dict):
        """Return ``(result, t0, t1, t2, t3)``: the timings are ``perf_counter_ns`` marks."""
        t0 = _clock()
        try:
            perceived = self.perceive(*args, **kwargs)
        except PhaseError:
            raise
        except Exception as error:
            raise InternalError("perceive", error) from error
        t1 = _clock()
        try:
            result = self.operate_prime(*perceived)
        except BaseException as error:
            seen = self._classify(error)
            if seen is error:
                raise
            raise seen from error
        t2 = _clock()
        try:
            result = self.enforce(result)
        except PhaseError:
            raise
        except Exception as error:
            raise InternalError("enforce", error) from error
        if self.train is not None:
            self._train(perceived, result, t1, t2)
        return result, t0, t1, t2, _clock()

    async def call_async(self, args: tuple, kwargs: dict):
        t0 = _clock()
        try:
            perceived = self.perceive(*args, **kwargs)
        except PhaseError:
            raise
        except Exception as error:
            raise InternalError("perceive", error) from error
        t1 = _clock()
        try:
            result = await self.operate_prime(*perceived)
        except BaseException as error:
            seen = self._classify(error)
            if seen is error:
                raise
            raise seen from error
        t2 = _clock()
        try:
            result = self.enforce(result)
        except PhaseError:
            raise
        except Exception as error:
            raise InternalError("enforce", error) from error
        if self.train is not None:
            self._train(perceived, result, t1, t2)
        return result, t0, t1, t2, _clock()

    def _train(self, perceived: tuple, result, t1: int, t2: int) -> None:
        """Train never changes a result: its failure is kept for the host to report."""
        try:
            self.train(perceived, result, {"duration_ms": (t2 - t1) / 1e6})
        except Exception as error:
            self.train_error = error

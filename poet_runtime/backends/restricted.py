"""The ``restricted`` backend: generated code compiled with RestrictedPython.

Why two modes: RestrictedPython decides what code may reach (imports, attributes,
builtins, writes) but cannot stop a loop, a sleep or an allocation. So:
- a policy that states no ``wall_ms``, ``cpu_ms`` or ``memory_mb`` runs the code
  in this process (fast; bounded only in reach and in printed output);
- a policy that states any of them runs it in a pre-started worker process
  (``workers.py``, ``sandbox/harness/worker.py``) where the OS enforces them.
``poet_runtime.policy`` refuses any other combination, so no stated limit is
silently ignored. The guards and the rule generated code must follow are in
``sandbox/harness/worker_restrict.py``.

The user's logic never runs as restricted code (contract 2, docs/CONTRACTS.md): the
generated module holds only the phases, and ``operate_prime`` is given the logic.
In-process, that is the user's function object itself (a plain call); in a worker
it is a proxy, and each call of it crosses back here (``restricted_worker.py``),
where the function runs in the caller's thread on the caller's own objects.
So the generated module needs none of the user's globals and gets none: it
imports only the stdlib (the policy's ``imports``) and ``poet_sandbox``.

Outcomes of ``call(logic, args, kwargs)``: ``(result, t0, t1, t2, t3, notes)``;
``PhaseError`` before the logic ran (the host runs the original once);
``poet_sandbox.driver.AfterLogic`` after it ran (the host returns the logic's own
result); the user's own exception object when the logic raised it; and
``PoetViolation`` for a guard refusal, a limit hit or printing past
``max_output_kb`` (even if the code caught the guard's exception). Compile
refusals raise ``PoetViolation(limit="restricted_code")`` from ``load``, and a
policy whose ``imports`` name a module that is not vetted for generated code
(``worker_guards.VETTED_MODULES``) ``PoetViolation(limit="imports")``.

Only the user's own exception crosses: what generated code raises by itself (a
``CircuitOpenError`` of its breaker, a ``TimeoutError`` it made up) is not an answer
the original could give, so it becomes a fallback (``PhaseError``, or ``AfterLogic``
once the logic ran). A ``TimeoutError`` of ``poet_sandbox.timeouts`` around the real
logic is the policy's own timeout and reaches the caller.

Limits, per mode:
- ``max_output_kb``: bytes printed by one call's generated code (collected, written
  to the host's stdout only when the call succeeds; the user's logic prints as it
  always does); in a worker, the encoded final reply, result and output together
  (the worker refuses a larger reply; the host kills a worker that sends more).
- worker only: ``memory_mb`` is the address space one call may add to the worker
  (``RLIMIT_AS`` over its size after loading); ``cpu_ms`` is CPU time of one call
  in the worker (``ITIMER_PROF``, then SIGXCPU); ``wall_ms`` is elapsed time seen
  by the host while it waits for the worker, not while the logic runs here; the
  host kills the worker when it passes. None of them applies to the user's logic.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import sys
import threading
import time
from functools import cache

from poet_runtime.backends.base import LoadRequest
from poet_runtime.errors import PoetViolation
from poet_runtime.resources import load_facility, sandbox_dir
from poet_runtime.safe_text import visible

PhaseError = load_facility().PhaseError
from poet_runtime.backends.crossing import check_value, fits_hint, return_hint  # noqa: E402

_keys = itertools.count(1)


@cache
def harness_module(name: str):
    """Load a guest-side module (worker_restrict, worker_codec) by path, privately."""
    path = sandbox_dir() / "harness" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"poet_runtime._guest_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def uses_workers(limits) -> bool:
    return any(v is not None for v in (limits.wall_ms, limits.cpu_ms, limits.memory_mb))


class RestrictedBackend:
    name = "restricted"

    def __init__(self, pool_size: int = 2):
        self.pool_size = pool_size
        self._pool = None
        self._lock = threading.Lock()

    def pool(self):
        with self._lock:
            if self._pool is None:
                from poet_runtime.backends.workers import WorkerPool

                self._pool = WorkerPool(harness_module("worker_codec"), self.pool_size)
                self._pool.prestart()
            return self._pool

    def load(self, request: LoadRequest):
        load_facility()
        restrict = harness_module("worker_restrict")
        for name in request.limits.imports:
            reason = restrict.vetted_reason(name)
            if reason:
                raise PoetViolation(request.function_id, "imports", f"module {name!r} cannot be imported by "
                                                                    f"generated code: {reason}")
        if uses_workers(request.limits):
            # The worker compiles it, under the policy's limits (a refusal comes back as
            # violation:restricted_code at load): untrusted text is not parsed in the host.
            from poet_runtime.backends.restricted_worker import WorkerEnhancement

            return WorkerEnhancement(self.pool(), request)
        code, errors = restrict.compile_module(request.code, request.filename)
        if errors:
            raise PoetViolation(request.function_id, "restricted_code",
                                visible("; ".join(errors)[:2000], allow_newlines=False))
        return InProcessEnhancement(request, code)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


class InProcessEnhancement:
    """Restricted code running in this process; no resource limits (see module doc).

    The phases are deliberately not exposed as ``.enhancement``: the call path
    inlines such phases, which would skip the violation check and the output
    accounting of ``call``.
    """

    backend = "restricted"

    def __init__(self, request: LoadRequest, code):
        from poet_sandbox.driver import Enhancement

        restrict = harness_module("worker_restrict")
        self.function_id = request.function_id
        limits = request.limits
        try:
            self.sandbox = restrict.Sandbox(limits.imports, limits.builtins, limits.max_output_kb)
        except ValueError as error:
            raise PoetViolation(request.function_id, "builtins", str(error)) from None
        self.namespace = self.sandbox.namespace(f"poet_enhanced.{request.function_id}", {})
        try:
            self._guarded(lambda: exec(code, self.namespace))
        except (PoetViolation, PhaseError):
            raise
        except Exception as error:  # the module body itself failed: not the user's error
            raise PhaseError(f"generated module failed to load: {type(error).__name__}: {error}") from error
        self._configure(request.params)
        try:
            self._phases = Enhancement(self.namespace)
        except ValueError as error:
            raise PhaseError(str(error)) from None

    def _guarded(self, action):
        """Run restricted code outside a call (module body, configure)."""
        mark = self.sandbox.begin_call()
        try:
            result = action()
        except BaseException as error:
            self._check(mark, error)
            raise
        self._check(mark, None)
        return result

    def _check(self, mark: int, error, outcome=None):
        """A violation recorded since ``mark`` wins over any outcome (even if the code
        caught the guard's exception). Once the logic ran (a result, or AfterLogic), the
        violation carries ``after_logic``, as in a worker."""
        violations = self.sandbox.violations
        if len(violations) > mark:
            limit, detail = violations[mark]
            violation = PoetViolation(self.function_id, limit, visible(str(detail)[:2000], allow_newlines=False))
            from poet_sandbox.driver import AfterLogic

            if isinstance(error, AfterLogic):
                violation.after_logic = AfterLogic(f"violation:{limit}", detail, error.result, error.error)
            elif outcome is not None:
                violation.after_logic = AfterLogic(f"violation:{limit}", detail, outcome[0])
            raise violation from error

    def _configure(self, params) -> None:
        configure = self.namespace.get("configure")
        if callable(configure):
            try:
                self._guarded(lambda: configure(dict(params or {})))
            except (PoetViolation, PhaseError):
                raise
            except Exception as error:
                raise PhaseError(f"configure failed: {type(error).__name__}: {error}") from None

    def configure(self, params: dict) -> None:
        self._configure(params)

    def call(self, logic, args: tuple, kwargs: dict) -> tuple:
        """Generated code calls the user's function, through a recorder (``_Recorded``)."""
        mark = self.sandbox.begin_call()
        failure = None
        recorded = _Recorded(logic)
        try:
            outcome = self._phases.call(recorded.run, args, kwargs)
        except BaseException as error:  # noqa: B902 - re-raised below, outside the handler
            failure = error
        if failure is not None:
            self._check(mark, failure)
            raise recorded.crossing(failure)  # the user's exception as the logic raised it: nothing chained
        self._check(mark, None, outcome)
        outcome = recorded.checked(outcome)
        if outcome[5]:
            outcome = outcome[:5] + (_visible_notes(outcome[5]),)
        self._flush()
        return outcome

    async def call_async(self, logic, args: tuple, kwargs: dict) -> tuple:
        mark = self.sandbox.begin_call()
        failure = None
        recorded = _Recorded(logic)
        try:
            if self._phases.is_async:
                outcome = await self._phases.call_async(recorded.run_async, args, kwargs)
            else:
                outcome = self._phases.call(recorded.run, args, kwargs)
        except BaseException as error:  # noqa: B902
            failure = error
        if failure is not None:
            self._check(mark, failure)
            raise recorded.crossing(failure)
        self._check(mark, None, outcome)
        outcome = recorded.checked(outcome)
        if outcome[5]:
            outcome = outcome[:5] + (_visible_notes(outcome[5]),)
        self._flush()
        return outcome

    def _flush(self) -> None:
        text = self.sandbox.take_output()
        if text:
            sys.stdout.write(text)

    def observations(self) -> dict:
        """What the generated Train kept (its STATS), for the learner."""
        return dict(self.namespace.get("STATS") or {})

    @property
    def train_error(self):
        return self._phases.train_error

    def close(self) -> None:
        self.namespace.clear()


class _Recorded:
    """What in-process generated code calls as the logic: ``run`` (or ``run_async``), a
    method that runs the user's own function and remembers what happened (whether it
    returned, its result, the exceptions it raised), so that a failure can be told apart
    from the user's own exception, and a fallback after the logic ran returns its result
    instead of running it twice. Generated code never holds the user's function object;
    what it holds (a bound method) exposes nothing but dunders, which it cannot read.
    Made per call, so it is kept small (slots, no closures).
    """

    __slots__ = ("logic", "raised", "returned", "result", "runs")

    def __init__(self, logic):
        self.logic = logic
        self.raised = None  # the exceptions the logic raised, made on the first
        self.returned = False
        self.result = None
        self.runs = 0

    def run(self, *args, **kwargs):
        self.runs += 1
        self.returned = False
        try:
            result = self.logic(*args, **kwargs)
        except BaseException as error:
            self._raised(error)
            raise
        self.returned, self.result = True, result
        return result

    async def run_async(self, *args, **kwargs):
        self.runs += 1
        self.returned = False
        try:
            result = await self.logic(*args, **kwargs)
        except BaseException as error:
            self._raised(error)
            raise
        self.returned, self.result = True, result
        return result

    def _raised(self, error):
        if self.raised is None:
            self.raised = []
        self.raised.append(error)

    def checked(self, outcome: tuple) -> tuple:
        """A result generated code made itself (not the logic's own object) is held to what
        a result from a worker is: data within ``VALUE_LIMITS`` that fits the return
        annotation; otherwise the call falls back (after the logic: its own result)."""
        result = outcome[0]
        if self.returned and result is self.result:
            return outcome
        try:
            check_value(result)
            hint = return_hint(self.logic)
            if not fits_hint(result, hint):
                raise PhaseError(f"generated code's result {type(result).__name__} does not fit the return "
                                 f"annotation {visible(str(hint)[:200], allow_newlines=False)}")
        except PhaseError as error:
            if self.runs:
                raise self._after(str(error)) from None
            raise
        return outcome

    def _after(self, detail: str, reason: str = "result_not_data"):
        from poet_sandbox.driver import AfterLogic

        if self.returned:
            return AfterLogic(reason, detail, self.result)
        return AfterLogic(reason, detail, AfterLogic.NOTHING, self.raised[-1] if self.raised else None)

    def crossing(self, failure: BaseException) -> BaseException:
        """What may reach the caller for ``failure``: a refusal, the logic's own exception,
        a non-``Exception`` (generated code cannot raise one), the facility's timeout;
        anything else generated code raised becomes a fallback, which after the logic ran
        carries the logic's own result (running the original again would run it twice)."""
        from poet_sandbox.driver import AfterLogic

        if isinstance(failure, AfterLogic):
            return _shown(failure)
        if isinstance(failure, PhaseError):
            if self.runs:
                return self._after(visible(str(failure)[:2000], allow_newlines=False),
                                   getattr(failure, "reason", None) or "operate_prime_error")
            return _shown(failure)
        if isinstance(failure, PoetViolation) or not isinstance(failure, Exception):
            return failure
        raised = self.raised or ()
        if any(failure is error for error in raised):
            return failure
        if type(failure) is TimeoutError and _raised_by_facility(failure) and raised and \
                not isinstance(raised[-1], Exception):
            return failure  # the facility interrupted the logic at the policy's timeout
        detail = visible(f"generated code raised {type(failure).__name__}: {failure}"[:2000], allow_newlines=False)
        if self.runs:
            return self._after(detail, "generated_raised")
        return PhaseError(detail)


def _shown(error: BaseException) -> BaseException:
    """A refusal whose text came from generated code, with its control and bidi characters
    shown visibly (it becomes a fallback's log line and event)."""
    args = tuple(visible(arg[:2000], allow_newlines=False) if type(arg) is str else arg for arg in error.args)
    if args != error.args:
        error.args = args
    reason = getattr(error, "reason", None)
    if type(reason) is str and not reason.isprintable():
        error.reason = visible(reason[:60], allow_newlines=False)
    return error


def _visible_notes(notes) -> tuple:
    return tuple(tuple(visible(str(part)[:2000], allow_newlines=False) for part in note) for note in notes)


def _raised_by_facility(error: BaseException) -> bool:
    """True when the innermost frame that raised ``error`` is facility code
    (``poet_sandbox.timeouts`` raising the policy's timeout), not generated code."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    name = tb.tb_frame.f_globals.get("__name__")
    return type(name) is str and name.startswith("poet_sandbox.")


def code_key(request: LoadRequest) -> str:
    digest = hashlib.sha256(request.code.encode("utf-8")).hexdigest()[:16]
    return f"{request.function_id}@{request.version}:{digest}:{next(_keys)}:{time.monotonic_ns()}"

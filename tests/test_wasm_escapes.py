"""Every escape in the shared corpus and in ``tests/escapes``, run in place under the wasm backend.

Each file's body becomes the body of generated code (``operate_prime``: the part
that runs in the guest; the user's logic never does), its placeholders filled in; afterwards the effect it names must not have happened, the
host must be alive and well, and the call must have raised ``PoetViolation`` or
``PhaseError`` (the host then falls back) or returned nothing secret. New corpus
files (in either folder) are picked up without a change here. ``test_containment_trusted.py``
shows each payload does what it tries when nothing contains it.
"""

from __future__ import annotations

import builtins
import os
import resource
import socket
import time
from pathlib import Path

import pytest

from poet_runtime.backends.base import Limits
from poet_runtime.errors import PoetViolation
from poet_runtime.resources import load_facility
from poet_runtime.safe_text import hidden_characters
from wasm_helpers import ESCAPES, generated_module, load_request, wasm_backend  # noqa: F401

PhaseError = load_facility().PhaseError
SECRET = "poet-secret-7f3a9c"
HANG_MARGIN_S = 1.5


def _never(*args, **kwargs):
    raise AssertionError("an escape body called the logic")


def _answer(*args, **kwargs) -> str:
    """For payloads that call the logic first (a forged answer after it ran)."""
    return "the logic's result"


# The harness's own layer (import allowlist, reduced builtins) turned off: what
# contains the escape then is WASI alone (no host files, sockets, processes, env).
WALL_ONLY = Limits(
    wall_ms=2000, cpu_ms=1000, memory_mb=128, max_output_kb=64,
    imports=("os", "sys", "socket", "subprocess", "ctypes", "pickle", "gc", "importlib", "time", "signal"),
    builtins=("open", "exec", "eval", "compile", "globals", "locals", "vars"),
)  # fmt: skip


def _policy_limits(name: str):
    """The shipped policy's limits (``default`` and ``strict``, which is the wasm one),
    or ``WALL_ONLY``."""
    if name == "wall-only":
        return WALL_ONLY
    try:
        from poet_runtime.policy import load_policy

        return load_policy(name).effective_for("tests:logic").limits
    except (ImportError, OSError) as error:  # the policy module is another room's: do not depend on it
        pytest.skip(f"shipped policy {name!r} unavailable: {error}")


REPO_ESCAPES = Path(__file__).resolve().parent / "escapes"
def _escape_files():
    found = [path for folder in (ESCAPES, REPO_ESCAPES) if folder.is_dir() for path in sorted(folder.glob("*.py"))]
    if not found:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"escape corpus not found at {ESCAPES}"))]
    return found


def _effect(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("# effect:"):
            return line.partition(":")[2].strip()
    return "unknown"


# This repository's payloads that test the host's side of the boundary (what crosses back),
# which both sandboxes share. Its reach payloads aim at the restricted backend's Python layer;
# in WASM, WASI is the boundary, and the shared corpus tests it (under all three policies).
HOST_SIDE_EFFECTS = ("forged-result", "forged-log")


def _cases():
    """Shared payloads under all three configurations; this repository's host-side ones under
    ``strict``, the policy that runs in WASM (each case starts a guest: time)."""
    for path in _escape_files():
        if not isinstance(path, Path):
            yield pytest.param(None, "strict", marks=pytest.mark.skip(reason=f"escape corpus not found at {ESCAPES}"))
            continue
        if path.parent == REPO_ESCAPES:
            if _effect(path.read_text()) in HOST_SIDE_EFFECTS:
                yield pytest.param(path, "strict", id=f"{path.stem}-strict")
            continue
        for policy in ("default", "strict", "wall-only"):
            yield pytest.param(path, policy, id=f"{path.stem}-{policy}")


@pytest.mark.slow
@pytest.mark.parametrize("path,policy", list(_cases()))
def test_escape_is_contained(path, policy, wasm_backend, tmp_path, monkeypatch):
    limits = _policy_limits(policy)
    text = path.read_text()
    effect = _effect(text)
    marker = tmp_path / "escaped-marker"
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET)
    monkeypatch.setenv("POET_TEST_SECRET", SECRET)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    body = text.format(marker=marker, secret_path=secret_file, port=listener.getsockname()[1])
    real_len, real_import = builtins.len, builtins.__import__
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    loaded = None
    outcome = None
    started = time.monotonic()
    try:
        loaded = wasm_backend.load(load_request(generated_module(body, parameters=""), limits=limits))
        logic = _never if "logic(" not in text else _answer
        outcome = ("returned", loaded.call(logic, (), {})[0])
    except (PoetViolation, PhaseError) as error:
        outcome = ("raised", error)
    elapsed = time.monotonic() - started
    print(f"{path.name} [{policy}]: {outcome[0] if outcome else None}: {outcome[1] if outcome else ''!r:.200} in {elapsed:.2f} s")
    try:
        assert outcome is not None, "the call neither returned nor fell back"
        if outcome[0] == "returned":
            assert SECRET not in repr(outcome[1])
        # Effects never happen, whatever the file says it checks.
        assert not marker.exists(), "the escape wrote a host file"
        with pytest.raises(BlockingIOError):
            listener.accept()
        assert builtins.len is real_len and builtins.__import__ is real_import
        assert len([1, 2]) == 2
        os.kill(os.getpid(), 0)  # the host and its parent are alive
        os.kill(os.getppid(), 0)
        if effect in ("forged-result", "forged-log"):
            assert outcome[0] == "raised", "the forged answer reached the caller"
        if effect == "forged-log":
            shown = [str(outcome[1]), getattr(outcome[1], "detail", "")]
            assert not any(hidden_characters(text) for text in shown), shown
        if effect in ("hang", "memory"):
            assert elapsed < limits.wall_ms / 1000 + HANG_MARGIN_S
        if effect == "memory":
            grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
            assert grown_mb < limits.memory_mb + 128
        if effect == "mutate-host" and loaded is not None:
            # Later calls of another function are unaffected.
            later = wasm_backend.load(
                load_request(generated_module("return len([1, 2, 3])"), limits=limits, function="tests:later")
            )
            try:
                assert later.call(_never, (0,), {})[0] == 3
            finally:
                later.close()
    finally:
        listener.close()
        if loaded is not None:
            loaded.close()


# What the crossing hands generated code (the logic proxy, its session, host
# references, stand-ins for the logic's exceptions) leads to the harness's and the
# facility's globals, and so to the real builtins: here WASI must still hold.
THROUGH_THE_PROXY = {
    "proxy_globals_open": """
        real = type(logic).__call__.__globals__["builtins"]
        return real.open("{secret_path}").read()
    """,
    "session_globals_host": """
        harness = type(logic.session)._ask.__globals__
        return harness["_host"].call(b'{{"status": "ok", "result": ["d", "forged"], "marks": [0, 0, 0, 0]}}')
    """,
    "proxy_import_os": """
        real = type(logic).__call__.__globals__["builtins"]
        real.__import__("os").system("touch {marker}")
        return real.__import__("os").environ.get("POET_TEST_SECRET")
    """,
    "hostref_write": """
        try:
            logic(1)
        except Exception as error:
            pass
        ref = logic(2)
        try:
            ref.type_names = ("builtins.dict",)
        except AttributeError:
            pass
        return [type(ref).__name__, sorted(n for n in dir(ref) if not n.startswith("__"))]
    """,
}


class _Opaque:
    pass


@pytest.mark.parametrize("name", sorted(THROUGH_THE_PROXY))
def test_the_crossing_objects_lead_nowhere_outside_the_guest(name, wasm_backend, tmp_path, monkeypatch):
    marker = tmp_path / "escaped-marker"
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET)
    monkeypatch.setenv("POET_TEST_SECRET", SECRET)
    body = THROUGH_THE_PROXY[name].format(marker=marker, secret_path=secret_file)
    opaque = _Opaque()
    runs = []

    def logic(k):
        runs.append(k)
        if k == 1:
            raise ValueError("the user's")
        return opaque

    loaded = wasm_backend.load(load_request(generated_module(body, parameters=""), limits=WALL_ONLY))
    try:
        try:
            outcome = ("returned", loaded.call(logic, (), {})[0])
        except (PoetViolation, PhaseError) as error:
            outcome = ("raised", error)
        assert SECRET not in repr(outcome[1])
        assert not marker.exists()
        if name == "hostref_write":
            assert outcome == ("returned", ["HostRef", ["type_names"]]) and runs == [1, 2]
        if name == "session_globals_host":
            assert outcome[0] == "raised"  # the forged reply desynchronised only its own guest
    finally:
        loaded.close()

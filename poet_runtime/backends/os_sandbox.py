"""Which operating-system layers the restricted worker gets on this machine.

Why a module of its own: the worker applies its layers itself
(``sandbox/harness/confine.py``); the host must know, before a policy is used,
whether the machine can give the layers that policy demands (``os_layers``; a
policy demanding one it cannot have is refused at load, like any limit that
cannot be enforced), and ``policy explain`` / ``sandbox status`` print them.
The probe is cheap (a syscall, a library lookup, a few /proc files) except for
namespaces, which are tried in a short-lived child the first time they are asked
about. ``demand`` records what the loaded policies require, and the worker pool
refuses a worker whose hello line shows less (``check_worker``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

LAYERS = ("rlimits", "no_new_privs", "seccomp", "landlock", "namespaces")
DESCRIBE = {
    "rlimits": "hard rlimits: no core, no file writes, few fds; address space and CPU of the policy",
    "no_new_privs": "no new privileges, no capabilities, not dumpable, dies with the host",
    "seccomp": "system-call allow-list: no exec, fork, socket, ptrace, rename/unlink, open for writing",
    "landlock": "file system read-only and readable only where Python imports from; no TCP; "
                "no signal or ptrace outside the worker",
    "namespaces": "own user namespace (no host capability) and an empty network namespace",
}

_lock = threading.Lock()
_probe: dict | None = None
_namespaces: tuple | None = None
_demanded: set[str] = set()
_confine = None


def confine_module():
    """The guest-side module, loaded by path (it is not importable from the host)."""
    global _confine
    if _confine is None:
        from poet_runtime.backends.restricted import harness_module

        _confine = harness_module("confine")
    return _confine


def probe(namespaces: bool = False) -> dict:
    """{layer: detail or None} for this machine, with ``"<layer>:why"`` for a missing one.

    ``namespaces=True`` also tries them (a child process, once); otherwise that layer
    is reported as "not probed" until something asks."""
    global _probe
    with _lock:
        if _probe is None:
            _probe = _cheap_probe()
        result = dict(_probe)
    if namespaces or _namespaces is not None:
        detail, why = _probe_namespaces()
        result["namespaces"] = detail
        result.pop("namespaces:why", None)
        if why:
            result["namespaces:why"] = why
    for name in turned_off():
        result[name] = None
        result[name + ":why"] = f"turned off by {OFF_VARIABLE}"
    return result


OFF_VARIABLE = "POET_SANDBOX_LAYERS_OFF"


def turned_off() -> tuple[str, ...]:
    """Layers the operator turned off on this machine (``POET_SANDBOX_LAYERS_OFF=a,b``):
    the environment may weaken the sandbox, a repository file may not."""
    names = [name.strip() for name in (os.environ.get(OFF_VARIABLE) or "").split(",") if name.strip()]
    unknown = [name for name in names if name not in LAYERS]
    if unknown:
        import logging

        logging.getLogger("poet_runtime").warning("poet_runtime: %s: unknown layer(s) %s ignored (known: %s)",
                                                  OFF_VARIABLE, ", ".join(unknown), ", ".join(LAYERS))
    return tuple(name for name in names if name in LAYERS)


def _cheap_probe() -> dict:
    result: dict = {}
    if not sys.platform.startswith("linux"):
        for name in LAYERS:
            result[name] = None
            result[name + ":why"] = f"not Linux ({sys.platform})"
        return result
    confine = confine_module()
    result["rlimits"] = "available"
    result["no_new_privs"] = "available"
    if confine.seccomp_available():
        result["seccomp"] = "libseccomp allow-list"
    else:
        result["seccomp"] = None
        result["seccomp:why"] = "no libseccomp.so.2 or no seccomp in this kernel"
    abi = confine.landlock_abi()
    if abi > 0:
        result["landlock"] = f"ABI {abi}" + (" (files, tcp, signals)" if abi >= 6 else " (files, tcp)" if abi >= 4
                                             else " (files)")
    else:
        result["landlock"] = None
        result["landlock:why"] = "the kernel has no Landlock (or it is not enabled)"
    result["namespaces"] = None
    result["namespaces:why"] = "not probed"
    return result


_NS_PROBE = (
    "import ctypes,os,sys\n"
    "libc=ctypes.CDLL(None,use_errno=True)\n"
    "r=libc.unshare(0x10000000|0x40000000)\n"
    "sys.stdout.write('ok' if r==0 else os.strerror(ctypes.get_errno()))\n"
)


def _probe_namespaces() -> tuple:
    global _namespaces
    with _lock:
        if _namespaces is not None:
            return _namespaces
    try:
        done = subprocess.run([sys.executable, "-I", "-S", "-c", _NS_PROBE], capture_output=True, text=True,
                              timeout=20, env={"LC_ALL": "C.UTF-8"}, cwd="/")
        out = done.stdout.strip()
        found = ("user+net", None) if out == "ok" else (None, f"unshare(user+net): {out or 'failed'}")
    except (OSError, subprocess.SubprocessError) as error:
        found = (None, f"could not probe: {error}")
    with _lock:
        _namespaces = found
    return found


def missing(layers) -> list[tuple[str, str]]:
    """(layer, why) for each of ``layers`` this machine cannot give."""
    wanted = [name for name in layers if name in LAYERS]
    result = probe(namespaces="namespaces" in wanted)
    return [(name, result.get(name + ":why") or "unavailable") for name in wanted if not result.get(name)]


def demand(layers) -> None:
    """A loaded policy requires these: workers without them are refused from now on."""
    with _lock:
        _demanded.update(layers)


def demanded() -> frozenset:
    with _lock:
        return frozenset(_demanded)


def check_worker(layers: dict) -> str | None:
    """None when a worker's applied ``layers`` include every demanded one; else why not."""
    lacking = [name for name in demanded() if not (layers or {}).get(name)]
    if not lacking:
        return None
    reasons = [f"{name} ({(layers or {}).get(name + ':why') or 'not applied'})" for name in sorted(lacking)]
    return "the worker could not apply " + ", ".join(reasons)


def worker_options() -> list[str]:
    """The worker's command-line options for this machine's settings (layers turned off)."""
    off = turned_off()
    return [f"--skip={','.join(off)}"] if off else []


def live_worker_layers() -> dict:
    """Start one worker and return the layers it applied (``sandbox status``)."""
    from poet_runtime.backends.restricted import harness_module
    from poet_runtime.backends.workers import Worker

    worker = Worker(harness_module("worker_codec"))
    try:
        return dict(worker.layers)
    finally:
        worker.kill()


def describe_rows(layers: dict, required=()) -> list[str]:
    """Lines for ``policy explain`` and ``sandbox status``: one per layer."""
    rows = []
    for name in LAYERS:
        state = layers.get(name)
        need = " (required)" if name in required else ""
        if state:
            rows.append(f"{name:<13} on: {state}{need} - {DESCRIBE[name]}")
        else:
            rows.append(f"{name:<13} off{need}: {layers.get(name + ':why') or 'unavailable'}")
    return rows


__all__ = ["LAYERS", "probe", "missing", "demand", "demanded", "check_worker", "describe_rows",
           "live_worker_layers"]


def _reset_after_fork() -> None:
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)

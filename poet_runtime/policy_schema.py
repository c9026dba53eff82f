"""The schema of policy files and what each backend can enforce.

Why a module of its own: it is the one place that says which fields exist, what
values they take, and which limits a backend can really enforce (the honesty
rule); ``policy.py`` loads and matches, ``policy_locate.py`` turns errors into
``file:line: field: message``.

A policy file::

    version = 1
    [defaults]                 # any field below; absent = not stated
    backend = "restricted"     # restricted | wasm | none
    on_violation = "fallback"  # fallback (run the original) | raise (PoetViolation)
    wall_ms = 1000             # > 0; elapsed time of one call
    cpu_ms = 1000              # > 0; CPU time of one call
    memory_mb = 256            # > 0; memory one call may add
    max_output_kb = 64         # > 0; see MAX_OUTPUT_MEANING
    imports = ["math"]         # modules generated code may import (poet_sandbox always)
    builtins = []              # builtins added to the safe set
    record_inputs = false      # keep call inputs in execution records
    trust = ["builtin"]        # generators whose verified versions run in-process; see below
    os_layers = ["rlimits"]    # OS layers the restricted worker must have; see below
    [[rule]]                   # zero or more; `match` + any field above
    match = "app.billing:*"    # glob on module:qualname; no ':' = module only

In a rule, ``false`` for a limit or list means "not stated" (needed, e.g., when a
rule switches to backend none, which can enforce nothing). There are no grant
fields: file system, network, environment and subprocess access are denied by
every sandboxing backend, and no backend can yet enforce a partial grant.

``trust`` is not a limit (the honesty rule does not apply to it) but a statement
about which code is the project's own: a version written by a trusted generator
whose bytes match a fresh regeneration from its key inputs runs in-process
(backend none) whatever ``backend`` says; any other version runs in ``backend``.
Only ``"builtin"`` can be verified that way, so it is the only value allowed
(``[]`` trusts none). Not stated anywhere, it is ``["builtin"]``; ``false`` in a
rule means "not stated" here too, which for ``trust`` is that same default. A
policy whose backend is ``none`` runs everything in-process, so it trusts
everything in effect; that is reported (``policy explain``), not refused.

``os_layers`` lists the operating-system layers the restricted worker must have
(``OS_LAYERS``; ``backends/os_sandbox.py`` probes them): the worker always applies
every layer the machine offers, and a policy that lists one this machine cannot
give is refused at load, like a limit that cannot be enforced. Only the
restricted backend's worker has them, so it is refused under ``wasm`` (the guest
runs inside the host process: wasmtime is its isolation) and ``none``, and a
restricted policy listing layers must state a wall, CPU or memory limit (without
one, generated code runs in-process). ``false`` in a rule means "not stated".
"""

from __future__ import annotations

import re
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr, field_validator

LIMIT_FIELDS = ("wall_ms", "cpu_ms", "memory_mb", "max_output_kb")
LIST_FIELDS = ("imports", "builtins")
SETTING_FIELDS = ("backend", "on_violation", *LIMIT_FIELDS, *LIST_FIELDS, "record_inputs", "trust", "os_layers")
OS_LAYERS = ("rlimits", "no_new_privs", "seccomp", "landlock", "namespaces")
BACKENDS = ("restricted", "wasm", "none")

# What each backend enforces. `restricted` enforces wall/cpu/memory only in its
# worker processes; policy.py routes such policies there (EffectivePolicy.uses_workers).
# `wasm`: fuel (cpu), epoch + poll deadline (wall), store limits (memory), guest
# harness (imports, builtins, output). Owners of a backend
# keep this table true.
ENFORCES = {
    "none": frozenset(),
    "restricted": frozenset({*LIMIT_FIELDS, *LIST_FIELDS}),
    "wasm": frozenset({*LIMIT_FIELDS, *LIST_FIELDS}),
}
WHY_NOT = {
    "none": "it runs the code unrestricted in the host process",
}
# Generators whose versions can be verified by regenerating them and comparing bytes
# (resolve.py does it). An LLM answer cannot be regenerated, so it can never be listed.
TRUSTABLE = ("builtin",)
TRUST_DEFAULT = ("builtin",)
TRUST_WHY = "only the built-in generator's versions can be verified by regeneration"
MAX_OUTPUT_MEANING = {
    "restricted": "bytes printed by the call (print is collected, written out only when the call "
                  "succeeds); in a worker, the encoded result and that output together",
    "wasm": "bytes the guest writes to stdout plus the encoded result (stderr is discarded)",
}

# Modules that would hand generated code the file system, network, processes,
# the interpreter's internals or unguarded attribute access. A policy cannot allow
# them (nor their submodules): there are no grant fields.
UNSAFE_MODULES = {
    "os": "files, environment, processes", "sys": "interpreter internals", "subprocess": "processes",
    "socket": "network", "shutil": "files", "pathlib": "files", "io": "files", "builtins": "unguarded builtins",
    "importlib": "arbitrary imports", "ctypes": "raw memory", "gc": "every live object", "inspect": "frames",
    "pickle": "code execution", "marshal": "code objects", "shelve": "files", "signal": "process signals",
    "threading": "threads", "multiprocessing": "processes", "concurrent": "processes", "asyncio": "network, processes",
    "typing": "evaluates strings as code", "string": "unguarded format fields", "operator": "attrgetter walks attributes",
    "dataclasses": "exec", "copy": "object internals", "copyreg": "object internals", "types": "code objects",
    "code": "code execution", "codeop": "code execution", "pty": "processes", "tempfile": "files", "glob": "files",
    "urllib": "network", "http": "network", "ftplib": "network", "smtplib": "network", "ssl": "network",
    "select": "file descriptors", "selectors": "file descriptors", "mmap": "raw memory", "resource": "process limits",
    "posix": "files, processes", "runpy": "code execution", "zipimport": "code execution", "pkgutil": "imports",
    "sysconfig": "environment", "site": "imports", "traceback": "frames", "linecache": "files",
    "tracemalloc": "interpreter internals", "weakref": "object internals", "logging": "files",
    "sqlite3": "files", "tarfile": "files", "zipfile": "files", "webbrowser": "processes", "fileinput": "files",
    "dbm": "files", "platform": "processes", "getpass": "terminal", "uuid": "processes", "timeit": "exec",
    "trace": "frames", "pdb": "frames", "faulthandler": "file descriptors", "atexit": "host shutdown",
    "poet_runtime": "the host runtime", "numpy": "files (load/save), pickle",
}
NEVER_BUILTINS = {
    "open": "files", "exec": "code execution", "eval": "code execution", "compile": "code objects",
    "__import__": "unguarded imports", "globals": "module namespace", "locals": "frames", "vars": "object internals",
    "dir": "object internals", "breakpoint": "debugger", "input": "terminal", "help": "files",
    "memoryview": "raw memory", "getattr": "already guarded", "setattr": "already guarded",
    "delattr": "already guarded", "hasattr": "already guarded", "type": "three-argument form builds classes",
    "exit": "host shutdown", "quit": "host shutdown",
}
_MODULE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*")

OptionalLimit = Union[StrictInt, Literal[False], None]
OptionalList = Union[list[StrictStr], Literal[False], None]


def _positive(value):
    if value is not None and value is not False and value <= 0:
        raise ValueError("must be > 0")
    return value


def _vetted_reason(module: str) -> str | None:
    """Why ``module`` is not on the reviewed allow-list (``worker_guards.VETTED_MODULES``), or None."""
    from poet_runtime.backends.restricted import harness_module

    return harness_module("worker_guards").vetted_reason(module)


def unsafe_reason(module: str) -> str | None:
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        reason = UNSAFE_MODULES.get(".".join(parts[:i]))
        if reason:
            return reason
    return None


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["restricted", "wasm", "none"] | None = None
    on_violation: Literal["fallback", "raise"] | None = None
    wall_ms: OptionalLimit = None
    cpu_ms: OptionalLimit = None
    memory_mb: OptionalLimit = None
    max_output_kb: OptionalLimit = None
    imports: OptionalList = None
    builtins: OptionalList = None
    record_inputs: StrictBool | None = None
    trust: OptionalList = None
    os_layers: OptionalList = None

    _check_limits = field_validator(*LIMIT_FIELDS)(_positive)

    @field_validator("imports")
    @classmethod
    def _check_imports(cls, value):
        for name in value or ():
            if not _MODULE_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a module name (no leading '_', no relative names)")
            reason = unsafe_reason(name)
            if reason:
                raise ValueError(f"module {name!r} cannot be allowed: it gives access to {reason}")
            # Only modules reviewed for generated code may be listed (the sandboxes refuse
            # the rest at load; saying so here makes `policy check` refuse the file).
            reason = _vetted_reason(name)
            if reason:
                raise ValueError(f"module {name!r} cannot be allowed: {reason}")
        return value

    @field_validator("builtins")
    @classmethod
    def _check_builtins(cls, value):
        import builtins

        for name in value or ():
            if name in NEVER_BUILTINS:
                raise ValueError(f"builtin {name!r} cannot be allowed: {NEVER_BUILTINS[name]}")
            if name.startswith("_") or not hasattr(builtins, name):
                raise ValueError(f"{name!r} is not a builtin name")
        return value

    @field_validator("trust")
    @classmethod
    def _check_trust(cls, value):
        for name in value or ():
            if name not in TRUSTABLE:
                raise ValueError(f"cannot trust {name!r}: {TRUST_WHY} (allowed: \"builtin\", "
                                 "or [] to trust none)")
        return value

    @field_validator("os_layers")
    @classmethod
    def _check_os_layers(cls, value):
        for name in value or ():
            if name not in OS_LAYERS:
                raise ValueError(f"unknown layer {name!r} (known: {', '.join(OS_LAYERS)})")
        return value

    def stated(self) -> dict:
        """Fields this table sets (``false`` counts: it clears a limit)."""
        return {name: getattr(self, name) for name in SETTING_FIELDS if getattr(self, name) is not None}


class Rule(Settings):
    match: StrictStr

    @field_validator("match")
    @classmethod
    def _check_match(cls, value):
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1]
    description: StrictStr | None = None
    defaults: Settings = Settings()
    rule: list[Rule] = []


def os_layer_problems(values: dict) -> list[tuple[str, str]]:
    """(field, message) when ``os_layers`` cannot hold: wrong backend, no worker, or
    a layer this machine cannot give (probed once per process)."""
    layers = values.get("os_layers")
    if not layers:
        return []
    backend = values.get("backend")
    if backend != "restricted":
        why = ("the guest runs inside the host process; its isolation is wasmtime's" if backend == "wasm"
               else "it runs the code unrestricted in the host process")
        return [("os_layers", f"backend {backend!r} has no worker process to confine ({why}); "
                              "remove os_layers or use backend \"restricted\"")]
    if all(values.get(name) in (None, False) for name in ("wall_ms", "cpu_ms", "memory_mb")):
        return [("os_layers", "the OS layers confine the worker process, which runs code only when "
                              "wall_ms, cpu_ms or memory_mb is stated; state one or remove os_layers")]
    from poet_runtime.backends import os_sandbox

    return [("os_layers", f"this machine cannot give layer {name!r}: {why}")
            for name, why in os_sandbox.missing(layers)]


def honesty_problems(backend: str, values: dict) -> list[tuple[str, str]]:
    """(field, message) for each stated limit that ``backend`` cannot enforce (and
    for ``os_layers`` that cannot hold)."""
    problems = os_layer_problems(values)
    for name in (*LIMIT_FIELDS, *LIST_FIELDS):
        value = values.get(name)
        if value is None or value is False:
            continue
        if name not in ENFORCES[backend]:
            why = WHY_NOT.get(backend, "")
            problems.append((name, f"backend {backend!r} cannot enforce {name}" + (f" ({why})" if why else "")
                             + "; remove it or use another backend"))
    return problems

"""A static look at generated code before anything runs it: imports, names, dunder walks.

Model-written code is untrusted input. The sandboxes stop it at run time; this
stops the obvious cases before a probe run even starts, and gives the model a
precise reason to fix (``static_policy: line 3: import subprocess is not
allowed``). It is one layer, not the wall: what it cannot see (strings built at
run time) the backend must still refuse.

Under contract 2 the user's logic is not in the module (operate_prime calls the
logic it is given), so nothing is allowed because the user's own code does it:
the module imports the standard library (what the policy lists) and poet_sandbox,
never the user's imports, and prints nothing (the caller's stdout is the logic's).
"""

from __future__ import annotations

import ast
import builtins
import sys

from poet_runtime.errors import CheckFailed
from poet_runtime.generate.spec import FunctionSpec
from poet_runtime.generate.parsing import parse

# Standard-library modules that reach the process, the file system, the network or
# the interpreter's insides; generated code has no business importing them unless
# the user's own module does.
DANGEROUS_MODULES = frozenset({
    "os", "sys", "subprocess", "shutil", "socket", "ssl", "ctypes", "importlib", "builtins", "pickle", "marshal",
    "shelve", "multiprocessing", "signal", "gc", "inspect", "code", "codeop", "pty", "pdb", "bdb", "resource",
    "fcntl", "mmap", "http", "urllib", "ftplib", "smtplib", "poplib", "imaplib", "telnetlib", "webbrowser",
    "tempfile", "glob", "pathlib", "posix", "nt", "runpy", "zipimport", "site", "sysconfig", "tracemalloc",
    "faulthandler", "atexit", "select", "selectors", "socketserver", "xmlrpc", "sqlite3", "dbm", "zipfile",
    "tarfile", "fileinput", "io", "_thread", "_io", "_posixsubprocess", "types", "ensurepip", "venv", "trace",
})
FORBIDDEN_NAMES = frozenset({
    "eval", "exec", "compile", "__import__", "globals", "locals", "vars", "breakpoint", "input", "open", "exit",
    "quit", "help", "setattr", "delattr", "memoryview", "__builtins__", "__loader__", "__spec__", "print",
})
ALWAYS_ALLOWED_MODULES = frozenset({"poet_sandbox", "__future__"})
# Attributes that walk from an object to frames, code or globals (sandbox escapes).
FRAME_ATTRIBUTES = frozenset({
    "f_globals", "f_locals", "f_back", "f_builtins", "f_code", "tb_frame", "tb_next", "gi_frame", "gi_code",
    "cr_frame", "cr_code", "ag_frame", "ag_code", "co_code", "func_globals", "mro",
})
# Dunder attributes that only name things (``type(error).__name__`` in a note): no escape.
NAMING_ATTRIBUTES = frozenset({"__name__", "__qualname__"})
_ATTRIBUTE_BUILTINS = ("getattr", "hasattr", "setattr", "delattr")
_BUILTIN_NAMES = frozenset(dir(builtins))


def _root(name: str) -> str:
    return name.split(".")[0]


def _bound_names(tree: ast.Module) -> set[str]:
    """Every name the module binds anywhere (so a local ``input`` is not the builtin)."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return bound


def check_static_policy(code: str, spec: FunctionSpec, policy=None, *, filename: str = "<generated>") -> list[str]:
    """Raise ``CheckFailed('static_policy', ...)`` for the first thing the policy forbids."""
    problems = static_violations(code, spec, policy, filename=filename)
    if problems:
        raise CheckFailed("static_policy", problems[0])
    return ["static_policy"]


def static_violations(code: str, spec: FunctionSpec, policy=None, *, filename: str = "<generated>") -> list[str]:
    tree = parse(code, filename)
    limits = getattr(policy, "limits", None)
    policy_imports = {_root(name) for name in (getattr(limits, "imports", ()) or ())}
    policy_builtins = set(getattr(limits, "builtins", ()) or ())
    bound = _bound_names(tree)
    problems = []

    def allowed_module(name: str, level: int) -> bool:
        if level:
            return False  # relative to wherever the module is stored: never meant
        root = _root(name)
        if root in ALWAYS_ALLOWED_MODULES or root in policy_imports:
            return True
        if root == _root(spec.module):
            return False
        if policy_imports:  # the policy lists what may be imported: nothing else
            return False
        return root in sys.stdlib_module_names and root not in DANGEROUS_MODULES and not root.startswith("_")

    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not allowed_module(alias.name, 0):
                    problems.append(f"line {line}: import {alias.name} is not allowed")
        elif isinstance(node, ast.ImportFrom):
            if not allowed_module(node.module or "", node.level):
                problems.append(f"line {line}: from {'.' * node.level}{node.module or ''} import is not allowed")
        elif isinstance(node, ast.Name):
            name = node.id
            if name in FORBIDDEN_NAMES and name not in bound:
                problems.append(f"line {line}: {name} is not allowed")
            elif name.startswith("__") and name != "__name__":
                problems.append(f"line {line}: the name {name} is not allowed")
            elif (policy_builtins and name in _BUILTIN_NAMES and name not in bound and name not in policy_builtins
                  and not (name[:1].isupper() and name.endswith(("Error", "Exception", "Warning")))):
                problems.append(f"line {line}: the builtin {name} is not allowed by the policy")
        elif isinstance(node, ast.Attribute):
            attr = node.attr
            if attr.startswith("__") and attr.endswith("__") and not (
                    attr in NAMING_ATTRIBUTES and isinstance(node.ctx, ast.Load)):
                problems.append(f"line {line}: dunder attribute .{attr} is not allowed")
            elif attr in FRAME_ATTRIBUTES:
                problems.append(f"line {line}: attribute .{attr} is not allowed (frame or code walk)")
        elif isinstance(node, ast.Call):
            function = node.func
            if (isinstance(function, ast.Name) and function.id in _ATTRIBUTE_BUILTINS and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
                    and node.args[1].value.startswith("_")):
                problems.append(f"line {line}: {function.id}(..., {node.args[1].value!r}) is not allowed")
            elif (isinstance(function, ast.Attribute) and function.attr in ("format", "format_map")
                  and isinstance(function.value, ast.Constant) and isinstance(function.value.value, str)
                  and (".__" in function.value.value or "[__" in function.value.value)):
                problems.append(f"line {line}: a format string that reaches dunder attributes is not allowed")
    return problems

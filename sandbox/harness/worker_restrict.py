"""RestrictedPython compilation and the guards generated code runs under.

Why this module exists: the ``restricted`` backend runs generated (untrusted)
code either in the host process or in a worker process, and both must apply the
very same rules. So the rules live here, on the guest side, importing only the
standard library and RestrictedPython; the host loads this file by path (it is not
on ``sys.path``). This is the compile-time half; ``worker_guards`` is the runtime half.

The rule generated code must follow (generators read this):
- No name, attribute, argument or imported name may start with ``_`` (the single
  name ``_`` is allowed; so are reads of ``__name__`` and ``__qualname__``, as in
  ``type(error).__name__``, which give a str or are refused at run time). Dunder methods in class bodies are limited to
  ``__init__``, ``__contains__`` and the six comparisons. RestrictedPython
  refuses anything else at compile time, so the whole module is refused.
- ``exec``, ``eval``, ``compile``, ``open``, ``globals``, ``vars``, ``dir`` and
  ``__import__`` by name do not exist; ``type`` takes one argument only.
- ``import`` works only for the policy's ``imports`` plus ``poet_sandbox`` and its
  submodules; no relative imports; no ``import *``.
- Attribute names are checked at compile time; literal reads then run natively,
  because every value is made safe by construction: an imported module is a
  read-only ``ModuleView`` (public names only, submodules only when allowlisted,
  mutable containers copied, state-changing functions such as ``random.seed`` or
  ``decimal.setcontext`` left out, asking for them is a violation). ``str.format``
  /``format_map`` and computed names (``getattr``, ``hasattr``) go through the
  runtime guard, which also refuses frame, code, traceback and generator internals.
- Attributes and items may be written only on plain containers (dict, list, ...)
  and on classes the generated code defined and their instances.
- The generated module gets none of the user's globals (contract 2: it never
  contains the user's logic). ``operate_prime``'s ``logic`` is, in a worker, a
  proxy that can be called (or awaited) and exposes nothing else; values the host
  did not send as data are ``HostRef``s, which expose nothing either (the checks of
  ``poet_sandbox.validate`` read them). Asking either for an attribute is a violation.
- ``print`` output is collected (not written at once) and counted against
  ``max_output_kb``; the host writes it out when the call succeeds.
- ``x += y`` works on names, attributes and items (RestrictedPython itself
  refuses the latter two; they are as safe as ``x = x + y``).

Every refusal is recorded in the ``Sandbox`` as a violation: the host reports the
call as a ``PoetViolation`` even if the generated code caught the exception.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys

from RestrictedPython import compile_restricted_exec
from RestrictedPython.transformer import RestrictingNodeTransformer, copy_locations


def _sibling(name: str):
    """Load a module of this folder by path (the folder is not on sys.path in the host)."""
    key = __name__.replace("worker_restrict", name)  # host: poet_runtime._guest_worker_guards
    module = sys.modules.get(key)
    if module is None:
        spec = importlib.util.spec_from_file_location(key, os.path.join(os.path.dirname(__file__), f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return module


_guards = _sibling("worker_guards")
Sandbox = _guards.Sandbox
SandboxViolation = _guards.SandboxViolation
ModuleView = _guards.ModuleView
module_allowed = _guards.module_allowed
vetted_reason = _guards.vetted_reason
VETTED_MODULES = _guards.VETTED_MODULES
DENIED_NAMES = _guards.DENIED_NAMES
FORMAT_NAMES = _guards.FORMAT_NAMES
CROSSING_NAMES = _guards.CROSSING_NAMES
NAME_ATTRIBUTES = _guards.NAME_ATTRIBUTES
GADGET_NAMES = _guards.GADGET_NAMES
GUARDED_NAMES = frozenset(FORMAT_NAMES) | CROSSING_NAMES | GADGET_NAMES  # literal reads that go through _getattr_


class Policy(RestrictingNodeTransformer):
    """RestrictedPython's rules, plus augmented assignment of attributes and items."""

    def visit_AugAssign(self, node):
        if isinstance(node.target, (ast.Attribute, ast.Subscript)):
            node = self.node_contents_visit(node)
            # The target's value (x in x.a / x[k]) goes through _write_; the read of
            # x.a itself is native, which is fine: x is writable, so it is ours.
            target = node.target
            name = ast.copy_location(ast.Name("_write_", ast.Load()), target.value)
            wrapped = ast.copy_location(ast.Call(func=name, args=[target.value], keywords=[]), target.value)
            target.value = wrapped
            return node
        return super().visit_AugAssign(node)

    def visit_Attribute(self, node):
        """Literal attribute reads run natively (after RestrictedPython's name checks).

        Why that is safe here: the names are checked at compile time (no ``_``, no
        frame/code/generator internals), and every value that could make a
        harmless-looking name dangerous is made safe by construction: modules are
        ``ModuleView``s (filtered, read-only, no unlisted submodules, copied
        containers), and the one name that walks attributes by itself, str's
        ``format``/``format_map``, still goes through ``_getattr_``, as do the
        names of the crossing's objects (``session``, ``type_names``, ...: a logic
        proxy or a value left in the host exposes nothing). Computed names
        (``getattr``/``hasattr``) always go through the full runtime check. This is
        what keeps guarded code within a small factor of native speed.
        """
        if isinstance(node.ctx, ast.Load) and node.attr in NAME_ATTRIBUTES:
            # ``type(error).__name__``: read through the guard, which gives only a str.
            node = self.node_contents_visit(node)
            call = ast.Call(func=ast.Name("_getattr_", ast.Load()), args=[node.value, ast.Constant(node.attr)],
                            keywords=[])
            copy_locations(call, node)
            return call
        if isinstance(node.ctx, ast.Load) and node.attr not in GUARDED_NAMES:
            if node.attr.startswith("_") and node.attr != "_":
                self.error(node, f'"{node.attr}" is an invalid attribute name because it starts with "_".')
            elif node.attr.endswith("__roles__") or node.attr in DENIED_NAMES:
                self.error(node, f'"{node.attr}" is a restricted name.')
            return self.node_contents_visit(node)
        return super().visit_Attribute(node)

    # Async phases (CONTRACTS: operate_prime is async for async originals). Await,
    # async for and async with add no reach beyond the objects the code already holds.
    def visit_AsyncFunctionDef(self, node):
        return self.visit_FunctionDef(node)

    def visit_Await(self, node):
        return self.node_contents_visit(node)

    def visit_AsyncFor(self, node):
        return self.node_contents_visit(node)

    def visit_AsyncWith(self, node):
        return self.node_contents_visit(node)

def compile_module(source: str, filename: str):
    """Compile generated code; return ``(code, errors)`` (errors: list of str)."""
    result = compile_restricted_exec(source, filename=filename, policy=Policy)
    if result.errors:
        return None, list(result.errors)
    return result.code, []

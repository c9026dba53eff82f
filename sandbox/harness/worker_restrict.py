"""RestrictedPython compilation and the guards generated code runs under.

Why this module exists: the ``restricted`` backend runs generated (untrusted)
code either in the host process or in a worker process, and both must apply the
very same rules. So the rules live here, on the guest side, importing only the
standard library, RestrictedPython and (at call time) ``poet_sandbox``; the host
loads this file by path (it is not on ``sys.path``).

The rule generated code must follow (generators read this):
- No name, attribute, argument or imported name may start with ``_`` (the single
  name ``_`` is allowed). Dunder methods in class bodies are limited to
  ``__init__``, ``__contains__`` and the six comparisons. RestrictedPython
  refuses anything else at compile time, so the whole module is refused.
- ``exec``, ``eval``, ``compile``, ``open``, ``globals``, ``vars``, ``dir`` and
  ``__import__`` by name do not exist; ``type`` takes one argument only.
- ``import`` works only for the policy's ``imports`` plus ``poet_sandbox`` and its
  submodules; no relative imports; no ``import *``.
- Attributes are read through ``_getattr_``: frame, code, traceback and generator
  internals are refused, a module's attribute that is itself a module must be on
  the allowlist, a module's mutable containers are handed out as copies, and a
  few state-changing functions (``random.seed``, ``decimal.setcontext``, ...) are
  refused. ``str.format``/``format_map`` walk attributes through the same guard.
- Attributes and items may be written only on plain containers (dict, list, ...),
  on instances of classes the generated code defined, and on classes the user's
  own module defines.
- ``print`` output is collected (not written at once) and counted against
  ``max_output_kb``; the host writes it out when the call succeeds.
- ``x += y`` works on names, attributes and items (RestrictedPython itself
  refuses the latter two; they are as safe as ``x = x + y``).

Every refusal is recorded in the ``Sandbox`` as a violation: the host reports the
call as a ``PoetViolation`` even if the generated code caught the exception.
"""

from __future__ import annotations

import ast
import builtins as _builtins
import copy
import importlib
import operator
import string
import sys
import types
from collections import Counter, OrderedDict, defaultdict, deque

from RestrictedPython import compile_restricted_exec
from RestrictedPython.Guards import safe_builtins
from RestrictedPython.transformer import INSPECT_ATTRIBUTES, RestrictingNodeTransformer

ALWAYS_IMPORTABLE = "poet_sandbox"

# Attribute names refused on any object, even when reached through getattr() with a
# computed name (RestrictedPython refuses them only when written literally).
DENIED_NAMES = frozenset(INSPECT_ATTRIBUTES) | {"mro", "f_trace_lines", "f_trace_opcodes", "tb_lasti"}
FORMAT_NAMES = ("format", "format_map")
# Objects whose attributes lead to interpreter internals; generators keep their
# protocol methods, nothing else.
BLOCKED_TYPES = (types.FrameType, types.TracebackType, types.CodeType)
GENERATOR_TYPES = (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)
GENERATOR_METHODS = frozenset({"send", "throw", "close", "asend", "athrow", "aclose"})
# Module functions that change process-wide state that later calls (or the host,
# in-process) would see.
MODULE_DENIED = {
    "random": frozenset({"seed", "setstate"}),
    "decimal": frozenset({"setcontext", "getcontext", "DefaultContext", "BasicContext", "ExtendedContext"}),
    "time": frozenset({"tzset"}),
}
# Types whose attributes (all public methods) are safe to read without further
# checks: the fast path of _getattr_.
FAST_TYPES = frozenset(
    {dict, list, tuple, set, frozenset, int, float, bool, complex, bytes, bytearray, type(None), range,
     OrderedDict, defaultdict, Counter, deque}
)
WRITABLE_TYPES = frozenset({dict, list, bytearray, OrderedDict, defaultdict, Counter, deque})
MUTABLE_CONTAINERS = (dict, list, set, bytearray, deque)

INPLACE = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow, "<<=": operator.ilshift,
    ">>=": operator.irshift, "&=": operator.iand, "|=": operator.ior, "^=": operator.ixor,
    "@=": operator.imatmul,
}

# Builtins added to RestrictedPython's safe_builtins: pure functions and types.
EXTRA_BUILTINS = (
    "list", "dict", "set", "frozenset", "enumerate", "zip", "map", "filter", "min", "max", "sum", "any",
    "all", "sorted", "reversed", "iter", "next", "bytes", "bytearray", "object", "super", "property",
    "staticmethod", "classmethod", "format", "bin", "ascii", "NotImplemented", "StopAsyncIteration",
    "RecursionError", "TimeoutError", "ConnectionError", "LookupError", "ExceptionGroup",
)
# Builtins a policy may never add: they open files, run code or reach the interpreter.
NEVER_BUILTINS = frozenset(
    {"open", "exec", "eval", "compile", "__import__", "globals", "locals", "vars", "dir", "breakpoint",
     "input", "help", "memoryview", "setattr", "delattr", "getattr", "hasattr", "type", "exit", "quit",
     "copyright", "credits", "license", "__build_class__", "__loader__", "__spec__"}
)


# Builtins that exist as refusing stand-ins (see Sandbox._refuser).
DENIED_BUILTINS = ("open", "exec", "eval", "compile", "globals", "locals", "vars", "dir", "breakpoint", "input",
                   "help", "memoryview", "exit", "quit")


class SandboxViolation(Exception):
    """Raised by a guard; the Sandbox has already recorded it."""

    def __init__(self, limit: str, detail: str):
        super().__init__(f"{limit}: {detail}")
        self.limit = limit
        self.detail = detail


class OutputLimit(BaseException):
    """Printing went past max_output_kb. BaseException: generated code's ``except
    Exception`` must not swallow it (the violation is recorded anyway)."""


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


def global_names(code) -> set:
    """Names a module's code (and every function in it) reads as globals."""
    import dis

    names = set()
    stack = [code]
    while stack:
        current = stack.pop()
        for instruction in dis.get_instructions(current):
            if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                names.add(instruction.argval)
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return names


def module_allowed(name: str, allowed: frozenset) -> bool:
    return name in allowed or name == ALWAYS_IMPORTABLE or name.startswith(ALWAYS_IMPORTABLE + ".")


class SafeFormatter(string.Formatter):
    """str.format whose field lookups ({0.attr}, {0[key]}) go through the guard."""

    def __init__(self, guard):
        self.guard = guard

    def get_field(self, field_name, args, kwargs):
        import _string

        first, rest = _string.formatter_field_name_split(field_name)
        obj = self.get_value(first, args, kwargs)
        for is_attr, key in rest:
            obj = self.guard(obj, key) if is_attr else obj[key]
        return obj, first


class Sandbox:
    """The guards and builtins of one loaded enhancement, and what it broke.

    ``violations`` only grows; a caller compares its length before and after a call.
    """

    def __init__(self, imports=(), extra_builtins=(), max_output_kb=None, writable_types=()):
        self.allowed = frozenset(imports)
        self.violations: list = []
        self.classes: set = set()  # classes the generated code defined
        self.writable = set(WRITABLE_TYPES) | set(writable_types)
        self.max_output = None if max_output_kb is None else max_output_kb * 1024
        self.output: list = []
        self.output_size = 0
        self.builtins = self._builtins(extra_builtins)

    # -- recording ------------------------------------------------------------
    def refuse(self, limit: str, detail: str):
        self.violations.append((limit, detail))
        raise SandboxViolation(limit, detail)

    def begin_call(self) -> int:
        self.output = []
        self.output_size = 0
        return len(self.violations)

    def take_output(self) -> str:
        text = "".join(self.output)
        self.output = []
        return text

    # -- guards -----------------------------------------------------------------
    def checked_getattr(self, obj, name):
        """The full check, for computed names and the slow path."""
        if type(name) is not str:
            raise TypeError("attribute name must be a string")
        if name[:1] == "_" or name in DENIED_NAMES:
            self.refuse("attribute", f"{name!r} is out of reach")
        if isinstance(obj, BLOCKED_TYPES):
            self.refuse("attribute", f"{type(obj).__name__} objects are out of reach")
        if isinstance(obj, GENERATOR_TYPES) and name not in GENERATOR_METHODS:
            self.refuse("attribute", f"{type(obj).__name__}.{name} is out of reach")
        if isinstance(obj, types.ModuleType):
            denied = MODULE_DENIED.get(obj.__name__)
            if denied and name in denied:
                self.refuse("attribute", f"{obj.__name__}.{name} changes process state")
        value = getattr(obj, name)
        if isinstance(value, types.ModuleType):
            if not module_allowed(value.__name__, self.allowed):
                self.refuse("imports", f"module {value.__name__!r} is not in the policy's imports")
            return value
        if name in FORMAT_NAMES:
            # Whatever route led here (a str subclass, super(), the str type itself), the
            # builtin str.format/format_map would walk attributes unguarded.
            kind = type(value)
            if kind is types.BuiltinMethodType and isinstance(getattr(value, "__self__", None), str):
                return self._safe_format(value.__self__, name)
            if kind is types.MethodDescriptorType and getattr(value, "__objclass__", None) is str:
                return self._safe_format(None, name)
        if isinstance(obj, types.ModuleType) and isinstance(value, MUTABLE_CONTAINERS):
            return copy.copy(value)  # module state stays unchanged
        return value

    def _safe_format(self, bound, name):
        formatter = SafeFormatter(self.checked_getattr)
        if bound is not None:
            if name == "format":
                return lambda *args, **kwargs: formatter.vformat(bound, args, kwargs)
            return lambda mapping: formatter.vformat(bound, (), mapping)
        if name == "format":
            return lambda text, *args, **kwargs: formatter.vformat(text, args, kwargs)
        return lambda text, mapping: formatter.vformat(text, (), mapping)

    def make_guards(self) -> dict:
        fast = FAST_TYPES
        classes = self.classes
        slow = self.checked_getattr
        writable = self.writable
        refuse = self.refuse
        sandbox = self

        # Literal attribute names were checked at compile time, so the fast path
        # only has to know the object is of a type whose public attributes are all
        # harmless. Written for speed: it runs on every `a.b`.
        def _getattr_(obj, name, getattr=getattr, type=type):
            t = type(obj)
            if t in fast or (t is str and name != "format" and name != "format_map"):
                return getattr(obj, name)
            return slow(obj, name)

        def _write_(obj, type=type):
            t = type(obj)
            if t in writable or t in classes or obj in classes:
                return obj
            refuse("write", f"cannot change attributes or items of {t.__name__} objects")

        def guarded_getattr(obj, name, *default):
            try:
                return slow(obj, name)
            except AttributeError:
                if default:
                    return default[0]
                raise

        def guarded_hasattr(obj, name):
            try:
                slow(obj, name)
            except AttributeError:
                return False
            return True

        def guarded_setattr(obj, name, value):
            if type(name) is not str or name[:1] == "_":
                refuse("write", f"attribute {name!r} is out of reach")
            setattr(_write_(obj), name, value)

        def guarded_delattr(obj, name):
            if type(name) is not str or name[:1] == "_":
                refuse("write", f"attribute {name!r} is out of reach")
            delattr(_write_(obj), name)

        def _inplacevar_(op, x, y):
            return INPLACE[op](x, y)

        def _unpack_sequence_(it, spec, _getiter_):
            # Unpacking iterates with iter(), which is our _getiter_ anyway.
            return it

        def _iter_unpack_sequence_(it, spec, _getiter_):
            return it

        def _apply_(f, *args, **kwargs):
            return f(*args, **kwargs)

        class PrintCollector:
            """RestrictedPython makes one per function that prints."""

            __slots__ = ()

            def __init__(self, _getattr_=None):
                pass

            def _call_print(self, *objects, sep=" ", end="\n", file=None, flush=False):
                if file is not None:
                    refuse("print", "print(file=...) is not allowed")
                text = (sep if type(sep) is str else " ").join(str(o) for o in objects) + (
                    end if type(end) is str else "\n")
                sandbox.output_size += len(text.encode("utf-8", "replace"))
                if sandbox.max_output is not None and sandbox.output_size > sandbox.max_output:
                    sandbox.violations.append(("max_output_kb", f"printed more than {sandbox.max_output // 1024} KB"))
                    raise OutputLimit("max_output_kb")
                sandbox.output.append(text)

            def __call__(self):
                return "".join(sandbox.output)

        def make_class(name, bases, namespace, **kwargs):
            meta = type
            for base in bases:
                candidate = type(base)
                if issubclass(candidate, meta):
                    meta = candidate
            cls = meta(name, bases, namespace, **kwargs)
            classes.add(cls)
            return cls

        return {
            "_getattr_": _getattr_,
            "_getitem_": operator.getitem,
            "_getiter_": iter,
            "_write_": _write_,
            "_inplacevar_": _inplacevar_,
            "_unpack_sequence_": _unpack_sequence_,
            "_iter_unpack_sequence_": _iter_unpack_sequence_,
            "_apply_": _apply_,
            "_print_": PrintCollector,
            "__metaclass__": make_class,
            "getattr": guarded_getattr,
            "hasattr": guarded_hasattr,
            "setattr": guarded_setattr,
            "delattr": guarded_delattr,
        }

    def guarded_import(self, name, globals=None, locals=None, fromlist=(), level=0):
        if level:
            self.refuse("imports", "relative imports are not allowed")
        if not module_allowed(name, self.allowed):
            self.refuse("imports", f"module {name!r} is not in the policy's imports")
        module = importlib.import_module(name)
        if not fromlist:
            top = name.partition(".")[0]
            if top != name and not module_allowed(top, self.allowed):
                self.refuse("imports", f"module {top!r} is not in the policy's imports")
            return sys.modules[top]
        # `from m import x` reads x natively from what we return, so hand back a
        # module holding only the checked names.
        view = types.ModuleType(name)
        for item in fromlist:
            if type(item) is not str or item[:1] == "_":
                self.refuse("imports", f"cannot import {item!r} from {name}")
            if not hasattr(module, item) and module_allowed(f"{name}.{item}", self.allowed):
                importlib.import_module(f"{name}.{item}")
            setattr(view, item, self.checked_getattr(module, item))
        return view

    def _builtins(self, extra) -> dict:
        table = dict(safe_builtins)
        for name in EXTRA_BUILTINS:
            if hasattr(_builtins, name):
                table[name] = getattr(_builtins, name)
        for name in extra:
            if name in NEVER_BUILTINS or not hasattr(_builtins, name):
                raise ValueError(f"builtin {name!r} cannot be allowed")
            table[name] = getattr(_builtins, name)
        table["__import__"] = self.guarded_import
        table["type"] = one_argument_type
        for name in DENIED_BUILTINS:
            table[name] = self._refuser(name)
        for name in ("setattr", "delattr"):
            table.pop(name, None)  # replaced by the guarded versions in the namespace
        return table

    def _refuser(self, name):
        """A stand-in for a builtin that is not offered: calling it is a violation,
        not a NameError that would look like the user's own bug."""

        def refused(*args, **kwargs):
            self.refuse("builtins", f"{name}() is not available to generated code")

        refused.__name__ = name
        return refused

    def namespace(self, module_name: str, given: dict) -> dict:
        """A fresh module namespace: guards, builtins and the user's names."""
        ns = dict(given)
        ns.update(self.make_guards())
        ns["__builtins__"] = self.builtins
        ns["__name__"] = module_name
        return ns


def one_argument_type(obj):
    """``type(x)``: the class of x. The three-argument form would build classes
    with arbitrary dunder methods, so it is not offered."""
    return type(obj)

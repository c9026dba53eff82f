"""The runtime half of the restricted backend's rules: guards, builtins, module views.

Why a module of its own: ``worker_restrict`` is what RestrictedPython compiles with
(the compile-time half); this is what the compiled code calls while it runs. Both
run in the host (in-process mode) and in worker processes, so this file imports
only the standard library and RestrictedPython. The rules themselves are described
in ``worker_restrict``'s docstring.

The surface generated code can reach is an allow-list, not a deny-list: the modules
of ``VETTED_MODULES`` (a policy's ``imports`` can name no other), and from each only
the names its entry gives; from the facility library only the modules and names
meant for generated code (``facility_surface``). Each entry was reviewed for native
gadgets: a function that reads or writes an attribute by a name its caller picks
(``functools.update_wrapper``), evaluates a string as code (``typing.get_type_hints``
behind ``functools.singledispatch``), hands out frames, code objects or tracebacks,
or changes state the host shares. Such names are simply not there.
"""

from __future__ import annotations

import abc
import builtins as _builtins
import copy
import importlib
import operator
import string
import sys
import types
import weakref
from collections import Counter, OrderedDict, defaultdict, deque

from RestrictedPython.Guards import safe_builtins
from RestrictedPython.transformer import INSPECT_ATTRIBUTES

ALWAYS_IMPORTABLE = "poet_sandbox"
# Facility modules that are the harnesses' own machinery, not tools for generated code:
# the driver (it holds the phases and reads tracebacks), the crossing (the session is
# the door to the host's protocol) and the WASM wire codec.
FACILITY_INTERNAL = frozenset({"poet_sandbox.driver", "poet_sandbox.crossing", "poet_sandbox.wire"})

PUBLIC = None  # a surface: the module's ``__all__``, or (a C module without one) its public names

# module -> (names generated code may read, names left out of them, why that is safe).
# Submodules are never part of a surface: each needs its own entry and its own listing
# in the policy. Keep README's "What generated code may reach" in step with this table.
VETTED_MODULES = {
    "math": (PUBLIC, (), "numbers in, numbers out"),
    "cmath": (PUBLIC, (), "numbers in, numbers out"),
    "statistics": (PUBLIC, (), "functions of data; NormalDist holds two floats"),
    "json": (PUBLIC, (), "text to plain data and back; the hooks it calls are the code's own"),
    "re": (PUBLIC, (), "patterns and matches; a match holds only the string it searched"),
    "datetime": (PUBLIC, (), "immutable values; a tzinfo it calls is the code's own"),
    "collections": (PUBLIC, (), "containers; namedtuple checks its names are identifiers before it builds code"),
    "itertools": (PUBLIC, (), "iterators over what the code gives them"),
    "functools": (frozenset({"reduce", "partial", "cmp_to_key", "lru_cache", "cache"}), (),
                  "only the combinators: update_wrapper and wraps copy attributes by a chosen name (__globals__), "
                  "singledispatch evaluates string annotations, total_ordering and cached_property write to classes"),
    "decimal": (PUBLIC, ("getcontext", "setcontext", "localcontext", "DefaultContext", "BasicContext",
                         "ExtendedContext"),
                "values and Context objects; the thread's context (shared with the host in-process) is out of reach"),
    "fractions": (PUBLIC, (), "immutable values"),
    "random": (PUBLIC, (), "draws from a generator of the sandbox's own (the module's functions are bound to it, "
                           "so neither a draw nor seed() moves the process's generator, which the logic may use)"),
    "time": (PUBLIC, ("tzset",), "clocks and sleep; changing the process's time zone is left out"),
    "heapq": (PUBLIC, (), "functions on the code's own lists"),
    "bisect": (PUBLIC, (), "functions on the code's own lists"),
    "numbers": (PUBLIC, (), "abstract classes; register() is refused on classes the code did not define"),
    "textwrap": (PUBLIC, (), "functions of text"),
    "unicodedata": (PUBLIC, (), "character tables"),
    "base64": (PUBLIC, (), "bytes to text and back"),
    "binascii": (PUBLIC, (), "bytes to text and back"),
    "hashlib": (PUBLIC, ("file_digest",), "digests of bytes"),
    "zlib": (PUBLIC, (), "bytes to bytes (the memory limit bounds a decompression bomb)"),
    "struct": (PUBLIC, (), "bytes to numbers and back"),
    "difflib": (PUBLIC, (), "comparisons of the code's own sequences"),
    "html": (PUBLIC, (), "escaping of text"),
    "colorsys": (PUBLIC, (), "numbers in, numbers out"),
}


def vetted_reason(name: str) -> str | None:
    """Why ``name`` cannot be in a policy's ``imports`` (None: it can)."""
    if name == ALWAYS_IMPORTABLE or name.startswith(ALWAYS_IMPORTABLE + "."):
        return "the facility library is always importable (its public modules only); it is not listed"
    if name not in VETTED_MODULES:
        return ("it is not one of the modules reviewed for generated code ("
                + ", ".join(sorted(VETTED_MODULES)) + ")")
    return None


# Public attribute names of the crossing's objects (``poet_sandbox.crossing``: the logic
# proxy, values left in the host). Literal reads of these names go through the runtime
# guard, which refuses them on those objects; the proxy refuses them by itself as well.
CROSSING_NAMES = frozenset({"session", "with_timeout", "type_names"})
# Innocent-looking names that are gadgets on some objects: ``register`` on an abstract
# class changes isinstance() for the whole process; ``replace`` on a code object would
# rewrite the names it reads. Literal reads of them go through the runtime guard too.
GADGET_NAMES = frozenset({"register", "replace"})

# Attribute names refused on any object, even when reached through getattr() with a
# computed name (RestrictedPython refuses them only when written literally).
DENIED_NAMES = frozenset(INSPECT_ATTRIBUTES) | {
    "mro", "f_trace_lines", "f_trace_opcodes", "tb_lasti", "tb_lineno", "f_lasti", "cell_contents", "co_consts",
    "co_names", "co_varnames", "co_freevars", "co_cellvars", "co_filename", "co_qualname", "co_linetable",
    "co_exceptiontable", "co_lnotab", "gi_suspended", "cr_suspended", "ag_running"}
FORMAT_NAMES = ("format", "format_map")
# The only names starting with "_" that generated code may read (``type(error).__name__``):
# through the runtime guard, and only when the value is a str.
NAME_ATTRIBUTES = frozenset({"__name__", "__qualname__"})
# Objects whose attributes lead to interpreter internals; generators keep their
# protocol methods, nothing else.
BLOCKED_TYPES = (types.FrameType, types.TracebackType, types.CodeType)
GENERATOR_TYPES = (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)
GENERATOR_METHODS = frozenset({"send", "throw", "close", "asend", "athrow", "aclose"})
# Classes whose one-argument type() would be a constructor of interpreter internals
# (``type(f)(code, globals)`` builds a function, ``type(type)`` is the three-argument
# form): type() gives a name-only stand-in for them instead (see ``one_argument_type``).
INTERNAL_TYPES = frozenset({
    types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.CodeType, types.FrameType,
    types.TracebackType, types.ModuleType, types.CellType, types.MappingProxyType, types.GeneratorType,
    types.CoroutineType, types.AsyncGeneratorType, types.MethodWrapperType, types.WrapperDescriptorType,
    types.MethodDescriptorType, types.ClassMethodDescriptorType, types.GetSetDescriptorType,
    types.MemberDescriptorType, types.SimpleNamespace, staticmethod, classmethod, property, super,
})
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
    "RecursionError", "TimeoutError", "ConnectionError", "LookupError", "ExceptionGroup", "tuple", "aiter",
    "anext", "BaseExceptionGroup", "ModuleNotFoundError", "EncodingWarning", "ResourceWarning",
    # Every builtin exception class: generated code names what the logic may raise
    # (the crossing hands it the nearest builtin class of the logic's exception).
    "BlockingIOError", "BrokenPipeError", "ChildProcessError", "ConnectionAbortedError",
    "ConnectionRefusedError", "ConnectionResetError", "FileExistsError", "FileNotFoundError",
    "InterruptedError", "IsADirectoryError", "NotADirectoryError", "PermissionError", "ProcessLookupError",
)
# Builtins a policy may never add: they open files, run code or reach the interpreter.
NEVER_BUILTINS = frozenset(
    {"open", "exec", "eval", "compile", "__import__", "globals", "locals", "vars", "dir", "breakpoint",
     "input", "help", "memoryview", "setattr", "delattr", "getattr", "hasattr", "type", "exit", "quit",
     "copyright", "credits", "license", "__build_class__", "__loader__", "__spec__"}
)




def _stand_in(name):
    cls = type(name, (Exception,), {"__module__": "builtins", "__doc__": f"{name}, as generated code sees it"})
    cls.__qualname__ = name
    return cls


# Exceptions that are not ``Exception``s, as generated code sees them: ``BaseException``
# is ``Exception`` and the others are Exception classes of the same name. So generated
# code can neither raise what would end the user's program (SystemExit, a forged
# KeyboardInterrupt) nor catch a real Ctrl-C or a limit: a non-``Exception`` that ends a
# call came from the user's program or logic, never from generated code.
NOT_EXCEPTIONS = {"BaseException": Exception, **{name: _stand_in(name) for name in
                                                  ("GeneratorExit", "KeyboardInterrupt", "SystemExit")}}

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


def is_facility(name: str) -> bool:
    return name == ALWAYS_IMPORTABLE or name.startswith(ALWAYS_IMPORTABLE + ".")


def module_allowed(name: str, allowed: frozenset) -> bool:
    """A vetted module the policy lists, or a public module of the facility library."""
    if is_facility(name):
        return name not in FACILITY_INTERNAL
    return name in allowed and name in VETTED_MODULES


def surface(module) -> frozenset:
    """The names generated code may read from ``module`` (submodules aside)."""
    name = module.__name__
    entry = VETTED_MODULES.get(name)
    if entry is not None:
        names, left_out, _why = entry
        if names is PUBLIC:
            names = getattr(module, "__all__", None) or [n for n in vars(module) if n[:1] != "_"]
        return frozenset(n for n in names if type(n) is str and n[:1] != "_" and n not in left_out)
    if is_facility(name) and name not in FACILITY_INTERNAL:
        return frozenset(n for n, value in vars(module).items() if n[:1] != "_" and _facility_value(value))
    return frozenset()


def _facility_value(value) -> bool:
    """What a facility module offers: what it (or another public facility module)
    defines, and immutable constants; not what it imported from elsewhere (the
    crossing's HostRef, a stdlib function) nor its mutable state."""
    if value is None or type(value) in (int, float, str, bytes, bool, tuple, frozenset):
        return True
    owner = getattr(value, "__module__", None) if isinstance(value, (type, types.FunctionType)) else \
        type(value).__module__
    if owner == "poet_sandbox.crossing" and isinstance(value, type) and value.__qualname__ == "HostRef":
        return True  # sealed (it exposes nothing); checks compare types with it
    return type(owner) is str and is_facility(owner) and owner not in FACILITY_INTERNAL


# view -> (module, weak sandbox): kept outside the view, so that nothing native that
# copies or walks an object's __dict__ (lru_cache's update_wrapper) finds the real module.
_VIEW_OWNERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

class ModuleView:
    """What generated code gets instead of a module: its public names, read-only.

    Built once per module and Sandbox. It holds the module's ``surface`` only:
    submodules appear only when allowed (as views), mutable containers are copies.
    Asking for a name the module has but the surface leaves out records a violation.
    The real module is not in the view at all (``_VIEW_OWNERS``).
    """

    def __init__(self, *args, **kwargs):
        raise TypeError("module views are made by the sandbox only")

    def __getattr__(self, name):  # only for names the view does not have
        module, sandbox = _VIEW_OWNERS[self]
        sandbox = sandbox()
        if sandbox is not None and name[:1] != "_" and hasattr(module, name):
            value = getattr(module, name)
            if isinstance(value, types.ModuleType):
                sandbox.refuse("imports", f"module {value.__name__!r} is not in the policy's imports")
            sandbox.refuse("attribute", f"{module.__name__}.{name} is not offered to generated code")
        raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")

    def __repr__(self):
        return f"<module {_VIEW_OWNERS[self][0].__name__!r} (sandboxed)>"


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

    ``violations`` only grows; a caller compares its length before and after a call,
    so a violation is never missed (with concurrent calls of one enhancement, a
    call may also see its neighbour's and fall back: safe). Printed output is one
    buffer per enhancement: concurrent in-process calls share it.
    """

    def __init__(self, imports=(), extra_builtins=(), max_output_kb=None, writable_types=()):
        for name in imports:
            reason = vetted_reason(name)
            if reason:
                raise ValueError(f"module {name!r} cannot be imported by generated code: {reason}")
        self.sealed = _crossing_types()  # objects that expose nothing to generated code
        self.proxy_types = None  # (sync, async) logic proxies, made on first use
        self.allowed = frozenset(imports)
        self.violations: list = []
        self.classes: set = set()  # classes the generated code defined
        self.writable = set(WRITABLE_TYPES) | set(writable_types)
        self.max_output = None if max_output_kb is None else max_output_kb * 1024
        self.views: dict = {}  # module name -> ModuleView
        self.random = None  # the generator behind the random module's view, made on first import
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
        if (name[:1] == "_" and name not in NAME_ATTRIBUTES) or name in DENIED_NAMES:
            self.refuse("attribute", f"{name!r} is out of reach")
        if isinstance(obj, BLOCKED_TYPES):
            self.refuse("attribute", f"{type(obj).__name__} objects are out of reach")
        sealed = self.sealed
        if sealed and (isinstance(obj, sealed) or (
                isinstance(obj, type) and issubclass(obj, sealed) and name not in NAME_ATTRIBUTES)):
            self.refuse("attribute", f"{type(obj).__name__} objects expose nothing to generated code")
        if isinstance(obj, GENERATOR_TYPES) and name not in GENERATOR_METHODS:
            self.refuse("attribute", f"{type(obj).__name__}.{name} is out of reach")
        if name == "register" and isinstance(obj, abc.ABCMeta) and obj not in self.classes:
            self.refuse("attribute", f"{obj.__name__}.register would change isinstance() for the whole process")
        if isinstance(obj, types.ModuleType):  # a real module should never get here; views do
            return getattr(self.view(obj), name) if module_allowed(obj.__name__, self.allowed) else \
                self.refuse("imports", f"module {obj.__name__!r} is not in the policy's imports")
        value = getattr(obj, name)
        if name in NAME_ATTRIBUTES and type(value) is not str:
            self.refuse("attribute", f"{name!r} of a {type(obj).__name__} is not a name")
        if isinstance(value, types.ModuleType):
            if not module_allowed(value.__name__, self.allowed):
                self.refuse("imports", f"module {value.__name__!r} is not in the policy's imports")
            return self.view(value)
        if name in FORMAT_NAMES:
            # Whatever route led here (a str subclass, super(), the str type itself), the
            # builtin str.format/format_map would walk attributes unguarded.
            kind = type(value)
            if kind is types.BuiltinMethodType and isinstance(getattr(value, "__self__", None), str):
                return self._safe_format(value.__self__, name)
            if kind is types.MethodDescriptorType and getattr(value, "__objclass__", None) is str:
                return self._safe_format(None, name)
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
        names = NAME_ATTRIBUTES
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
            if name in names:  # __name__, __qualname__
                return slow(obj, name)
            if t in fast:
                return getattr(obj, name)
            # Instances of the code's own classes: their attributes are what the code
            # put there (a str subclass still takes the slow path for format).
            if (t is str or t in classes) and name != "format" and name != "format_map":
                return getattr(obj, name)
            return slow(obj, name)

        def _write_(obj, type=type):
            t = type(obj)
            if t in writable or t in classes or (isinstance(obj, type) and obj in classes):
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

    def view(self, module) -> ModuleView:
        """The ModuleView of an allowed module (refreshed when new submodules appeared)."""
        view = self.views.get(module.__name__)
        if view is None:
            view = object.__new__(ModuleView)
            _VIEW_OWNERS[view] = (module, weakref.ref(self))
            self.views[module.__name__] = view
        offered = surface(module)
        values = view.__dict__
        for name, value in list(vars(module).items()):
            if name[:1] == "_" or (name in values and not isinstance(value, types.ModuleType)):
                continue
            if isinstance(value, types.ModuleType):
                if value.__name__ == f"{module.__name__}.{name}" and module_allowed(value.__name__, self.allowed):
                    values[name] = self.views.get(value.__name__) or self.view(value)
                continue
            if name in offered:
                values[name] = copy.copy(value) if isinstance(value, MUTABLE_CONTAINERS) else value
        if module.__name__ == "random":
            self._own_random(module, values)
        return view

    def _own_random(self, module, values) -> None:
        """``random.random()`` and the rest are methods of the process's hidden generator:
        in-process, a draw by generated code would change what the user's logic draws next.
        The view's functions are the same methods of a generator of this sandbox's own."""
        shared = getattr(module, "_inst", None)
        if shared is None:
            return
        own = self.random or module.Random()
        self.random = own
        for name, value in list(values.items()):
            if getattr(value, "__self__", None) is shared:
                values[name] = getattr(own, name)

    def module_view(self, name: str) -> ModuleView:
        """The view of module ``name`` (for the user's globals that are modules)."""
        if not module_allowed(name, self.allowed):
            self.refuse("imports", f"module {name!r} is not in the policy's imports")
        return self.view(importlib.import_module(name))

    def guarded_import(self, name, globals=None, locals=None, fromlist=(), level=0):
        if level:
            self.refuse("imports", "relative imports are not allowed")
        if not module_allowed(name, self.allowed):
            self.refuse("imports", f"module {name!r} is not in the policy's imports")
        module = importlib.import_module(name)
        for item in fromlist or ():
            if type(item) is not str or item[:1] == "_":
                self.refuse("imports", f"cannot import {item!r} from {name}")
            if not hasattr(module, item) and module_allowed(f"{name}.{item}", self.allowed):
                importlib.import_module(f"{name}.{item}")
        if fromlist:
            return self.view(module)  # `from m import x` reads x from the view
        top = name.partition(".")[0]
        if top != name and not module_allowed(top, self.allowed):
            self.refuse("imports", f"module {top!r} is not in the policy's imports")
        view = self.view(sys.modules[top])
        parts = name.split(".")
        for i in range(2, len(parts) + 1):  # make `import a.b.c` reachable as a.b.c
            self.view(sys.modules[".".join(parts[:i - 1])])
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
        table.update(NOT_EXCEPTIONS)
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

    def logic_proxy(self, session, is_async: bool = False):
        """What ``operate_prime`` gets as ``logic`` in a worker: a ``crossing.LogicProxy``
        that generated code can call (or await) and nothing else."""
        if self.proxy_types is None:
            self.proxy_types = _sealed_proxies(self.refuse)
            self.sealed = self.sealed + self.proxy_types[2:]
        return self.proxy_types[1 if is_async else 0](session)

    def namespace(self, module_name: str, given: dict) -> dict:
        """A fresh module namespace: guards, builtins and the user's names."""
        ns = dict(given)
        ns.update(self.make_guards())
        ns["__builtins__"] = self.builtins
        ns["__name__"] = module_name
        return ns


# --- the crossing's objects: callable, awaitable, and nothing more ----------------------------

def _crossing():
    try:
        from poet_sandbox import crossing
    except ImportError:  # a process that never loaded the facility has no crossing objects
        return None
    return crossing


def _crossing_types() -> tuple:
    crossing = _crossing()
    if crossing is None:
        return ()
    found = [crossing.HostRef, crossing.LogicProxy, crossing.Session]
    immediate = getattr(crossing, "_Immediate", None)
    if isinstance(immediate, type):
        found.append(immediate)
    return tuple(found)


# The facility modules that use the crossing's objects: the driver reads the session, the
# timeouts call with_timeout, the crossing builds them. Only these, not every facility
# module: a helper that reads an attribute of whatever it is handed would otherwise read
# the session for generated code.
PROXY_READERS = frozenset({"poet_sandbox.driver", "poet_sandbox.timeouts", "poet_sandbox.crossing"})


def _trusted(frame) -> bool:
    """Code of the facility library that works the crossing (driver, timeouts, crossing)."""
    name = frame.f_globals.get("__name__")
    return type(name) is str and name in PROXY_READERS


def _sealed_proxies(refuse):
    """``(proxy, async proxy, awaitable)`` types whose attributes only the facility
    library can read or write.

    Why a hook on the object and not only the guard: literal attribute reads run
    natively, and a native helper (``functools.update_wrapper`` with a chosen name)
    can read an attribute for restricted code. The session behind the proxy is the
    door to the host's protocol, so the proxy itself answers only callers in
    ``poet_sandbox`` (the driver reads ``session``, timeouts call ``with_timeout``);
    anyone else asking is a violation. Calling it works through the type's slots, and
    so does awaiting what the async proxy returns (the crossing's own awaitable keeps
    the session in a public attribute; this one keeps only a closure).
    """
    crossing = _crossing()
    getframe = sys._getframe
    get = object.__getattribute__
    put = object.__setattr__

    def __getattribute__(self, name):
        if name == "__class__" or _trusted(getframe(1)):
            return get(self, name)
        refuse("attribute", f"the logic offers nothing to generated code but calling it (asked for {name!r})")

    def __setattr__(self, name, value):
        if _trusted(getframe(1)):
            return put(self, name, value)
        refuse("write", "the logic cannot be changed by generated code")

    def __delattr__(self, name):
        refuse("write", "the logic cannot be changed by generated code")

    hooks = {"__slots__": (), "__getattribute__": __getattribute__, "__setattr__": __setattr__,
             "__delattr__": __delattr__}
    sync = type("LogicProxy", (crossing.LogicProxy,), dict(hooks, __module__=__name__))

    def __await__(self):
        return get(self, "run")()
        yield  # noqa: unreachable; makes this a generator

    def __init__(self, run):
        put(self, "run", run)

    awaitable = type("LogicCall", (), dict(hooks, __slots__=("run",), __init__=__init__, __await__=__await__,
                                           __module__=__name__))

    def call(self, *args, **kwargs):
        session = get(self, "session")
        return awaitable(lambda: session.call_logic(args, kwargs))

    def with_timeout(self, args, kwargs, seconds):
        session = get(self, "session")
        return awaitable(lambda: session.call_logic(args, kwargs, seconds))

    asynchronous = type("AsyncLogicProxy", (crossing.AsyncLogicProxy,),
                        dict(hooks, __call__=call, with_timeout=with_timeout, __module__=__name__))
    return sync, asynchronous, awaitable


class TypeName:
    """What ``type(x)`` gives for x of an interpreter-internal class (a function, a
    module, a class itself): its name, and nothing that constructs."""

    __slots__ = ("__name__", "__qualname__")

    def __init__(self, cls):
        object.__setattr__(self, "__name__", str(cls.__name__))
        object.__setattr__(self, "__qualname__", str(cls.__qualname__))

    def __setattr__(self, name, value):
        raise AttributeError("read-only")

    def __repr__(self):
        return f"<class {self.__qualname__!r}>"


def one_argument_type(obj):
    """``type(x)``: the class of x, one argument only. The three-argument form would
    build classes with arbitrary dunder methods, and the class of a function, a code
    object, a module or a class (``type`` itself) constructs such things, so for those
    only a ``TypeName`` comes back."""
    cls = type(obj)
    if cls in INTERNAL_TYPES or issubclass(cls, type):
        return TypeName(cls)
    return cls

"""Is a user function pure, as far as its source shows? (For LLM-transformed versions.)

An LLM answer whose ``operate_prime`` re-implements the logic instead of calling the
logic it is given is a *transformed* version: the user's function no longer runs at
all. That is only acceptable when nothing but the result can tell the two apart, so
the function must be pure: it writes to no argument, global or attribute, does no
I/O, and calls nothing whose effects are unknown. This module decides that from
the function's source alone (``FunctionSpec.source``), conservatively: whatever it
cannot show to be harmless makes the function impure.

What counts as harmless:
- reading parameters, locals and attributes; arithmetic, comparisons, displays,
  comprehensions, ``if``/``for``/``while``/``try``/``raise``/``assert``/``return``;
- calling a builtin of ``PURE_BUILTINS``, a function or lambda defined inside the
  function, or a member of a module of ``PURE_MODULES`` imported by the function's
  module or inside the function (minus the members that do I/O or keep state);
- calling a method of ``PURE_METHODS`` (non-mutating methods of the builtin types) on
  anything, and a method of ``MUTATING_METHODS`` (or a store into a subscript, or an
  augmented assignment) only on a *fresh* local: a name every binding of which makes
  a new object (a display, a comprehension, a builtin constructor, a constant);
- an augmented assignment to a parameter hinted as an immutable type (``n += 1`` for
  ``n: int``).

Everything else is impure: ``global``/``nonlocal``, attribute stores and deletes, stores
through parameters, globals or aliases of them, a call to a parameter, to a user
helper or to an unknown object, reading a user global (a transformed module cannot
see the user's module, and a global may change between calls), decorators other than
``@poet``, ``yield``, ``await``, ``with``, nested classes, imports of anything outside
``PURE_MODULES``, dunder names and attributes.

The check cannot see what Python runs behind an operator or an attribute read (a
user class's ``__add__`` or property); the probe runs, which compare results and the
arguments' state after the call, and the sandbox (where a user object is a bare
reference) are the next lines of defence.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass

from poet_runtime.generate.parsing import parse

# Builtins that only compute (no I/O, no hidden state, no mutation of their arguments).
# Left out on purpose: print, input, open, eval, exec, compile, globals, locals, vars,
# getattr/setattr/delattr/hasattr (properties, dynamic names), next and iter (advance a
# caller's iterator), hash and id (differ between processes), super, type with 3 args.
PURE_BUILTINS = frozenset({
    "abs", "all", "any", "ascii", "bin", "bool", "bytearray", "bytes", "callable", "chr", "complex", "dict",
    "divmod", "enumerate", "filter", "float", "format", "frozenset", "hex", "int", "isinstance", "issubclass",
    "len", "list", "map", "max", "min", "oct", "ord", "pow", "range", "repr", "reversed", "round", "set",
    "slice", "sorted", "str", "sum", "tuple", "type", "zip", "object",
})
# Builtin calls that always return a new object (a name bound to one is fresh).
FRESH_CONSTRUCTORS = frozenset({"list", "dict", "set", "bytearray", "sorted", "frozenset", "tuple", "str", "bytes"})
# Standard-library modules whose members compute only, minus those that do not.
PURE_MODULES: dict[str, frozenset[str]] = {
    "math": frozenset(),
    "cmath": frozenset(),
    "statistics": frozenset(),
    "fractions": frozenset(),
    "itertools": frozenset(),
    "functools": frozenset({"lru_cache", "cache", "cached_property", "singledispatch", "singledispatchmethod",
                            "update_wrapper", "wraps"}),
    "operator": frozenset({"setitem", "delitem", "iadd", "iand", "iconcat", "ifloordiv", "ilshift", "imod", "imul",
                           "imatmul", "ior", "ipow", "irshift", "isub", "itruediv", "ixor", "methodcaller",
                           "attrgetter"}),
    "string": frozenset(),
    "re": frozenset({"purge"}),
    "json": frozenset({"dump", "load"}),
    "collections": frozenset(),
    "heapq": frozenset(),  # the mutating ones are in FIRST_ARGUMENT_MUTATORS
    "bisect": frozenset(),
    "copy": frozenset(),
    "textwrap": frozenset(),
    "unicodedata": frozenset(),
    "struct": frozenset(),
    "base64": frozenset(),
    "binascii": frozenset(),
    "hashlib": frozenset({"file_digest"}),
    "zlib": frozenset(),
    "difflib": frozenset(),
    "keyword": frozenset(),
    "typing": frozenset(),
    "numbers": frozenset(),
}
# Module functions that mutate their first argument: allowed on a fresh local only.
FIRST_ARGUMENT_MUTATORS = frozenset({
    "heapq.heappush", "heapq.heappop", "heapq.heapify", "heapq.heapreplace", "heapq.heappushpop",
    "bisect.insort", "bisect.insort_left", "bisect.insort_right",
})
# Module members that make a new object.
FRESH_MODULE_CALLS = frozenset({
    "collections.Counter", "collections.defaultdict", "collections.OrderedDict", "collections.deque",
    "copy.copy", "copy.deepcopy",
})
# Methods of the builtin types that change nothing.
PURE_METHODS = frozenset({
    # str / bytes
    "capitalize", "casefold", "center", "count", "decode", "encode", "endswith", "expandtabs", "find", "format",
    "format_map", "hex", "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier",
    "islower", "isnumeric", "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip",
    "maketrans", "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition",
    "rsplit", "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title", "translate", "upper",
    "zfill",
    # dict / list / tuple / set / Counter
    "copy", "get", "items", "keys", "values", "fromkeys", "union", "intersection", "difference",
    "symmetric_difference", "issubset", "issuperset", "isdisjoint", "most_common", "elements", "total",
    # numbers
    "bit_length", "bit_count", "conjugate", "is_integer", "as_integer_ratio", "to_bytes", "from_bytes",
    # re match objects and patterns
    "group", "groups", "groupdict", "span", "start", "end", "match", "fullmatch", "search", "findall", "finditer",
    "sub", "subn",
    # hashlib
    "hexdigest", "digest",
})
# Methods that change the object they are called on: allowed on a fresh local only.
MUTATING_METHODS = frozenset({
    "append", "extend", "insert", "remove", "pop", "clear", "sort", "reverse", "update", "setdefault", "popitem",
    "add", "discard", "difference_update", "intersection_update", "symmetric_difference_update", "appendleft",
    "extendleft", "popleft", "rotate", "subtract",
})
IMMUTABLE_HINTS = frozenset({"int", "float", "complex", "str", "bytes", "bool", "tuple", "frozenset"})
_BUILTIN_NAMES = frozenset(dir(builtins))
_POET_DECORATORS = frozenset({"poet", "staticmethod"})
# Methods whose result is a new object.
FRESH_METHODS = frozenset({"split", "rsplit", "splitlines", "copy", "union", "intersection", "difference",
                           "symmetric_difference", "most_common"})


@dataclass(frozen=True)
class Purity:
    pure: bool
    reasons: tuple[str, ...]  # why not (empty when pure), each "line N: ..."

    def __bool__(self) -> bool:
        return self.pure

    def explain(self) -> str:
        return "pure" if self.pure else "; ".join(self.reasons[:5])


def check_purity(spec) -> Purity:
    """Whether ``spec``'s function is pure, from ``spec.source`` and ``spec.module_imports``."""
    return function_purity(spec.source, module_imports=getattr(spec, "module_imports", ()),
                           name=getattr(spec, "name", None))


def function_purity(source: str, *, module_imports=(), name: str | None = None) -> Purity:
    """The same from a function's source text (decorators included) and its module's import lines."""
    try:
        tree = parse(source)
    except SyntaxError as error:
        return Purity(False, (f"line {error.lineno}: the source does not parse",))
    node = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and (name is None or n.name == name)), None)
    if node is None:
        return Purity(False, ("no function definition in the source",))
    reasons = _Checker(node, _import_aliases(module_imports)).run()
    return Purity(not reasons, tuple(reasons))


def _import_aliases(lines) -> dict[str, str]:
    """Global name -> dotted target ("math", "math.sqrt") for the module's import lines."""
    aliases = {}
    for line in lines:
        try:
            tree = parse(line)
        except SyntaxError:
            continue
        for node in tree.body:
            _bind_import(node, aliases)
    return aliases


def _bind_import(node, aliases: dict[str, str]) -> None:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.asname:
                aliases[alias.asname] = alias.name
            else:
                root = alias.name.split(".")[0]
                aliases[root] = root
    elif isinstance(node, ast.ImportFrom):
        module = "." * node.level + (node.module or "")
        for alias in node.names:
            aliases[alias.asname or alias.name] = f"{module}.{alias.name}"


def _pure_target(target: str) -> bool:
    """Whether a dotted import target ("math", "math.sqrt", "os.path") is pure."""
    if target.startswith("."):
        return False
    root, _, rest = target.partition(".")
    if root not in PURE_MODULES:
        return False
    member = rest.split(".")[0] if rest else ""
    return member not in PURE_MODULES[root] and not member.startswith("_")


def _hint_name(annotation) -> str | None:
    if annotation is None:
        return None
    node = annotation.value if isinstance(annotation, ast.Subscript) else annotation
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.split("[")[0].strip()
    return None


class _Scope:
    """The names one function (or lambda, or comprehension) binds, and how."""

    def __init__(self, node, parent: "_Scope | None"):
        self.parent = parent
        self.params: set[str] = set()
        self.immutable_params: set[str] = set()  # hinted immutable, or *args (a tuple)
        self.own_params: set[str] = set()  # **kwargs: a new dict per call (its values are not)
        self.bound: set[str] = set()
        self.functions: set[str] = set()  # bound only by def / lambda
        self.fresh: dict[str, bool] = {}  # name -> every binding makes a new object
        self.imports: dict[str, str] = {}
        args = node.args if node is not None else None
        if args is None:
            return
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
            self.params.add(arg.arg)
            if _hint_name(arg.annotation) in IMMUTABLE_HINTS:
                self.immutable_params.add(arg.arg)
        if args.vararg is not None:
            self.params.add(args.vararg.arg)
            self.immutable_params.add(args.vararg.arg)
        if args.kwarg is not None:
            self.params.add(args.kwarg.arg)
            self.own_params.add(args.kwarg.arg)

    def lookup(self, name: str) -> "_Scope | None":
        scope = self
        while scope is not None:
            if name in scope.params or name in scope.bound:
                return scope
            scope = scope.parent
        return None


def _binding_names(target) -> list[str]:
    """The names an assignment target binds (not those a subscript or attribute target reads)."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for element in target.elts for name in _binding_names(element)]
    if isinstance(target, ast.Starred):
        return _binding_names(target.value)
    return []


class _Checker:
    def __init__(self, function, module_aliases: dict[str, str]):
        self.function = function
        self.module_aliases = module_aliases
        self.reasons: list[str] = []

    def fail(self, node, text: str) -> None:
        line = getattr(node, "lineno", None)
        reason = f"line {line}: {text}" if line is not None else text
        if reason not in self.reasons:
            self.reasons.append(reason)

    def run(self) -> list[str]:
        function = self.function
        for decorator in function.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", None)
            if name not in _POET_DECORATORS:
                self.fail(decorator, f"decorated by {ast.unparse(target)} (what it adds is unknown)")
        if isinstance(function, ast.AsyncFunctionDef):
            pass  # an async def is judged by its body: any await is refused below
        self.function_scope(function, None)
        return self.reasons

    # -- scopes ----------------------------------------------------------------------------

    def function_scope(self, node, parent: _Scope | None) -> None:
        scope = _Scope(node, parent)
        body = node.body if isinstance(node.body, list) else [node.body]
        for default in [*node.args.defaults, *[d for d in node.args.kw_defaults if d is not None]]:
            self.expression(default, parent or scope)
        self.collect(body, scope)
        for statement in body:
            self.statement(statement, scope)

    def collect(self, body, scope: _Scope) -> None:
        """Every name this scope binds, whether each is fresh, local functions, imports."""
        stack = list(body)
        values: dict[str, list] = {}
        while stack:
            node = stack.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                scope.bound.add(node.name)
                values.setdefault(node.name, []).append("function")
                continue  # its own scope
            if isinstance(node, ast.ClassDef):
                scope.bound.add(node.name)
                values.setdefault(node.name, []).append(None)
                continue
            if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
                continue
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    simple = isinstance(target, ast.Name)
                    for name in _binding_names(target):
                        scope.bound.add(name)
                        values.setdefault(name, []).append(node.value if simple else None)
            elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)):
                if isinstance(node.target, ast.Name):
                    scope.bound.add(node.target.id)
                    values.setdefault(node.target.id, []).append(node.value)
            elif isinstance(node, ast.AugAssign):
                if isinstance(node.target, ast.Name):
                    scope.bound.add(node.target.id)  # keeps the object it had: not a new binding's kind
            elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
                for name in _binding_names(node.target):
                    scope.bound.add(name)
                    values.setdefault(name, []).append(None)
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    if item.optional_vars is not None:
                        for name in _binding_names(item.optional_vars):
                            scope.bound.add(name)
                            values.setdefault(name, []).append(None)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                scope.bound.add(node.name)
                values.setdefault(node.name, []).append(None)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                found: dict[str, str] = {}
                _bind_import(node, found)
                for name, target in found.items():
                    scope.bound.add(name)
                    scope.imports[name] = target
                    values.setdefault(name, []).append(None)
            elif isinstance(node, ast.Delete):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        scope.bound.add(target.id)
            stack.extend(ast.iter_child_nodes(node))
        for name, bindings in values.items():
            if all(value == "function" or isinstance(value, ast.Lambda) for value in bindings):
                scope.functions.add(name)
            scope.fresh[name] = all(value is not None and value != "function" and self.makes_new(value, scope)
                                    for value in bindings)

    def makes_new(self, value, scope: _Scope) -> bool:
        if isinstance(value, (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp, ast.Constant,
                              ast.JoinedStr, ast.BinOp, ast.UnaryOp, ast.Compare)):
            return True  # a binary operation of builtin values makes a new one (``a + b`` of lists)
        if isinstance(value, ast.IfExp):
            return self.makes_new(value.body, scope) and self.makes_new(value.orelse, scope)
        if isinstance(value, ast.Call):
            name = self.called_builtin(value.func, scope)
            if name in FRESH_CONSTRUCTORS:
                return True
            if isinstance(value.func, ast.Attribute) and value.func.attr in FRESH_METHODS:
                return True
            return self.module_member(value.func, scope) in FRESH_MODULE_CALLS
        return False

    # -- statements ------------------------------------------------------------------------

    def statement(self, node, scope: _Scope) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for decorator in node.decorator_list:
                self.fail(decorator, "a nested function is decorated")
            self.function_scope(node, scope)
            return
        if isinstance(node, ast.ClassDef):
            self.fail(node, f"defines the class {node.name}")
            return
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            keyword = "global" if isinstance(node, ast.Global) else "nonlocal"
            self.fail(node, f"{keyword} {', '.join(node.names)} (writes outside the function)")
            return
        if isinstance(node, (ast.With, ast.AsyncWith)):
            self.fail(node, "a with statement (a context manager's effects are unknown)")
        if isinstance(node, ast.AsyncFor):
            self.fail(node, "async for (awaits outside code)")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found: dict[str, str] = {}
            _bind_import(node, found)
            for target in found.values():
                if not _pure_target(target):
                    self.fail(node, f"imports {target}")
            return
        if isinstance(node, ast.Assign):
            for target in node.targets:
                self.store(target, scope)
            self.expression(node.value, scope)
            return
        if isinstance(node, ast.AnnAssign):
            self.store(node.target, scope)
            if node.value is not None:
                self.expression(node.value, scope)
            return
        if isinstance(node, ast.AugAssign):
            target = node.target
            if isinstance(target, ast.Name):
                owner = scope.lookup(target.id)
                if owner is None:
                    self.fail(node, f"changes the global {target.id}")
                elif target.id in owner.params and target.id not in owner.immutable_params:
                    self.fail(node, f"'{target.id} {_op(node.op)}=' may change the caller's {target.id} in place")
                elif target.id not in owner.params and not owner.fresh.get(target.id, False):
                    self.fail(node, f"'{target.id} {_op(node.op)}=' may change an object the function was given")
            else:
                self.store(target, scope)
            self.expression(node.value, scope)
            return
        if isinstance(node, ast.Delete):
            for target in node.targets:
                self.store(target, scope)
            return
        if isinstance(node, (ast.For, ast.AsyncFor)):
            self.store(node.target, scope)
            self.expression(node.iter, scope)
            for child in node.body + node.orelse:
                self.statement(child, scope)
            return
        for field_name, value in ast.iter_fields(node):
            if isinstance(value, list):
                for item in value:
                    self.child(item, scope)
            else:
                self.child(value, scope)

    def child(self, item, scope: _Scope) -> None:
        if isinstance(item, ast.stmt):
            self.statement(item, scope)
        elif isinstance(item, ast.expr):
            self.expression(item, scope)
        elif isinstance(item, ast.ExceptHandler):
            if item.type is not None:
                self.expression(item.type, scope)
            for child in item.body:
                self.statement(child, scope)
        elif isinstance(item, (ast.withitem,)):
            self.expression(item.context_expr, scope)
            if item.optional_vars is not None:
                self.store(item.optional_vars, scope)
        elif isinstance(item, ast.match_case):
            self.fail(item.pattern, "a match statement")
        elif isinstance(item, ast.AST):
            for child in ast.iter_child_nodes(item):
                self.child(child, scope)

    def store(self, target, scope: _Scope) -> None:
        """An assignment or ``del`` target: names are fine, stores through objects are judged."""
        if isinstance(target, ast.Name):
            return
        if isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self.store(element, scope)
            return
        if isinstance(target, ast.Starred):
            self.store(target.value, scope)
            return
        if isinstance(target, ast.Attribute):
            self.fail(target, f"writes the attribute .{target.attr}")
            self.expression(target.value, scope)
            return
        if isinstance(target, ast.Subscript):
            self.mutated(target.value, scope, "writes into")
            self.expression(target.slice, scope)
            return
        self.fail(target, "an assignment target it cannot judge")

    def mutated(self, receiver, scope: _Scope, what: str) -> None:
        """``receiver`` is changed in place: only a fresh local may be."""
        if isinstance(receiver, ast.Name):
            owner = scope.lookup(receiver.id)
            if owner is None:
                self.fail(receiver, f"{what} the global {receiver.id}")
            elif receiver.id in owner.own_params:
                pass
            elif receiver.id in owner.params:
                self.fail(receiver, f"{what} the argument {receiver.id}")
            elif owner is not scope:
                self.fail(receiver, f"{what} {receiver.id} of an enclosing function")
            elif not owner.fresh.get(receiver.id, False):
                self.fail(receiver, f"{what} {receiver.id}, which may be an object the function was given")
            return
        self.fail(receiver, f"{what} {ast.unparse(receiver)[:60]}, which may be an object the function was given")
        self.expression(receiver, scope)

    # -- expressions -----------------------------------------------------------------------

    def expression(self, node, scope: _Scope) -> None:
        if node is None:
            return
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            self.fail(node, "yields (a generator)")
        elif isinstance(node, ast.Await):
            self.fail(node, "awaits (outside code runs)")
        elif isinstance(node, ast.Lambda):
            self.function_scope(node, scope)
            return
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            self.comprehension(node, scope)
            return
        elif isinstance(node, ast.NamedExpr):
            self.expression(node.value, scope)
            return
        elif isinstance(node, ast.Name):
            self.load(node, scope)
            return
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("__"):
                self.fail(node, f"reads the dunder attribute .{node.attr}")
            elif self.module_member(node, scope) is not None:
                return  # math.pi: a member of a pure module (checked when its root name is read)
        elif isinstance(node, ast.Call):
            self.call(node, scope)
            return
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.expression(child, scope)
            elif isinstance(child, ast.AST):
                self.child(child, scope)

    def comprehension(self, node, scope: _Scope) -> None:
        inner = _Scope(None, scope)
        for generator in node.generators:
            for name in _binding_names(generator.target):
                inner.bound.add(name)
                inner.fresh[name] = False
        for index, generator in enumerate(node.generators):
            self.expression(generator.iter, scope if index == 0 else inner)
            for condition in generator.ifs:
                self.expression(condition, inner)
            if generator.is_async:
                self.fail(node, "async comprehension (awaits outside code)")
        if isinstance(node, ast.DictComp):
            self.expression(node.key, inner)
            self.expression(node.value, inner)
        else:
            self.expression(node.elt, inner)

    def load(self, node: ast.Name, scope: _Scope) -> None:
        name = node.id
        if scope.lookup(name) is not None:
            return
        if name.startswith("__"):
            self.fail(node, f"reads {name}")
        elif name in self.module_aliases:
            if not _pure_target(self.module_aliases[name]):
                self.fail(node, f"uses {name} (imported from {self.module_aliases[name]})")
        elif name in _BUILTIN_NAMES:
            if not (name in PURE_BUILTINS or _exception_name(name) or name in ("None", "True", "False",
                                                                              "NotImplemented", "Ellipsis")):
                self.fail(node, f"uses the builtin {name}")
        else:
            self.fail(node, f"reads the global {name} (a transformed module cannot see the user's module)")

    def called_builtin(self, func, scope: _Scope) -> str | None:
        if isinstance(func, ast.Name) and scope.lookup(func.id) is None and func.id not in self.module_aliases \
                and func.id in _BUILTIN_NAMES:
            return func.id
        return None

    def module_member(self, node, scope: _Scope) -> str | None:
        """"math.sqrt" for ``math.sqrt`` / ``sqrt`` (from math import sqrt), when the module is pure."""
        dotted = self.imported_name(node, scope)
        return dotted if dotted is not None and _pure_target(dotted) else None

    def imported_name(self, node, scope: _Scope) -> str | None:
        """The dotted name an attribute chain on an imported name stands for ("os.getcwd"), or None."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        owner = scope.lookup(node.id)
        if owner is not None:
            target = owner.imports.get(node.id)
        else:
            target = self.module_aliases.get(node.id)
        if target is None:
            return None
        return ".".join([target, *reversed(parts)])

    def call(self, node: ast.Call, scope: _Scope) -> None:
        func = node.func
        arguments = [*node.args, *(keyword.value for keyword in node.keywords)]
        if isinstance(func, ast.Name):
            name = func.id
            owner = scope.lookup(name)
            if owner is not None:
                if name in owner.functions:
                    pass  # a function or lambda defined here: its body is checked where it is defined
                elif owner.imports.get(name) is not None and _pure_target(owner.imports[name]):
                    self.module_call(owner.imports[name], node, scope)
                elif name in owner.params:
                    self.fail(node, f"calls its argument {name} (unknown code)")
                else:
                    self.fail(node, f"calls {name}, which may be any object")
            elif name in self.module_aliases:
                target = self.module_aliases[name]
                if _pure_target(target):
                    self.module_call(target, node, scope)
                else:
                    self.fail(node, f"calls {name} (imported from {target})")
            elif name in _BUILTIN_NAMES:
                if name == "type" and len(node.args) != 1:
                    self.fail(node, "type() with more than one argument creates a class")
                elif not (name in PURE_BUILTINS or _exception_name(name)):
                    self.fail(node, f"calls the builtin {name}" + (" (I/O)" if name in ("print", "input", "open")
                                                                    else ""))
            else:
                self.fail(node, f"calls {name}, a global of the user's module (unknown code)")
        elif isinstance(func, ast.Attribute):
            member = self.module_member(func, scope)
            imported = self.imported_name(func, scope)
            if member is not None:
                self.module_call(member, node, scope)
            elif imported is not None:
                self.fail(node, f"calls {imported}")
            elif func.attr.startswith("__"):
                self.fail(func, f"calls the dunder method .{func.attr}")
                self.expression(func.value, scope)
            elif func.attr in PURE_METHODS:
                self.expression(func.value, scope)
            elif func.attr in MUTATING_METHODS:
                self.mutated(func.value, scope, f"calls .{func.attr}() on")
            else:
                self.fail(func, f"calls the method .{func.attr}() (unknown effects)")
                self.expression(func.value, scope)
        else:
            self.fail(node, f"calls {ast.unparse(func)[:60]} (an unknown object)")
            self.expression(func, scope)
        for argument in arguments:
            self.expression(argument.value if isinstance(argument, ast.Starred) else argument, scope)

    def module_call(self, target: str, node: ast.Call, scope: _Scope) -> None:
        if target in FIRST_ARGUMENT_MUTATORS:
            if not node.args:
                self.fail(node, f"calls {target} without the object it changes")
            else:
                self.mutated(node.args[0], scope, f"{target}() changes")


def _exception_name(name: str) -> bool:
    value = getattr(builtins, name, None)
    return isinstance(value, type) and issubclass(value, BaseException) and name not in (
        "SystemExit", "KeyboardInterrupt", "GeneratorExit")


def _op(op) -> str:
    return {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
            ast.Pow: "**", ast.BitOr: "|", ast.BitAnd: "&", ast.BitXor: "^", ast.LShift: "<<",
            ast.RShift: ">>", ast.MatMult: "@"}.get(type(op), "?")


__all__ = ["Purity", "check_purity", "function_purity", "PURE_BUILTINS", "PURE_MODULES", "PURE_METHODS",
           "MUTATING_METHODS"]

# The spec reader as it was before module texts were prepared once (poet_runtime/generate/spec.py at
# commit 967a4cb), kept verbatim below as the reference the current reader must match byte for byte:
# version keys hash FunctionSpec.source_hash(), so stores made by the old reader must keep matching.
# Not imported by the package; tests/test_spec_identity.py compares the two.

"""What a generator is told about a function, read from source alone.

The same spec comes out whether the function is being called (the runtime reads
its module's source through ``linecache``) or only found on disk (``enhance``
ahead of time): a version generated in CI has the key the runtime looks for.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import linecache
import sys
import textwrap
from dataclasses import dataclass, field

from poet_runtime.errors import GenerationError
from poet_runtime.generate.parsing import parse

POSITIONAL_ONLY = "positional_only"
POSITIONAL = "positional"
VAR_POSITIONAL = "var_positional"
KEYWORD_ONLY = "keyword_only"
VAR_KEYWORD = "var_keyword"

_NO_LITERAL = object()


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    annotation: str | None = None  # source text of the hint
    default: str | None = None  # source text of the default, None when there is none
    literal_default: object = _NO_LITERAL  # the default's value when it is a literal

    @property
    def has_default(self) -> bool:
        return self.default is not None

    @property
    def has_literal_default(self) -> bool:
        return self.literal_default is not _NO_LITERAL


@dataclass(frozen=True)
class ClassInfo:
    """A class of the function's module that its hints name (TypedDicts are read field by field)."""

    name: str
    kind: str  # "typeddict", "pydantic" or "class"
    fields: tuple[tuple[str, str], ...] = ()  # (name, annotation source) for TypedDicts
    total: bool = True
    source: str = ""


@dataclass(frozen=True)
class FunctionSpec:
    module: str
    qualname: str
    name: str
    filename: str | None
    lineno: int
    source: str  # the whole definition, decorators included, dedented
    body: str  # the body's statements, dedented to column 0
    params: tuple[Param, ...]
    returns: str | None
    docstring: str | None
    is_async: bool
    is_generator: bool
    method_kind: str | None  # "staticmethod", "classmethod", "method" or None
    module_imports: tuple[str, ...]  # the module's top-level import statements the function needs
    used_names: tuple[str, ...]  # global names the body and hints use
    module_names: tuple[str, ...] = field(default=())  # names the module itself defines, that the function uses
    classes: tuple["ClassInfo", ...] = field(default=())  # module classes the hints name

    def class_info(self, name: str) -> "ClassInfo | None":
        for info in self.classes:
            if info.name == name:
                return info
        return None

    @property
    def function_id(self) -> str:
        return f"{self.module}:{self.qualname}"

    def source_hash(self) -> str:
        text = "\n".join([self.source, *self.module_imports, *(info.source for info in self.classes)])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _find(tree: ast.Module, qualname: str, lineno: int | None):
    """The def node for ``qualname`` (``Outer.method``, ``outer.<locals>.inner``)."""
    parts = [part for part in qualname.split(".") if part != "<locals>"]
    candidates = []

    def walk(body, depth):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == parts[depth]:
                if depth == len(parts) - 1:
                    if not isinstance(node, ast.ClassDef):
                        candidates.append(node)
                else:
                    walk(node.body, depth + 1)
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                for child_body in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, child_body, ()):
                        walk([child] if not isinstance(child, ast.ExceptHandler) else child.body, depth)

    walk(tree.body, 0)
    if not candidates:
        return None
    if lineno is not None:
        for node in candidates:
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            if lineno in (first, node.lineno):
                return node
    return candidates[-1]  # the last definition is the one a module ends up with


def _literal(node):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NO_LITERAL


def _params(args: ast.arguments, text) -> tuple[Param, ...]:
    result = []
    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for index, (arg, default) in enumerate(zip(positional, defaults)):
        kind = POSITIONAL_ONLY if index < len(args.posonlyargs) else POSITIONAL
        result.append(_param(arg, kind, default, text))
    if args.vararg:
        result.append(_param(args.vararg, VAR_POSITIONAL, None, text))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        result.append(_param(arg, KEYWORD_ONLY, default, text))
    if args.kwarg:
        result.append(_param(args.kwarg, VAR_KEYWORD, None, text))
    return tuple(result)


def _param(arg: ast.arg, kind: str, default, text) -> Param:
    return Param(
        name=arg.arg,
        kind=kind,
        annotation=text(arg.annotation) if arg.annotation is not None else None,
        default=text(default) if default is not None else None,
        literal_default=_literal(default) if default is not None else _NO_LITERAL,
    )


def _is_generator(node) -> bool:
    stack = list(node.body)
    while stack:
        child = stack.pop()
        if isinstance(child, (ast.Yield, ast.YieldFrom)):
            return True
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        stack.extend(ast.iter_child_nodes(child))
    return False


def _names_used(node) -> set[str]:
    """Names the signature's hints and defaults and the body use; decorators do not count."""
    used = set()
    parts = [node.args, *node.body] + ([node.returns] if node.returns is not None else [])
    for part in parts:
        for child in ast.walk(part):
            if isinstance(child, ast.Name):
                used.add(child.id)
    return used


def _module_imports(tree: ast.Module, used: set[str], text) -> tuple[str, ...]:
    imports = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names = [alias for alias in node.names if (alias.asname or alias.name.split(".")[0]) in used]
            if names:
                imports.append("import " + ", ".join(
                    f"{a.name} as {a.asname}" if a.asname else a.name for a in names))
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            names = [alias for alias in node.names if (alias.asname or alias.name) in used]
            if names:
                module = "." * node.level + (node.module or "")
                imports.append(f"from {module} import " + ", ".join(
                    f"{a.name} as {a.asname}" if a.asname else a.name for a in names))
    return tuple(imports)


def _module_defined(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for child in ast.walk(target):
                    if isinstance(child, ast.Name):
                        names.add(child.id)
    return names


def _classes(tree: ast.Module, wanted: set[str], text) -> tuple[ClassInfo, ...]:
    found = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or node.name not in wanted:
            continue
        bases = {base.id if isinstance(base, ast.Name) else getattr(base, "attr", "") for base in node.bases}
        kind = "typeddict" if "TypedDict" in bases else "pydantic" if "BaseModel" in bases else "class"
        fields = ()
        total = True
        if kind == "typeddict":
            fields = tuple(
                (item.target.id, text(item.annotation))
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            )
            for keyword in node.keywords:
                if keyword.arg == "total" and _literal(keyword.value) is False:
                    total = False
        found.append(ClassInfo(node.name, kind, fields, total, text(node)))
    return tuple(found)


def _body_text(node, lines: list[str]) -> str:
    first = node.body[0]
    if first.lineno == node.lineno:  # "def f(x): return x" on one line
        return "\n".join(ast.unparse(statement) for statement in node.body) + "\n"
    start = first.lineno - 1
    # Keep comment lines directly above the first statement.
    while start - 1 > node.lineno - 1 and lines[start - 1].strip().startswith("#"):
        start -= 1
    text = "".join(lines[start:node.end_lineno])
    return textwrap.dedent(text)


def spec_from_source(module: str, qualname: str, module_source: str, filename: str | None,
                     lineno: int | None = None) -> FunctionSpec:
    """Read ``qualname`` from ``module_source`` without executing anything."""
    try:
        tree = parse(module_source, filename or "<unknown>")
    except SyntaxError as error:
        raise GenerationError("no_source", f"{filename}: cannot parse: {error}") from None
    node = _find(tree, qualname, lineno)
    if node is None:
        raise GenerationError("no_source", f"{module}:{qualname}: no definition found in {filename or 'its source'}")
    lines = module_source.splitlines(keepends=True)

    def text(part) -> str:
        return ast.get_source_segment(module_source, part) or ast.unparse(part)

    first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    source = textwrap.dedent("".join(lines[first - 1:node.end_lineno]))
    method_kind = None
    parts = qualname.split(".")
    if len(parts) > 1 and parts[-2] != "<locals>":
        method_kind = "method"
        for decorator in node.decorator_list:
            name = decorator.id if isinstance(decorator, ast.Name) else getattr(decorator, "attr", None)
            if name in ("staticmethod", "classmethod"):
                method_kind = name
    params = _params(node.args, text)
    used = _names_used(node) - {p.name for p in params}
    defined = _module_defined(tree)
    return FunctionSpec(
        module=module,
        qualname=qualname,
        name=node.name,
        filename=filename,
        lineno=node.lineno,
        source=source,
        body=_body_text(node, lines),
        params=params,
        returns=text(node.returns) if node.returns is not None else None,
        docstring=ast.get_docstring(node),
        is_async=isinstance(node, ast.AsyncFunctionDef),
        is_generator=_is_generator(node),
        method_kind=method_kind,
        module_imports=_module_imports(tree, used, text),
        used_names=tuple(sorted(used)),
        module_names=tuple(sorted(used & defined)),
        classes=_classes(tree, used & defined, text),
    )


def spec_from_function(function, *, source: str | None = None, lineno: int | None = None,
                       module: str | None = None) -> FunctionSpec:
    """Read a live function's spec from its module's source (through linecache).

    ``module`` names the module as the store knows it when that differs from
    ``__module__`` (a script run as ``__main__`` is known by its file's name).
    """
    live_module = getattr(function, "__module__", None) or "__main__"
    module = module or live_module
    qualname = function.__qualname__
    filename = None
    try:
        filename = inspect.getsourcefile(function)
    except TypeError:
        pass
    module_source = None
    if filename:
        module_globals = getattr(sys.modules.get(live_module), "__dict__", None)
        linecache.checkcache(filename)  # the file may have changed since it was first read
        lines = linecache.getlines(filename, module_globals)
        if lines:
            module_source = "".join(lines)
    if module_source is None and source is not None:
        # Only the function's own text is known (the import hook gave it): find it by name.
        import dataclasses

        found = spec_from_source(module, function.__name__, textwrap.dedent(source), filename, None)
        return dataclasses.replace(found, qualname=qualname, lineno=lineno or found.lineno)
    if module_source is None:
        raise GenerationError("no_source", f"{module}:{qualname}: its source is not available (defined in {filename or 'a string'})")
    line = lineno or function.__code__.co_firstlineno
    return spec_from_source(module, qualname, module_source, filename, line)

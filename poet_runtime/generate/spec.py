"""What a generator is told about a function, read from source alone.

The same spec comes out whether the function is being called (the runtime reads the
text its module was compiled from: the import hook remembered it at import, or
``snapshot_source`` at decoration; see ``generate.sources``) or only found on disk
(``enhance`` ahead of time): a version generated in CI has the key the runtime looks for.

Cost: a module's text is prepared once (one parse: a line table, where each function
is, what the top level imports and defines); each function is then read by parsing its
own lines only, so a first call does not grow with the module's size.
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
from poet_runtime.generate import sources
from poet_runtime.generate.parsing import parse
# Capturing the text a module was compiled from (the hook and the decorator call these).
from poet_runtime.generate.sources import remember_module_source as remember_module_source
from poet_runtime.generate.sources import remembered_source as remembered_source
from poet_runtime.generate.sources import snapshot_source as snapshot_source

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


# -- the module's top level, read once per text ------------------------------------------


def _import_entries(tree: ast.Module) -> tuple:
    """The top-level imports: ("import", ((name, asname), ...)) or ("from", module, ((name, asname), ...))."""
    entries = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            entries.append(("import", tuple((alias.name, alias.asname) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            module = "." * node.level + (node.module or "")
            entries.append(("from", module, tuple((alias.name, alias.asname) for alias in node.names)))
    return tuple(entries)


def _module_imports(entries: tuple, used: set[str]) -> tuple[str, ...]:
    """The import statements the function needs, each narrowed to the names it uses."""
    imports = []
    for entry in entries:
        if entry[0] == "import":
            names = [(name, asname) for name, asname in entry[1] if (asname or name.split(".")[0]) in used]
            if names:
                imports.append("import " + ", ".join(
                    f"{name} as {asname}" if asname else name for name, asname in names))
        else:
            names = [(name, asname) for name, asname in entry[2] if (asname or name) in used]
            if names:
                imports.append(f"from {entry[1]} import " + ", ".join(
                    f"{name} as {asname}" if asname else name for name, asname in names))
    return tuple(imports)


def _module_defined(tree: ast.Module) -> frozenset[str]:
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
    return frozenset(names)


def _span(node) -> tuple[int, int, int, int]:
    return (node.lineno, node.col_offset, node.end_lineno, node.end_col_offset)


def _class_entries(tree: ast.Module) -> tuple:
    """Every top-level class: (name, kind, ((field, annotation span), ...), total, span), spans unread."""
    found = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        bases = {base.id if isinstance(base, ast.Name) else getattr(base, "attr", "") for base in node.bases}
        kind = "typeddict" if "TypedDict" in bases else "pydantic" if "BaseModel" in bases else "class"
        fields = ()
        total = True
        if kind == "typeddict":
            fields = tuple(
                (item.target.id, _span(item.annotation))
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            )
            for keyword in node.keywords:
                if keyword.arg == "total" and _literal(keyword.value) is False:
                    total = False
        found.append((node.name, kind, fields, total, _span(node)))
    return tuple(found)


def _def_entries(tree: ast.Module) -> dict:
    """Where each function is: {name path: [(first line, lineno, end_lineno, col, decorators, is_async)]}.

    The path skips ``<locals>``, and the walk is ``_find``'s (if/try/with/for/while
    blocks are transparent, in that order of fields), so a path's list holds exactly
    the candidates ``_find`` would see, in its order.
    """
    found: dict = {}

    def walk(body, path):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = (*path, node.name)
                if not isinstance(node, ast.ClassDef):
                    first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
                    found.setdefault(inner, []).append((first, node.lineno, node.end_lineno, node.col_offset,
                                                        len(node.decorator_list),
                                                        isinstance(node, ast.AsyncFunctionDef)))
                walk(node.body, inner)
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                for child_body in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, child_body, ()):
                        walk([child] if not isinstance(child, ast.ExceptHandler) else child.body, path)

    walk(tree.body, ())
    return found


def _parse_module(text: str, filename: str | None) -> ast.Module:
    """The whole module's AST, parsed with the cyclic GC paused.

    An AST has no cycles, yet building one allocates enough objects to trigger full
    collections of the whole process's heap: in a big program that is two thirds of
    the time a 20 000-line module takes to parse. The collector is paused only if it
    was running, and resumed whatever happens.
    """
    import gc

    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return parse(text, filename or "<unknown>")
    except SyntaxError as error:
        raise GenerationError("no_source", f"{filename}: cannot parse: {error}") from None
    finally:
        if paused:
            gc.enable()


# Line breaks ``str.splitlines`` knows and the tokenizer does not: with one of them in a
# text, the lines a spec's ``source`` and ``body`` are cut from are ``splitlines``' (as
# they always were), while AST positions count the tokenizer's lines.
_OTHER_BREAKS = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")
_TOKENIZER_BREAK = None  # re.compile(r"\r\n|\r|\n"), only for texts with other breaks


class _Prepared:
    """One module text made ready for reading many functions from it.

    Holds the text (not a copy), a table of where each tokenizer line starts, and the
    top level's imports, defined names, classes and function spans. No AST is kept.
    """

    __slots__ = ("text", "starts", "defs", "imports", "defined", "classes", "other_breaks")

    def __init__(self, text: str, filename: str | None, tree: ast.Module | None = None, parts: tuple | None = None):
        """From ``text`` (parsed here), the AST the hook parsed it to (``tree``), or stored ``parts()``."""
        from array import array

        if parts is not None:
            self.defs, self.imports, self.defined, self.classes = parts
        else:
            if tree is None:
                tree = _parse_module(text, filename)
            self.defs = _def_entries(tree)
            self.imports = _import_entries(tree)
            self.defined = _module_defined(tree)
            self.classes = _class_entries(tree)
        self.text = text
        self.other_breaks = any(mark in text for mark in _OTHER_BREAKS)
        starts = array("q", [0])
        if self.other_breaks:
            global _TOKENIZER_BREAK
            if _TOKENIZER_BREAK is None:
                import re

                _TOKENIZER_BREAK = re.compile(r"\r\n|\r|\n")
            starts.extend(match.end() for match in _TOKENIZER_BREAK.finditer(text))
            if starts[-1] != len(text):
                starts.append(len(text))
        else:
            from itertools import accumulate

            starts.extend(accumulate(map(len, text.splitlines(keepends=True))))
        self.starts = starts  # starts[i]: offset of line i + 1; starts[-1] == len(text)

    def parts(self) -> tuple:
        """What was read from the AST (plain data: marshal can store it beside the module's pyc)."""
        return (self.defs, self.imports, self.defined, self.classes)

    # -- text by position, exactly as ast.get_source_segment cuts it ------------------------

    def _line(self, index: int) -> str:
        return self.text[self.starts[index]:self.starts[index + 1]]

    def segment(self, span) -> str:
        lineno, col, end_lineno, end_col = span
        lineno -= 1
        end_lineno -= 1
        if end_lineno == lineno:
            return self._line(lineno).encode()[col:end_col].decode()
        first = self._line(lineno).encode()[col:].decode()
        last = self._line(end_lineno).encode()[:end_col].decode()
        return first + self.text[self.starts[lineno + 1]:self.starts[end_lineno]] + last

    def text_of(self, node) -> str:
        return self.segment(_span(node)) or ast.unparse(node)

    def lines(self):
        """(line(i), join(a, b)) over the lines ``source`` and ``body`` are cut from."""
        if self.other_breaks:
            lines = self.text.splitlines(keepends=True)
            return lines.__getitem__, lambda a, b: "".join(lines[a:b])
        starts, text, count = self.starts, self.text, len(self.starts) - 1
        return (lambda i: text[starts[i]:starts[i + 1]],
                lambda a, b: text[starts[min(a, count)]:starts[min(b, count)]] if b > a else "")

    def classes_named(self, wanted: set[str]) -> tuple[ClassInfo, ...]:
        found = []
        for name, kind, fields, total, span in self.classes:
            if name in wanted:
                found.append(ClassInfo(name, kind, tuple((field_name, self.segment(at)) for field_name, at in fields),
                                       total, self.segment(span)))
        return tuple(found)

    # -- one function, from its own lines --------------------------------------------------

    def def_node(self, entry, name: str):
        """Parse the function's own lines; None when that does not give the node the module parse saw."""
        first, lineno, end_lineno, col, decorators, is_async = entry
        snippet = self.text[self.starts[first - 1]:self.starts[end_lineno]]
        if col:  # nested: "if 1:" above the lines, kept verbatim, makes their indentation a block
            if first < 2:
                return None
            snippet, shift = "if 1:\n" + snippet, first - 2
        else:
            shift = first - 1
        try:
            tree = parse(snippet, "<poet-spec>")
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            return None
        body = tree.body
        if col:
            if len(body) != 1 or not isinstance(body[0], ast.If):
                return None
            body = body[0].body
        node = body[0] if len(body) == 1 else None
        if not isinstance(node, ast.AsyncFunctionDef if is_async else ast.FunctionDef) or node.name != name:
            return None
        if shift:
            ast.increment_lineno(node, shift)
        found_first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        if ((found_first, node.lineno, node.end_lineno, node.col_offset, len(node.decorator_list))
                != (first, lineno, end_lineno, col, decorators)):
            return None
        return node


# Prepared texts for spec_from_source callers (enhance, status, tests), by text. Texts the
# runtime reads functions from keep theirs in their generate.sources entry instead.
_PREPARED: dict = {}
_PREPARED_MAX = 8


def _prepared(text: str, filename: str | None) -> _Prepared:
    prepared = _PREPARED.get(text)
    if prepared is None:
        prepared = _Prepared(text, filename)
        while len(_PREPARED) >= _PREPARED_MAX:
            try:
                del _PREPARED[next(iter(_PREPARED))]
            except (StopIteration, KeyError, RuntimeError):
                break
        _PREPARED[text] = prepared
    return prepared


def remember_parsed(filename: str, data: bytes, tree: ast.Module, stored=None) -> None:
    """Remember a module's source as the import hook compiles it, prepared from the hook's own AST.

    ``tree`` must be the module as parsed, before any rewrite. A first call then reads
    its function without parsing the module again. ``stored``: as for
    ``sources.remember_module_source``.
    """
    entry = sources.Entry(data, stored=stored)
    entry.prepared = _Prepared(entry.text(), filename, tree)
    entry.unsaved = True
    sources.remember_entry(filename, entry)


# Beside the hook's pyc, what _Prepared read from a module's AST, so that a process importing
# the module from that pyc does not parse the module at its first call either.
_STORED_VERSION = 1


def _load_stored(stored, text: str) -> _Prepared | None:
    import marshal

    path, key = stored
    try:
        with open(path, "rb") as handle:
            payload = marshal.loads(handle.read())
        version, stored_key, parts = payload
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if version != _STORED_VERSION or stored_key != key or not isinstance(parts, tuple) or len(parts) != 4:
        return None
    if not all(isinstance(part, kind) for part, kind in zip(parts, (dict, tuple, frozenset, tuple))):
        return None
    try:
        return _Prepared(text, None, parts=parts)
    except Exception:
        return None


def _save_stored(stored, prepared: _Prepared) -> None:
    if sys.dont_write_bytecode:
        return
    import marshal

    from poet_runtime.hook.cache import write_atomic

    path, key = stored
    try:
        write_atomic(path, marshal.dumps((_STORED_VERSION, key, prepared.parts())))
    except (OSError, ValueError):
        pass


def _prepared_entry(entry, filename: str | None) -> _Prepared:
    prepared = entry.prepared
    if prepared is None:
        text = entry.text()
        if entry.stored is not None:
            prepared = _load_stored(entry.stored, text)
        if prepared is None:
            prepared = _Prepared(text, filename)
            entry.unsaved = True
        entry.prepared = prepared
    if entry.unsaved:
        entry.unsaved = False
        if entry.stored is not None:
            _save_stored(entry.stored, prepared)
    return prepared


def _body_text(node, line, join) -> str:
    first = node.body[0]
    if first.lineno == node.lineno:  # "def f(x): return x" on one line
        return "\n".join(ast.unparse(statement) for statement in node.body) + "\n"
    start = first.lineno - 1
    # Keep comment lines directly above the first statement.
    while start - 1 > node.lineno - 1 and line(start - 1).strip().startswith("#"):
        start -= 1
    return textwrap.dedent(join(start, node.end_lineno))


def _spec_of(prepared: _Prepared, node, module: str, qualname: str, filename: str | None) -> FunctionSpec:
    line, join = prepared.lines()
    text = prepared.text_of
    first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    source = textwrap.dedent(join(first - 1, node.end_lineno))
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
    return FunctionSpec(
        module=module,
        qualname=qualname,
        name=node.name,
        filename=filename,
        lineno=node.lineno,
        source=source,
        body=_body_text(node, line, join),
        params=params,
        returns=text(node.returns) if node.returns is not None else None,
        docstring=ast.get_docstring(node),
        is_async=isinstance(node, ast.AsyncFunctionDef),
        is_generator=_is_generator(node),
        method_kind=method_kind,
        module_imports=_module_imports(prepared.imports, used),
        used_names=tuple(sorted(used)),
        module_names=tuple(sorted(used & prepared.defined)),
        classes=prepared.classes_named(used & prepared.defined),
    )


def _read(prepared: _Prepared, module: str, qualname: str, filename: str | None, lineno: int | None) -> FunctionSpec:
    parts = tuple(part for part in qualname.split(".") if part != "<locals>")
    candidates = prepared.defs.get(parts) if parts else None
    if not candidates:
        raise GenerationError("no_source", f"{module}:{qualname}: no definition found in {filename or 'its source'}")
    chosen = candidates[-1]  # the last definition is the one a module ends up with
    if lineno is not None:
        for entry in candidates:
            if lineno in (entry[0], entry[1]):
                chosen = entry
                break
    node = prepared.def_node(chosen, parts[-1])
    if node is None:  # its lines alone did not parse to the same node: read it from the whole module
        node = _find(_parse_module(prepared.text, filename), qualname, lineno)
    return _spec_of(prepared, node, module, qualname, filename)


def spec_from_source(module: str, qualname: str, module_source: str, filename: str | None,
                     lineno: int | None = None) -> FunctionSpec:
    """Read ``qualname`` from ``module_source`` without executing anything.

    The text is prepared once (kept for the last few texts), so reading many functions
    of one module parses it once.
    """
    return _read(_prepared(module_source, filename), module, qualname, filename, lineno)


def spec_from_function(function, *, source: str | None = None, lineno: int | None = None,
                       module: str | None = None) -> FunctionSpec:
    """Read a live function's spec from the text its module was compiled from.

    That text is the one remembered at import (the hook) or decoration
    (``snapshot_source``), never the file as it is now. A function of a file nobody
    remembered (a plain function given to ``poet_runtime.enhance``) is read through
    linecache. ``module`` names the module as the store knows it when that differs
    from ``__module__`` (a script run as ``__main__`` is known by its file's name).
    """
    live_module = getattr(function, "__module__", None) or "__main__"
    module = module or live_module
    qualname = function.__qualname__
    filename = None
    try:
        filename = inspect.getsourcefile(function)
    except TypeError:
        pass
    prepared = None
    entry = sources.entry_for(function, filename)
    if entry is not None:
        prepared = _prepared_entry(entry, filename)
    elif filename:
        module_globals = getattr(sys.modules.get(live_module), "__dict__", None)
        linecache.checkcache(filename)  # the file may have changed since it was first read
        lines = linecache.getlines(filename, module_globals)
        if lines:
            prepared = _prepared("".join(lines), filename)
    if prepared is None and source is not None:
        # Only the function's own text is known (the import hook gave it): find it by name.
        import dataclasses

        found = spec_from_source(module, function.__name__, textwrap.dedent(source), filename, None)
        return dataclasses.replace(found, qualname=qualname, lineno=lineno or found.lineno)
    if prepared is None:
        raise GenerationError("no_source", f"{module}:{qualname}: its source is not available (defined in {filename or 'a string'})")
    line = lineno or function.__code__.co_firstlineno
    return _read(prepared, module, qualname, filename, line)

"""The AST rewrite: bind every ``@poet`` function to the runtime at definition time.

Why an AST rewrite at all: the decorator alone would have to recover a function's
identity (module, qualname, source, line) with ``inspect.getsource`` at run time,
which breaks for code built from strings, edited files and frozen apps. The hook
already has the source in hand, so it passes that identity statically.

Only one thing changes in a module: each function decorated with ``poet`` gets one
more decorator, outermost, placed on the line of its first decorator, so line
numbers, ``co_firstlineno`` and tracebacks stay exactly those of the source. The
injected decorator imports ``poet_runtime.hook.binding`` by absolute name, which
works at module level, in class bodies and in nested functions without adding any
name to the module's globals.

Also used statically (no execution) by the CLI's ``enhance`` and ``status``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from poet_runtime.hook.scan import MARKER  # the cheap pre-filter: a module without it is never parsed
BIND_MODULE = "poet_runtime.hook.binding"
_PACKAGE = "poet_runtime"
_NEWLINE = re.compile(r"\r\n|\r|\n")  # what Python's tokenizer treats as a line end


@dataclass
class PoetFunction:
    """One ``@poet`` function found in a module's AST."""

    qualname: str
    node: ast.FunctionDef | ast.AsyncFunctionDef
    decorator: ast.expr  # the ``poet`` / ``poet(...)`` expression itself
    first_line: int  # line of the first decorator (== co_firstlineno)

    def decorator_kwargs(self) -> tuple[dict, list[str]]:
        """Literal keyword arguments of ``@poet(...)``, and the names that are not literals."""
        values: dict = {}
        skipped: list[str] = []
        if isinstance(self.decorator, ast.Call):
            if self.decorator.args:
                skipped.append("<positional arguments>")
            for keyword in self.decorator.keywords:
                name = keyword.arg or "**"
                try:
                    values[name] = ast.literal_eval(keyword.value)
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    skipped.append(name)
        return values, skipped


def _dotted(node: ast.expr) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _aliases(tree: ast.AST) -> tuple[set[str], set[str]]:
    """Names bound to the decorator, and dotted names bound to poet_runtime modules."""
    names = {"poet"}  # a bare ``poet`` is taken as ours; bind() is harmless on anything else
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == _PACKAGE or node.module.startswith(_PACKAGE + "."):
                for alias in node.names:
                    if alias.name == "poet":
                        names.add(alias.asname or "poet")
                    elif alias.name in ("decorator",):
                        modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == _PACKAGE or alias.name.startswith(_PACKAGE + "."):
                    # ``import poet_runtime.x`` binds ``poet_runtime``; ``as y`` binds y to x.
                    modules.add(alias.asname or _PACKAGE)
                    if alias.asname is None:
                        modules.add(alias.name)
    return names, modules


def _is_poet(decorator: ast.expr, names: set[str], modules: set[str]) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    if isinstance(target, ast.Name):
        return target.id in names
    if isinstance(target, ast.Attribute) and target.attr == "poet":
        owner = _dotted(target.value)
        return owner is not None and owner in modules
    return False


def find_poet_functions(tree: ast.Module) -> list[PoetFunction]:
    """Every function (module level, methods, nested) decorated with ``poet``, with its qualname."""
    names, modules = _aliases(tree)
    found: list[PoetFunction] = []

    def visit(body, prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qualname = prefix + node.name
                for decorator in node.decorator_list:
                    if _is_poet(decorator, names, modules):
                        first = min(d.lineno for d in node.decorator_list)
                        found.append(PoetFunction(qualname, node, decorator, first))
                        break
                visit(node.body, qualname + ".<locals>.")
            elif isinstance(node, ast.ClassDef):
                visit(node.body, prefix + node.name + ".")
            else:
                # if/try/with/for/while/match blocks at this level keep the same prefix
                for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                    inner = getattr(node, field, None)
                    if isinstance(inner, list):
                        visit(inner, prefix)

    visit(tree.body, "")
    return found


def function_source(lines: list[str], function: PoetFunction) -> str:
    """The function's text from its first decorator to its last line, as inspect.getsource gives it."""
    return "".join(lines[function.first_line - 1 : function.node.end_lineno])


def split_lines(text: str) -> list[str]:
    """Lines with their endings, split the way the tokenizer counts them (not str.splitlines)."""
    lines, start = [], 0
    for match in _NEWLINE.finditer(text):
        lines.append(text[start : match.end()])
        start = match.end()
    if start < len(text):
        lines.append(text[start:])
    return lines


def _bind_call(module: str, function: PoetFunction, source: str) -> ast.expr:
    # __import__("poet_runtime.hook.binding", fromlist=("bind",)).bind(module=..., ...)
    importer = ast.Call(
        func=ast.Name(id="__import__", ctx=ast.Load()),
        args=[ast.Constant(BIND_MODULE)],
        keywords=[ast.keyword(arg="fromlist", value=ast.Tuple(elts=[ast.Constant("bind")], ctx=ast.Load()))],
    )
    call = ast.Call(
        func=ast.Attribute(value=importer, attr="bind", ctx=ast.Load()),
        args=[],
        keywords=[
            ast.keyword(arg="module", value=ast.Constant(module)),
            ast.keyword(arg="qualname", value=ast.Constant(function.qualname)),
            ast.keyword(arg="source", value=ast.Constant(source)),
            ast.keyword(arg="lineno", value=ast.Constant(function.first_line)),
        ],
    )
    # Every new node sits on the first decorator's line so co_firstlineno does not move.
    anchor = function.node.decorator_list[0]
    for node in ast.walk(call):
        node.lineno = node.end_lineno = anchor.lineno
        node.col_offset = node.end_col_offset = anchor.col_offset
    return call


def rewrite(tree: ast.Module, module: str, text: str) -> int:
    """Add the bind decorator to every ``@poet`` function in ``tree`` (in place); returns how many."""
    functions = find_poet_functions(tree)
    if not functions:
        return 0
    lines = split_lines(text)
    for function in functions:
        function.node.decorator_list.insert(0, _bind_call(module, function, function_source(lines, function)))
    return len(functions)


def compile_module(data: bytes, filename: str, module: str, optimize: int = -1, *, remember: bool = False,
                   stored=None):
    """Source bytes -> code object, rewritten when the module holds ``@poet`` functions.

    Without the marker the source goes straight to ``compile`` (no parse of ours), so
    the code object is the one Python would build itself.

    ``remember``: the module is being loaded from ``filename`` (the loader, the runner):
    its text is remembered as the one its functions' specs are read from
    (``generate.sources``), with what a spec needs from the AST parsed here, so a first
    call neither reads the file again nor parses the module again. ``stored``: where
    that may be kept for later processes (``sources.remember_module_source``).
    """
    if MARKER not in data:
        if remember:
            _remember(filename, data, None, stored)
        return compile(data, filename, "exec", dont_inherit=True, optimize=optimize)
    tree = compile(data, filename, "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True, optimize=optimize)
    if remember:
        _remember(filename, data, tree, stored)  # before the rewrite adds its decorators
    from importlib.util import decode_source

    rewrite(tree, module, decode_source(data))
    return compile(tree, filename, "exec", dont_inherit=True, optimize=optimize)


def _remember(filename: str, data: bytes, tree, stored) -> None:
    from poet_runtime.generate.sources import remember_module_source

    if tree is not None:
        try:
            from poet_runtime.generate.spec import remember_parsed

            remember_parsed(filename, data, tree, stored)
            return
        except Exception:  # never fail an import over this: the text alone will do
            pass
    remember_module_source(filename, data, stored=stored)

"""The original function to probe an answer against, wherever the answer is judged.

Probes compare an answer with the original on sample inputs; an answer that could
not be probed is never accepted (issue 16, item 1). The original is found, in order:

1. in the module Python imported under the spec's name (the common runtime case);
2. in an imported module whose file is the spec's file under another name: a script
   run by the runner is ``__main__`` in ``sys.modules`` but ``app`` in its spec;
3. from the captured source (``sources``: the text the function was compiled from; the
   file's text otherwise), in a fresh module namespace: ``enhance`` never imports the
   user's program, and a script's top level is its program. Only the definitions
   are run: imports, ``def``/``class``, assignments, ``try`` around imports and
   ``if TYPE_CHECKING``; any other statement (a bare call, a loop, the ``__main__``
   guard) is left out. An assignment runs as written, calls included (``PATTERN =
   re.compile(...)`` is what functions need), so a script that starts its program in
   an assignment (``result = main()``) runs it here too. The namespace's ``__name__``
   is the spec's module, never ``__main__``.

A function found nowhere (a method, a nested function, a definition that needs the
program to have run) leaves the answer unprobed, so refused.
"""

from __future__ import annotations

import ast
import logging
import sys
import threading

from poet_runtime.generate.parsing import compile_tree, parse

log = logging.getLogger("poet_runtime")

_loaded: dict[tuple[str, str, int], dict] = {}  # (file, module, hash of text) -> namespace
_lock = threading.Lock()


def find(spec) -> tuple[object | None, str]:
    """(the original function or None, where it came from or why it was not found)."""
    from poet_runtime.generate.probes import find_original

    if spec.method_kind not in (None, "staticmethod") or "<locals>" in spec.qualname:
        return None, f"{spec.qualname} is a method or a nested function: probes cannot call it alone"
    found = find_original(spec)
    if found is not None:
        return found, "imported"
    filename = spec.filename
    if filename:
        for name, module in list(sys.modules.items()):
            if module is not None and getattr(module, "__file__", None) == filename:
                found = _lookup(vars(module), spec.qualname)
                if found is not None:
                    return found, f"imported as {name}"
        namespace, why = _definitions(spec)
        if namespace is None:
            return None, why
        found = _lookup(namespace, spec.qualname)
        if found is not None:
            return found, "defined from the captured source"
        return None, f"{spec.qualname} is not defined by the definitions of {filename}"
    return None, "the function has no file to load it from"


def _lookup(namespace: dict, qualname: str):
    target = None
    holder = namespace
    for part in qualname.split("."):
        target = holder.get(part) if isinstance(holder, dict) else getattr(holder, part, None)
        if target is None:
            return None
        holder = getattr(target, "__dict__", {})
    target = getattr(target, "__func__", target)
    state = getattr(target, "__poet__", None)
    if state is not None:
        return state.original
    return target if callable(target) else None


def _definitions(spec) -> tuple[dict | None, str]:
    from poet_runtime.generate.sources import remembered_source

    filename = spec.filename
    text = remembered_source(filename)
    if text is None:
        try:
            import tokenize

            with tokenize.open(filename) as handle:
                text = handle.read()
        except (OSError, SyntaxError, UnicodeDecodeError) as error:
            return None, f"{filename} cannot be read: {type(error).__name__}: {error}"
    key = (filename, spec.module, hash(text))
    with _lock:
        namespace = _loaded.get(key)
        if namespace is not None:
            return namespace, "cached"
        try:
            tree = parse(text, filename)
        except SyntaxError as error:
            return None, f"{filename} does not parse: {error}"
        tree.body = [node for node in tree.body if _is_definition(node)]
        namespace = {"__name__": spec.module, "__file__": filename, "__builtins__": __builtins__,
                     "__package__": spec.module.rpartition(".")[0] or None}
        try:
            exec(compile_tree(tree, filename), namespace)  # noqa: S102 - the user's own definitions
        except BaseException as error:  # noqa: BLE001 - a definition needing the program: not probeable
            if isinstance(error, KeyboardInterrupt):
                raise
            log.info("poet_runtime: %s: the definitions of %s could not run for probes: %s: %s",
                     spec.function_id, filename, type(error).__name__, error)
            return None, f"the definitions of {filename} could not run: {type(error).__name__}: {error}"
        _loaded[key] = namespace
        return namespace, "defined"


def _is_definition(node) -> bool:
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                         ast.Assign, ast.AnnAssign)):
        return True
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
        return True  # a docstring
    if isinstance(node, ast.Try):
        return all(_is_definition(child) for child in node.body) and all(
            all(_is_definition(child) or isinstance(child, ast.Pass) for child in handler.body)
            for handler in node.handlers)
    if isinstance(node, ast.If):
        test = node.test
        name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
        if name == "TYPE_CHECKING":
            return True
    return False


def forget() -> None:
    """Drop the namespaces made from sources (tests)."""
    with _lock:
        _loaded.clear()

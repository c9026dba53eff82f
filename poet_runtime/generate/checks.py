"""Checks that any generated module must pass before it is stored or run (contract 2).

The generated module judges data; the user's logic is not in it (docs/CONTRACTS.md,
"Generated module, contract 2"). Each failure has its own reason code (``syntax``,
``structure``, ``signature``, ``hygiene``, ``compile``) so that the log, the version's
metadata and a model asked to try again all say precisely what was wrong. A
contract-1 module (one that still defines the user's logic, names ``LOGIC``, or
whose ``operate_prime`` takes the perceived arguments) is refused.

``operate_calls_logic`` tells whether ``operate_prime`` calls the logic it is given;
one that does not is a *transformed* version, which only the LLM path may accept
(``llm_checks``), for pure functions.
"""

from __future__ import annotations

import ast

from poet_runtime.errors import CheckFailed
from poet_runtime.safe_text import hidden_characters
from poet_runtime.generate.parsing import compile_tree, parse
from poet_runtime.generate.spec import VAR_KEYWORD, VAR_POSITIONAL, FunctionSpec

_ALLOWED_TOP_LEVEL = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.Assign, ast.AnnAssign)
_OWN_SIGNATURES = {
    "operate_prime": ("logic", "args", "kwargs"),
    "enforce": ("result",),
    "train": ("call", "result", "metrics"),
}


def _arguments(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[tuple[str, str, ast.expr | None]]:
    """(name, kind, default node or None) for each parameter."""
    args = node.args
    result = []
    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for index, (arg, default) in enumerate(zip(positional, defaults)):
        kind = "positional_only" if index < len(args.posonlyargs) else "positional"
        result.append((arg.arg, kind, default))
    if args.vararg:
        result.append((args.vararg.arg, VAR_POSITIONAL, None))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        result.append((arg.arg, "keyword_only", default))
    if args.kwarg:
        result.append((args.kwarg.arg, VAR_KEYWORD, None))
    return result


def _unset_names(tree: ast.Module) -> set[str]:
    """The module-level names bound to ``poet_sandbox.validate.UNSET`` (the generator may rename it)."""
    names = {"UNSET"}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "poet_sandbox.validate":
            names.update(alias.asname for alias in node.names if alias.name == "UNSET" and alias.asname)
    return names


def _is_unset(node, names: set[str]) -> bool:
    return (isinstance(node, ast.Name) and node.id in names) or (
        isinstance(node, ast.Attribute) and node.attr == "UNSET")


def _module_bindings(tree: ast.Module) -> dict[str, int]:
    """Top-level name -> line, for every name the module binds at import."""
    names: dict[str, int] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.setdefault(node.name, node.lineno)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for child in ast.walk(target):
                    if isinstance(child, ast.Name):
                        names.setdefault(child.id, node.lineno)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.setdefault((alias.asname or alias.name).split(".")[0], node.lineno)
    return names


def _body_dump(statements) -> str:
    body = list(statements)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]  # a docstring does not make a body different
    return "\n".join(ast.dump(statement) for statement in body)


def _user_body(spec: FunctionSpec) -> str | None:
    try:
        tree = parse(spec.source)
    except SyntaxError:
        return None
    node = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    return _body_dump(node.body) if node is not None and node.body else None


def _imports_user_module(node, spec: FunctionSpec) -> bool:
    if isinstance(node, ast.ImportFrom):
        if node.level:
            return True  # relative to wherever the module is stored: never meant
        names = [node.module or ""]
    else:
        names = [alias.name for alias in node.names]
    target = spec.module
    return any(name == target or name.startswith(target + ".") for name in names) and target != "__main__"


def check_generated(code: str, spec: FunctionSpec, *, filename: str, needs_train: bool,
                    logic_name: str | None = None) -> list[str]:
    """Raise ``CheckFailed`` for the first failed check; return the names of those passed.

    ``logic_name`` is contract 1's and ignored (accepted so that an older caller still works).
    """
    passed = []
    _check_text(code)  # part of "syntax": the text is what a reviewer reads
    try:
        tree = parse(code, filename)
    except SyntaxError as error:
        raise CheckFailed("syntax", f"line {error.lineno}: {error.msg}") from None
    passed.append("syntax")

    functions = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # a docstring
        if not isinstance(node, _ALLOWED_TOP_LEVEL):
            raise CheckFailed("structure", f"line {node.lineno}: only imports, definitions and assignments may run at import")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions[node.name] = node
        if isinstance(node, (ast.Import, ast.ImportFrom)) and _imports_user_module(node, spec):
            raise CheckFailed("structure", f"line {node.lineno}: imports the function's module ({spec.module}); "
                                           "the logic is passed to operate_prime, never imported")
    required = ["configure", "perceive", "operate_prime", "enforce"]
    if needs_train:
        required.append("train")
    missing = [name for name in required if name not in functions]
    if missing:
        raise CheckFailed("structure", f"missing function(s): {', '.join(missing)}")
    if not needs_train and "train" in functions:
        raise CheckFailed("structure", "defines train() but the function has no objective")
    bindings = _module_bindings(tree)
    if "LOGIC" in bindings:
        raise CheckFailed("structure", f"line {bindings['LOGIC']}: LOGIC is contract 1: the module holds no logic; "
                                       "operate_prime calls the logic it is given")
    for name in (spec.name, f"logic_{spec.name}"):
        if name in functions and name not in required:
            raise CheckFailed("structure", f"line {functions[name].lineno}: defines {name}(): the user's logic is "
                                           "not copied into the module; operate_prime calls the logic it is given")
    user_body = _user_body(spec)
    if user_body:
        for name, node in functions.items():
            if _body_dump(node.body) == user_body:
                raise CheckFailed("structure", f"line {node.lineno}: {name}() is a copy of {spec.qualname}: the "
                                               "user's logic is not copied into the module")
    passed.append("structure")

    _check_signatures(functions, spec, _unset_names(tree))
    passed.append("signature")

    _check_hygiene(tree, functions, spec, bindings)
    passed.append("hygiene")

    try:
        compile_tree(tree, filename)
    except (SyntaxError, ValueError) as error:
        raise CheckFailed("compile", str(error)) from None
    passed.append("compile")
    return passed


def _check_text(code: str) -> None:
    """No character a reviewer would not see: controls (ANSI escapes, CR, BS), bidi
    overrides and isolates (Trojan Source), zero-width and other format characters.
    What ``show`` prints must be what runs, so such a module is refused, not cleaned.
    CRLF line ends are plain line ends."""
    found = hidden_characters(code.replace("\r\n", "\n"))
    if found:
        line, column, name = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise CheckFailed("syntax", f"line {line}, column {column}: hidden character {name}{more}; "
                                  "generated code must be plain visible text")


def _check_signatures(functions: dict, spec: FunctionSpec, unset: set[str]) -> None:
    expected = [(p.name, p.kind) for p in spec.params]
    perceive = _arguments(functions["perceive"])
    if [(name, kind) for name, kind, _ in perceive] != expected:
        raise CheckFailed("signature", f"perceive{_show(perceive)} does not match {spec.qualname}{_show(expected)}")
    with_default = {p.name for p in spec.params if p.has_default}
    wrong = [name for name, _, default in perceive
             if (name in with_default) != (default is not None) or (default is not None and not _is_unset(default, unset))]
    if wrong:
        raise CheckFailed("signature", f"perceive(): {', '.join(wrong)}: a parameter with a default in "
                                       f"{spec.qualname} must default to UNSET, and only those")
    for name, own in _OWN_SIGNATURES.items():
        node = functions.get(name)
        if node is None:
            continue
        got = _arguments(node)
        if len(got) != len(own) or any(kind not in ("positional", "positional_only") or default is not None
                                       for _, kind, default in got):
            raise CheckFailed("signature", f"{name}{_show(got)} must be {name}({', '.join(own)})"
                              + (" (contract 2: the logic, its positional and keyword arguments)"
                                 if name == "operate_prime" else ""))
    operate = functions["operate_prime"]
    if isinstance(operate, ast.AsyncFunctionDef) != spec.is_async:
        kind = "async def" if spec.is_async else "def"
        raise CheckFailed("signature", f"operate_prime must be '{kind}' like {spec.qualname}")
    for name in ("perceive", "enforce", "configure", "train"):
        if isinstance(functions.get(name), ast.AsyncFunctionDef):
            raise CheckFailed("signature", f"{name} must be a plain def")
    configure = _arguments(functions["configure"])
    if not configure or configure[0][1] not in ("positional", "positional_only") or any(
            default is None for _, kind, default in configure[1:] if kind not in (VAR_POSITIONAL, VAR_KEYWORD)):
        raise CheckFailed("signature", f"configure{_show(configure)} must be configure(params, defaults=None)")


def _check_hygiene(tree: ast.Module, functions: dict, spec: FunctionSpec, bindings: dict[str, int]) -> None:
    """No module-level name that perceive uses equals a parameter of the function.

    The contract's own functions are exempt: their names are fixed, and perceive never
    calls them (a parameter named ``configure`` is just a parameter there).
    """
    params = {p.name for p in spec.params}
    used = {node.id for node in ast.walk(functions["perceive"]) if isinstance(node, ast.Name)}
    own = {name for name in ("configure", "perceive", "operate_prime", "enforce", "train") if name in functions}
    clashes = sorted((params & used & set(bindings)) - own)
    if clashes:
        name = clashes[0]
        raise CheckFailed("hygiene", f"line {bindings[name]}: the module-level name {name} is also a parameter of "
                                     f"{spec.qualname}: perceive cannot reach it; rename the module's own name")


def operate_calls_logic(code: str) -> bool:
    """Whether ``operate_prime`` uses the ``logic`` it is given (calls it, or hands it to a timeout).

    False means the answer re-implements the logic: a *transformed* version.
    """
    try:
        tree = parse(code)
    except SyntaxError:
        return False
    operate = next((node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and node.name == "operate_prime"), None)
    if operate is None or not operate.args.args:
        return False
    name = operate.args.args[0].arg
    return any(isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Load)
               for statement in operate.body for node in ast.walk(statement))


def _show(params) -> str:
    return "(" + ", ".join(param[0] for param in params) + ")"

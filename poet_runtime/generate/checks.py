"""Checks that any generated module must pass before it is stored or run.

Each failure has its own reason code (``syntax``, ``structure``, ``signature``,
``compile``) so that the log, the version's metadata and a model asked to try
again all say precisely what was wrong.
"""

from __future__ import annotations

import ast

from poet_runtime.errors import CheckFailed
from poet_runtime.generate.spec import VAR_KEYWORD, VAR_POSITIONAL, FunctionSpec
from poet_runtime.generate.parsing import compile_tree, parse

_ALLOWED_TOP_LEVEL = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.Assign, ast.AnnAssign)


def _arguments(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[tuple[str, str, bool]]:
    args = node.args
    result = []
    positional = [*args.posonlyargs, *args.args]
    first_default = len(positional) - len(args.defaults)
    for index, arg in enumerate(positional):
        kind = "positional_only" if index < len(args.posonlyargs) else "positional"
        result.append((arg.arg, kind, index >= first_default))
    if args.vararg:
        result.append((args.vararg.arg, VAR_POSITIONAL, False))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        result.append((arg.arg, "keyword_only", default is not None))
    if args.kwarg:
        result.append((args.kwarg.arg, VAR_KEYWORD, False))
    return result


def check_generated(code: str, spec: FunctionSpec, *, logic_name: str, filename: str,
                    needs_train: bool) -> list[str]:
    """Raise ``CheckFailed`` for the first failed check; return the names of those passed."""
    passed = []
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
    required = ["configure", "perceive", "operate_prime", "enforce", logic_name]
    if needs_train:
        required.append("train")
    missing = [name for name in required if name not in functions]
    if missing:
        raise CheckFailed("structure", f"missing function(s): {', '.join(missing)}")
    if not needs_train and "train" in functions:
        raise CheckFailed("structure", "defines train() but the function has no objective")
    passed.append("structure")

    expected = [(p.name, p.kind) for p in spec.params]
    perceive = [(name, kind) for name, kind, _ in _arguments(functions["perceive"])]
    if perceive != expected:
        raise CheckFailed("signature", f"perceive{_show(perceive)} does not match {spec.qualname}{_show(expected)}")
    with_default = {p.name for p in spec.params if p.has_default}
    lacking = [name for name, _, has in _arguments(functions["perceive"]) if name in with_default and not has]
    if lacking:
        raise CheckFailed("signature", f"perceive() must give a default to {', '.join(lacking)} as the original does")
    operate = functions["operate_prime"]
    if len(_arguments(operate)) != len(spec.params):
        raise CheckFailed("signature", f"operate_prime() must take the {len(spec.params)} perceived argument(s)")
    if isinstance(operate, ast.AsyncFunctionDef) != spec.is_async:
        kind = "async def" if spec.is_async else "def"
        raise CheckFailed("signature", f"operate_prime must be '{kind}' like {spec.qualname}")
    if len(_arguments(functions["enforce"])) != 1:
        raise CheckFailed("signature", "enforce() must take exactly the result")
    passed.append("signature")

    try:
        compile_tree(tree, filename)
    except (SyntaxError, ValueError) as error:
        raise CheckFailed("compile", str(error)) from None
    passed.append("compile")
    return passed


def _show(params) -> str:
    return "(" + ", ".join(name for name, _ in params) + ")"

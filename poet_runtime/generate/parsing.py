"""One lock around turning source into ASTs and ASTs into code.

CPython 3.11 and 3.12 share state between concurrent conversions of ASTs, so two
threads generating at once (background generation, probe runs) can fail with
"SystemError: AST constructor recursion depth mismatch" (gh-106905). Generation
is rare and parsing is fast, so every parse on the generation path goes through
this lock.
"""

from __future__ import annotations

import ast
import threading

LOCK = threading.RLock()


def parse(source: str, filename: str = "<unknown>", mode: str = "exec") -> ast.AST:
    with LOCK:
        return ast.parse(source, filename, mode)


def compile_tree(tree: ast.AST, filename: str):
    with LOCK:
        return compile(tree, filename, "exec", dont_inherit=True)

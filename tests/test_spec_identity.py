"""The spec reader prepares a module's text once and reads each function from its own lines (issue 15, point 14).

What must not change: the FunctionSpec, byte for byte. Version keys hash its
``source_hash()``, so a store made by the old reader must keep matching. Every function
(module level, methods, nested, in if/try/with blocks) of real modules and of texts made
to be awkward is read by both readers and compared field by field, under every way
the runtime reaches the text: given text, the import hook's AST, a stored index beside
the hook's pyc, the registry, linecache.

What must change: the cost of one more function of an already prepared module does not
involve parsing the module (counted, not timed: benchmarks/bench_first_call.py times it).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import linecache
import sys
from pathlib import Path

import pytest

import spec_reference as old
from hook_helpers import REPO, run
from poet_runtime.generate import sources
from poet_runtime.generate import spec as new

STDLIB = Path(inspect.getsourcefile(json)).parent.parent
REAL_MODULES = [
    STDLIB / "textwrap.py", STDLIB / "shlex.py", STDLIB / "fnmatch.py", STDLIB / "string.py", STDLIB / "heapq.py",
    STDLIB / "json" / "decoder.py", STDLIB / "json" / "encoder.py", STDLIB / "statistics.py", STDLIB / "operator.py",
    REPO / "poet_runtime" / "settings.py", REPO / "poet_runtime" / "hook" / "transform.py",
    REPO / "poet_runtime" / "generate" / "spec.py", REPO / "examples" / "ml_monitoring" / "app.py",
    REPO / "examples" / "api_operations" / "app.py",
]

AWKWARD = {
    # form feeds: str.splitlines and the tokenizer count lines differently
    "formfeed": 'import os\n\x0c\ndef f(x: int = 1) -> int:\n    """doc"""\n    # c\n    return x\n\x0c\n'
                'class A:\n    def m(self, y: "os.PathLike" = None):\n        return y\n',
    "crlf": 'import os\r\nfrom typing import TypedDict\r\nclass T(TypedDict, total=False):\r\n    a: int\r\n'
            '    b: "list[str]"\r\n\r\ndef f(x: T, y: int = 3) -> T:\r\n    return x\r\n',
    "cr": "import os\rdef f(x: int = 1) -> int:\r    return x\r",
    "no_final_newline": "import math\ndef f(x: float = math.pi) -> float:\n    return x",
    "unicode": (
        "import math\nclass Ä:\n    def m(self, é: \"ünï\" = \"ß€\", *, ω: dict[str, \"Ä\"] = {\"ü\": 1}) -> \"Ä\":\n"
        "        \"\"\"Dôc.\"\"\"\n        return é\n\ndef one(x: int = 2): return x; y = 1\n\n"
        "@decorate(\n    1,\n    2)\n@other\ndef multi(a, b=(1,\n  2), /, *args: \"int\", c=lambda q: q, **kw: float) -> None:\n"
        "    pass\n"
    ),
    "blocks": '''\
import os, json as j
from . import sibling
from .. import parent as p
if True:
    def f(x=os.sep):
        return j.dumps(x)
else:
    def f(x=2):
        return x
try:
    def g(): pass
except ImportError:
    def g(a=1):
        return a
finally:
    def h(): return 3
with open("x") as fh:
    def w(): return p
for i in range(2):
    def loop(): return i
while False:
    def wh(): pass
def outer(n: int = 1):
    def inner(m=n, s="""multi
line
  default"""):
        x = """body
string"""
        return m
    class Local:
        def meth(self, z: int = 0):
            return z
    return inner
class C:
    @staticmethod
    def s(a: int) -> int: return a
    @classmethod
    def c(cls, b: "C" = None):
        # leading comment
        # another
        return cls
    async def am(self, q: list[int] = [1, 2]):
        yield q
    class Inner:
        def deep(self, r=(lambda: 1)()):
            return r
def dup(x): return 1
def dup(x, y=2): return 2
CONST: int = 5
a, (b, c) = 1, (2, 3)
CACHE = {}
CACHE[dup] = 1
def uses(v=CONST, w=a) -> "C":
    return CACHE, b, c, C, dup, sibling
@ \\
deco
def backslashed(x=1):
    return x
def tabs(x = 1):
\treturn x
''',
}


def canonical(spec, module) -> dict:
    """Every field of a spec, with the reader's own 'no literal' marker made comparable."""
    fields = {}
    for item in dataclasses.fields(spec):
        value = getattr(spec, item.name)
        if item.name == "params":
            value = tuple((p.name, p.kind, p.annotation, p.default,
                           "<none>" if p.literal_default is module._NO_LITERAL else repr(p.literal_default))
                          for p in value)
        elif item.name == "classes":
            value = tuple(dataclasses.astuple(info) for info in value)
        fields[item.name] = value
    fields["source_hash()"] = spec.source_hash()
    return fields


def functions_in(text: str) -> list[tuple[str, int]]:
    """(qualname, first line) of every def, found independently of both readers."""
    found = []

    def visit(body, prefix):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qualname = prefix + node.name
                found.append((qualname, node.decorator_list[0].lineno if node.decorator_list else node.lineno))
                visit(node.body, qualname + ".<locals>.")
            elif isinstance(node, ast.ClassDef):
                visit(node.body, prefix + node.name + ".")
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    inner = getattr(node, field, None)
                    if isinstance(inner, list):
                        visit(inner, prefix)

    visit(ast.parse(text).body, "")
    return found


def assert_same(text: str, filename: str, read) -> int:
    """``read(qualname, lineno)`` gives the new spec; compared with the old reader's for every function."""
    compared = 0
    for qualname, first in functions_in(text):
        for lineno in (first, None):
            try:
                expected = canonical(old.spec_from_source("m", qualname, text, filename, lineno), old)
            except Exception as error:  # the old reader refused: the new one must refuse alike
                with pytest.raises(type(error)):
                    read(qualname, lineno)
                continue
            assert canonical(read(qualname, lineno), new) == expected, (filename, qualname, lineno)
            compared += 1
    return compared


@pytest.mark.parametrize("path", REAL_MODULES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_real_modules_read_alike(path):
    text = path.read_text(encoding="utf-8")
    compared = assert_same(text, str(path), lambda q, n: new.spec_from_source("m", q, text, str(path), n))
    assert compared >= 2


@pytest.mark.parametrize("name", sorted(AWKWARD))
def test_awkward_texts_read_alike(name):
    text = AWKWARD[name]
    assert assert_same(text, f"{name}.py", lambda q, n: new.spec_from_source("m", q, text, f"{name}.py", n)) >= 1


@pytest.mark.parametrize("name", ["blocks", "unicode", "formfeed"])
def test_prepared_from_the_hooks_ast_and_from_a_stored_index_read_alike(name, tmp_path, monkeypatch):
    text = AWKWARD[name]
    data = text.encode("utf-8")
    tree = compile(data, "m.py", "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
    from_tree = new._Prepared(sources.decode(data), "m.py", tree)
    assert sources.decode(data) == text  # these texts end with a newline and hold no lone \r
    assert assert_same(text, "m.py", lambda q, n: new._read(from_tree, "m", q, "m.py", n)) >= 1
    stored = (str(tmp_path / "m.spec"), b"k" * 8)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # written only where bytecode may be
    new._save_stored(stored, from_tree)
    assert not Path(stored[0]).exists()
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    new._save_stored(stored, from_tree)
    loaded = new._load_stored(stored, text)
    assert loaded is not None and loaded.parts() == from_tree.parts()
    assert assert_same(text, "m.py", lambda q, n: new._read(loaded, "m", q, "m.py", n)) >= 1
    assert new._load_stored((stored[0], b"x" * 8), text) is None  # another source's index is not used


@pytest.mark.parametrize("content", [
    b"x = 1\r\ny = 2\r\n", b"x = 1\ry = 2\r", b"def f():\n    return 1", b"\xef\xbb\xbfx = '\xc3\xa9'\n",
    b"# -*- coding: latin-1 -*-\nx = '\xe9'\n", b"", b"\n\n",
], ids=["crlf", "cr", "no-final-newline", "bom", "latin-1", "empty", "blank"])
def test_decoding_the_loaders_bytes_gives_linecaches_text(tmp_path, content):
    path = tmp_path / "m.py"
    path.write_bytes(content)
    linecache.checkcache(str(path))
    assert sources.decode(content) == "".join(linecache.getlines(str(path)))


def test_live_functions_read_alike_through_the_registry_and_through_linecache(tmp_path, monkeypatch):
    """The old reader read a live function through linecache; the new one from the remembered bytes."""
    import textwrap as module

    filename = inspect.getsourcefile(module)
    functions = [value for value in vars(module).values() if inspect.isfunction(value)]
    functions += [member for cls in vars(module).values() if inspect.isclass(cls) for member in vars(cls).values()
                  if inspect.isfunction(member) and member.__module__ == module.__name__]
    assert len(functions) > 10
    monkeypatch.setattr(sources, "_texts", {})
    sources.remember_module_source(filename, Path(filename).read_bytes())
    for function in functions:
        assert canonical(new.spec_from_function(function), new) == canonical(old.spec_from_function(function), old)


def test_one_parse_per_module_however_many_functions_are_read(monkeypatch):
    text = "import math\n" + "".join(
        f"def f{i}(x: int = {i}, y: 'list[int]' = None) -> float:\n    return math.sqrt(x)\n\n" for i in range(300))
    parses = []
    real = new._parse_module
    monkeypatch.setattr(new, "_parse_module", lambda *args: parses.append(1) or real(*args))
    for i in range(0, 300, 7):
        new.spec_from_source("big", f"f{i}", text, "big.py")
    assert len(parses) == 1


HOOKED = '''
import math
from poet_runtime import poet

@poet
def area(r: float = 1.0) -> float:
    return math.pi * r * r
'''

PARSES = '''
import json, sys
import poet_runtime
poet_runtime.enable()
from poet_runtime.generate import spec
parses = []
real = spec._parse_module
spec._parse_module = lambda *args: parses.append(args[1]) or real(*args)
import hooked
from poet_runtime.enhanced import state_of
state = state_of(hooked.area)
found = spec.spec_from_function(state.original, source=state.static_source, lineno=state.static_lineno)
print(json.dumps({"parses": len(parses), "hash": found.source_hash()}))
'''


def test_under_the_hook_a_first_call_parses_no_module(tmp_path):
    """Compiled at import: the hook's AST is used; imported from the hook's pyc: the index stored beside it."""
    (tmp_path / "hooked.py").write_text(HOOKED)
    (tmp_path / "parses.py").write_text(PARSES)
    expected = old.spec_from_source("hooked", "area", HOOKED, str(tmp_path / "hooked.py")).source_hash()

    def first_spec(write_bytecode: bool) -> dict:
        done = run(["parses.py"], tmp_path, write_bytecode=write_bytecode, POET_HOME=str(tmp_path / "home"))
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    # Compiled: the hook's own AST (no parse); the pyc is written, and the index beside it at the spec.
    assert first_spec(True) == {"parses": 0, "hash": expected}
    [index] = (tmp_path / "__pycache__").glob("hooked.*.spec")
    # From the pyc, with or without bytecode writing: the stored index (no parse).
    assert first_spec(True) == {"parses": 0, "hash": expected}
    assert first_spec(False) == {"parses": 0, "hash": expected}
    # From the pyc without its index: one parse, and the index is written again (unless bytecode writing is off).
    index.unlink()
    assert first_spec(False) == {"parses": 1, "hash": expected}
    assert not index.exists()
    assert first_spec(True) == {"parses": 1, "hash": expected}
    assert index.exists()
    assert first_spec(True) == {"parses": 0, "hash": expected}
    # Without any bytecode: compiled at every import, the hook's AST again.
    for cached in (tmp_path / "__pycache__").iterdir():
        cached.unlink()
    assert first_spec(False) == {"parses": 0, "hash": expected}
    assert not list((tmp_path / "__pycache__").iterdir())


def test_unparsable_and_missing(tmp_path):
    from poet_runtime.errors import GenerationError

    with pytest.raises(GenerationError, match="cannot parse"):
        new.spec_from_source("m", "f", "def f(:\n", "m.py")
    with pytest.raises(GenerationError, match="no definition found"):
        new.spec_from_source("m", "g", "def f():\n    pass\n", "m.py")

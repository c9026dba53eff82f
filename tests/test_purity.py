"""The purity check LLM-transformed versions depend on (poet_runtime.generate.purity).

Conservative by design: every impure case must be refused, and a pure case may be
refused only when the check cannot tell (those are listed as such).
"""

from __future__ import annotations

import textwrap

import pytest

from poet_runtime.generate.purity import check_purity, function_purity
from poet_runtime.generate.spec import spec_from_source

IMPORTS = ("import json", "import random", "import functools", "import math", "from math import sqrt",
           "import os", "from collections import Counter")


def pure(source: str, imports=IMPORTS):
    return function_purity(textwrap.dedent(source), module_imports=imports)


PURE = {
    "arithmetic": "def add(a, b):\n    return a + b\n",
    "accumulator": "def f(xs: list[float]) -> float:\n    total = 0\n    for x in xs:\n        total += x * x\n"
                   "    return total\n",
    "local list built and sorted": "def f(xs):\n    out = []\n    for x in xs:\n        out.append(x)\n"
                                   "    out.sort()\n    return out\n",
    "local dict written": "def f(keys):\n    seen = {}\n    for k in keys:\n        seen[k] = seen.get(k, 0) + 1\n"
                          "    return seen\n",
    "copy then change": "def f(d):\n    c = d.copy()\n    c['a'] = 1\n    return c\n",
    "list() copy then change": "def f(xs):\n    ys = list(xs)\n    ys.reverse()\n    return ys\n",
    "string methods": "def f(s: str) -> str:\n    return ' '.join(w.capitalize() for w in s.split())\n",
    "comprehension": "def f(x):\n    return [y for y in x if y]\n",
    "lambda": "def f(x):\n    g = lambda v: v * 2\n    return g(x)\n",
    "nested def": "def f(x):\n    def g(v):\n        return v + 1\n    return g(x)\n",
    "math via module": "def f(x):\n    return math.sqrt(x) + math.pi\n",
    "math via from-import": "def f(x):\n    return sqrt(x)\n",
    "import inside": "def f(x):\n    import math\n    return math.floor(x)\n",
    "json": "def f(x):\n    return json.dumps(x, sort_keys=True)\n",
    "Counter": "def f(words):\n    counts = Counter(words)\n    counts.update(['x'])\n    return counts.most_common(2)\n",
    "heap on a copy": "def f(xs):\n    import heapq\n    h = list(xs)\n    heapq.heapify(h)\n    return heapq.heappop(h)\n",
    "int parameter rebound": "def f(n: int):\n    n += 1\n    return n\n",
    "own kwargs dict": "def f(**kw):\n    kw.pop('a', None)\n    return kw\n",
    "exceptions": "def f(x):\n    try:\n        return int(x)\n    except ValueError as e:\n        raise TypeError('no') from e\n",
    "poet decorator": "@poet(domain='base')\ndef f(x):\n    return x\n",
    "async without await": "async def f(x):\n    return x * 2\n",
    "attribute read": "def f(point):\n    return point.x + point.y\n",
}

IMPURE = {
    "appends to its argument": ("def f(xs):\n    xs.append(1)\n", "the argument xs"),
    "through an alias": ("def f(xs):\n    ys = xs\n    ys.append(1)\n", "ys, which may be"),
    "writes into its argument": ("def f(d):\n    d['a'] = 1\n", "writes into the argument d"),
    "writes an attribute": ("def f(o):\n    o.x = 1\n", "writes the attribute .x"),
    "global": ("def f():\n    global N\n    N = 1\n", "global N"),
    "nonlocal": ("def f():\n    n = 0\n    def g():\n        nonlocal n\n        n = 1\n    g()\n    return n\n",
                 "nonlocal n"),
    "writes a global container": ("def f(x):\n    CACHE[x] = 1\n", "the global CACHE"),
    "reads a global": ("def f(x):\n    return RATE * x\n", "reads the global RATE"),
    "prints": ("def f(x):\n    print(x)\n", "print (I/O)"),
    "opens a file": ("def f(x):\n    return open(x).read()\n", "open"),
    "input": ("def f():\n    return input()\n", "input"),
    "os": ("def f():\n    return os.getcwd()\n", "calls os.getcwd"),
    "imports subprocess": ("def f(x):\n    import subprocess\n    return x\n", "imports subprocess"),
    "random": ("def f(x):\n    return random.random()\n", "random"),
    "calls a helper": ("def f(x):\n    return helper(x)\n", "helper"),
    "calls its argument": ("def f(x, cb):\n    return cb(x)\n", "calls its argument cb"),
    "unknown method": ("def f(x):\n    return x.save()\n", ".save()"),
    "mutates rows it loops over": ("def f(rows):\n    for r in rows:\n        r.append(0)\n", "r, which may be"),
    "in-place += on a list argument": ("def f(xs: list):\n    xs += [1]\n", "'xs +='"),
    "in-place += on an unhinted argument": ("def f(xs):\n    xs += [1]\n", "'xs +='"),
    "element of a fresh container": ("def f(x):\n    out = {}\n    out[x] = [1]\n    out[x].append(2)\n"
                                     "    return out\n", "out[x]"),
    "value taken from an argument": ("def f(d):\n    c = d.get('k')\n    c.append(1)\n", "c, which may be"),
    "heappush on an argument": ("def f(h):\n    import heapq\n    heapq.heappush(h, 1)\n", "heappush"),
    "next() advances an iterator": ("def f(it):\n    return next(it)\n", "next"),
    "dunder name": ("def f(x):\n    return __name__\n", "__name__"),
    "dunder attribute": ("def f(x):\n    return x.__class__\n", "__class__"),
    "await": ("async def f(x):\n    return await x\n", "awaits"),
    "with": ("def f(x):\n    with x:\n        return 1\n", "with"),
    "yield": ("def f(x):\n    yield x\n", "yields"),
    "another decorator": ("@functools.lru_cache\ndef f(x):\n    return x\n", "decorated by functools.lru_cache"),
    "setattr": ("def f(o):\n    setattr(o, 'x', 1)\n", "setattr"),
    "eval": ("def f(s):\n    return eval(s)\n", "eval"),
    "del through an argument": ("def f(d):\n    del d['a']\n", "the argument d"),
    "class inside": ("def f():\n    class A:\n        pass\n    return A\n", "defines the class A"),
    "hash differs between processes": ("def f(s):\n    return hash(s)\n", "hash"),
    "json.dump writes": ("def f(x, fh):\n    json.dump(x, fh)\n", "calls json.dump"),
}


@pytest.mark.parametrize("case", list(PURE))
def test_pure(case):
    result = pure(PURE[case])
    assert result.pure, result.reasons
    assert bool(result) and result.explain() == "pure"


@pytest.mark.parametrize("case", list(IMPURE))
def test_impure(case):
    source, reason = IMPURE[case]
    result = pure(source)
    assert not result.pure
    assert any(reason in text for text in result.reasons), result.reasons
    assert all(text.startswith("line ") for text in result.reasons)


def test_reasons_are_all_listed_with_lines():
    result = pure("def f(xs):\n    xs.append(1)\n    print(xs)\n")
    assert result.reasons == ("line 2: calls .append() on the argument xs", "line 3: calls the builtin print (I/O)")
    assert "print" in result.explain()


def test_unparsable_or_missing_source_is_impure():
    assert not function_purity("def f(:\n")
    assert not function_purity("X = 1\n")


def test_from_a_spec_uses_the_module_imports():
    source = textwrap.dedent("""
        import math
        import os

        RATE = 2


        def norm(values: list[float]) -> float:
            return math.sqrt(sum(v * v for v in values))


        def where() -> str:
            return os.getcwd()


        def scaled(x: float) -> float:
            return x * RATE
    """)
    assert check_purity(spec_from_source("m", "norm", source, "m.py")).pure
    assert "os" in check_purity(spec_from_source("m", "where", source, "m.py")).explain()
    assert "RATE" in check_purity(spec_from_source("m", "scaled", source, "m.py")).explain()

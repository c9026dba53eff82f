"""Source identity: a module file edited after import does not change what its functions do.

At import this writes a small module to a temporary folder, imports it, and then
rewrites the file (new body, new hints, newer mtime) before anything calls it.
"""
import atexit
import collections
import importlib
import linecache
import os
import shutil
import sys
import tempfile
import time

from fidelity_kit import case

RUNS = collections.Counter()
ORIGINAL = '''
from poet_runtime import poet
from cases_source import RUNS


@poet
def version_of(x: int) -> str:
    RUNS["version_of"] += 1
    return f"imported {x!r}"


class Thing:
    @poet
    def label(self) -> str:
        RUNS["Thing.label"] += 1
        return "imported label"
'''
EDITED = ORIGINAL.replace("imported", "EDITED").replace("x: int", "x: str")

_folder = tempfile.mkdtemp(prefix="fidelity-source-")
atexit.register(shutil.rmtree, _folder, True)
_path = os.path.join(_folder, "fidelity_edited_module.py")
with open(_path, "w", encoding="utf-8") as f:
    f.write(ORIGINAL)
sys.path.insert(0, _folder)
try:
    edited_module = importlib.import_module("fidelity_edited_module")
finally:
    sys.path.remove(_folder)
with open(_path, "w", encoding="utf-8") as f:
    f.write(EDITED)
os.utime(_path, (time.time() + 5, time.time() + 5))
linecache.checkcache(_path)


@case(note="the file was edited after import: the function that runs is the one imported")
def edited_after_import(o):
    return {"result": o.call(edited_module.version_of, 3), "str": o.call(edited_module.version_of, "3")}


@case()
def edited_after_import_method(o):
    return {"result": o.call(edited_module.Thing().label)}

"""The function that runs is the one that was imported (issue 15, point 7).

Its source is captured when it is imported (the hook has the module's bytes) or
decorated (``snapshot_source``), never re-read from disk at the first call: a file
edited after import must not change what the first call generates. Checked on real
files in real interpreters: ``python -m poet_runtime script.py`` (the hook, for the
script and the module it imports) and ``poet_runtime.enable(hook=False)`` (no hook),
each with bytecode writing on and off, set explicitly.

What is compared is the version the first call ran: its ``source_hash`` (the version
key's source part) must be the imported text's, and its result the imported logic's.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from hook_helpers import poet, run
from poet_runtime.generate.spec import spec_from_source

MOD = '''\
from poet_runtime import poet
{snap_import}

@poet
{snap}def double(x: int) -> int:
    return x * 2


def make():
    @poet
    {snap_inner}def inner(x: int) -> int:
        return x * 5
    return inner
'''

EDITED_MOD = {"return x * 2": "return x * 3  # edited", "return x * 5": "return x * 7  # edited"}

APP = '''\
import importlib, json, linecache, pathlib, sys
{enable}
import mod
from poet_runtime import poet


@poet
def own(x: int) -> int:
    return x + 1


here = pathlib.Path(__file__).resolve().parent
# Edit both files after import, and make sure linecache would now read the new text.
text = (here / "mod.py").read_text()
for old, new in json.loads(sys.argv[1]).items():
    text = text.replace(old, new)
(here / "mod.py").write_text(text)
script = pathlib.Path(__file__).read_text()
pathlib.Path(__file__).write_text(script.replace("return x " + "+ 1", "return x + 100  # edited"))
linecache.checkcache()

import poet_runtime
from poet_runtime.enhanced import state_of


def first_call(function, argument):
    result = function(argument)
    record, state = poet_runtime.last_execution(), state_of(function)
    version = state.version if state is not None else None
    return {{"result": result, "fell_back": record.fell_back if record else None,
             "reason": record.reason if record else None,
             "source_hash": version.metadata.get("source_hash") if version is not None else None}}


out = {{"double": first_call(mod.double, 4), "inner": first_call(mod.make(), 4)}}
if "{own}" == "yes":
    out["own"] = first_call(own, 4)
if "{reload}" == "yes":  # the module body runs again from the edited file: its new functions are the new text's
    importlib.reload(mod)
    out["reloaded"] = first_call(mod.double, 4)
print("OUT=" + json.dumps(out))
'''


def source_hash(module: str, qualname: str, text: str) -> str:
    return spec_from_source(module, qualname, text, f"{module}.py").source_hash()


def edited(text: str) -> str:
    for old, new in EDITED_MOD.items():
        text = text.replace(old, new)
    return text


def outcome(done) -> dict:
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():
        if line.startswith("OUT="):
            return json.loads(line[len("OUT="):])
    raise AssertionError(f"no OUT line:\n{done.stdout}\n{done.stderr}")


def write(folder, *, hook: bool, snap: bool, reload: bool) -> tuple[str, str]:
    mod = MOD.format(snap_import="from tests_snapshot import snap" if snap else "", snap="@snap\n" if snap else "",
                     snap_inner="@snap\n    " if snap else "")
    app = APP.format(enable="" if hook else "import poet_runtime; poet_runtime.enable(hook=False)",
                     own="yes" if hook else "no", reload="yes" if reload else "no")
    (folder / "mod.py").write_text(mod)
    (folder / "app.py").write_text(app)
    # What the decorator path will call at decoration time, applied by hand until it does.
    (folder / "tests_snapshot.py").write_text(textwrap.dedent('''\
        from poet_runtime.generate.spec import snapshot_source

        def snap(function):
            snapshot_source(function)
            return function
    '''))
    return mod, app


def check_imported(result: dict, text: str, module: str, qualname: str, expected_result) -> None:
    assert result["result"] == expected_result, result
    assert result["source_hash"] == source_hash(module, qualname, text), result
    assert result["source_hash"] != source_hash(module, qualname, edited(text).replace(
        "return x + 1", "return x + 100  # edited")), "the edit must change the key, or the test proves nothing"


def environment(tmp_path) -> dict:
    return {"POET_HOME": str(tmp_path / "home"), "POET_POLICY": "trusted", "POET_GENERATE": "sync"}


@pytest.mark.parametrize("write_bytecode", [True, False], ids=["bytecode", "no-bytecode"])
def test_under_the_hook_the_first_call_generates_from_the_imported_text(tmp_path, write_bytecode):
    mod, app = write(tmp_path, hook=True, snap=False, reload=True)
    # With bytecode writing on, a second run imports mod from the hook's pyc: the text is remembered there too.
    for attempt in range(2 if write_bytecode else 1):
        (tmp_path / "mod.py").write_text(mod)
        (tmp_path / "app.py").write_text(app)
        done = poet(["app.py", json.dumps(EDITED_MOD)], tmp_path, write_bytecode=write_bytecode,
                    **environment(tmp_path / str(attempt)))
        out = outcome(done)
        check_imported(out["double"], mod, "mod", "double", 8)
        check_imported(out["inner"], mod, "mod", "make.<locals>.inner", 20)  # decorated after the edit
        check_imported(out["own"], app, "app", "own", 5)  # the script itself, edited while it runs
        # A reload imports the edited file: the hook remembers that text for the new functions.
        assert out["reloaded"]["result"] == 12
        assert out["reloaded"]["source_hash"] == source_hash("mod", "double", edited(mod))
    assert bool(list((tmp_path / "__pycache__").glob("mod.*.pyc"))) is write_bytecode


@pytest.mark.parametrize("write_bytecode", [True, False], ids=["bytecode", "no-bytecode"])
def test_without_the_hook_a_snapshot_at_decoration_is_what_the_first_call_reads(tmp_path, write_bytecode):
    mod, _ = write(tmp_path, hook=False, snap=True, reload=True)
    out = outcome(run(["app.py", json.dumps(EDITED_MOD)], tmp_path, write_bytecode=write_bytecode,
                      **environment(tmp_path)))
    check_imported(out["double"], mod, "mod", "double", 8)
    check_imported(out["inner"], mod, "mod", "make.<locals>.inner", 20)  # decorated after the edit: not re-read
    # The module body runs again (a reload): its functions were compiled from the edited file.
    assert out["reloaded"]["result"] == 12
    assert out["reloaded"]["source_hash"] == source_hash("mod", "double", edited(mod))


@pytest.mark.parametrize("write_bytecode", [True, False], ids=["bytecode", "no-bytecode"])
def test_without_the_hook_the_decorator_snapshots_the_source(tmp_path, write_bytecode):
    """The runtime enabled in code, a plain ``@poet``: ``enhance_function`` calls ``snapshot_source``."""
    mod, _ = write(tmp_path, hook=False, snap=False, reload=False)
    out = outcome(run(["app.py", json.dumps(EDITED_MOD)], tmp_path, write_bytecode=write_bytecode,
                      **environment(tmp_path)))
    check_imported(out["double"], mod, "mod", "double", 8)
    check_imported(out["inner"], mod, "mod", "make.<locals>.inner", 20)


def test_snapshot_source_reads_once_per_file(tmp_path, monkeypatch):
    import linecache
    import types

    from poet_runtime.generate import sources
    from poet_runtime.generate.spec import snapshot_source

    monkeypatch.setattr(sources, "_texts", {})
    path = tmp_path / "once.py"
    path.write_text("def a():\n    return 1\n\ndef b():\n    return 2\n")
    namespace: dict = {"__name__": "once"}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    reads = []
    real = linecache.getlines
    monkeypatch.setattr(linecache, "getlines", lambda *args: reads.append(args[0]) or real(*args))
    monkeypatch.setattr(linecache, "checkcache", lambda *args: pytest.fail("snapshot_source must not checkcache"))
    snapshot_source(namespace["a"])
    path.write_text("# edited\n")
    snapshot_source(namespace["b"])
    snapshot_source(staticmethod(namespace["b"]))
    snapshot_source(types.SimpleNamespace())  # no code: nothing, no error
    assert reads == [str(path)]
    assert sources.remembered_source(str(path)) == "def a():\n    return 1\n\ndef b():\n    return 2\n"
    assert len(sources._texts) == 1  # one text per file


@pytest.mark.parametrize("ending", ["no-final-newline", "crlf"])
def test_a_version_made_ahead_of_time_has_the_key_the_runtime_looks_for(tmp_path, ending):
    """``enhance`` (CI) reads a file as the runtime does: with generation off, the first call finds the version."""
    text = "from poet_runtime import poet\n\n@poet\ndef half(x: float) -> float:\n    return x / 2"
    data = text.encode() if ending == "no-final-newline" else (text + "\n").replace("\n", "\r\n").encode()
    (tmp_path / "lastline.py").write_bytes(data)
    (tmp_path / "app.py").write_text(
        "import json, lastline, poet_runtime\n"
        "print('OUT=' + json.dumps({'result': lastline.half(3.0), 'reason': poet_runtime.last_execution().reason}))\n")
    env = environment(tmp_path)
    done = poet(["enhance", "lastline.py"], tmp_path, write_bytecode=False, **env)
    assert done.returncode == 0, done.stderr
    out = outcome(poet(["app.py"], tmp_path, write_bytecode=False, **dict(env, POET_GENERATE="off")))
    assert out == {"result": 1.5, "reason": None}

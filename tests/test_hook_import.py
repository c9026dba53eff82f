"""The import hook in real interpreters: what it rewrites, what it leaves alone, and its bytecode cache."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from hook_helpers import PYTHON, RECORD_BINDS, binds_from, child_env, run, write_tree

pytestmark = pytest.mark.slow

DRIVER = RECORD_BINDS + """
import importlib, marshal, sys
import poet_runtime.hook as hook
hook.install(roots=[sys.argv[1]])
for name in sys.argv[2:]:
    module = importlib.import_module(name)
    print(name, type(module.__spec__.loader).__name__, module.__cached__)
"""

PROJECT = {
    "pkg/__init__.py": "",
    "pkg/enhanced.py": """
        import poet_runtime
        from poet_runtime import poet as p

        @p(domain="api_operations")
        def fetch(x):
            return x

        class Model:
            @poet_runtime.poet
            def predict(self, x):
                return x

        def helper():
            return fetch(1)
    """,
    "pkg/plain.py": """
        import os

        def f(x):
            return os.sep + x
    """,
    "pkg/mentions.py": """
        # this module talks about poet but decorates nothing
        def g():
            return "poetry"
    """,
}


def driver(tmp_path, *modules, **kwargs):
    (tmp_path / "driver.py").write_text(DRIVER)
    return run([str(tmp_path / "driver.py"), str(tmp_path), *modules], tmp_path, **kwargs)


def test_rewrites_only_poet_modules(tmp_path):
    write_tree(tmp_path, PROJECT)
    result = driver(tmp_path, "pkg.enhanced", "pkg.plain", "pkg.mentions", "json")
    assert result.returncode == 0, result.stderr
    loaders = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}
    assert loaders == {
        "pkg.enhanced": "PoetLoader",
        "pkg.plain": "SourceFileLoader",  # no "poet" in it: never even parsed
        "pkg.mentions": "PoetLoader",  # mentions poet: parsed, nothing to bind
        "json": "SourceFileLoader",  # stdlib: never
    }
    binds = binds_from(result.stderr)
    assert [(b["module"], b["qualname"], b["lineno"]) for b in binds] == [
        ("pkg.enhanced", "fetch", 4),
        ("pkg.enhanced", "Model.predict", 9),
    ]
    assert binds[0]["source_head"] == '@p(domain="api_operations")'


def test_module_without_poet_gets_the_standard_code_and_pyc(tmp_path):
    write_tree(tmp_path, PROJECT)
    script = RECORD_BINDS + """
import marshal, sys
import poet_runtime.hook as hook
hook.install(roots=[sys.argv[1]])
import pkg.plain
source = open(pkg.plain.__file__, 'rb').read()
reference = compile(source, pkg.plain.__file__, 'exec', dont_inherit=True)
function = next(c for c in reference.co_consts if getattr(c, 'co_name', '') == 'f')
print(marshal.dumps(function) == marshal.dumps(pkg.plain.f.__code__), pkg.plain.__cached__)
"""
    (tmp_path / "check.py").write_text(script)
    result = run([str(tmp_path / "check.py"), str(tmp_path)], tmp_path)
    same, cached = result.stdout.split()
    assert same == "True"
    assert cached.endswith(f"plain.{sys.implementation.cache_tag}.pyc")
    names = os.listdir(tmp_path / "pkg" / "__pycache__")
    assert not [n for n in names if n.startswith("plain.") and "poet" in n]


def test_cache_is_tagged_and_validated_by_source_hash(tmp_path):
    write_tree(tmp_path, PROJECT)
    first = driver(tmp_path, "pkg.enhanced")
    assert first.returncode == 0, first.stderr
    cached = first.stdout.split()[2]
    assert os.path.basename(cached).startswith(f"enhanced.{sys.implementation.cache_tag}.poet-")
    assert os.path.isfile(cached)
    stamp = os.stat(cached).st_mtime_ns
    second = driver(tmp_path, "pkg.enhanced")
    assert binds_from(second.stderr) == binds_from(first.stderr)
    assert os.stat(cached).st_mtime_ns == stamp  # served from the cache, not rewritten

    # Same size, same mtime, different text: an mtime-validated pyc would serve stale code.
    source = tmp_path / "pkg" / "enhanced.py"
    status = os.stat(source)
    text = source.read_text().replace("def fetch(x)", "def fetcX(x)").replace("return fetch(1)", "return fetcX(1)")
    source.write_text(text)
    os.utime(source, ns=(status.st_atime_ns, status.st_mtime_ns))
    third = driver(tmp_path, "pkg.enhanced")
    assert [b["qualname"] for b in binds_from(third.stderr)] == ["fetcX", "Model.predict"]


def test_dont_write_bytecode_and_unwritable_cache_are_respected(tmp_path):
    write_tree(tmp_path, PROJECT)
    result = driver(tmp_path, "pkg.enhanced", "pkg.plain", write_bytecode=False)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "pkg" / "__pycache__").exists()

    (tmp_path / "pkg" / "__pycache__").write_text("a file where the cache folder would go")
    result = driver(tmp_path, "pkg.enhanced")
    assert result.returncode == 0, result.stderr
    assert [b["qualname"] for b in binds_from(result.stderr)] == ["fetch", "Model.predict"]


def test_concurrent_processes_import_a_new_module(tmp_path):
    files = dict(PROJECT)
    body = "".join(f"\n@poet\ndef f{i}(x):\n    return x + {i}\n" for i in range(200))
    files["pkg/big.py"] = "from poet_runtime import poet\n" + body
    write_tree(tmp_path, files)
    (tmp_path / "driver.py").write_text(DRIVER)
    children = [
        subprocess.Popen([PYTHON, str(tmp_path / "driver.py"), str(tmp_path), "pkg.big"], cwd=tmp_path,
                         env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert len(binds_from(err)) == 200
    pycs = glob.glob(str(tmp_path / "pkg" / "__pycache__" / "big.*poet*.pyc"))
    assert len(pycs) == 1
    assert not glob.glob(str(tmp_path / "pkg" / "__pycache__" / "*.tmp"))
    again = driver(tmp_path, "pkg.big")
    assert len(binds_from(again.stderr)) == 200


def test_include_and_exclude_globs(tmp_path):
    write_tree(tmp_path / "project", PROJECT)
    write_tree(tmp_path / "elsewhere", {"lib_mod.py": "from poet_runtime import poet\n@poet\ndef g(): pass\n"})
    env = {"PYTHONPATH": os.pathsep.join([child_env()["PYTHONPATH"], str(tmp_path / "elsewhere")])}
    project = tmp_path / "project"
    default = driver(project, "pkg.enhanced", "lib_mod", env=env)
    assert {b["module"] for b in binds_from(default.stderr)} == {"pkg.enhanced"}  # outside the root: no
    excluded = driver(project, "pkg.enhanced", "lib_mod", env=env, POET_EXCLUDE="pkg.*")
    assert binds_from(excluded.stderr) == []
    included = driver(project, "pkg.enhanced", "lib_mod", env=env, POET_INCLUDE="lib_*")
    assert {b["module"] for b in binds_from(included.stderr)} == {"lib_mod"}


def test_module_imported_before_install_is_noted_once(tmp_path):
    write_tree(tmp_path, PROJECT)
    script = """
import logging, sys
logging.basicConfig(format="%(levelname)s %(message)s")
import pkg.enhanced
import poet_runtime.hook as hook
hook.install(roots=[sys.argv[1]])
hook.note_unhooked("pkg.enhanced")
hook.note_unhooked("pkg.enhanced")
"""
    (tmp_path / "early.py").write_text(script)
    result = run([str(tmp_path / "early.py"), str(tmp_path)], tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "pkg.enhanced" in line]
    assert len(lines) == 1 and lines[0].startswith("WARNING") and "before the import hook" in lines[0]


def test_install_is_idempotent_and_sits_before_path_finder(tmp_path):
    script = """
import sys
from importlib.machinery import PathFinder
import poet_runtime.hook as hook
class Early:
    @classmethod
    def find_spec(cls, *a): return None
sys.meta_path.insert(0, Early)
class Late:  # like an editable install's finder: after PathFinder, asked only for what it misses
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "virtual_mod":
            import importlib.util
            return importlib.util.spec_from_loader(name, loader=None, origin="virtual")
        return None
sys.meta_path.append(Late)
hook.install(); hook.install()
import importlib.util
assert importlib.util.find_spec("virtual_mod").origin == "virtual"
ours = [f for f in sys.meta_path if type(f).__name__ == "PoetFinder"]
print(len(ours), sys.meta_path.index(ours[0]) == sys.meta_path.index(PathFinder) - 1, sys.meta_path[0] is Early, hook.installed())
hook.uninstall()
print(hook.installed(), any(type(f).__name__ == "PoetFinder" for f in sys.meta_path))
"""
    result = run(["-c", script], tmp_path)
    assert result.stdout.split() == ["1", "True", "True", "True", "False", "False"], result.stderr


def test_another_hook_keeps_its_modules(tmp_path):
    """typeguard's import hook (placed first) keeps checking its package; ours rewrites the rest."""
    files = dict(PROJECT)
    files["checked/__init__.py"] = ""
    files["checked/typed.py"] = """
        from poet_runtime import poet

        def typed(x: int) -> int:
            return x
    """
    write_tree(tmp_path, files)
    script = RECORD_BINDS + """
import sys
import poet_runtime.hook as hook
hook.install(roots=[sys.argv[1]])
from typeguard import install_import_hook
install_import_hook(["checked"])
import checked.typed, pkg.enhanced
try:
    checked.typed.typed("not an int")
    print("unchecked")
except Exception as error:
    print(type(error).__name__)
"""
    (tmp_path / "both.py").write_text(script)
    result = run([str(tmp_path / "both.py"), str(tmp_path)], tmp_path)
    assert result.stdout.strip() == "TypeCheckError", result.stderr
    assert {b["module"] for b in binds_from(result.stderr)} == {"pkg.enhanced"}


def test_threads_importing_at_once(tmp_path):
    files = dict(PROJECT)
    for i in range(8):
        files[f"pkg/t{i}.py"] = f"from poet_runtime import poet\n@poet\ndef f{i}(): pass\n"
        files[f"pkg/u{i}.py"] = f"def g{i}(): pass\n"
    write_tree(tmp_path, files)
    script = RECORD_BINDS + """
import sys, threading, importlib
import poet_runtime.hook as hook
hook.install(roots=[sys.argv[1]])
barrier = threading.Barrier(8)
errors = []
def work(i):
    barrier.wait()
    try:
        for name in (f"pkg.t{i}", f"pkg.u{i}", "pkg.enhanced", f"pkg.t{(i + 1) % 8}"):
            importlib.import_module(name)
    except BaseException as error:
        errors.append(error)
threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print(errors)
"""
    (tmp_path / "threads.py").write_text(script)
    for _ in range(2):  # cold, then warm from the cache and scan index the threads wrote
        result = run([str(tmp_path / "threads.py"), str(tmp_path)], tmp_path)
        assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
        names = sorted((b["module"], b["qualname"]) for b in binds_from(result.stderr))
        assert names == sorted([(f"pkg.t{i}", f"f{i}") for i in range(8)]
                               + [("pkg.enhanced", "fetch"), ("pkg.enhanced", "Model.predict")])


def test_default_root_follows_sys_path0_and_skips_console_script_folders(tmp_path, monkeypatch):
    from poet_runtime.hook.select import Selection

    project = tmp_path / "project"
    (project / "pkg").mkdir(parents=True)
    monkeypatch.chdir(project)
    selection = Selection()
    monkeypatch.setattr(sys, "path", [str(project), *sys.path[1:]])
    assert selection.selects("pkg.mod", str(project / "pkg" / "mod.py"))
    assert not selection.selects("json", os.path.join(os.path.dirname(os.__file__), "json", "__init__.py"))
    assert not selection.selects("poet_runtime.cli", sys.modules["poet_runtime"].__file__)
    # A console script in the environment's bin folder: the project is the current directory.
    monkeypatch.setattr(sys, "path", [os.path.join(sys.prefix, "bin"), *sys.path[1:]])
    assert selection.selects("pkg.mod", str(project / "pkg" / "mod.py"))
    other = tmp_path / "other"
    monkeypatch.setattr(sys, "path", [str(other), *sys.path[1:]])
    assert not selection.selects("pkg.mod", str(project / "pkg" / "mod.py"))
    excluded = Selection(exclude=("pkg.*",))
    assert not excluded.selects("pkg", str(project / "pkg" / "__init__.py"))


def test_pyproject_tool_poet_selects_too(tmp_path):
    files = dict(PROJECT)
    files["pyproject.toml"] = '[tool.poet]\nexclude = ["pkg.enhanced"]\n'
    write_tree(tmp_path, files)
    result = driver(tmp_path, "pkg.enhanced", "pkg.mentions")
    assert result.returncode == 0, result.stderr
    assert binds_from(result.stderr) == []
    assert "pkg.enhanced SourceFileLoader" in result.stdout and "pkg.mentions PoetLoader" in result.stdout
    # The environment wins over the file, as for every setting.
    result = driver(tmp_path, "pkg.enhanced", POET_EXCLUDE="nothing")
    assert [b["qualname"] for b in binds_from(result.stderr)] == ["fetch", "Model.predict"]

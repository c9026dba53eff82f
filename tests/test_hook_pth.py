"""``POET_ENABLED=1 python app.py``: activation through the installed ``.pth`` file, and its packaging."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from hook_helpers import REPO, RECORD_BINDS, pth_python, run, write_tree

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def python(tmp_path_factory):
    return pth_python(tmp_path_factory.mktemp("pth"))


PROJECT = {
    "app.py": RECORD_BINDS + """
import subprocess, sys
import helpers
import poet_runtime.hook as hook
print("installed", hook.installed(), helpers.triple(1))
if "--child" not in sys.argv:
    subprocess.run([sys.executable, __file__, "--child"], check=True)
""",
    "helpers.py": """
        from poet_runtime import poet

        @poet(domain="api_operations")
        def triple(x):
            return 3 * x
    """,
}


def test_env_var_turns_the_hook_on_in_this_process_and_its_children(tmp_path, python):
    write_tree(tmp_path, PROJECT)
    result = run(["app.py"], tmp_path, python=python, POET_ENABLED="1", POET_HOME=str(tmp_path / "home"),
                 POET_POLICY="trusted")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["installed True 3", "installed True 3"]
    binds = [line for line in result.stderr.splitlines() if line.startswith("BINDS=")]
    assert len(binds) == 2  # parent and child each bound helpers.triple
    assert all('"helpers"' in line and '"triple"' in line for line in binds)


def test_unset_costs_an_environment_lookup_only(tmp_path, python):
    code = "import sys; print('poet_runtime' in sys.modules)"
    for value in (None, "0", "false", ""):
        extra = {} if value is None else {"POET_ENABLED": value}
        result = run(["-c", code], tmp_path, python=python, **extra)
        assert result.stdout.strip() == "False" and result.stderr == "", (value, result.stderr)


def test_bad_setting_is_reported_once_and_the_program_still_runs(tmp_path, python):
    write_tree(tmp_path, {"app.py": "import sys; print('ran', 'poet_runtime.hook.finder' in sys.modules)"})
    result = run(["app.py"], tmp_path, python=python, POET_ENABLED="maybe")
    assert result.returncode == 0 and result.stdout.strip() == "ran False"
    assert result.stderr.count("POET_ENABLED") == 1 and "continuing without POET" in result.stderr
    result = run(["app.py"], tmp_path, python=python, POET_ENABLED="1", POET_GENERATE="later")
    assert result.returncode == 0 and "POET_GENERATE" in result.stderr


def test_half_installed_package_does_not_break_python(tmp_path):
    """The .pth left behind without an importable package: one line on stderr, program unharmed."""
    import venv

    from poet_runtime.hook.activate import PTH_LINE, PTH_NAME

    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(target)
    python = str(target / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(purelib, PTH_NAME), "w") as handle:
        handle.write(PTH_LINE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",) and not k.startswith("POET_")}
    env["POET_ENABLED"] = "1"
    result = subprocess.run([python, "-c", "print('still here')"], env=env, capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "still here"
    assert "could not start" in result.stderr and "ModuleNotFoundError" in result.stderr
    assert result.stderr.count("could not start") == 1  # although site runs a venv's .pth files twice


def test_wheels_ship_the_pth_file(tmp_path):
    """Both the regular and the editable wheel carry the .pth at their root, listed in RECORD.

    Each hook runs in a fresh copy of the tree and a fresh process, as pip runs them.
    """
    from poet_runtime.hook.activate import PTH_LINE, PTH_NAME

    for hook in ("build_wheel", "build_editable"):
        source = tmp_path / f"src-{hook}"
        source.mkdir()
        for name in ("pyproject.toml", "README.md", "setup.py"):  # setup.py computes the package list
            if (REPO / name).exists():
                shutil.copy(REPO / name, source / name)
        for folder in ("poet_runtime", "sandbox", "policies", "_pth_build"):
            shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", ".poet"))
        script = f"import sys; sys.path.insert(0, '_pth_build'); import poet_build as b; print('WHEEL=' + b.{hook}(sys.argv[1]))"
        result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out")], cwd=source,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        wheel = next(line[6:] for line in result.stdout.splitlines() if line.startswith("WHEEL="))
        with zipfile.ZipFile(tmp_path / "out" / wheel) as archive:
            assert archive.read(PTH_NAME).decode() == PTH_LINE
            record = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
            assert any(line.startswith(PTH_NAME + ",sha256=") for line in archive.read(record).decode().splitlines())
            if hook == "build_wheel":
                assert "poet_runtime/commands/run.py" in archive.namelist()

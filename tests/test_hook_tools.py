"""Other tools keep working with the hook on: pytest (assertion rewriting) and coverage."""

from __future__ import annotations

import json

import pytest

from hook_helpers import RECORD_BINDS, binds_from, pth_python, poet, run, write_tree

pytestmark = pytest.mark.slow

PROJECT = {
    "calc.py": """
        from poet_runtime import poet

        @poet(domain="api_operations")
        def add(a, b):
            return a + b

        def unused():
            return "never called"
    """,
    "test_calc.py": """
        import calc
        import poet_runtime.hook as hook

        def test_hook_is_on_and_module_rewritten():
            assert hook.installed()
            assert type(calc.__spec__.loader).__name__ == "PoetLoader"

        def test_assertion_rewriting_still_explains():
            result = calc.add(1, 1)
            assert result == 3
    """,
    "app.py": """
        import calc
        print(calc.add(2, 3))
    """,
}


def _check_pytest_output(result):
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 1 passed" in result.stdout
    assert "assert 2 == 3" in result.stdout  # pytest's rewriter kept the test module


def test_pytest_under_the_runner(tmp_path):
    write_tree(tmp_path, PROJECT)
    result = poet(["--quiet", "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_calc.py"], tmp_path,
                  POET_HOME=str(tmp_path / "home"), POET_POLICY="trusted")
    _check_pytest_output(result)


def test_pytest_with_the_env_var(tmp_path, tmp_path_factory):
    python = pth_python(tmp_path_factory.mktemp("pth-pytest"))
    write_tree(tmp_path, PROJECT)
    result = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_calc.py"], tmp_path, python=python,
                 POET_ENABLED="1", POET_HOME=str(tmp_path / "home"), POET_POLICY="trusted")
    _check_pytest_output(result)


def test_coverage_measures_rewritten_modules(tmp_path):
    write_tree(tmp_path, PROJECT)
    (tmp_path / "app.py").write_text(RECORD_BINDS + (tmp_path / "app.py").read_text())
    env = dict(POET_HOME=str(tmp_path / "home"), POET_POLICY="trusted")
    result = run(["-m", "coverage", "run", "--source=.", "-m", "poet_runtime", "--quiet", "app.py"], tmp_path, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "5"
    assert [b["qualname"] for b in binds_from(result.stderr)] == ["add"]
    report = run(["-m", "coverage", "json", "-o", "cov.json"], tmp_path)
    assert report.returncode == 0, report.stderr
    files = json.loads((tmp_path / "cov.json").read_text())["files"]
    calc = files["calc.py"]
    # Line numbers are the source's: the module's statements and both defs ran (at their own lines),
    # the body of unused did not. (The body of add runs as the enhancement's copy in .poet/.)
    assert {1, 3, 4, 7} <= set(calc["executed_lines"]) and 8 in calc["missing_lines"]
    assert "app.py" in files

"""``python -m poet_runtime app.py`` must look to the program exactly like ``python app.py``."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from hook_helpers import PYTHON, RECORD_BINDS, binds_from, child_env, poet, run, write_tree

pytestmark = pytest.mark.slow

INTROSPECT = """
import sys
loader = globals().get("__loader__")
print(sorted(k for k in globals() if k.startswith("__")))
print(repr(__name__), repr(__file__), repr(__package__), repr(__cached__))
print(repr(__spec__ and (__spec__.name, __spec__.origin, __spec__.parent)))
print(type(loader).__name__, getattr(loader, "name", None), getattr(loader, "path", None))
print(sys.argv)
print(sys.path[0])
print(sys._getframe().f_code.co_filename)
if __name__ == "__main__":
    print("main block")
"""

PROJECT = {
    "app.py": INTROSPECT,
    "pkg/__init__.py": "",
    "pkg/mod.py": "from . import sibling\n" + INTROSPECT + "print(sibling.VALUE)\n",
    "pkg/sibling.py": "VALUE = 'relative import ok'\n",
    "pkg/__main__.py": INTROSPECT,
    "sub/tool.py": INTROSPECT,
}


@pytest.fixture
def project(tmp_path):
    return write_tree(tmp_path, PROJECT)


@pytest.mark.parametrize(
    "target",
    [["app.py", "a", "--verbose"], ["sub/tool.py", "x"], ["-m", "pkg.mod", "-q", "b"], ["-m", "pkg", "c"]],
)
def test_program_sees_what_python_gives_it(project, target):
    expected = run(target, project)
    actual = poet(["--quiet", *target], project)
    assert actual.returncode == expected.returncode == 0, actual.stderr
    assert actual.stdout == expected.stdout
    assert "main block" in actual.stdout


def test_exit_codes(tmp_path):
    write_tree(tmp_path, {
        "code.py": "import sys; sys.exit(3)",
        "message.py": "import sys; sys.exit('bye')",
        "none.py": "import sys; sys.exit()",
    })
    for name, code in (("code.py", 3), ("message.py", 1), ("none.py", 0)):
        expected, actual = run([name], tmp_path), poet(["--quiet", name], tmp_path)
        assert (actual.returncode, actual.stderr) == (expected.returncode, expected.stderr) == (code, expected.stderr)


def test_uncaught_exception_shows_the_normal_traceback(tmp_path):
    write_tree(tmp_path, {
        "app.py": """
            import helper

            def main():
                helper.fail()

            main()
        """,
        "helper.py": """
            def fail():
                try:
                    {}["missing"]
                except KeyError as error:
                    raise ValueError("boom") from error
        """,
    })
    expected, actual = run(["app.py"], tmp_path), poet(["--quiet", "app.py"], tmp_path)
    assert actual.returncode == expected.returncode == 1
    assert actual.stderr == expected.stderr
    assert "poet_runtime" not in actual.stderr


def test_module_traceback_hides_our_frames(project):
    (project / "pkg" / "bad.py").write_text("raise RuntimeError('in module')\n")
    result = poet(["--quiet", "-m", "pkg.bad"], project)
    assert result.returncode == 1
    assert "poet_runtime" not in result.stderr and "runpy" not in result.stderr
    assert result.stderr.strip().endswith("RuntimeError: in module")


def test_user_excepthook_gets_the_trimmed_traceback(tmp_path):
    write_tree(tmp_path, {"app.py": """
        import sys, traceback
        def hook(kind, value, tb):
            print("HOOK", [f.name for f in traceback.extract_tb(tb)], file=sys.stderr)
        sys.excepthook = hook
        def f():
            raise ValueError
        f()
    """})
    result = poet(["--quiet", "app.py"], tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "HOOK ['<module>', 'f']"


def test_keyboard_interrupt_and_signals_behave_as_in_python(tmp_path):
    write_tree(tmp_path, {
        "interrupt.py": "raise KeyboardInterrupt",
        "wait.py": """
            import sys, time
            print("ready", flush=True)
            time.sleep(30)
        """,
    })
    expected, actual = run(["interrupt.py"], tmp_path), poet(["--quiet", "interrupt.py"], tmp_path)
    assert actual.returncode == expected.returncode == -signal.SIGINT
    assert actual.stderr == expected.stderr
    for signum in (signal.SIGINT, signal.SIGTERM):
        child = subprocess.Popen([PYTHON, "-m", "poet_runtime", "--quiet", "wait.py"], cwd=tmp_path, env=child_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout.readline() == "ready\n"
        child.send_signal(signum)
        _, err = child.communicate(timeout=30)
        assert child.returncode == -signum
        if signum == signal.SIGINT:
            assert err.strip().endswith("KeyboardInterrupt") and "poet_runtime" not in err


def test_stdin_and_stdout_pass_through(tmp_path):
    write_tree(tmp_path, {"echo.py": "import sys\nfor line in sys.stdin:\n    sys.stdout.write(line.upper())\n"})
    result = poet(["--quiet", "echo.py"], tmp_path, input="hello\nworld\n")
    assert result.stdout == "HELLO\nWORLD\n"


def test_script_functions_are_bound_with_the_script_module_name(tmp_path):
    write_tree(tmp_path, {"app.py": RECORD_BINDS + """
from poet_runtime import poet

@poet
def f(x):
    return x

if __name__ == "__main__":
    print(f(2))
"""})
    result = poet(["--quiet", "app.py"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"
    line = (tmp_path / "app.py").read_text().splitlines().index("@poet") + 1
    assert [(b["module"], b["qualname"], b["lineno"]) for b in binds_from(result.stderr)] == [("app", "f", line)]


def test_summary_and_real_enhancement(tmp_path):
    write_tree(tmp_path, {
        "app.py": """
            from poet_runtime import poet
            import helpers

            @poet(domain="api_operations")
            def double(x: int) -> int:
                return 2 * x

            print(double(2), helpers.triple(3))
        """,
        "helpers.py": """
            from poet_runtime import poet

            @poet(domain="api_operations")
            def triple(x: int) -> int:
                return 3 * x
        """,
    })
    result = poet(["app.py"], tmp_path, POET_HOME=str(tmp_path / "home"), POET_POLICY="trusted")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "4 9"
    summary = [line for line in result.stderr.splitlines() if line.startswith("poet:")]
    assert summary and "2 functions enhanced, 2 calls" in summary[0], result.stderr
    assert "helpers:triple" in result.stderr
    quiet = poet(["--quiet", "app.py"], tmp_path, POET_HOME=str(tmp_path / "home"), POET_POLICY="trusted")
    assert quiet.stderr == "" and quiet.stdout.strip() == "4 9"


def test_options_are_exported_to_children(tmp_path):
    write_tree(tmp_path, {"parent.py": """
        import os, subprocess, sys
        names = ["POET_ENABLED", "POET_MODEL", "POET_GENERATE", "POET_INCLUDE", "POET_EXCLUDE", "POET_LOG", "POET_POLICY"]
        code = "import os; print([os.environ.get(n) for n in %r])" % names
        subprocess.run([sys.executable, "-c", code], check=True)
    """})
    (tmp_path / "p.toml").write_text("")
    result = poet(["--quiet", "--model", "m1", "--generate", "off", "--include", "a.*,b", "--exclude", "c",
                   "--policy", "trusted", "parent.py"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(["1", "m1", "off", "a.*,b", "c", "quiet", "trusted"])


def test_bad_settings_stop_the_runner_naming_the_variable(tmp_path):
    write_tree(tmp_path, {"app.py": "print('ran')"})
    result = poet(["--generate", "sometimes", "app.py"], tmp_path)
    assert result.returncode == 2 and "POET_GENERATE" in result.stderr and "ran" not in result.stdout
    result = poet(["app.py"], tmp_path, POET_GENERATION_TIMEOUT="soon")
    assert result.returncode == 2 and "POET_GENERATION_TIMEOUT" in result.stderr


def test_missing_program(tmp_path):
    expected, actual = run(["nope.py"], tmp_path), poet(["nope.py"], tmp_path)
    assert actual.returncode == expected.returncode == 2
    assert actual.stderr == expected.stderr
    expected, actual = run(["-m", "nope.mod"], tmp_path), poet(["-m", "nope.mod"], tmp_path)
    assert actual.returncode == expected.returncode == 1
    assert actual.stderr == expected.stderr


def test_folder_and_zip_with_main_and_double_dash(project):
    import zipfile

    (project / "bundle").mkdir()
    (project / "bundle" / "__main__.py").write_text(INTROSPECT)
    with zipfile.ZipFile(project / "bundle.zip", "w") as archive:
        archive.write(project / "bundle" / "__main__.py", "__main__.py")
    for target in (["bundle", "x"], ["bundle.zip", "y"]):
        expected, actual = run(target, project), poet(["--quiet", *target], project)
        assert actual.returncode == expected.returncode == 0, actual.stderr
        # The module's own repr of its loader differs (ours may be the rewriting one); the rest is equal.
        drop = lambda text: [line for line in text.splitlines() if "Loader" not in line and "ModuleSpec" not in line]
        assert drop(actual.stdout) == drop(expected.stdout)
    dashed = poet(["--quiet", "--", "app.py", "--quiet"], project)
    assert dashed.returncode == 0 and "['app.py', '--quiet']" in dashed.stdout


def test_syntax_error_in_the_script_reads_as_in_python(tmp_path):
    write_tree(tmp_path, {"bad.py": "from poet_runtime import poet\ndef f(:\n    pass\n"})
    expected, actual = run(["bad.py"], tmp_path), poet(["--quiet", "bad.py"], tmp_path)
    assert actual.returncode == expected.returncode == 1
    assert actual.stderr == expected.stderr


def test_script_uses_the_store_written_ahead_of_time(tmp_path):
    """`enhance app.py` and `python -m poet_runtime app.py` must name the script's functions alike."""
    write_tree(tmp_path, {"app.py": """
        from poet_runtime import poet

        @poet(domain="api_operations")
        def double(x: int) -> int:
            return 2 * x

        print(double(4))
    """})
    home = {"POET_HOME": str(tmp_path / "home"), "POET_POLICY": "trusted"}
    assert poet(["enhance", "app.py"], tmp_path, **home).returncode == 0
    result = poet(["app.py"], tmp_path, **home)
    assert result.returncode == 0 and result.stdout.strip() == "8", result.stderr
    assert "app:double" in result.stderr
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["app.double"]

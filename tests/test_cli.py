"""The command line: help, and the store commands (enhance, status, show, versions, rollback)."""

from __future__ import annotations

import time

import pytest

from hook_helpers import poet, run, write_tree

pytestmark = pytest.mark.slow

PROJECT = {
    "app.py": """
        from poet_runtime import poet
        import pathlib
        pathlib.Path("EXECUTED").write_text("the module ran")

        @poet(domain="api_operations", retries=2)
        def fetch(url: str) -> str:
            return url.upper()

        TIMEOUT = 3

        @poet(domain="api_operations", timeout=TIMEOUT)
        def dynamic(x):
            return x
    """,
    "pkg/__init__.py": "",
    "pkg/model.py": """
        import poet_runtime

        class Model:
            @poet_runtime.poet(domain="ml_monitoring")
            def predict(self, x: float) -> float:
                return x * 2
    """,
    "pkg/broken.py": """
        from poet_runtime import poet

        @poet(domain="no_such_domain")
        def bad(x):
            return x
    """,
}


@pytest.fixture
def project(tmp_path):
    return write_tree(tmp_path, PROJECT)


def test_help_is_fast_and_complete(tmp_path):
    started = time.perf_counter()
    result = poet(["--help"], tmp_path)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0
    for word in ("--policy", "--model", "--generate", "--include", "--exclude", "--quiet", "--verbose",
                 "enhance", "show", "versions", "rollback", "status", "run", "POET_ENABLED"):
        assert word in result.stdout, word
    assert elapsed < 5
    check = run(["-c", "import sys; from poet_runtime.cli import main; main(['--help']); "
                       "print('rich' in sys.modules, 'litellm' in sys.modules, 'wasmtime' in sys.modules)"], tmp_path)
    assert check.stdout.strip().splitlines()[-1] == "False False False"


def test_enhance_status_show_versions_rollback(project):
    home = {"POET_HOME": str(project / "home")}
    before = poet(["status", "."], project, **home)
    assert before.returncode == 0, before.stderr
    assert "not generated" in before.stdout and "app:fetch" in before.stdout

    enhanced = poet(["enhance", "app.py", "pkg"], project, **home)
    assert enhanced.returncode == 1, enhanced.stdout + enhanced.stderr  # pkg.broken fails
    rows = {line.split("│")[1].strip(): line for line in enhanced.stdout.splitlines() if line.count("│") >= 4}
    assert "generated" in rows["app:fetch"] and "v1" in rows["app:fetch"]
    assert "generated" in rows["pkg.model:Model.predict"]
    assert "skipped" in rows["app:dynamic"] and "timeout" in rows["app:dynamic"]
    assert "failed" in rows["pkg.broken:bad"]
    assert not (project / "EXECUTED").exists()  # found statically, never imported

    again = poet(["enhance", "app.py"], project, **home)
    assert "up to date" in again.stdout

    status = poet(["status"], project, **home)
    assert "up to date" in status.stdout

    shown = poet(["show", "app:fetch"], project, **home)
    assert shown.returncode == 0 and "def perceive" in shown.stdout

    assert "url.upper()" not in shown.stdout  # contract 2: the logic is not copied into the module

    # Change the function's body: status says stale and enhance makes v2, whose code is v1's (the
    # module holds only the phases; operate_prime calls the function itself).
    source = project / "app.py"
    source.write_text(source.read_text().replace("url.upper()", "url.lower()"))
    assert "stale" in poet(["status"], project, **home).stdout
    assert "generated" in poet(["enhance", "app.py"], project, **home).stdout
    same = poet(["show", "app:fetch", "--diff"], project, **home)
    assert same.returncode == 0 and "(no difference between v1 and v2)" in same.stdout
    # Change what the phases depend on (a decorator argument): v3 differs, diff and rollback work.
    source.write_text(source.read_text().replace("retries=2", "retries=4"))
    assert "stale" in poet(["status"], project, **home).stdout
    assert "generated" in poet(["enhance", "app.py"], project, **home).stdout
    diff = poet(["show", "app:fetch", "--diff"], project, **home)
    assert diff.returncode == 0 and "v2" in diff.stdout and "v3" in diff.stdout
    assert "-    'retries': {'default': 2" in diff.stdout and "+    'retries': {'default': 4" in diff.stdout
    versions = poet(["versions", "app:fetch"], project, **home)
    assert "* v3" in versions.stdout and "v2" in versions.stdout and "v1" in versions.stdout
    back = poet(["rollback", "app:fetch"], project, **home)
    assert back.returncode == 0 and "v2" in back.stdout
    assert "* v2" in poet(["versions", "app.py:fetch"], project, **home).stdout
    assert poet(["show", "app:fetch", "--version", "3"], project, **home).returncode == 0


def test_store_commands_report_problems(project):
    home = {"POET_HOME": str(project / "home")}
    missing = poet(["show", "app:nothing"], project, **home)
    assert missing.returncode == 1 and "app:nothing: no current version" in missing.stderr
    assert poet(["versions", "no-colon"], project, **home).returncode == 2
    assert poet(["enhance", "does_not_exist"], project, **home).returncode == 1

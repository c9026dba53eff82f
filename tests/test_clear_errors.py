"""Clear errors from the command line (issue 12, item 12), through real ``python -m poet_runtime`` processes.

An unknown ``events --type`` or a ``policy explain`` target that names no function is an
error (status 2) naming the value and the known ones, never a silent success.
"""

from __future__ import annotations

import pytest

from hook_helpers import poet, write_tree

pytestmark = pytest.mark.slow

APP = {
    "app.py": """
        from poet_runtime import poet

        @poet(domain="api_operations")
        def total(items):
            return sum(items)

        class Billing:
            @poet
            def charge(self, amount):
                return amount
    """,
}


def test_an_unknown_event_type_is_an_error_naming_the_known_ones(tmp_path):
    write_tree(tmp_path, APP)
    home = str(tmp_path / "home")
    result = poet(["events", "--type", "???"], tmp_path, POET_HOME=home)
    assert result.returncode == 2 and result.stdout == ""
    assert "'???'" in result.stderr and "function.execution" in result.stderr and "learning" in result.stderr
    result = poet(["events", "--type", "function.execution", "--type", "functon.feedback"], tmp_path, POET_HOME=home)
    assert result.returncode == 2 and "'functon.feedback'" in result.stderr
    assert "'function.execution'" not in result.stderr
    for good in ("function.execution", "learning", "learning.*", "version.promoted"):
        result = poet(["events", "--type", good], tmp_path, POET_HOME=home)
        assert result.returncode == 0, (good, result.stderr)


def test_policy_explain_of_a_function_that_does_not_exist_is_an_error(tmp_path):
    write_tree(tmp_path, APP)
    result = poet(["policy", "explain", "nosuch:fn"], tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert "'nosuch:fn'" in result.stderr and "app:total" in result.stderr and "app:Billing.charge" in result.stderr
    result = poet(["policy", "explain", "app:totl"], tmp_path)
    assert result.returncode == 2 and "'totl'" in result.stderr and "Billing.charge, total" in result.stderr
    for good in ("app:total", "app:Billing.charge", "app.py:total"):
        result = poet(["policy", "explain", good], tmp_path)
        assert result.returncode == 0 and "backend" in result.stdout, (good, result.stderr)


# -- issue 12, item 10: a read-only store or a full disk is one line per cause, never a traceback ----

WRITER = """
import sys, time
import poet_runtime
from poet_runtime import poet

@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
def detect(score: float, threshold: float = 0.5) -> dict:
    return {"drift_detected": score > threshold, "score": score, "pad": "x" * 200}

answers = set()
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:  # several flush rounds
    for i in range(200):
        answers.add(detect(i / 200.0)["drift_detected"])
    time.sleep(0.01)
try:
    detect.feedback(label=True)
except poet_runtime.PoetError as error:
    print("feedback refused:", error)
print("answers", sorted(answers))
"""


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real tmpfs of 1 MiB (as root); skipped where mounting is not allowed."""
    import subprocess

    mount = tmp_path / "mnt"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mount)], capture_output=True)
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _write_lines(stderr: str, where: str) -> list[str]:
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if "cannot write events" in line and where in line]


def test_a_read_only_store_is_one_line_naming_the_path_never_a_traceback(tmp_path, small_tmpfs):
    import subprocess

    write_tree(tmp_path, {"app.py": WRITER})
    home = small_tmpfs / "home"
    first = poet(["run", "app.py", "0.1"], tmp_path, POET_HOME=str(home))  # the version, some events
    assert first.returncode == 0 and "Traceback" not in first.stderr, first.stderr
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    result = poet(["run", "app.py", "0.6"], tmp_path, POET_HOME=str(home))
    assert result.returncode == 0, result.stderr
    assert "answers [False, True]" in result.stdout
    lines = _write_lines(result.stderr, str(home / "events"))
    assert len(lines) == 1, result.stderr  # once per cause, not once per flush round
    assert "EROFS" in lines[0]


def test_a_full_disk_is_one_line_naming_the_path_and_the_program_runs_on(tmp_path, small_tmpfs):
    write_tree(tmp_path, {"app.py": WRITER})
    home = small_tmpfs / "home"
    first = poet(["run", "app.py", "0.05"], tmp_path, POET_HOME=str(home))
    assert first.returncode == 0, first.stderr
    filler = small_tmpfs / "filler"
    import os

    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk up to its last bytes
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    result = poet(["run", "app.py", "0.6"], tmp_path, POET_HOME=str(home))
    assert result.returncode == 0, result.stderr
    assert "answers [False, True]" in result.stdout
    lines = _write_lines(result.stderr, str(home / "events"))
    assert len(lines) == 1 and "ENOSPC" in lines[0], result.stderr

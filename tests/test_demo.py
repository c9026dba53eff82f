"""The README's demo runs end to end, enhanced under the default policy, and differs from the plain run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "examples" / "ml_monitoring" / "app.py"


def run(args, tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("POET_")}
    env.update(POET_HOME=str(tmp_path / "home"), POET_CACHE_DIR=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)


def test_demo_under_the_runner_is_enhanced_in_the_restricted_sandbox(tmp_path):
    result = run(["-m", "poet_runtime", str(APP)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "detect_drift runs enhanced by POET" in result.stdout
    assert "failed" not in result.stdout
    assert result.stdout.count("DRIFT") == 2  # days 4 and 5 shift the mean; the others do not
    assert "on backend restricted, status ok" in result.stdout
    assert "6 enhanced, 0 fell back" in result.stderr  # the runner's exit summary
    assert (tmp_path / "home" / "app.detect_drift" / "v1" / "code.py").is_file()


def test_demo_without_poet_shows_what_the_enhancement_repairs(tmp_path):
    result = run([str(APP)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "plain (POET is off)" in result.stdout
    assert result.stdout.count("failed") == 6  # missing readings break the plain statistics


def test_api_operations_example_runs_enhanced(tmp_path):
    app = REPO / "examples" / "api_operations" / "app.py"
    result = run(["-m", "poet_runtime", str(app)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "fetch_quote runs enhanced by POET" in result.stdout and "of 8 fetches failed" in result.stdout
    assert "8 calls" in result.stderr
    # A fetch the retries could not save is the user's own ConnectionError: in the worker sandbox it is
    # re-raised by running the original (reason user_error_rerun), never a failure of ours.
    for ours in ("sandbox_error", "runtime_error", "violation", "_error x", "rejected"):
        assert ours not in result.stderr.replace("user_error_rerun", ""), result.stderr

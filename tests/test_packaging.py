"""Packaging: every package on disk is shipped, and a non-editable wheel carries sandbox/ and policies/."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(path.relative_to(REPO).parts[:-1])
        for path in (REPO / "poet_runtime").rglob("__init__.py")
    }
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages"


@pytest.mark.slow
def test_wheel_ships_the_sandbox_library_policies_and_domains(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("poet_runtime-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "poet_runtime/_data/sandbox/poet_sandbox/driver.py",
        "poet_runtime/_data/sandbox/poet_sandbox/validate.py",
        # contract 2: generated code imports timeouts; validate and the harnesses need crossing and wire
        "poet_runtime/_data/sandbox/poet_sandbox/timeouts.py",
        "poet_runtime/_data/sandbox/poet_sandbox/crossing.py",
        "poet_runtime/_data/sandbox/poet_sandbox/wire.py",
        "poet_runtime/domains/ml_monitoring/domain.toml",
    ):
        assert required in names, required
    for folder in ("poet_sandbox", "harness"):  # every module of the facility and of the sandboxes' harness
        for module in sorted((REPO / "sandbox" / folder).glob("*.py")):
            assert f"poet_runtime/_data/sandbox/{folder}/{module.name}" in names, module.name
    for policy in sorted((REPO / "policies").glob("*.toml")):
        assert f"poet_runtime/_data/policies/{policy.name}" in names, policy.name

"""Packaging: every package on disk is shipped without a hand-kept list, and a non-editable wheel carries sandbox/ and policies/."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
    # Nothing is listed by hand: every package folder and every domain's files ship.
    for init in sorted((REPO / "poet_runtime").rglob("__init__.py")):
        assert init.relative_to(REPO).as_posix() in names, init
    for domain_file in sorted((REPO / "poet_runtime" / "domains").glob("*/*.t[ox][mt]*")):
        assert domain_file.relative_to(REPO).as_posix() in names, domain_file
    for policy in sorted((REPO / "policies").glob("*.toml")):
        assert f"poet_runtime/_data/policies/{policy.name}" in names, policy.name

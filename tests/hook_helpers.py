"""Shared helpers for the hook, runner and CLI tests: real interpreters on real files in tmp folders.

Why subprocesses: the hook changes ``sys.meta_path``, ``__main__``, ``sys.argv`` and the
exit path, none of which a test can observe honestly inside pytest's own process.
The child sees the repository on ``PYTHONPATH`` (whether or not the package is
installed), no inherited ``POET_*`` variables, and an explicit bytecode policy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def child_env(write_bytecode: bool = True, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POET_", "COVERAGE_", "PYTEST_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if not write_bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("XDG_CACHE_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / "poet-test-cache"))
    env.update(extra)
    return env


def run(args, cwd, *, python: str = PYTHON, write_bytecode: bool = True, env: dict | None = None,
        input: str | None = None, timeout: float = 120, **extra_env: str) -> subprocess.CompletedProcess:
    environment = child_env(write_bytecode, **extra_env)
    if env:
        environment.update(env)
    return subprocess.run(
        [python, *args], cwd=str(cwd), env=environment, input=input, capture_output=True, text=True, timeout=timeout
    )


def poet(args, cwd, **kwargs) -> subprocess.CompletedProcess:
    """``python -m poet_runtime ARGS`` in ``cwd``."""
    return run(["-m", "poet_runtime", *args], cwd, **kwargs)


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return root


# A stand-in for the core's bind that records what the hook passed, printed at exit.
RECORD_BINDS = """
import atexit, json, sys
import poet_runtime.hook.binding as _binding
_calls = []
def _record(obj, **identity):
    _calls.append({k: v for k, v in identity.items() if k != "source"} | {"source_head": identity["source"].splitlines()[0]})
    obj.__poet_identity__ = identity
    return obj
_binding._core_bind = _record
atexit.register(lambda: print("BINDS=" + json.dumps(_calls), file=sys.stderr))
"""


def binds_from(stderr: str) -> list[dict]:
    import json

    for line in stderr.splitlines():
        if line.startswith("BINDS="):
            return json.loads(line[len("BINDS="):])
    raise AssertionError(f"no BINDS line in stderr:\n{stderr}")


def pth_python(folder: Path) -> str:
    """An interpreter whose site-packages holds our activation .pth, as an install would leave it.

    When this interpreter already has it (CI: ``pip install -e .``), that one is used.
    Otherwise a throwaway venv (no pip, so about a second) sees the repository and the
    current environment's packages through a path-only ``.pth`` and gets our real
    ``poet_runtime_hook.pth`` text from ``poet_runtime.hook.activate.PTH_LINE``.
    """
    import site

    from poet_runtime.hook.activate import PTH_LINE, PTH_NAME

    for directory in [*site.getsitepackages(), site.getusersitepackages()]:
        if (Path(directory) / PTH_NAME).is_file():
            return PYTHON
    target = folder / "venv"
    if not (target / "bin" / "python").exists():
        venv.EnvBuilder(with_pip=False, symlinks=True).create(target)
    purelib = subprocess.run(
        [str(target / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    lines = [str(REPO), *(p for p in site.getsitepackages() if os.path.isdir(p))]
    Path(purelib, "_poet_test_paths.pth").write_text("\n".join(lines) + "\n")
    Path(purelib, PTH_NAME).write_text(PTH_LINE)
    return str(target / "bin" / "python")

"""The program's own exit status, under the strict (WASM) policy (issue 12, item 2), in real processes.

wasmtime-wasi drops a closed store's custom stdout on one of its tokio worker threads,
some time later, and that runs a Python finalizer there. If the interpreter was
finalizing by then, that thread was ended inside Rust code that cannot unwind and the
process aborted (SIGABRT, 134) instead of exiting with the program's status: about 1 run
in 5 with four runs at once on two cores. ``wasm_engine._release`` now waits for those
finalizers (``wasm_instance.settle_outputs``) before the interpreter tears down.

The issue's bar is 200 runs, 200 exit 7; CI runs ``POET_TEST_EXIT_RUNS`` (default 40,
about 30 s on two cores; 40 runs failed with probability > 0.9999 before the fix).
For the full bar: ``POET_TEST_EXIT_RUNS=200 pytest tests/test_exit_safety.py``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hook_helpers import run, write_tree
from wasm_helpers import require_wasm

pytestmark = pytest.mark.slow

RUNS = int(os.environ.get("POET_TEST_EXIT_RUNS") or 40)

SCRIPT = """
import sys
import poet_runtime
from poet_runtime import poet

@poet(policy="strict")
def add(x: int, y: int) -> int:
    return x + y

value = add(2, 3)
record = poet_runtime.last_execution()
print(value, record.backend, record.status)
sys.exit(7)
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A private cache folder that sees this machine's compiled WASM interpreter (no 60-100 s compile)."""
    require_wasm()
    from poet_runtime.backends import wasm_engine

    compiled = wasm_engine.warmup()
    folder = tmp_path_factory.mktemp("cache")
    (folder / "wasm").mkdir(mode=0o700)
    folder.chmod(0o700)
    for source in compiled.parent.glob(compiled.stem + "*"):
        (folder / "wasm" / source.name).symlink_to(source)
    return folder


def test_a_strict_program_always_exits_with_its_own_status(tmp_path, cache):
    write_tree(tmp_path, {"app.py": SCRIPT})
    env = {"POET_ENABLED": "1", "POET_HOME": str(tmp_path / "home"), "POET_CACHE_DIR": str(cache)}
    first = run(["app.py"], tmp_path, env=env)  # generates and stores the version once
    assert (first.returncode, first.stdout.strip()) == (7, "5 wasm ok"), first.stderr

    def once(_):
        result = run(["app.py"], tmp_path, env=env, timeout=60)
        return result.returncode, result.stdout.strip(), result.stderr

    with ThreadPoolExecutor(4) as pool:  # four at once: the abort was likelier under load
        results = list(pool.map(once, range(RUNS)))
    codes = [code for code, _, _ in results]
    aborted = [stderr for code, _, stderr in results if code != 7]
    assert codes.count(7) == RUNS, f"{codes.count(7)} of {RUNS} exited 7; first other stderr:\n{aborted[:1]}"
    assert {out for _, out, _ in results} == {"5 wasm ok"}
    assert all(stderr == "" for _, _, stderr in results), [s for _, _, s in results if s][:1]

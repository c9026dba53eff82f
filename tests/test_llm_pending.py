"""Issue 16, item 6: a generation survives the program that started it.

Real processes throughout: the program is run by the runner (sync mode, a first call
that waits only POET_GENERATION_TIMEOUT), the model is the scripted HTTP server
streaming slowly, the generator process is the real detached worker. The program
exits before the answer is complete; the answer lands in the store; a second program
started meanwhile joins the same generation instead of asking again; the next run
serves the stored version without a request.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from fake_openai import Answer, FakeOpenAI, Slow, Status

APP = '''
from poet_runtime import poet


@poet()
def add(a: int, b: int = 2) -> int:
    """Add two numbers.

    >>> add(1, 2)
    3
    """
    return a + b


print(add(1, 2))
'''


def example(request: dict) -> str:
    first = request["messages"][1]["content"].split("## Your previous answer")[0]
    return re.findall(r"```python\n(.*?)```", first, re.S)[-1]


@pytest.fixture
def server():
    fake = FakeOpenAI().start()
    fake.context = 16384
    yield fake
    fake.stop()


def _run(folder, env):
    return subprocess.run([sys.executable, "-m", "poet_runtime", "run", "app.py"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)


def test_generation_survives_the_program_and_is_joined_not_repeated(tmp_path, server):
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "app.py").write_text(APP)
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("POET_")}
    env.update(POET_MODEL="openai/fake-coder", POET_API_BASE=server.api_base, POET_HOME=str(home),
               POET_CACHE_DIR=str(tmp_path / "cache"), POET_POLICY="trusted", POET_GENERATE="sync",
               POET_GENERATION_TIMEOUT="0.3", POET_LOG="info")
    # The answer's end waits for the gate: both programs are over before the answer is, however slow.
    gate = threading.Event()
    server.script(Slow(Answer(lambda r: "```python\n" + example(r) + "```"), interval=0.05, pieces=10, gate=gate),
                  default=Status(500, "asked twice"))
    first = _run(folder, env)
    assert first.returncode == 0 and first.stdout.strip() == "3", first.stderr
    assert "generating in process" in first.stderr
    job = json.loads((home / "app.add" / "pending.json").read_text())
    assert job["function"] == "app:add" and job["pid"] > 0
    second = _run(folder, env)  # while the generator process still works: it joins, asks nothing
    assert second.returncode == 0 and second.stdout.strip() == "3", second.stderr
    assert "joining the generator process" in second.stderr, second.stderr
    assert server.finished == 0 and not (home / "app.add" / "v1").exists()  # both programs ended first
    gate.set()
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and not (home / "app.add" / "v1" / "metadata.json").exists():
        time.sleep(0.2)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (home / "app.add" / "pending.json").exists():
        time.sleep(0.1)  # the worker tidies up after storing
    meta = json.loads((home / "app.add" / "v1" / "metadata.json").read_text())
    assert meta["generator"] == "llm-2" and meta["pending"] == job["id"], meta
    assert meta["checks"][-1] == "probe"  # probed in the generator process, the program never imported there
    assert len(server.requests) == 1 and not (home / "app.add" / "v2").exists()
    assert not (home / "app.add" / "pending.json").exists()
    # The stored answer serves the next run. Its first call still resolves in sync mode's
    # thread: give it the time a loaded machine needs (it returns as soon as v1 is loaded).
    third = _run(folder, {**env, "POET_GENERATION_TIMEOUT": "60"})
    assert third.returncode == 0 and third.stdout.strip() == "3"
    assert len(server.requests) == 1 and "1 enhanced" in third.stderr, third.stderr

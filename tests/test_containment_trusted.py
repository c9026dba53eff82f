"""Every escape payload does what it tries when nothing contains it (backend ``none``).

Why: a payload that does nothing unsandboxed proves nothing when the sandbox stops it.
So each payload of the shared corpus and of ``tests/escapes`` (files discovered, as in
the containment tests) runs here through the ``none`` backend, the one a ``trusted``
policy uses, in a child process (some end or change the process that runs them), and
its effect must be seen: the marker file exists, the secret comes back, the listener
was connected to, the process's builtins or abstract classes changed, the process and
its parent were killed, the call ran on past the limits, or the caller received the
forged value or exception. ``test_escapes_restricted.py`` and ``test_wasm_escapes.py``
show the same payloads contained.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from poet_runtime.safe_text import hidden_characters
from sandbox_helpers import escape_files, escape_header, fill, module_text

HERE = Path(__file__).resolve().parent
SECRET = "s3cr3t-value-for-trusted-runs"
HANG_S = 2.5  # past every wall_ms the containment tests use (1-2 s)

# Runs payloads with the ``none`` backend and reports each outcome as one JSON line.
CHILD = r"""
import json, subprocess, sys  # a host program that has subprocess loaded, as the restricted backend's host does
sys.path.insert(0, sys.argv[1])
from poet_runtime.backends.base import Limits
from sandbox_helpers import load
import builtins, numbers
LEN = builtins.len

def logic(*args, **kwargs) -> str:
    return "the logic's result"

for line in sys.stdin:
    item = json.loads(line)
    try:
        value = load(item["code"], Limits(), backend="none").call(logic, (), {})[0]
        report = {"outcome": "returned", "value": repr(value)[:300], "is_logic": value == "the logic's result"}
    except BaseException as error:
        report = {"outcome": "raised", "type": type(error).__name__, "value": str(error)[:300]}
    if item["effect"] == "mutate-host":
        report["mutated"] = builtins.len is not LEN or isinstance("x", numbers.Integral)
    print(json.dumps(report), flush=True)
"""


def _payloads(*effects):
    found = [path for path in escape_files() if escape_header(path.read_text()).get("effect") in effects]
    return found or [pytest.param(None, marks=pytest.mark.skip(reason="no payload of this kind"))]


def _child(extra=(), **kwargs):
    env = dict(os.environ, POET_TEST_SECRET=SECRET, PYTHONPATH=os.pathsep.join(filter(None, (
        str(HERE.parent), os.environ.get("PYTHONPATH")))))
    return subprocess.Popen([sys.executable, "-c", CHILD, str(HERE), *extra], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, **kwargs)


def _code(path, tmp_path, port):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    marker = tmp_path / f"marker-{path.stem}"
    return marker, module_text(fill(path.read_text(), marker=marker, secret_path=secret, port=port))


REACH = ("marker", "returns-secret", "connect", "forged-result", "forged-log")
# Payloads of the shared corpus (read-only here) that do nothing even unsandboxed, so their
# containment proves nothing; tests/escapes has a working variant of each.
INERT = {
    "12_lambda_globals.py": "expects __builtins__ to be a dict; a module's is the builtins module (150_ works)",
    "30_traceback_frame.py": "expects __builtins__ to be a dict in the outermost frame (151_ works)",
}


def test_reach_payloads_work_unsandboxed(tmp_path):
    """All reach and forged-answer payloads, one child process for all of them."""
    paths = [p for p in _payloads(*REACH) if isinstance(p, Path)]
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    port = server.getsockname()[1]
    lines, markers = [], {}
    for path in paths:
        marker, code = _code(path, tmp_path, port)
        markers[path.name] = marker
        lines.append(json.dumps({"code": code, "effect": escape_header(path.read_text())["effect"]}))
    child = _child()
    try:
        out, _ = child.communicate("\n".join(lines) + "\n", timeout=120)
    finally:
        child.kill()
    reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(reports) == len(paths), out[-2000:]
    connected = 0
    try:
        while True:
            server.accept()[0].close()
            connected += 1
    except BlockingIOError:
        pass
    server.close()
    failed = []
    for path, report in zip(paths, reports):
        effect = escape_header(path.read_text())["effect"]
        worked = {
            "marker": lambda: markers[path.name].exists(),
            "returns-secret": lambda: report["outcome"] == "returned" and SECRET in report["value"],
            "connect": lambda: connected > 0,
            # The caller got the forged value or exception, not the logic's answer.
            "forged-result": lambda: not report.get("is_logic") and report.get("type") != "PhaseError",
            "forged-log": lambda: report["outcome"] == "raised" and bool(hidden_characters(report["value"])),
        }[effect]()
        if worked == (path.name in INERT):
            failed.append(f"{path.name} ({effect}): {report}" + (f" (listed as inert: {INERT[path.name]})"
                                                                  if path.name in INERT else ""))
    assert not failed, "payloads that do nothing unsandboxed (or listed inert but work now):\n" + "\n".join(failed)


@pytest.mark.parametrize("path", _payloads("mutate-host"), ids=lambda p: getattr(p, "stem", "none"))
def test_mutating_payloads_change_the_process_unsandboxed(path, tmp_path):
    _, code = _code(path, tmp_path, 1)
    child = _child()
    out, _ = child.communicate(json.dumps({"code": code, "effect": "mutate-host"}) + "\n", timeout=60)
    assert json.loads(out.splitlines()[-1])["mutated"], out


@pytest.mark.parametrize("path", _payloads("kill-host"), ids=lambda p: getattr(p, "stem", "none"))
def test_killing_payloads_kill_their_process_and_its_parent_unsandboxed(path, tmp_path):
    """The payload runs in a child whose parent is a shell of its own: the shell is what dies."""
    _, code = _code(path, tmp_path, 1)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(HERE.parent), os.environ.get("PYTHONPATH")))))
    shell = subprocess.run(["sh", "-c", f'"{sys.executable}" "{script}" "{HERE}"; echo survived'], env=env, text=True,
                           input=json.dumps({"code": code, "effect": "kill-host"}) + "\n", capture_output=True,
                           timeout=60)
    assert shell.returncode == -9 and "survived" not in shell.stdout, (shell.returncode, shell.stdout)


def test_hanging_payloads_run_past_the_limits_unsandboxed(tmp_path):
    """Each in a child of its own, all at once: after HANG_S every one still runs."""
    paths = [p for p in _payloads("hang") if isinstance(p, Path)]
    children = []
    for path in paths:
        _, code = _code(path, tmp_path, 1)
        child = _child()
        child.stdin.write(json.dumps({"code": code, "effect": "hang"}) + "\n")
        child.stdin.flush()
        children.append((path, child))
    time.sleep(HANG_S)
    try:
        ended = [path.name for path, child in children if child.poll() is not None]
    finally:
        for _, child in children:
            child.kill()
            child.wait()
    assert not ended, f"ended on their own within {HANG_S} s: {ended}"


def _cap_memory():
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_memory_payloads_exhaust_memory_unsandboxed(tmp_path):
    """Under a 1 GB address-space cap (far above every memory_mb the tests use) each one
    runs out of memory."""
    for path in [p for p in _payloads("memory") if isinstance(p, Path)]:
        _, code = _code(path, tmp_path, 1)
        child = _child(preexec_fn=_cap_memory)
        out, _ = child.communicate(json.dumps({"code": code, "effect": "memory"}) + "\n", timeout=60)
        last = out.splitlines()[-1] if out.strip() else ""
        assert child.returncode != 0 or "MemoryError" in last, (path.name, child.returncode, last)

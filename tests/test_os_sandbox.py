"""The restricted worker's operating-system layers hold when the Python layer has fallen (issue 13, item 2).

Each payload runs as raw Python **in a worker process** (the test-only ``exec``
request of a worker started with ``--test-raw``: no RestrictedPython, no guards,
as after an escape). Each is shown to work unconfined (``--unconfined``, or with
the layer skipped), and to fail with one layer alone (all the others skipped), so
every layer is shown to hold by itself; the default worker has all of them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from poet_runtime.backends import os_sandbox
from poet_runtime.backends.restricted import harness_module
from poet_runtime.backends.workers import Worker

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux layers")

LAYERS = os_sandbox.LAYERS
AVAILABLE = os_sandbox.probe(namespaces=True)
CODEC = harness_module("worker_codec")


def only(layer):
    """Worker options that keep ``layer`` alone."""
    if not AVAILABLE.get(layer):
        pytest.skip(f"this machine has no {layer}: {AVAILABLE.get(layer + ':why')}")
    return ["--test-raw", "--skip=" + ",".join(name for name in LAYERS if name != layer)]


UNCONFINED = ["--test-raw", "--unconfined"]
CONFINED = ["--test-raw"]


_workers: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _stop_workers():
    yield
    for worker in _workers.values():
        worker.kill()
    _workers.clear()


def run_raw(options, code, **limits):
    """Run ``code`` in a worker started with ``options``; its reply (RESULT is returned).

    Workers are kept per options and reused (a payload's failure leaves them as they
    were); a request with limits fixes a worker's hard limits, so it gets a fresh one."""
    key = tuple(options)
    worker = None if limits else _workers.get(key)
    if worker is None or worker.proc.poll() is not None:
        worker = Worker(CODEC, options)
        if not limits:
            _workers[key] = worker
    try:
        message = {"op": "exec", "code": textwrap.dedent(code), **limits}
        reply = worker.request(CODEC.dumps(message), time.monotonic() + 20, 1 << 20)
        return reply, worker.layers
    finally:
        if limits:
            worker.kill()


def succeeds(options, code, **limits):
    reply, _ = run_raw(options, code, **limits)
    assert reply.get("ok"), reply
    return CODEC.decode(reply["result"])


def fails(options, code, match="PermissionError|Operation not permitted|Permission denied", **limits):
    import re

    reply, layers = run_raw(options, code, **limits)
    assert not reply.get("ok") and re.search(match, reply.get("detail", "")), (reply, layers)
    return reply["detail"]


def test_the_default_worker_has_every_layer_this_machine_offers():
    worker = Worker(CODEC)
    try:
        layers = worker.layers
    finally:
        worker.kill()
    for name in LAYERS:
        assert bool(layers.get(name)) == bool(AVAILABLE.get(name)), (name, layers, AVAILABLE)


READ_PARENT_ENVIRON = """
import os
RESULT = len(open(f"/proc/{os.getppid()}/environ", "rb").read())
"""
READ_PARENT_MEM = """
import os
open(f"/proc/{os.getppid()}/mem", "rb").close()
RESULT = True
"""


def test_the_hosts_environment_and_memory_are_unreadable():
    assert succeeds(UNCONFINED, READ_PARENT_ENVIRON) > 0
    assert succeeds(UNCONFINED, READ_PARENT_MEM)
    for layer in ("landlock", "namespaces"):
        fails(only(layer), READ_PARENT_ENVIRON)
        fails(only(layer), READ_PARENT_MEM)
    fails(CONFINED, READ_PARENT_ENVIRON)


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    yield server.getsockname()[1]
    server.close()


def test_no_tcp_connection_to_a_listener_on_localhost(listener):
    code = f"""
    import socket
    s = socket.create_connection(("127.0.0.1", {listener}), timeout=2)
    s.sendall(b"secret")
    RESULT = "connected"
    """
    assert succeeds(UNCONFINED, code) == "connected"
    fails(only("seccomp"), code)
    fails(only("landlock"), code)
    fails(only("namespaces"), code, match="Error")  # an empty network namespace: no route
    fails(CONFINED, code)


def test_no_signal_reaches_the_host():
    # Signal 0 is the permission check of kill(2) without a signal: SIGSTOP or
    # SIGKILL would pass or fail exactly the same way, and this host stays up.
    code = "import os, signal\nos.kill(os.getppid(), 0)\nRESULT = 'signalled'"
    assert succeeds(UNCONFINED, code) == "signalled"
    fails(only("seccomp"), code)
    fails(only("landlock"), code)
    fails(CONFINED, code)
    assert succeeds(CONFINED, "import os\nos.kill(os.getpid(), 0)\nRESULT = 1") == 1  # itself: allowed


def test_no_file_is_written_renamed_or_removed(tmp_path):
    victim = tmp_path / "code.py"
    victim.write_text("REVIEWED = True\n")
    planted = tmp_path / "planted.py"
    code = f"""
    import os
    open({str(planted)!r}, "w").close()
    os.replace({str(planted)!r}, {str(victim)!r})
    RESULT = "replaced"
    """
    for layer in ("seccomp", "landlock"):
        fails(only(layer), code)
        assert victim.read_text() == "REVIEWED = True\n" and not planted.exists()
    fails(CONFINED, code)
    assert victim.read_text() == "REVIEWED = True\n"
    unlink = f"import os\nos.unlink({str(victim)!r})\nRESULT = 1"
    fails(only("seccomp"), unlink)
    fails(only("landlock"), unlink)
    assert succeeds(UNCONFINED, code) == "replaced"  # last: it does replace the file
    assert victim.read_text() == ""


def test_no_process_can_be_started():
    code = """
    import os
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    RESULT = "forked"
    """
    assert succeeds(UNCONFINED, code) == "forked"
    fails(only("seccomp"), code)
    fails(CONFINED, code)
    fails(CONFINED, "import os\nos.execv('/bin/true', ['true'])")


def test_the_hosts_stdout_is_out_of_reach():
    code = """
    import os
    open(f"/proc/{os.getppid()}/fd/1", "wb").close()
    RESULT = "opened"
    """
    assert succeeds(UNCONFINED, code) == "opened"
    fails(only("seccomp"), code)
    fails(only("landlock"), code)
    # Its own fds 1 and 2 are /dev/null whatever the layers; with seccomp it cannot even write there.
    assert succeeds(UNCONFINED, "import os\nRESULT = [os.readlink(f'/proc/self/fd/{n}') for n in (1, 2)]") == \
        ["/dev/null", "/dev/null"]
    fails(only("seccomp"), "import os\nos.write(2, b'x' * 1000)")


def test_nothing_is_inherited_beyond_the_pipes():
    code = """
    import os
    RESULT = [fd for fd in range(3, 256) if _is_open(fd)]
    """
    code = "import os\ndef _is_open(fd):\n    try:\n        os.fstat(fd)\n        return True\n    except OSError:\n" \
           "        return False\n" + textwrap.dedent(code)
    inherited = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(inherited, True)
    try:
        fds = succeeds(CONFINED, code)
    finally:
        os.close(inherited)
    assert len(fds) == 3, fds  # the two pipe ends and the worker's own /proc/self/statm


def test_soft_limits_cannot_be_raised_past_the_policy():
    raise_as = """
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    RESULT = "raised"
    """
    allocate = """
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))  # as far as it goes
    block = bytearray(400 * 1024 * 1024)
    RESULT = len(block)
    """
    assert succeeds(UNCONFINED, raise_as, memory_mb=64) == "raised"
    assert succeeds(UNCONFINED, allocate, memory_mb=64) == 400 * 1024 * 1024
    fails(only("rlimits"), raise_as, match="ValueError|not allowed", memory_mb=64)
    fails(only("rlimits"), allocate, match="MemoryError", memory_mb=64)
    raise_cpu = """
    import resource
    resource.setrlimit(resource.RLIMIT_CPU, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    RESULT = "raised"
    """
    assert succeeds(UNCONFINED, raise_cpu, cpu_ms=200) == "raised"
    fails(only("rlimits"), raise_cpu, match="ValueError|not allowed", cpu_ms=200)


HOST = """
import json, sys, time
from poet_runtime.backends.restricted import harness_module
from poet_runtime.backends.workers import Worker
codec = harness_module("worker_codec")
worker = Worker(codec, json.loads(sys.argv[1]))
# The payload blinds the worker's own parent watch (an escape can), then tries to
# leave the host's session for good.
payload = '''
import os, threading, time
parent = os.getppid()
os.getppid = lambda: parent
try:
    os.setsid()
except OSError:
    pass
threading.Thread(target=time.sleep, args=(3600,)).start()  # the worker stays up after its protocol ends
RESULT = os.getpid()
'''
reply = worker.request(codec.dumps({"op": "exec", "code": payload}), time.monotonic() + 20, 1 << 16)
print(json.dumps(codec.decode(reply["result"])), flush=True)
time.sleep(60)
"""


def _outlive_hosts(option_sets) -> list[bool]:
    """For each option set: does a worker outlive its host (SIGKILLed)? Run side by side."""
    hosts = [subprocess.Popen([sys.executable, "-c", HOST, json.dumps(options)], stdout=subprocess.PIPE, text=True)
             for options in option_sets]
    try:
        pids = [json.loads(host.stdout.readline()) for host in hosts]
        for host in hosts:
            host.kill()
            host.wait()
        time.sleep(1.5)  # longer than the parent watch's period
        alive = []
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    state = f.read().rpartition(")")[2].split()[0]
            except OSError:
                state = "X"
            alive.append(state not in ("Z", "X"))  # a zombie is dead, just not reaped by its adopter
            if alive[-1]:
                os.kill(pid, signal.SIGKILL)
        return alive
    finally:
        for host in hosts:
            if host.poll() is None:
                host.kill()
                host.wait()


def test_a_worker_never_outlives_its_host():
    # Unconfined it does; the parent-death signal alone (no_new_privs) or all layers: it does not.
    assert _outlive_hosts([UNCONFINED, only("no_new_privs"), CONFINED]) == [True, False, False]


def test_a_policy_demanding_a_layer_the_machine_cannot_give_is_refused(tmp_path, monkeypatch):
    from poet_runtime.policy import PolicyError, parse_policy

    text = ('version = 1\n[defaults]\nbackend = "restricted"\nwall_ms = 1000\n'
            'os_layers = ["rlimits", "landlock"]\n')
    parse_policy(text, tmp_path / "p.toml")  # this machine has both
    monkeypatch.setenv(os_sandbox.OFF_VARIABLE, "landlock")
    with pytest.raises(PolicyError, match=r"p.toml:5: defaults.os_layers: this machine cannot give layer "
                                          r"'landlock': turned off by POET_SANDBOX_LAYERS_OFF"):
        parse_policy(text, tmp_path / "p.toml")
    worker = Worker(CODEC)  # and a worker started now goes without it
    try:
        assert not worker.layers.get("landlock") and bool(worker.layers.get("seccomp")) == bool(AVAILABLE.get("seccomp"))
    finally:
        worker.kill()


def test_os_layers_are_checked_like_any_field(tmp_path):
    from poet_runtime.policy import PolicyError, parse_policy

    cases = [
        ('backend = "wasm"\nos_layers = ["seccomp"]\n', "backend 'wasm' has no worker process to confine"),
        ('backend = "none"\nos_layers = ["seccomp"]\n', "backend 'none' has no worker process to confine"),
        ('backend = "restricted"\nos_layers = ["seccomp"]\n', "runs code only when wall_ms, cpu_ms or memory_mb"),
        ('backend = "restricted"\nwall_ms = 5\nos_layers = ["chroot"]\n', "unknown layer 'chroot'"),
        ('backend = "restricted"\nwall_ms = 5\nos_layers = "seccomp"\n', "must be a list of layer names"),
    ]
    for body, message in cases:
        with pytest.raises(PolicyError, match=message):
            parse_policy("version = 1\n[defaults]\n" + body, tmp_path / "p.toml")


def test_policy_explain_and_sandbox_status_print_the_layers(tmp_path):
    env = {**os.environ, "POET_HOME": str(tmp_path / "home")}
    env.pop("POET_SANDBOX_LAYERS_OFF", None)
    (tmp_path / "app.py").write_text("def f(x):\n    return x\n")
    explain = subprocess.run([sys.executable, "-m", "poet_runtime", "policy", "explain", "app:f", "--policy",
                              "default"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert explain.returncode == 0, explain
    assert "required: rlimits, no_new_privs" in explain.stdout
    for name in LAYERS:
        assert (f"{name:<13} on" if AVAILABLE.get(name) else f"{name:<13} off") in explain.stdout, explain.stdout
    status = subprocess.run([sys.executable, "-m", "poet_runtime", "sandbox", "status"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert status.returncode == 0, status
    for name in LAYERS:
        assert (f"{name:<13} on" if AVAILABLE.get(name) else f"{name:<13} off") in status.stdout, status.stdout


def test_a_forked_child_starts_its_own_workers_and_leaves_the_parents_alone():
    from poet_runtime.backends.base import Limits
    from sandbox_helpers import load, module_text

    enhancement = load(module_text(params="x"), Limits(wall_ms=5000, cpu_ms=2000, memory_mb=128))
    try:
        assert enhancement.call(lambda x: x + 1, (1,), {})[0] == 2
        parents = {worker.proc.pid for worker in enhancement.pool.idle}
        assert parents
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its own workers, on demand
            status = 1
            try:
                os.close(read)
                result = enhancement.call(lambda x: x * 10, (4,), {})[0]
                mine = {worker.proc.pid for worker in enhancement.pool.idle}
                os.write(write, json.dumps([result, sorted(mine)]).encode())
                status = 0
            finally:
                os._exit(status)
        os.close(write)
        with os.fdopen(read) as pipe:
            output = pipe.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, output
        result, theirs = json.loads(output)
        assert result == 40 and theirs and not parents & set(theirs)
        for worker_pid in parents:
            os.kill(worker_pid, 0)  # the parent's workers were neither killed nor reaped by the child
        assert enhancement.call(lambda x: x + 2, (1,), {})[0] == 3
    finally:
        enhancement.close()


def test_policies_with_different_limits_share_the_pool():
    """A worker's hard limits are its first policy's; a request with larger ones is
    declined before it runs and served by another worker, never failed."""
    from poet_runtime.backends.base import Limits
    from sandbox_helpers import load, module_text

    small = load(module_text(params="x"), Limits(wall_ms=5000, cpu_ms=500, memory_mb=64), function_id="t.a:small")
    large = load(module_text(params="x"), Limits(wall_ms=5000, cpu_ms=2000, memory_mb=256), function_id="t.b:large")
    try:
        for i in range(6):
            assert small.call(lambda x: x + 1, (i,), {})[0] == i + 1
            assert large.call(lambda x: x * 2, (i,), {})[0] == i * 2
    finally:
        small.close()
        large.close()

"""Hostile generated code under the restricted backend: the shared escape corpus and this
repository's ``tests/escapes`` (both run in place, files discovered), plus escapes aimed at our own guards (computed attribute names, format strings, module walks) and
at the crossing (the logic proxy and the values left in the host, which expose nothing).

Each corpus body becomes the body of a generated module's ``operate_prime`` (contract 2: the user's
logic is not in the module; the body is what an LLM-written or tampered version could contain). It
runs under the shipped default policy (restricted in a worker), a tighter worker policy, and in-process
restricted (no resource limits: payloads whose effect is `hang` or `memory` are skipped there, since
such a policy states no limit that could stop them). ``test_containment_trusted.py`` runs every one of
them unsandboxed and shows that it does what it tries.
"""

from __future__ import annotations

import builtins
import math
import numbers
import os
import socket
import sys
import time

import pytest

from poet_runtime.backends import get_backend
from poet_runtime.backends.base import Limits
from poet_runtime.errors import PoetViolation
from poet_runtime.policy import load_policy
from poet_runtime.resources import load_facility
from poet_runtime.safe_text import hidden_characters
from sandbox_helpers import CORPUS, REPO_ESCAPES, escape_files, escape_header, fill, load, module_text

PhaseError = load_facility().PhaseError
SECRET = "s3cr3t-value-for-escape-tests"
DEFAULT = load_policy("default").effective_for("tests.probe:probe").limits
TIGHT = Limits(wall_ms=1000, cpu_ms=300, memory_mb=128, max_output_kb=16, imports=("math", "json", "time"))
IN_PROCESS = Limits(max_output_kb=16, imports=DEFAULT.imports)
CONFIGS = {"default-policy": DEFAULT, "tight-workers": TIGHT, "in-process": IN_PROCESS}
MARGIN_S = 1.0  # the machine is shared: scheduling delays, worker start-up


@pytest.fixture(scope="module", autouse=True)
def close_backend():
    yield
    get_backend("restricted").close()


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    yield server
    server.close()


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def host_logic(*args, **kwargs):
    return "the logic's result"


def annotated_logic(*args, **kwargs) -> str:
    """The corpus's logic: its return annotation is what a result that is new data must fit."""
    return "the logic's result"


def run_payload(code: str, limits: Limits, args: tuple = (), logic=host_logic):
    """(outcome, value): outcome is 'refused-load', 'violation', 'phase', 'error' or 'returned'."""
    try:
        loaded = load(code, limits)
    except (PoetViolation, PhaseError) as error:
        return "refused-load", error
    try:
        return "returned", loaded.call(logic, args, {})[0]
    except PoetViolation as error:
        return "violation", error
    except PhaseError as error:
        return "phase", error
    except Exception as error:  # in-process: the logic's own exception (e.g. RecursionError)
        return "error", error
    finally:
        loaded.close()


def assert_host_responsive(limits: Limits):
    started = time.monotonic()
    loaded = load(module_text("return logic(*args, **kwargs)", params="x"), limits)
    assert loaded.call(lambda x: x * 2, (21,), {})[0] == 42
    assert time.monotonic() - started < 5.0


def corpus_cases():
    """Shared payloads under every configuration; this repository's (aimed at reach and at what
    crosses back, none a denial of service) under the default policy's worker and in-process."""
    for path in escape_files():
        own = path.parent == REPO_ESCAPES
        for config in (["default-policy", "in-process"] if own else list(CONFIGS)):
            yield pytest.param(path, config, id=f"{path.stem}-{config}")


@pytest.mark.skipif(not CORPUS.is_dir() and not REPO_ESCAPES.is_dir(), reason="no escape corpus found")
@pytest.mark.parametrize("path,config", list(corpus_cases()))
def test_corpus_escape(path, config, tmp_path, listener, monkeypatch):
    limits = CONFIGS[config]
    raw = path.read_text()
    effect = escape_header(raw).get("effect", "")
    if config == "in-process" and effect in ("hang", "memory"):
        pytest.skip("in-process restricted states no wall/cpu/memory limit; the worker configs cover this payload")
    marker = tmp_path / "escaped"
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET)
    monkeypatch.setenv("POET_TEST_SECRET", SECRET)
    body = fill(raw, marker=marker, secret_path=secret_file, port=listener.getsockname()[1])
    saved_builtins = dict(vars(builtins))
    modules_before = set(sys.modules)
    rss_before = rss_mb()

    started = time.monotonic()
    outcome, value = run_payload(module_text(body), limits, logic=annotated_logic)
    elapsed = time.monotonic() - started

    assert outcome in ("refused-load", "violation", "phase", "error", "returned")
    if outcome == "returned":
        assert SECRET not in repr(value)
    assert not marker.exists(), f"{path.name}: the payload created its marker ({outcome}: {value!r})"
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing connected
    if limits.wall_ms is not None:
        assert elapsed < limits.wall_ms / 1000 + MARGIN_S, f"{path.name} took {elapsed:.2f}s"
    assert rss_mb() - rss_before < 100, "host memory grew"
    os.kill(os.getppid(), 0)  # parent alive (we are, or this line would not run)
    assert vars(builtins) == saved_builtins and len([1, 2]) == 2
    assert not {"os", "subprocess", "ctypes", "socket"} & (set(sys.modules) - modules_before)
    assert not isinstance("x", numbers.Integral), "an abstract class of the host was changed"
    if effect in ("marker", "returns-secret", "connect", "kill-host", "mutate-host"):
        # Reach escapes must be refused as such, not merely fail.
        assert outcome in ("refused-load", "violation"), f"{path.name}: {outcome}: {value!r}"
    if effect in ("forged-result", "forged-log"):
        # Neither the payload's value nor its exception reaches the caller: a refusal, so the host falls back.
        assert outcome in ("refused-load", "violation", "phase"), f"{path.name}: {outcome}: {value!r}"
    if effect == "forged-log":
        shown = [str(value), getattr(value, "detail", ""), getattr(value, "reason", "")]
        assert not any(hidden_characters(text) for text in shown), f"{path.name}: {shown!r}"
    assert_host_responsive(limits)


# -- escapes aimed at our guards --------------------------------------------------------------

GUARD_ESCAPES = {
    "computed-dunder": "def probe2():\n    pass\nreturn getattr(probe2, '__glob' + 'als__')",
    "generator-frame": "g = (x for x in [1])\nreturn getattr(g, 'gi_' + 'frame')",
    "format-attribute": "return '{0.__class__}'.format(1)",
    "format-map": "return '{x.__class__}'.format_map({'x': 1})",
    "format-unbound": "return type('').format('{0.__class__.__mro__}', 1)",
    "format-subclass": "class S(str):\n    pass\nreturn S('{0.__class__}').format(1)",
    "format-super": "class S(str):\n    def go(self):\n        return super().format(1)\nreturn S('{0.__class__}').go()",
    "module-walk": "import statistics\nreturn statistics.sys.modules['os'].getcwd()",
    "from-import-walk": "from statistics import sys\nreturn sys.modules['os'].getcwd()",
    "submodule-not-listed": "import json\nreturn json.decoder.scanstring",
    "dotted-import": "import collections.abc\nreturn 1",
    "host-state-context": "import decimal\nreturn decimal.localcontext()",
    "host-state-decimal": "import decimal\nreturn decimal.getcontext()",
    "module-write": "import math\nmath.pi = 3\nreturn math.pi",
    "module-setattr": "import math\nsetattr(math, 'pi', 3)\nreturn math.pi",
    "class-write": "import math\nX = type(1)\nX.bit_length = None\nreturn 1",
    "hasattr-probe": "return hasattr(1, '__class__')",
    "open-builtin": "return open('/etc/hostname').read()",
    "vars-builtin": "return vars()",
    "print-to-file": "import json\nprint('x', file=json)\nreturn 1",
    "from-import-denied": "from decimal import setcontext\nreturn 1",
    "view-internals": "import math\nreturn getattr(math, '_mod' + 'ule')",
    "stored-module-walk": "import statistics\nbox = [statistics]\nreturn box[0].sys",
    "swallowed-refusal": "try:\n    getattr(1, '__class__')\nexcept Exception:\n    pass\nreturn 'ok'",
}


@pytest.mark.parametrize("limits", [IN_PROCESS, TIGHT], ids=["in-process", "worker"])
@pytest.mark.parametrize("name", list(GUARD_ESCAPES))
def test_guard_escape_is_a_violation(name, limits):
    outcome, value = run_payload(module_text(GUARD_ESCAPES[name]), limits)
    assert outcome in ("refused-load", "violation"), f"{name}: {outcome}: {value!r}"
    assert math.pi > 3.14 and (1).bit_length() == 1


class UserThing:
    """A value that is not data: it stays in the host and the worker sees a HostRef."""

    secret = SECRET


CROSSING_ESCAPES = {
    "proxy-session": "return logic.session",
    "proxy-session-send": "return logic.session.send({'status': 'logic', 'args': [], 'kwargs': {}})",
    "proxy-getattr": "return getattr(logic, 'sess' + 'ion')",
    "proxy-hasattr": "return hasattr(logic, 'session')",
    "proxy-with-timeout": "return logic.with_timeout",
    "proxy-write": "logic.session = None\nreturn 1",
    "proxy-class-descriptor": "return type(logic).session",
    "proxy-base-class": "from poet_sandbox import crossing\nreturn crossing.LogicProxy.session",
    "proxy-update-wrapper": ("import functools\nclass H:\n    pass\nh = H()\n"
                             "functools.update_wrapper(h, logic, assigned=('session',), updated=())\n"
                             "return h.session.send({'status': 'logic', 'args': [], 'kwargs': {}})"),
    "proxy-update-wrapper-write": ("import functools\nclass H:\n    pass\nh = H()\nh.session = None\n"
                                   "functools.update_wrapper(logic, h, assigned=('session',), updated=())\n"
                                   "return logic(*args)"),
    "proxy-reduce": "import functools\nreturn functools.reduce(getattr, ['session'], logic)",
    "proxy-through-facility-helper": "from poet_sandbox import validate\nreturn validate.as_instance(1, 'f', logic)",
    "hostref-type-names": "return args[0].type_names",
    "hostref-getattr": "return getattr(args[0], 'type_' + 'names')",
}


class NamedByAModule:
    """A user object whose ``__name__`` is not a name but a module (in-process, generated
    code holds the caller's real objects)."""

    __name__ = os


@pytest.mark.parametrize("body", ["return args[0].__name__.getcwd()", "return getattr(args[0], '__name__')"])
def test_name_attributes_give_only_names(body):
    outcome, value = run_payload(module_text(body, params="thing"), IN_PROCESS, args=(NamedByAModule(),))
    assert outcome == "violation", f"{outcome}: {value!r}"
    assert run_payload(module_text("return [type(args[0]).__name__, type(args[0]).__qualname__]", params="thing"),
                       IN_PROCESS, args=(NamedByAModule(),)) == ("returned", ["NamedByAModule", "NamedByAModule"])


@pytest.mark.parametrize("name", list(CROSSING_ESCAPES))
def test_crossing_objects_expose_nothing(name):
    """In a worker, ``logic`` is a proxy whose session is the door to the host's protocol, and a
    value that is not data is a HostRef: generated code can call the one and pass the other on,
    nothing else."""
    outcome, value = run_payload(module_text(CROSSING_ESCAPES[name], params="thing"), DEFAULT, args=(UserThing(),))
    assert outcome == "violation" and value.limit in ("attribute", "write", "imports"), f"{name}: {outcome}: {value!r}"
    assert SECRET not in repr(value)
    assert_host_responsive(DEFAULT)


def test_a_value_left_in_the_host_has_nothing_in_the_worker():
    outcome, value = run_payload(module_text("return [repr(args[0]), str(args[0])]", params="thing"), DEFAULT,
                                 args=(UserThing(),))
    assert outcome == "returned" and SECRET not in repr(value)  # the object's attributes never crossed
    assert value[0].startswith("<host ") and "UserThing" in value[0]


ASYNC_ESCAPES = {
    "awaitable-internals": "call = logic()\nreturn call.run",
    "awaitable-getattr": "call = logic()\nreturn getattr(call, 'run')",
    "async-proxy-session": "return logic.session",
}


@pytest.mark.parametrize("name", list(ASYNC_ESCAPES))
def test_async_crossing_objects_expose_nothing(name):
    import asyncio

    loaded = load(module_text(ASYNC_ESCAPES[name], is_async=True), TIGHT, is_async=True)

    async def logic():
        return 1

    with pytest.raises(PoetViolation):
        asyncio.run(loaded.call_async(logic, (), {}))


def test_the_proxy_still_works_for_the_facility():
    """What the guards refuse to generated code, poet_sandbox's own code may use."""
    body = ("from poet_sandbox.timeouts import call_with_timeout\n"
            "first = call_with_timeout(logic, args, kwargs, 5)\n"
            "return [first, logic(*args, **kwargs), type(logic).__name__]")
    outcome, value = run_payload(module_text(body, params="thing"), TIGHT, args=(UserThing(),))
    assert (outcome, value) == ("returned", ["the logic's result", "the logic's result", "LogicProxy"])


@pytest.mark.parametrize("limits", [IN_PROCESS, TIGHT], ids=["in-process", "worker"])
@pytest.mark.parametrize("body", ["return type('X', (), {'y': 1})", "import math\nimport json\nreturn type(math)(json)"],
                         ids=["three-argument-type", "construct-module-view"])
def test_constructors_not_offered(body, limits):
    outcome, value = run_payload(module_text(body), limits)
    assert outcome in ("phase", "error") and "TypeError" in f"{type(value).__name__} {value}"


@pytest.mark.parametrize("limits", [IN_PROCESS, TIGHT], ids=["in-process", "worker"])
def test_safe_format_still_formats(limits):
    body = "return ['{} {x}'.format(1, x=[2]), '{0[k]}'.format({'k': 3}), '{a}'.format_map({'a': 4})]"
    outcome, value = run_payload(module_text(body), limits)
    assert (outcome, value) == ("returned", ["1 [2]", "3", "4"])


# -- through the call path: the original's result, and an event naming the violation ---------------

DRIFT = '''\
import statistics
from poet_runtime import poet


@poet(domain="ml_monitoring")
def detect_drift(current: list[float], reference: list[float], threshold: float = 0.5) -> dict:
    gap = abs(statistics.fmean(current) - statistics.fmean(reference))
    return {"drift_detected": gap > threshold, "score": gap}
'''
# The default policy's limits, trusting no generator: even the built-in version runs in the worker.
UNTRUSTING = '''\
version = 1
[defaults]
backend = "restricted"
wall_ms = 2000
cpu_ms = 1000
memory_mb = 256
max_output_kb = 64
imports = ["math", "statistics", "json", "time", "random", "collections"]
trust = []
'''


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"escape corpus not found at {CORPUS}")
@pytest.mark.parametrize("payload", ["01_import_os_system", "20_cpu_loop", "23_output_flood"])
def test_escape_through_call_path_falls_back_with_event(payload, poet_home, write_module, monkeypatch, tmp_path):
    import textwrap

    import poet_runtime
    from poet_runtime import events
    from poet_runtime.store import FunctionStore

    policy = tmp_path / "untrusting.toml"
    policy.write_text(UNTRUSTING)
    monkeypatch.setenv("POET_POLICY", str(policy))
    name = f"drift_escape_{payload[:2]}"
    module = write_module(name, DRIFT)
    assert module.detect_drift([1.0], [1.0])["score"] == 0.0
    assert poet_runtime.last_execution().backend == "restricted"
    code = FunctionStore(poet_home / f"{name}.detect_drift", f"{name}:detect_drift").current().path / "code.py"
    marker = tmp_path / "escaped"
    body = fill((CORPUS / f"{payload}.py").read_text(), marker=marker, secret_path="/nonexistent", port=1)
    text = code.read_text()
    signature = "def operate_prime(logic, args, kwargs):\n"
    assert signature in text
    # The payload runs first thing in operate_prime (a tampered version: it runs in the worker).
    code.write_text(text.replace(signature, signature + textwrap.indent(body, "    ") + "\n", 1))
    seen = []
    unsubscribe = events.subscribe(lambda event: seen.append(event))
    try:
        module = write_module(name, DRIFT)
        assert module.detect_drift([2.0], [1.0]) == {"drift_detected": True, "score": 1.0}  # the original's
    finally:
        unsubscribe()
    record = poet_runtime.last_execution()
    assert record.fell_back and record.reason.startswith("violation:"), record
    assert any(event["type"] == "function.fallback" and event["reason"] == record.reason for event in seen)
    assert not marker.exists()

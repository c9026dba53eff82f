"""A backend's failure never reaches the caller (issue 13, item 5, the caller's side).

Whatever generated code or a backend raises that is not the user's own exception (found by
the driver's logic-exception mechanism) is a documented fallback: logged, an event, the
original's answer. Tested through a tampered stored code.py under ``trusted`` (in-process)
and ``default`` (the restricted worker), with the real store, real backends, real events.
"""

from __future__ import annotations

import pytest

import poet_runtime
from poet_runtime import events
from poet_runtime.store import FunctionStore

SOURCE = '''\
from poet_runtime import poet


@poet(domain="api_operations")
def total(items: list) -> int:
    CALLS.append(list(items))
    if items and items[0] == "boom":
        raise KeyError("the user's own error")
    return sum(items)


CALLS = []
'''


@pytest.fixture(params=["trusted", "default"])
def policy(request, poet_home, monkeypatch):
    from poet_runtime import settings

    monkeypatch.setenv("POET_POLICY", request.param)
    settings.reset()
    return poet_home, request.param


@pytest.fixture
def fallbacks():
    seen = []
    unsubscribe = events.subscribe(lambda event: seen.append(event) if event["type"] == "function.fallback" else None)
    yield seen
    unsubscribe()


def tampered(home, write_module, name: str, function: str, body: str, accept: bool):
    """Generate ``name``'s version, replace the body of ``function`` in its code.py, import afresh."""
    module = write_module(name, SOURCE)
    assert module.total([1, 2]) == 3
    store = FunctionStore(home / f"{name}.total", f"{name}:total")
    code = store.current().path / "code.py"
    text = code.read_text()
    head = text.index(f"\ndef {function}(")
    start = text.index(":\n", head) + 2
    end = text.find("\ndef ", start)
    end = len(text) if end < 0 else end
    code.write_text(text[:start] + body + "\n\n" + text[end:])
    if accept:  # a reviewed edit, signed: under trusted it runs in-process
        store.accept(store.current().number)
    module = write_module(name, SOURCE)
    module.CALLS.clear()
    return module


FAULTS = [
    ("perceive", "    raise OverflowError('forged: int too large to convert to float')", "overflow"),
    ("operate_prime", "    raise OverflowError('forged timing mark')", "overflow"),
    ("operate_prime", "    from poet_sandbox.errors import CircuitOpenError\n"
                      "    raise CircuitOpenError('open on purpose')", "circuit"),
    ("operate_prime", "    raise UnicodeDecodeError('utf-8', b'\\xff', 0, 1, 'forged codec error')", "codec"),
    ("perceive", "    raise SystemExit(3)", "exit"),
    ("enforce", "    raise SystemExit(4)", "exit_after"),
    ("operate_prime", "    raise TimeoutError('not the facility')", "timeout"),
]


@pytest.mark.parametrize("function, body, case", FAULTS, ids=[case for _, _, case in FAULTS])
def test_a_fault_that_is_not_the_users_exception_is_a_fallback_never_the_callers(policy, write_module, fallbacks,
                                                                                 function, body, case):
    home, name = policy
    module = tampered(home, write_module, f"bf_{case}_{name}", function, body, accept=name == "trusted")
    result = module.total([4, 5])  # must neither raise nor end the program
    assert result == 9
    record = poet_runtime.last_execution()
    assert record.fell_back, record
    assert fallbacks and fallbacks[-1]["function"] == record.function
    if function == "enforce":  # the logic ran before the fault: its own result, once
        assert module.CALLS == [[4, 5]]
    else:
        assert module.CALLS[-1] == [4, 5] and len(module.CALLS) <= 2
    assert module.total([1]) == 1  # and the next call too


def test_the_users_own_exception_still_reaches_the_caller(policy, write_module):
    home, name = policy
    module = tampered(home, write_module, f"bf_own_{name}", "operate_prime",
                      "    return logic(*args, **kwargs)", accept=name == "trusted")
    with pytest.raises(KeyError, match="the user's own error"):
        module.total(["boom"])
    assert poet_runtime.last_execution().status == "error"

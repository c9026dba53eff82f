"""The enhanced call path: P -> O' -> E (-> T), fallback at every failure point, retries and the breaker."""

from __future__ import annotations

import logging
import math

import pytest

import poet_runtime
from poet_runtime import events, poet
from poet_runtime.store import FunctionStore

DRIFT = '''\
import statistics
from poet_runtime import poet


@poet(domain="ml_monitoring", optimize_for="accuracy")
def detect_drift(current: list[float], reference: list[float], threshold: float = 0.5) -> dict:
    gap = abs(statistics.fmean(current) - statistics.fmean(reference))
    return {"drift_detected": gap > threshold, "score": gap}
'''


@pytest.fixture
def fallbacks():
    seen = []
    unsubscribe = events.subscribe(lambda event: seen.append(event) if event["type"] == "function.fallback" else None)
    yield seen
    unsubscribe()


def current_code_path(home, module, qualname):
    store = FunctionStore(home / f"{module}.{qualname}", f"{module}:{qualname}")
    return store.current().path / "code.py"


def test_a_normal_call_runs_all_phases_and_returns_the_plain_result(poet_home, write_module):
    module = write_module("drift_ok", DRIFT)
    result = module.detect_drift([1.0, 2.0, None, math.nan], [1.0, 2.0])  # None and NaN dropped by Perceive
    assert result == {"drift_detected": False, "score": 0.0} and type(result) is dict
    record = poet_runtime.last_execution()
    assert record.status == "ok" and not record.fell_back and record.version == 1 and record.backend == "none"
    assert record.function == "drift_ok:detect_drift"
    assert set(record.phase_ms) == {"perceive", "operate", "enforce"}
    assert all(value >= 0 for value in record.phase_ms.values())
    assert module.detect_drift.__poet__.loaded.observations()["calls"] == 1  # Train recorded the call
    second = module.detect_drift([1.0], [1.0])
    assert second == {"drift_detected": False, "score": 0.0}
    assert poet_runtime.last_execution().execution_id != record.execution_id


def test_perceive_rejection_falls_back_to_the_original(poet_home, write_module, fallbacks, caplog):
    module = write_module("drift_perceive", DRIFT)
    # Every value missing: Perceive refuses; the original runs with the original arguments and raises its own error.
    with pytest.raises(TypeError):
        module.detect_drift([None], [1.0])
    record = poet_runtime.last_execution()
    assert record.fell_back and record.reason == "perceive_rejected"
    assert "current: every value is missing" in record.detail
    assert fallbacks[-1]["reason"] == "perceive_rejected"


def test_enforce_rejection_returns_the_originals_result(poet_home, write_module, fallbacks, caplog):
    module = write_module("drift_enforce", DRIFT)
    with caplog.at_level(logging.WARNING, logger="poet_runtime"):
        result = module.detect_drift([10.0], [1.0])  # score 9.0 is outside ml_monitoring's [0, 1]
        module.detect_drift([10.0], [1.0])
    assert result == {"drift_detected": True, "score": 9.0}
    assert poet_runtime.last_execution().reason == "enforce_rejected"
    warnings = [r for r in caplog.records if "fell back" in r.getMessage()]
    assert len(warnings) == 1, "warned once per function and reason"
    assert [event["reason"] for event in fallbacks] == ["enforce_rejected", "enforce_rejected"]


def test_generator_failure_falls_back(poet_home, fallbacks):
    namespace = {"poet": poet}
    exec("@poet\ndef made_in_a_string(x: int) -> int:\n    return x + 1\n", namespace)  # no source to read
    assert namespace["made_in_a_string"](1) == 2
    assert poet_runtime.last_execution().reason == "no_source"

    @poet
    def counter(n: int):
        yield from range(n)

    assert list(counter(3)) == [0, 1, 2]
    assert poet_runtime.last_execution().reason == "unsupported"


def test_syntax_error_in_stored_code_falls_back(poet_home, write_module):
    module = write_module("drift_syntax", DRIFT)
    module.detect_drift([1.0], [1.0])
    code = current_code_path(poet_home, "drift_syntax", "detect_drift")
    code.write_text(code.read_text() + "\ndef oops(:\n")  # a reviewer's bad hand edit
    module = write_module("drift_syntax", DRIFT)
    assert module.detect_drift([2.0], [1.0]) == {"drift_detected": True, "score": 1.0}
    record = poet_runtime.last_execution()
    assert record.fell_back and record.reason == "runtime_error" and "SyntaxError" in record.detail


def test_internal_failure_of_perceive_falls_back(poet_home, write_module):
    module = write_module("drift_internal", DRIFT)
    module.detect_drift([1.0], [1.0])
    code = current_code_path(poet_home, "drift_internal", "detect_drift")
    text = code.read_text().replace("    current = CHECK_CURRENT(current, 'current')",
                                    "    current = CHECK_CURRENT(current, 'current')\n    1 / 0")
    code.write_text(text)
    module = write_module("drift_internal", DRIFT)
    assert module.detect_drift([2.0], [1.0]) == {"drift_detected": True, "score": 1.0}
    record = poet_runtime.last_execution()
    assert record.reason == "perceive_error" and "ZeroDivisionError" in record.detail


def test_internal_failure_of_operate_prime_falls_back_but_user_errors_propagate(poet_home, write_module):
    module = write_module("drift_operate", DRIFT)
    with pytest.raises(Exception) as caught:
        module.detect_drift([], [1.0])  # statistics raises: the user's own error, unchanged
    assert type(caught.value).__name__ == "StatisticsError"
    assert poet_runtime.last_execution().status == "error"
    code = current_code_path(poet_home, "drift_operate", "detect_drift")
    code.write_text(code.read_text().replace("    return detect_drift(", "    return undefined_name + detect_drift("))
    module = write_module("drift_operate", DRIFT)
    assert module.detect_drift([1.0], [1.0]) == {"drift_detected": False, "score": 0.0}
    assert poet_runtime.last_execution().reason == "operate_prime_error"


def test_retries_with_backoff_then_success(poet_home):
    attempts = []

    @poet(retries=3)
    def flaky(x: int) -> int:
        attempts.append(x)
        if len(attempts) < 3:
            raise ConnectionError("reset by peer")
        return x * 2

    assert flaky(21) == 42
    assert attempts == [21, 21, 21]


def test_retries_spent_propagate_the_users_error_and_the_breaker_opens(poet_home):
    calls = []

    @poet(retries=1)
    def down() -> str:
        calls.append(1)
        raise ConnectionError("refused")

    for _ in range(5):  # breaker_threshold is 5 consecutive failed calls in the base domain
        with pytest.raises(ConnectionError, match="refused"):
            down()
    assert len(calls) == 10
    from poet_sandbox.errors import CircuitOpenError

    with pytest.raises(CircuitOpenError) as caught:
        down()
    assert isinstance(caught.value.__cause__, ConnectionError)
    assert len(calls) == 10, "an open circuit fails fast without calling the logic"


def test_non_retryable_errors_are_not_retried(poet_home):
    calls = []

    @poet(retries=3)
    def picky(x: int) -> int:
        calls.append(x)
        raise ValueError("bad x")

    with pytest.raises(ValueError, match="bad x"):
        picky(1)
    assert calls == [1]


def test_timeout_stops_waiting(poet_home):
    import time

    @poet(retries=0, timeout=0.2)
    def slow(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    assert slow(0.0) == 0.0
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        slow(2.0)
    assert time.monotonic() - started < 1.5


def test_a_learned_short_timeout_never_fails_a_call_the_decorators_timeout_allows(poet_home):
    import time

    @poet(retries=1, timeout=2.0)
    def steady(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    assert steady(0.0) == 0.0
    steady.__poet__.loaded.configure({"timeout_s": 0.02})  # as the latency learner might decide
    assert steady(0.2) == 0.2  # first attempt cut at 20 ms, the last one gets the full 2 s
    assert not poet_runtime.last_execution().fell_back
    steady.__poet__.loaded.configure({"timeout_s": 50.0})  # above the decorator's timeout: clamped to it
    assert steady.__poet__.loaded.namespace["PARAMS"]["timeout_s"] == 2.0


def test_closures_and_module_state_are_the_originals(poet_home, write_module):
    module = write_module("stateful", '''\
from poet_runtime import poet

SCALE = 2


def make(offset):
    @poet
    def shifted(x: int) -> int:
        return x * SCALE + offset
    return shifted


@poet
def scaled(x: int) -> int:
    return x * SCALE
''')
    assert module.make(1)(5) == 11
    assert module.scaled(5) == 10
    module.SCALE = 3  # the enhanced logic reads the module's live globals
    assert module.scaled(5) == 15
    assert not poet_runtime.last_execution().fell_back


def test_enhance_ahead_of_time(poet_home, write_module):
    module = write_module("drift_ahead", DRIFT)
    version = poet_runtime.enhance(module.detect_drift)
    assert version.number == 1 and (version.path / "code.py").is_file()
    assert module.detect_drift.__poet__.loaded is not None

"""The enhanced call path: P -> O' -> E (-> T), fallback at every failure point, retries and the breaker.

Contract 2: operate_prime calls the function object @poet received; checks report what does
not match (``last_execution().notes``, ``runtime.stats()[fid].notes``) and convert only where
the domain or ``repair="coerce"`` says; a failure after the logic ran returns the logic's own
result (the logic never runs twice). A hand-edited code.py is not verified: under the default
policy it runs in the restricted worker, under ``trusted`` in-process.
"""

from __future__ import annotations

import inspect
import logging
import math
import threading

import pytest

import poet_runtime
from poet_runtime import events, poet, runtime
from poet_runtime.store import FunctionStore

DRIFT = '''\
import statistics
from poet_runtime import poet


@poet(domain="ml_monitoring", optimize_for="accuracy")
def detect_drift(current: list[float], reference: list[float], threshold: float = 0.5) -> dict:
    gap = abs(statistics.fmean(current) - statistics.fmean(reference))
    result = {"drift_detected": gap > threshold, "score": gap}
    CALLS.append((current, result))  # what the logic got, what it returned, once per run
    return result


CALLS = []
'''


@pytest.fixture
def fallbacks():
    seen = []
    unsubscribe = events.subscribe(lambda event: seen.append(event) if event["type"] == "function.fallback" else None)
    yield seen
    unsubscribe()


def checks(notes):
    """What the type and domain checks reported (mismatch, repair, retry), without a domain's own
    evidence (dotted kinds such as ``domain.warning``, which domains add as they grow)."""
    if isinstance(notes, dict):
        return {key: count for key, count in notes.items() if "." not in key[0]}
    return tuple(note for note in notes if "." not in note[0])


def current_code_path(home, module, qualname):
    store = FunctionStore(home / f"{module}.{qualname}", f"{module}:{qualname}")
    return store.current().path / "code.py"


def hand_edit(home, write_module, name, old, new):
    """Generate ``name``'s version, replace ``old`` by ``new`` in its code.py, import the module afresh."""
    module = write_module(name, DRIFT)
    module.detect_drift([1.0], [1.0])
    code = current_code_path(home, name, "detect_drift")
    text = code.read_text()
    assert old in text, "builtin-2 no longer writes the text this test edits"
    code.write_text(text.replace(old, new, 1))
    if "def oops(:" not in new:  # a reviewed edit is signed; an unsigned one is repaired as the next version
        FunctionStore(code.parent.parent, f"{name}:detect_drift").accept(1)
    return write_module(name, DRIFT)


@pytest.fixture(params=["trusted", "default"])
def edit_policy(request, poet_home, monkeypatch):
    """Hand-edited code runs in-process under trusted and in the restricted worker under default."""
    from poet_runtime import settings

    monkeypatch.setenv("POET_POLICY", request.param)
    settings.reset()
    return poet_home, {"trusted": "none", "default": "restricted"}[request.param]


def test_a_normal_call_runs_all_phases_and_returns_the_plain_result(poet_home, write_module):
    module = write_module("drift_ok", DRIFT)
    batch = [1.0, 2.0, None, math.nan]
    result = module.detect_drift(batch, [1.0, 2.0])  # ml_monitoring's rule: None and NaN dropped by Perceive
    assert result == {"drift_detected": False, "score": 0.0} and type(result) is dict
    assert len(module.CALLS) == 1 and result is module.CALLS[0][1]  # the logic's own result object
    assert module.CALLS[0][0] == [1.0, 2.0] and batch[2] is None  # the repaired copy; the caller's list intact
    record = poet_runtime.last_execution()
    assert record.status == "ok" and not record.fell_back and record.version == 1 and record.backend == "none"
    assert record.function == "drift_ok:detect_drift"
    assert set(record.phase_ms) == {"perceive", "operate", "enforce"}
    assert all(value >= 0 for value in record.phase_ms.values())
    assert checks(record.notes) == (("repair", "current", "dropped 2 missing value(s) (None or NaN)"),)
    assert checks(runtime.stats()["drift_ok:detect_drift"].notes) == {("repair", "current"): 1}
    assert module.detect_drift.__poet__.loaded.observations()["calls"] == 1  # Train recorded the call
    reference = [1.0]
    second = module.detect_drift([1.0], reference)
    assert second == {"drift_detected": False, "score": 0.0}
    assert module.CALLS[1][0] == [1.0] and second is module.CALLS[1][1]
    assert poet_runtime.last_execution().execution_id != record.execution_id
    assert checks(poet_runtime.last_execution().notes) == ()  # nothing to report
    assert checks(runtime.stats()["drift_ok:detect_drift"].notes) == {("repair", "current"): 1}


@pytest.fixture
def reports():
    seen = []
    unsubscribe = events.subscribe(
        lambda event: seen.append(event) if event["type"] in ("function.mismatch", "function.repair") else None)
    yield seen
    unsubscribe()


def test_a_mismatch_is_reported_and_the_callers_value_passed_on(poet_home, reports):
    seen = []

    @poet
    def repeat(text: str, times: int) -> str:
        seen.append(times)
        return text * int(times)

    assert repeat("ab", "3") == "ababab"  # "3" for an int hint: the original works with it, so does this
    assert seen == ["3"] and type(seen[0]) is str
    record = poet_runtime.last_execution()
    assert record.status == "ok" and not record.fell_back
    assert record.notes == (("mismatch", "times", "expected int, got str '3'"),)
    assert runtime.stats()[record.function].notes == {("mismatch", "times"): 1}
    assert [(e["type"], e["function"], e["field"], e["detail"]) for e in reports] == [
        ("function.mismatch", record.function, "times", "expected int, got str '3'")]
    assert repeat("ab", 2) == "abab" and poet_runtime.last_execution().notes == ()
    assert runtime.stats()[record.function].notes == {("mismatch", "times"): 1}
    assert len(reports) == 1


def test_repair_coerce_converts_losslessly_and_reports_the_repair(poet_home, reports):
    seen = []

    @poet(repair="coerce")
    def repeat(text: str, times: int) -> str:
        seen.append(times)
        return text * times

    assert repeat("ab", "3") == "ababab"
    assert seen == [3] and type(seen[0]) is int
    record = poet_runtime.last_execution()
    assert record.status == "ok" and not record.fell_back
    assert record.notes == (("repair", "times", "str '3' -> int 3"),)
    assert runtime.stats()[record.function].notes == {("repair", "times"): 1}
    assert [(e["type"], e["field"], e["detail"]) for e in reports] == [("function.repair", "times", "str '3' -> int 3")]
    with pytest.raises(TypeError):  # "2.5" is no lossless int: passed on as it is, the logic's own error
        repeat("ab", "2.5")
    assert seen == [3, "2.5"]
    assert poet_runtime.last_execution().status == "error"


def test_enforce_returns_the_logics_own_result_and_reports_a_mismatch(poet_home):
    from collections import Counter

    made = []

    @poet
    def halve(x: int) -> int:
        made.append(x / 2)
        return made[-1]

    @poet
    def pair(x: int) -> list[int]:
        made.append((x, x))
        return made[-1]

    @poet
    def tally(text: str) -> dict[str, int]:
        made.append(Counter(text))
        return made[-1]

    result = halve(6)
    assert result is made[-1] and type(result) is float  # 3.0 for -> int: returned as it is
    assert poet_runtime.last_execution().notes == (("mismatch", "result", "expected int, got float 3.0"),)
    result = pair(1)
    assert result is made[-1] and type(result) is tuple
    assert [(k, f) for k, f, _ in poet_runtime.last_execution().notes] == [("mismatch", "result")]
    result = tally("aab")
    assert result is made[-1] and result.most_common(1) == [("a", 2)]  # a Counter is a dict[str, int]
    assert poet_runtime.last_execution().notes == ()
    assert poet_runtime.last_execution().status == "ok"


def test_enforce_with_repair_coerce_normalises_losslessly_and_reports_it(poet_home):
    @poet(repair="coerce")
    def halve(x: int) -> int:
        return x / 2

    @poet(repair="coerce")
    def pair(x: int) -> list[int]:
        return (x, x)

    result = halve(6)
    assert result == 3 and type(result) is int
    assert poet_runtime.last_execution().notes == (("repair", "result", "float 3.0 -> int 3"),)
    assert pair(1) == [1, 1] and type(pair(1)) is list
    assert [(k, f) for k, f, _ in poet_runtime.last_execution().notes] == [("repair", "result")]
    result = halve(5)  # 2.5 is no lossless int: returned as it is, reported
    assert result == 2.5 and poet_runtime.last_execution().notes == (
        ("mismatch", "result", "expected int, got float 2.5"),)


def test_api_operations_replaces_none_by_the_literal_default_and_reports_odd_statuses(poet_home):
    seen = []

    @poet(domain="api_operations")
    def page(url: str, size: int = 20) -> dict:
        seen.append(size)
        return {"status": "done" if url == "odd" else "success", "size": size}

    assert page("u", None) == {"status": "success", "size": 20}  # the domain's declared repair
    assert seen == [20]
    notes = poet_runtime.last_execution().notes
    # (builtin-2 also checks the pre-repair None and notes a spurious "mismatch" of size: reported as a defect)
    assert notes[0] == ("repair", "size", "None -> the default 20")
    assert [note for note in notes if note[0] == "repair"] == [("repair", "size", "None -> the default 20")]
    assert page("u") == {"status": "success", "size": 20} and poet_runtime.last_execution().notes == ()
    odd = page("odd", 5)  # a status outside success|error|pending: reported, returned as it is
    assert odd == {"status": "done", "size": 5} and poet_runtime.last_execution().status == "ok"
    assert poet_runtime.last_execution().notes == (
        ("mismatch", "result['status']", "not one of success|error|pending"),)


def test_perceive_rejection_falls_back_to_the_original(poet_home, write_module, fallbacks, caplog):
    module = write_module("drift_perceive", DRIFT)
    # Every value missing: Perceive refuses; the original runs with the original arguments and raises its own error.
    with pytest.raises(TypeError):
        module.detect_drift([None], [1.0])
    record = poet_runtime.last_execution()
    assert record.fell_back and record.reason == "perceive_rejected"
    assert "current: every value is missing" in record.detail
    assert fallbacks[-1]["reason"] == "perceive_rejected"
    assert module.CALLS == []  # the original ran once, and raised before it returned anything


def test_enforce_rejection_returns_the_originals_result(poet_home, write_module, fallbacks, caplog):
    module = write_module("drift_enforce", DRIFT)
    with caplog.at_level(logging.WARNING, logger="poet_runtime"):
        result = module.detect_drift([10.0], [1.0])  # score 9.0 is outside ml_monitoring's [0, 1]
        module.detect_drift([10.0], [1.0])
    assert result == {"drift_detected": True, "score": 9.0}
    # Enforce refused after the logic ran: the caller gets the logic's own result, and the logic ran once per call.
    assert len(module.CALLS) == 2 and result is module.CALLS[0][1]
    assert poet_runtime.last_execution().reason == "enforce_rejected"
    assert "9.0 is above 1.0" in poet_runtime.last_execution().detail
    warnings = [r for r in caplog.records if "(enforce_rejected)" in r.getMessage()]
    assert len(warnings) == 1, "warned once per function and reason"
    assert "the caller got the logic's own result" in warnings[0].getMessage()  # not "fell back": it ran
    assert [event["reason"] for event in fallbacks] == ["enforce_rejected", "enforce_rejected"]


def test_generator_failure_falls_back(poet_home, fallbacks):
    namespace = {"poet": poet}
    exec("@poet\ndef made_in_a_string(x: int) -> int:\n    return x + 1\n", namespace)  # no source to read
    assert namespace["made_in_a_string"](1) == 2
    assert poet_runtime.last_execution().reason == "no_source"
    assert [event["reason"] for event in fallbacks] == ["no_source"]


def test_generator_functions_are_enhanced_and_async_generators_run_as_written(poet_home, fallbacks):
    @poet
    def counter(n: int):
        yield from range(n)

    assert inspect.isgeneratorfunction(counter)  # inspect answers as for the original
    stream = counter(3)
    assert inspect.isgenerator(stream)
    assert list(stream) == [0, 1, 2]
    record = poet_runtime.last_execution()
    assert record.status == "ok" and not record.fell_back and record.backend == "none"

    async def ticks(n: int):
        yield n

    assert poet(ticks) is ticks  # an async generator function is not enhanced (documented)
    assert fallbacks == []


def test_a_verified_builtin_version_runs_in_process_under_the_default_policy(poet_home, write_module, monkeypatch):
    from poet_runtime import settings

    monkeypatch.setenv("POET_POLICY", "default")
    settings.reset()
    module = write_module("drift_verified", DRIFT)
    assert module.detect_drift([2.0], [1.0]) == {"drift_detected": True, "score": 1.0}
    record = poet_runtime.last_execution()
    assert record.status == "ok" and record.backend == "none"  # regenerated byte-identically: the project's own


def test_a_hand_edited_version_is_unverified_and_runs_in_the_policys_sandbox(edit_policy, write_module):
    home, backend = edit_policy
    module = hand_edit(home, write_module, "drift_edited",
                       "def enforce(result):", "# reviewed by hand\ndef enforce(result):")
    batch = [2.0, None]
    result = module.detect_drift(batch, [1.0])
    assert result == {"drift_detected": True, "score": 1.0}
    record = poet_runtime.last_execution()
    assert record.status == "ok" and not record.fell_back and record.backend == backend
    assert checks(record.notes) == (("repair", "current", "dropped 1 missing value(s) (None or NaN)"),)
    assert len(module.CALLS) == 1 and module.CALLS[0][0] == [2.0] and batch == [2.0, None]
    assert result == module.CALLS[0][1]
    if backend == "none":
        assert result is module.CALLS[0][1]


def test_syntax_error_in_stored_code_is_repaired_as_the_next_version(edit_policy, write_module, caplog):
    """A damaged version of ours is reported once, naming the file, and regenerated as the next
    version (the store's repair, issue 12 item 4): the call runs enhanced, the logic once."""
    home, backend = edit_policy
    with caplog.at_level("WARNING", logger="poet_runtime"):
        module = hand_edit(home, write_module, "drift_syntax",
                           "def enforce(result):", "def oops(:\n    pass\n\n\ndef enforce(result):")  # a bad edit
        assert module.detect_drift([2.0], [1.0]) == {"drift_detected": True, "score": 1.0}
    record = poet_runtime.last_execution()
    assert not record.fell_back and record.version == 2, record
    assert len(module.CALLS) == 1  # the logic, once
    assert any("code.py" in message and "syntax" in message for message in caplog.messages), caplog.messages


def test_internal_failure_of_perceive_falls_back(edit_policy, write_module):
    home, backend = edit_policy
    module = hand_edit(home, write_module, "drift_internal",
                       "    checked = CHECK_CURRENT(current, 'current')\n",
                       "    checked = CHECK_CURRENT(current, 'current')\n    1 / 0\n")
    assert module.detect_drift([2.0], [1.0]) == {"drift_detected": True, "score": 1.0}
    record = poet_runtime.last_execution()
    assert record.fell_back and record.backend == backend
    assert "perceive" in record.detail and "ZeroDivisionError" in record.detail
    if backend == "none":
        assert record.reason == "perceive_error"
    assert len(module.CALLS) == 1  # failed before the logic: the original ran once


def test_internal_failure_of_operate_prime_falls_back_but_user_errors_propagate(edit_policy, write_module):
    home, backend = edit_policy
    module = write_module("drift_operate", DRIFT)
    with pytest.raises(Exception) as caught:
        module.detect_drift([], [1.0])  # statistics raises: the user's own error, unchanged
    assert type(caught.value).__name__ == "StatisticsError"
    assert poet_runtime.last_execution().status == "error"
    module = hand_edit(home, write_module, "drift_operate",
                       "    return logic(*args, **kwargs)", "    return undefined_name + logic(*args, **kwargs)")
    with pytest.raises(Exception) as caught:
        module.detect_drift([], [1.0])  # still the user's own error, under an unverified version too
    assert type(caught.value).__name__ == "StatisticsError"
    assert module.detect_drift([1.0], [1.0]) == {"drift_detected": False, "score": 0.0}
    record = poet_runtime.last_execution()
    assert record.fell_back and record.backend == backend
    assert "operate_prime" in record.detail and "NameError" in record.detail
    if backend == "none":
        assert record.reason == "operate_prime_error"
    assert len(module.CALLS) == 1  # the failure came before the logic: the original ran once


def test_a_failure_of_operate_prime_after_the_logic_returned_returns_its_result(poet_home, write_module, monkeypatch):
    from poet_runtime import settings

    monkeypatch.setenv("POET_POLICY", "default")  # unverified: the restricted worker
    settings.reset()
    module = hand_edit(poet_home, write_module, "drift_after",
                       "    return logic(*args, **kwargs)",
                       "    result = logic(*args, **kwargs)\n    return undefined_name + result")
    result = module.detect_drift([2.0], [1.0])
    assert result == {"drift_detected": True, "score": 1.0}
    record = poet_runtime.last_execution()
    assert record.fell_back and record.reason == "operate_prime_error" and record.backend == "restricted"
    assert len(module.CALLS) == 1 and result is module.CALLS[0][1]  # never twice; the logic's own object


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
    record = poet_runtime.last_execution()
    assert record.status == "ok"
    assert record.notes == (("retry", "operate_prime", "ConnectionError: attempt 2"),
                            ("retry", "operate_prime", "ConnectionError: attempt 3"))
    assert runtime.stats()[record.function].notes == {("retry", "operate_prime"): 2}


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

    local = threading.local()
    local.name = "caller"
    threads = []

    @poet(retries=0, timeout=0.2)
    def slow(seconds: float) -> float:
        threads.append((threading.get_ident(), getattr(local, "name", None)))
        time.sleep(seconds)
        return seconds

    assert slow(0.0) == 0.0
    # With a timeout the logic still runs in the caller's thread: its thread-locals are the caller's.
    assert threads == [(threading.get_ident(), "caller")]
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
    assert poet_runtime.last_execution().notes == (("retry", "operate_prime", "TimeoutError: attempt 2"),)
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


def test_last_execution_is_the_outermost_call_when_the_original_ran_as_fallback(poet_home):
    @poet
    def inner(x: int) -> int:
        return x + 1

    namespace = {"poet": poet, "inner": inner}
    exec("@poet\ndef outer(x):\n    return inner(x) * 2\n", namespace)  # no source: falls back every call
    assert namespace["outer"](1) == 4
    record = poet_runtime.last_execution()
    assert record.function.endswith(":outer") and record.reason == "no_source", record


def test_exit_summary_does_not_count_a_function_that_never_ran_enhanced():
    from collections import Counter

    from poet_runtime.hook.summary import format_summary
    from poet_runtime.runtime import FunctionStats

    ok = FunctionStats("app:ok", version=1, backend="none", enhanced_calls=3)
    never = FunctionStats("app:never", fallbacks=Counter({"no_source": 2}))
    lines = format_summary({"app:ok": ok, "app:never": never})
    assert lines[0].startswith("poet: 1 of 2 functions enhanced, 5 calls (3 enhanced, 2 fell back: no_source x2)")
    assert any("app:never" in line and "never ran enhanced" in line for line in lines[1:])
    assert format_summary({"app:ok": ok})[0].startswith("poet: 1 function enhanced, 3 calls")

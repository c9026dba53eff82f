"""What comes back from a sandbox is data, or the call falls back (issue 13, item 5).

A worker that has been taken over can send any line it likes. These tests hand the
host's side of a real restricted enhancement (a real worker, loaded) replies that no
honest worker sends: values its codec would decode into something that raises or
hangs in the caller (a signalling NaN, ``Decimal('1E+999999999')``), malformed tagged
values whose decoding raises something other than ``ValueError``, forged time marks,
notes that forge log lines. Every one must become a ``PhaseError`` (before the logic
ran: the host runs the original) or ``AfterLogic`` (after: the logic's own result),
never another exception and never the value.
"""

from __future__ import annotations

import decimal

import pytest

from poet_runtime.backends import get_backend
from poet_runtime.backends.base import Limits
from poet_runtime.backends.crossing import HostCall, check_value, fits_hint, return_hint
from poet_runtime.errors import PoetViolation
from poet_runtime.resources import load_facility
from poet_runtime.safe_text import hidden_characters
from sandbox_helpers import load, module_text

PhaseError = load_facility().PhaseError
from poet_sandbox.driver import AfterLogic  # noqa: E402

def _nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


WORKER = Limits(wall_ms=2000, cpu_ms=1000, memory_mb=128, max_output_kb=64, imports=("math", "decimal"))
FORGED_DATA = {
    "signalling-nan": {"$dec": "sNaN"},
    "signalling-nan-nested": {"$t": [1, {"$dec": "-sNaN5"}]},
    "huge-exponent": {"$dec": "1E+999999999"},
    "tiny-exponent": {"$dec": "1E-999999999"},
    "too-many-digits": {"$dec": "1" * 5000},
    "not-a-decimal": {"$dec": "garbage"},  # decimal.InvalidOperation, not a ValueError
    "decimal-of-a-list": {"$dec": [1, 2]},
    "zero-denominator": {"$fr": [1, 0]},  # ZeroDivisionError
    "huge-fraction": {"$fr": [10 ** 4000 * 10 ** 400, 1]},
    "timedelta-overflow": {"$td": [10 ** 12, 0, 0]},  # OverflowError
    "bad-datetime": {"$dt": "not a date"},
    "complex-of-text": {"$c": ["a", 1]},
    "bad-base64": {"$b": "!!!"},
    "unhashable-key": {"$d": [[[1], 2]]},
    "deep": {"$t": [_nested(300)]},
}
FORGED_MARKS = {
    "overflowing": [0, 1, 2, 10 ** 30],
    "negative": [-5, 0, 1, 2],
    "backwards": [9, 8, 7, 6],
    "bools": [True, True, True, True],
    "floats": [0.0, 1.0, 2.0, 3.0],
    "three": [1, 2, 3],
    "not-a-list": "0,1,2,3",
}


@pytest.fixture(scope="module")
def loaded():
    enhancement = load(module_text("return logic(*args, **kwargs)"), WORKER)
    yield enhancement
    enhancement.close()
    get_backend("restricted").close()


def _host_call(enhancement, ran: bool):
    def logic() -> tuple:
        return ("own",)

    host = HostCall(logic, enhancement.encode, enhancement.decode)
    host.start((), {})
    if ran:
        host.run_logic({"status": "logic", "args": [], "kwargs": {}})
    return host


def _outcome(enhancement, host, reply):
    try:
        return "returned", enhancement._outcome(host, reply)
    except AfterLogic as error:
        return "after_logic", error
    except PhaseError as error:
        return "phase", error
    except PoetViolation as error:
        return "violation", error
    except BaseException as error:  # noqa: B902 - what must never happen
        return "escaped", error


@pytest.mark.parametrize("ran", [False, True], ids=["before-logic", "after-logic"])
@pytest.mark.parametrize("name", list(FORGED_DATA))
def test_forged_data_becomes_a_fallback(name, ran, loaded):
    host = _host_call(loaded, ran)
    reply = {"ok": True, "result": ["d", FORGED_DATA[name]], "t": [1, 2, 3, 4]}
    outcome, value = _outcome(loaded, host, reply)
    assert outcome == ("after_logic" if ran else "phase"), f"{name}: {outcome}: {value!r}"[:300]
    if ran:
        assert value.result == ("own",)  # the logic's own result, as the caller gets it


@pytest.mark.parametrize("name", list(FORGED_MARKS))
def test_forged_time_marks_become_a_fallback(name, loaded):
    assert _outcome(loaded, _host_call(loaded, True), {"ok": True, "result": ["h", 0], "t": [1, 2, 3, 4]})[0] == \
        "returned"  # the same reply with honest marks
    host = _host_call(loaded, True)
    outcome, value = _outcome(loaded, host, {"ok": True, "result": ["h", 0], "t": FORGED_MARKS[name]})
    assert outcome == "after_logic" and value.result == ("own",), f"{name}: {outcome}: {value!r}"


def test_a_forged_argument_for_the_logic_is_refused_before_the_logic_runs(loaded):
    runs = []
    host = HostCall(lambda *args: runs.append(args), loaded.encode, loaded.decode)
    host.start((), {})
    with pytest.raises(PhaseError):
        host.run_logic({"status": "logic", "args": [["d", {"$dec": "sNaN"}]], "kwargs": {}})
    assert runs == []


def test_notes_and_details_are_shown_visibly(loaded):
    host = _host_call(loaded, True)
    forged = "\x1b[2K\rINFO fine \u202eevil\u202c"
    reply = {"ok": True, "result": ["h", 0], "t": [1, 2, 3, 4], "notes": [["mismatch", "x\r", forged]]}
    outcome, value = _outcome(loaded, host, reply)
    assert outcome == "returned"
    assert not any(hidden_characters(part) for note in value[5] for part in note), value[5]
    for reply in ({"ok": False, "kind": "violation", "limit": "attribute\x1b[1A", "detail": forged},
                  {"ok": False, "status": "after_logic", "reason": "x\x08", "detail": forged},
                  {"ok": False, "kind": "phase", "detail": forged}):
        outcome, value = _outcome(loaded, _host_call(loaded, True), reply)
        assert outcome != "escaped"
        shown = [str(value), getattr(value, "detail", ""), getattr(value, "reason", ""), getattr(value, "limit", "")]
        assert not any(hidden_characters(text) for text in shown), shown


def test_an_honest_worker_still_returns_decimals_and_fractions(loaded):
    code = module_text("import decimal\nlogic(*args, **kwargs)\nreturn [decimal.Decimal('2.50'), decimal.Decimal('NaN')]")
    enhancement = load(code, WORKER)
    try:
        value = enhancement.call(lambda: None, (), {})[0]
    finally:
        enhancement.close()
    assert value[0] == decimal.Decimal("2.50") and value[1].is_qnan()


@pytest.mark.parametrize("value, hint, fits", [
    ("a", str, True), (1, float, True), (1.5, int, False), ([1, 2], list[int], True), ([1, "x"], list[int], False),
    ({"a": 1}, dict[str, int], True), ({"a": "b"}, dict[str, int], False), (None, int | None, True),
    ((1, "a"), tuple[int, str], True), ((1, 2, 3), tuple[int, ...], True), ("x", int, False), (3, "unknown", True),
])
def test_results_are_checked_against_the_annotation(value, hint, fits):
    assert fits_hint(value, hint) is fits


def test_the_return_annotation_is_read_from_the_user_function():
    def annotated(x) -> list[int]:
        return [x]

    assert return_hint(annotated) == list[int]
    check_value([1, 2.5, "x", (None, b"")])
    with pytest.raises(PhaseError):
        check_value({"k": [decimal.Decimal("sNaN")]})


def test_a_notes_structured_evidence_crosses_as_data_and_nothing_else_does():
    evidence = {"ks": 0.25, "n": 40, "ok": False, "why": "shift\x1b[2J", "bins": [0.1, 0.2], "none": None}
    ((kind, field, detail),) = HostCall.notes([["domain.evidence", "two_sample", evidence]])
    assert (kind, field) == ("domain.evidence", "two_sample")
    assert detail == {**evidence, "why": "shift\\x1b[2J"}  # data kept, its text shown visibly
    deep = {"a": {"b": {"c": {"d": {"e": 1}}}}}
    for forged in ({"x": float("nan")}, {"x": 10 ** 30}, deep, {1: "int key"}, [0] * 100, 3.5):
        with pytest.raises(load_facility().PhaseError, match="notes are malformed"):
            HostCall.notes([["domain.evidence", "f", forged]])

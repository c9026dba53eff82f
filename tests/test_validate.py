"""poet_sandbox.validate: report mismatches, convert only when asked (coerce) or a domain rule says so.

A value that does not match its hint is passed on unchanged and noted (``mismatch``);
``coerce=True`` (the decorator's ``repair="coerce"``) makes lossless repairs, each noted
(``repair``); a lossy or wrong value is never converted, even with ``coerce``; only
impossible values (a score outside [0, 1], a non-finite number, a batch of nothing but
missing values) raise, naming the field.
"""

from __future__ import annotations

import math
import threading

import pytest

from poet_runtime.resources import load_facility

load_facility()
from poet_sandbox import validate  # noqa: E402
from poet_sandbox.errors import EnforceError, PerceiveError  # noqa: E402


@pytest.fixture(autouse=True)
def clean_notes():
    validate.take_notes()  # nothing another test left in this thread
    yield
    validate.take_notes()


def kinds(notes):
    return [(kind, field) for kind, field, _ in notes or ()]


@pytest.mark.parametrize(
    "checker, value",
    [
        (validate.as_int, 3),
        (validate.as_int, True),  # a bool is an int
        (validate.as_float, 2),  # an int is a valid float (PEP 484) and stays an int
        (validate.as_float, 2.5),
        (validate.as_bool, False),
        (validate.as_str, "x"),
    ],
)
def test_matching_values_are_the_same_object_and_nothing_is_noted(checker, value):
    assert checker(value, "field") is value
    assert checker(value, "field", coerce=True) is value
    assert validate.take_notes() is None


LOSSLESS = [
    (validate.as_int, "42", 42),
    (validate.as_int, " -7 ", -7),
    (validate.as_int, 5.0, 5),
    (validate.as_float, "2.5", 2.5),
    (validate.as_bool, "yes", True),
    (validate.as_bool, 0, False),
]


@pytest.mark.parametrize("checker, value, expected", LOSSLESS)
def test_a_mismatch_is_reported_and_passed_on_unchanged(checker, value, expected):
    result = checker(value, "field")
    assert result is value  # "42" for an int hint stays "42": the original might work with it
    notes = validate.take_notes()
    assert kinds(notes) == [("mismatch", "field")]
    assert notes[0][2].startswith("expected ") and repr(value) in notes[0][2]


@pytest.mark.parametrize("checker, value, expected", LOSSLESS)
def test_coerce_makes_the_lossless_repair_and_notes_it(checker, value, expected):
    result = checker(value, "field", coerce=True)
    assert result == expected and type(result) is type(expected)
    notes = validate.take_notes()
    assert kinds(notes) == [("repair", "field")]
    assert repr(value) in notes[0][2] and repr(expected) in notes[0][2]


@pytest.mark.parametrize(
    "checker, value",
    [
        (validate.as_int, 5.5),
        (validate.as_int, "5.5"),
        (validate.as_int, None),
        (validate.as_float, "abc"),
        (validate.as_bool, 2),
        (validate.as_bool, "maybe"),
        (validate.as_str, 3),
    ],
)
@pytest.mark.parametrize("coerce", [False, True])
def test_lossy_or_wrong_values_are_never_converted_and_reported_naming_the_field(checker, value, coerce):
    assert checker(value, "batch_size", coerce=coerce) is value
    notes = validate.take_notes()
    assert kinds(notes) == [("mismatch", "batch_size")]
    assert notes[0][2].startswith("expected ")


def test_notes_belong_to_the_thread_that_made_them():
    validate.as_int("1", "mine")
    seen = []
    other = threading.Thread(target=lambda: (validate.as_int("2", "theirs"), seen.append(validate.take_notes())))
    other.start()
    other.join()
    assert kinds(seen[0]) == [("mismatch", "theirs")]
    assert kinds(validate.take_notes()) == [("mismatch", "mine")]
    assert validate.take_notes() is None


def test_lists_keep_identity_report_mismatches_and_drop_missing_values():
    values = [1.0, 2.0]
    assert validate.as_list(values, "v", item=validate.as_float) is values
    assert validate.take_notes() is None

    # Not a list, or an item of the wrong type: reported, passed on as it is.
    pair = (1, "2")
    assert validate.as_list(pair, "v", item=validate.as_int) is pair
    assert kinds(validate.take_notes()) == [("mismatch", "v")]
    mixed = [1, "x"]
    assert validate.as_list(mixed, "v", item=validate.as_int) is mixed
    notes = validate.take_notes()
    assert kinds(notes) == [("mismatch", "v[1]")] and "expected int" in notes[0][2]

    # coerce: tuple -> list and "2" -> 2, each a noted repair; a wrong item stays and is reported.
    assert validate.as_list(pair, "v", item=validate.as_int, coerce=True) == [1, 2]
    assert kinds(validate.take_notes()) == [("repair", "v"), ("repair", "v[1]")]
    assert validate.as_list(mixed, "v", item=validate.as_int, coerce=True) == [1, "x"]
    assert kinds(validate.take_notes()) == [("mismatch", "v[1]")]

    # drop_missing is a domain rule: it converts without coerce, and says so.
    batch = [1.0, None, math.nan, 3.0]
    assert validate.as_list(batch, "v", item=validate.as_float, drop_missing=True) == [1.0, 3.0]
    assert batch[1] is None  # the caller's list is not touched
    notes = validate.take_notes()
    assert kinds(notes) == [("repair", "v")] and "dropped 2 missing" in notes[0][2]
    with pytest.raises(PerceiveError, match=r"v: every value is missing") as caught:
        validate.as_list([None, math.nan], "v", drop_missing=True)
    assert caught.value.field == "v"


def test_dicts_keep_identity_and_coerce_rebuilds_only_when_it_repaired():
    counts = {"a": 1}
    check = validate.dict_of(validate.as_str, validate.as_int)
    assert check(counts, "c") is counts
    text = {"a": "1"}
    assert check(text, "c") is text
    assert kinds(validate.take_notes()) == [("mismatch", "c['a']")]
    repaired = check(text, "c", coerce=True)
    assert repaired == {"a": 1} and text == {"a": "1"}
    assert kinds(validate.take_notes()) == [("repair", "c['a']")]


def test_arrays_stay_arrays_with_nan_masked():
    numpy = pytest.importorskip("numpy")
    array = numpy.array([1.0, numpy.nan, 3.0])
    result = validate.as_list(array, "v", item=validate.as_float, drop_missing=True)
    assert isinstance(result, numpy.ndarray) and result.tolist() == [1.0, 3.0]
    assert kinds(validate.take_notes()) == [("repair", "v")]
    intact = numpy.array([1.0, 2.0])
    assert validate.as_list(intact, "v", item=validate.as_float, drop_missing=True) is intact
    assert validate.take_notes() is None
    # An array of text for a numeric batch: reported (naming the dtype), passed on as it is.
    words = numpy.array(["a"])
    assert validate.as_list(words, "v", item=validate.as_float) is words
    notes = validate.take_notes()
    assert kinds(notes) == [("mismatch", "v")] and "dtype" in notes[0][2]


def test_enforce_helpers():
    assert validate.finite_in_range(0.5, "score", 0.0, 1.0) == 0.5
    with pytest.raises(EnforceError, match="score: must be a finite number"):
        validate.finite_in_range(math.nan, "score", 0.0, 1.0)
    with pytest.raises(EnforceError, match="above 1.0") as caught:
        validate.finite_in_range(1.5, "score", 0.0, 1.0)
    assert caught.value.field == "score"
    with pytest.raises(EnforceError, match="is not one of"):
        validate.one_of("done", "result['status']", ("success", "error", "pending"))

    # A TypedDict result missing a required key is reported, returned as it is.
    check = validate.typed_dict({"score": validate.as_float}, frozenset({"score"}))
    empty = {}
    assert check(empty, "result") is empty
    notes = validate.take_notes()
    assert kinds(notes) == [("mismatch", "result")] and "missing required key" in notes[0][2]
    text = {"score": "0.5"}
    assert check(text, "result") is text
    assert kinds(validate.take_notes()) == [("mismatch", "result['score']")]
    assert check(text, "result", coerce=True) == {"score": 0.5} and text == {"score": "0.5"}
    assert kinds(validate.take_notes()) == [("repair", "result['score']")]

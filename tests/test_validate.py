"""poet_sandbox.validate: lossless repairs only, clear errors naming the field."""

from __future__ import annotations

import math

import pytest

from poet_runtime.resources import load_facility

load_facility()
from poet_sandbox import validate  # noqa: E402
from poet_sandbox.errors import EnforceError, PerceiveError  # noqa: E402


@pytest.mark.parametrize(
    "checker, value, expected",
    [
        (validate.as_int, 3, 3),
        (validate.as_int, "42", 42),
        (validate.as_int, " -7 ", -7),
        (validate.as_int, 5.0, 5),
        (validate.as_float, 2, 2),  # an int is a valid float (PEP 484) and stays an int
        (validate.as_float, "2.5", 2.5),
        (validate.as_bool, "yes", True),
        (validate.as_bool, 0, False),
        (validate.as_str, "x", "x"),
    ],
)
def test_lossless_repairs(checker, value, expected):
    result = checker(value, "field")
    assert result == expected and type(result) is type(expected)


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
def test_lossy_or_wrong_values_are_refused_naming_the_field(checker, value):
    with pytest.raises(PerceiveError) as caught:
        checker(value, "batch_size")
    assert str(caught.value).startswith("batch_size: expected")
    assert caught.value.field == "batch_size"


def test_lists_keep_identity_when_nothing_changes_and_drop_missing_values():
    values = [1.0, 2.0]
    assert validate.as_list(values, "v", item=validate.as_float) is values
    assert validate.as_list((1, "2"), "v", item=validate.as_int) == [1, 2]
    assert validate.as_list([1.0, None, math.nan, 3.0], "v", item=validate.as_float, drop_missing=True) == [1.0, 3.0]
    with pytest.raises(PerceiveError, match=r"v: every value is missing"):
        validate.as_list([None, math.nan], "v", drop_missing=True)
    with pytest.raises(PerceiveError, match=r"v\[1\]: expected int"):
        validate.as_list([1, "x"], "v", item=validate.as_int)


def test_arrays_stay_arrays_with_nan_masked():
    numpy = pytest.importorskip("numpy")
    array = numpy.array([1.0, numpy.nan, 3.0])
    result = validate.as_list(array, "v", item=validate.as_float, drop_missing=True)
    assert isinstance(result, numpy.ndarray) and result.tolist() == [1.0, 3.0]
    with pytest.raises(PerceiveError, match="dtype"):
        validate.as_list(numpy.array(["a"]), "v", item=validate.as_float)


def test_enforce_helpers():
    assert validate.finite_in_range(0.5, "score", 0.0, 1.0) == 0.5
    with pytest.raises(EnforceError, match="score: must be a finite number"):
        validate.finite_in_range(math.nan, "score", 0.0, 1.0)
    with pytest.raises(EnforceError, match="above 1.0"):
        validate.finite_in_range(1.5, "score", 0.0, 1.0)
    check = validate.typed_dict({"score": validate.as_float}, frozenset({"score"}))
    with pytest.raises(EnforceError, match="missing required key"):
        check({}, "result")
    with pytest.raises(EnforceError, match="is not one of"):
        validate.one_of("done", "result['status']", ("success", "error", "pending"))

"""NumPy arguments and results: arrays are the caller's objects; NumPy scalars are not converted."""
import collections

import numpy as np

from poet_runtime import poet
from fidelity_kit import case

RUNS = collections.Counter()


@poet
def total(values: list[float]) -> float:
    RUNS["total"] += 1
    return float(np.sum(values))


@poet
def kind_of(values: list[float]) -> str:
    RUNS["kind_of"] += 1
    return type(values).__name__


@poet
def double_in_place(values: np.ndarray) -> None:
    RUNS["double_in_place"] += 1
    values *= 2


@poet
def normalized(values: np.ndarray) -> np.ndarray:
    RUNS["normalized"] += 1
    return values / values.sum()


@poet
def as_list_hint(values: list[int]) -> list:
    RUNS["as_list_hint"] += 1
    return np.asarray(values) + 1


@poet
def scalar_int(x: int) -> str:
    RUNS["scalar_int"] += 1
    return f"{type(x).__name__}:{x * 2!r}"


@poet
def scalar_float(x: float) -> float:
    RUNS["scalar_float"] += 1
    return x / 2


@poet
def scalar_bool(flag: bool) -> str:
    RUNS["scalar_bool"] += 1
    return type(flag).__name__


@poet
def mean_of(values: np.ndarray) -> float:
    RUNS["mean_of"] += 1
    return values.mean()


@poet
def count_above(values: list[float], threshold: float) -> int:
    RUNS["count_above"] += 1
    return np.count_nonzero(np.asarray(values) > threshold)


@case(note="an ndarray where list[float] is hinted is not converted")
def array_for_list_hint(o):
    values = np.array([1.5, 2.5])
    return {"total": o.call(total, values), "kind": o.call(kind_of, values)}


@case(note="an in-place change of the caller's array")
def array_mutated_in_place(o):
    values = np.arange(4)
    o.call(double_in_place, values)
    return {"values": values.tolist(), "dtype": str(values.dtype)}


@case()
def array_returned(o):
    result = o.call(normalized, np.array([1.0, 3.0]))
    return {"type": type(result), "values": result.tolist()}


@case(note="an ndarray returned where list is hinted stays an ndarray")
def array_returned_for_list_hint(o):
    result = o.call(as_list_hint, [1, 2])
    return {"type": type(result), "values": result.tolist()}


@case(note="np.int64 where int is hinted: not turned into an int")
def numpy_int_scalar(o):
    return {"int64": o.call(scalar_int, np.int64(3)), "int32": o.call(scalar_int, np.int32(4))}


@case()
def numpy_float_scalar(o):
    result = o.call(scalar_float, np.float64(3.0))
    float32 = o.call(scalar_float, np.float32(1.0))
    return {"result": result, "type": type(result), "float32_type": type(float32)}


@case()
def numpy_bool_scalar(o):
    return {"bool_": o.call(scalar_bool, np.bool_(True))}


@case()
def numpy_scalar_results(o):
    mean = o.call(mean_of, np.array([1.0, 2.0]))
    count = o.call(count_above, [0.1, 0.9, 0.7], 0.5)
    return {"mean": mean, "mean_type": type(mean), "count": count, "count_type": type(count)}

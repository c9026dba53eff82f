"""Checks and lossless repairs used by generated Perceive and Enforce phases.

Each ``as_*`` helper returns the value unchanged when it already has the right
type, a repaired value when the repair loses nothing (``"3"`` to ``3``, a tuple to
a list, a NumPy scalar to its Python twin), and raises ``PerceiveError`` (or the
error class it is given) naming the field otherwise. Generated code calls them
only when a cheap ``type(x) is T`` test fails, so a well-typed call pays nothing.
"""

import math
import re

from poet_sandbox.errors import EnforceError, PerceiveError

_INT_TEXT = re.compile(r"[+-]?\d+")
_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})


def _numpy_scalar(value) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "item")


def describe(value) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def is_missing(value) -> bool:
    """None or a NaN float: what data pipelines mean by a missing value."""
    return value is None or (isinstance(value, float) and value != value)


def as_int(value, field: str, error=PerceiveError):
    if isinstance(value, int):
        return value
    if _numpy_scalar(value):
        value = value.item()
        if isinstance(value, int):
            return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        return int(value.strip())
    raise error(f"{field}: expected int, got {describe(value)}", field=field)


def as_float(value, field: str, error=PerceiveError, finite: bool = False):
    """A float hint accepts int as PEP 484 says; ints are passed through unchanged."""
    if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)):
        result = value
    elif _numpy_scalar(value) and isinstance(value.item(), (int, float)) and not isinstance(value.item(), bool):
        result = value.item()
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise error(f"{field}: expected float, got {describe(value)}", field=field) from None
    else:
        raise error(f"{field}: expected float, got {describe(value)}", field=field)
    if finite and not math.isfinite(result):
        raise error(f"{field}: must be a finite number, got {result!r}", field=field)
    return result


def as_bool(value, field: str, error=PerceiveError):
    if isinstance(value, bool):
        return value
    if _numpy_scalar(value) and isinstance(value.item(), bool):
        return value.item()
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise error(f"{field}: expected bool, got {describe(value)}", field=field)


def as_str(value, field: str, error=PerceiveError):
    if isinstance(value, str):
        return value
    raise error(f"{field}: expected str, got {describe(value)}", field=field)


def _array_like(value) -> bool:
    """A NumPy array or the like: typed storage the logic probably uses as such."""
    return hasattr(value, "dtype") and hasattr(value, "shape") and hasattr(value, "tolist")


def as_list(value, field: str, item=None, drop_missing: bool = False, error=PerceiveError):
    """A list, from a list or tuple; items checked by ``item`` when given.

    An array (NumPy or alike) is kept as it is, since the logic may rely on its
    methods: only its dtype is checked against a numeric item hint, and with
    ``drop_missing`` its NaN entries are masked out (keeping the array type).
    With ``drop_missing`` (a domain rule), None and NaN entries are removed; an
    input left empty by that is an error, since no statistic can be computed on it.
    """
    if _array_like(value):
        return _as_array(value, field, item, drop_missing, error)
    if isinstance(value, list):
        items = value
    elif isinstance(value, tuple):
        items = list(value)
    else:
        raise error(f"{field}: expected list, got {describe(value)}", field=field)
    if drop_missing:
        kept = [entry for entry in items if not is_missing(entry)]
        if not kept and items:
            raise error(f"{field}: every value is missing (None or NaN)", field=field)
        items = kept
    if item is not None:
        exact = _EXACT.get(item)
        if exact is not None and all(type(entry) is exact for entry in items):
            return items  # the common case: already the right type, checked at C speed
        checked = None
        for index, entry in enumerate(items):
            fixed = item(entry, f"{field}[{index}]", error=error)
            if fixed is not entry:
                if checked is None:
                    checked = list(items[:index])
            if checked is not None:
                checked.append(fixed)
        if checked is not None:
            items = checked
    return items


def _as_array(value, field, item, drop_missing, error):
    kind = getattr(value.dtype, "kind", "O")
    if item in _EXACT and kind not in "fiub":
        raise error(f"{field}: expected numbers, got an array of dtype {value.dtype}", field=field)
    if drop_missing and kind == "f":
        mask = value == value  # False exactly at NaN
        if not mask.all():
            value = value[mask]
            if value.size == 0:
                raise error(f"{field}: every value is missing (NaN)", field=field)
    return value


def as_dict(value, field: str, key=None, item=None, error=PerceiveError):
    if not isinstance(value, dict):
        raise error(f"{field}: expected dict, got {describe(value)}", field=field)
    if key is None and item is None:
        return value
    result = {}
    for k, v in value.items():
        if key is not None:
            k = key(k, f"{field} key {k!r}", error=error)
        if item is not None:
            v = item(v, f"{field}[{k!r}]", error=error)
        result[k] = v
    return result


def as_instance(value, field: str, cls, error=PerceiveError):
    if isinstance(value, cls):
        return value
    raise error(f"{field}: expected {cls.__name__}, got {describe(value)}", field=field)


_EXACT = {as_float: float, as_int: int, as_bool: bool, as_str: str}


def anything(value, field: str, error=PerceiveError):
    return value


class Unset:
    """The default of a perceive() parameter the caller did not pass."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


def list_of(item=None, drop_missing: bool = False):
    """A checker for ``list[X]`` built once at import of the generated module."""

    def check(value, field, error=PerceiveError):
        return as_list(value, field, item=item, drop_missing=drop_missing, error=error)

    return check


def dict_of(key=None, item=None):
    def check(value, field, error=PerceiveError):
        return as_dict(value, field, key=key, item=item, error=error)

    return check


def instance_of(cls):
    def check(value, field, error=PerceiveError):
        return as_instance(value, field, cls, error=error)

    return check


def named_instance(qualname: str):
    """A checker for a class of the user's module, matched by qualified name along the MRO.

    Generated code cannot import the user's module (it may be ``__main__``, or out of
    reach inside a sandbox), and the value comes from the user's own logic, so the
    class's name is what identifies it.
    """

    def check(value, field, error=PerceiveError):
        for cls in type(value).__mro__:
            if cls.__qualname__ == qualname:
                return value
        raise error(f"{field}: expected {qualname}, got {describe(value)}", field=field)

    return check


def optional(inner):
    """Wrap a checker so that None passes (``Optional[X]`` / ``X | None``)."""

    def check(value, field, error=PerceiveError):
        if value is None:
            return None
        return inner(value, field, error=error)

    return check


def typed_dict(fields: dict, required: frozenset, error=EnforceError):
    """A checker for a TypedDict: required keys present, known keys well-typed."""

    def check(value, field, error=error):
        if not isinstance(value, dict):
            raise error(f"{field}: expected dict, got {describe(value)}", field=field)
        missing = [name for name in required if name not in value]
        if missing:
            raise error(f"{field}: missing required key(s) {', '.join(sorted(missing))}", field=field)
        result = value
        for name, checker in fields.items():
            if name in value:
                fixed = checker(value[name], f"{field}[{name!r}]", error=error)
                if fixed is not value[name]:
                    if result is value:
                        result = dict(value)
                    result[name] = fixed
        return result

    return check


def finite_in_range(value, field: str, low=None, high=None, clamp: bool = False, error=EnforceError):
    """A finite number within [low, high]; with ``clamp`` an out-of-range value is pulled in."""
    number = as_float(value, field, error=error, finite=True)
    if low is not None and number < low:
        if not clamp:
            raise error(f"{field}: {number!r} is below {low!r}", field=field)
        number = low
    if high is not None and number > high:
        if not clamp:
            raise error(f"{field}: {number!r} is above {high!r}", field=field)
        number = high
    return number


def one_of(value, field: str, allowed, error=EnforceError):
    if value in allowed:
        return value
    choices = ", ".join(repr(a) for a in allowed)
    raise error(f"{field}: {value!r} is not one of {choices}", field=field)


def require_keys(value, field: str, keys, error=EnforceError):
    if not isinstance(value, dict):
        raise error(f"{field}: expected dict, got {describe(value)}", field=field)
    missing = [k for k in keys if k not in value]
    if missing:
        raise error(f"{field}: missing required key(s) {', '.join(missing)}", field=field)
    return value

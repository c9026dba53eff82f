"""Checks used by generated Perceive and Enforce phases: report, do not convert.

A value that satisfies its hint is returned as the very same object: subclasses
count (a ``Counter`` is a ``dict[str, int]``, an ``IntEnum`` an ``int``, a bool an
``int``, an int a ``float`` as PEP 484 says). A value that does not satisfy it is
*reported* (``note("mismatch", ...)``) and returned unchanged, because the
original function might well work with it (``ordinalize(1.0)`` gives ``'1.0st'``).

Conversions happen only when asked for: ``coerce=True`` (the decorator's
``repair="coerce"``) makes a lossless repair (``"3"`` -> ``3``, a tuple -> a list, a
NumPy scalar -> its Python twin), and ``drop_missing`` (a domain rule, e.g.
``ml_monitoring``) removes None/NaN from numeric batches. Each repair is noted too,
so the runtime can count it and emit it. Only domain rules that describe an
impossible value (a score outside [0, 1]) raise, and then the caller still gets
the logic's own result: Enforce refusing never changes what the caller receives.

Values the host could not send into a sandbox arrive as ``crossing.HostRef``;
they are checked by the names of their type's MRO, the only thing that crossed.
"""

import math
import os
import re
import threading

from poet_sandbox.crossing import HostRef
from poet_sandbox.errors import EnforceError, PerceiveError

_INT_TEXT = re.compile(r"[+-]?\d+")
_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})


# --- notes: what a call's checks saw ----------------------------------------------------

# One list for all threads, so that "nothing was noted" costs the driver a single
# truth test; entries carry their thread, and each driver takes only its own.
NOTES = []
_notes_lock = threading.Lock()
# A child forked while another thread held this lock would wait on it forever (the
# WASM guest's CPython has no fork, hence the test).
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_notes_lock._at_fork_reinit)


def note(kind: str, field: str, detail: str) -> None:
    """Report a ``mismatch`` (left as it is), a ``repair`` (changed) or a ``retry``."""
    with _notes_lock:
        NOTES.append((threading.get_ident(), kind, field, detail))


# A note's detail may be structured evidence (a domain's statistics): plain JSON data
# within these bounds crosses a sandbox's boundary as data; anything else as its text.
DETAIL_DEPTH = 4
DETAIL_ITEMS = 64
DETAIL_TEXT = 2000


def sendable_detail(detail):
    """``detail`` as it may leave a sandbox: bounded plain data (dict of str keys, list,
    str, int, finite float, bool, None) as itself, anything else as bounded text."""
    if isinstance(detail, (dict, list)) and is_plain_detail(detail, 0):
        return detail
    return str(detail)[:DETAIL_TEXT]


def is_plain_detail(value, depth: int = 0) -> bool:
    kind = type(value)
    if value is None or kind is bool or kind is str and len(value) <= DETAIL_TEXT:
        return True
    if kind is int:
        return -(2 ** 63) <= value < 2 ** 63
    if kind is float:
        return math.isfinite(value)
    if depth >= DETAIL_DEPTH or kind not in (dict, list) or len(value) > DETAIL_ITEMS:
        return False
    if kind is dict:
        return all(type(key) is str and len(key) <= 200 and is_plain_detail(item, depth + 1) for key, item in value.items())
    return all(is_plain_detail(item, depth + 1) for item in value)


def take_notes():
    """This thread's notes since its last take, as a tuple, or None; the driver calls it."""
    if not NOTES:
        return None
    me = threading.get_ident()
    with _notes_lock:
        mine = tuple(entry[1:] for entry in NOTES if entry[0] == me)
        if mine:
            NOTES[:] = [entry for entry in NOTES if entry[0] != me]
    return mine or None


# --- type tests that understand values left in the host ---------------------------------

def _names(value):
    return value.type_names if type(value) is HostRef else None


def is_a(value, cls, name: str) -> bool:
    """isinstance, or for a HostRef: ``name`` ("builtins.dict") along its MRO."""
    if type(value) is HostRef:
        return name in value.type_names
    return isinstance(value, cls)


def _numpy_scalar(value) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "item")


def describe(value) -> str:
    if type(value) is HostRef:
        return repr(value)
    try:
        text = repr(value)
    except Exception:
        text = "<unprintable>"
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def is_missing(value) -> bool:
    """None or a NaN float: what data pipelines mean by a missing value."""
    return value is None or (isinstance(value, float) and value != value)


def _mismatch(field: str, expected: str, value):
    note("mismatch", field, f"expected {expected}, got {describe(value)}")
    return value


def _repaired(field: str, value, fixed, how: str = ""):
    note("repair", field, f"{describe(value)} -> {describe(fixed)}" + (f" ({how})" if how else ""))
    return fixed


# --- scalars -----------------------------------------------------------------------------

def as_int(value, field: str, error=PerceiveError, coerce: bool = False):
    if is_a(value, int, "builtins.int"):
        return value
    if coerce:
        fixed = None
        if _numpy_scalar(value) and isinstance(value.item(), int):
            fixed = value.item()
        elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
            fixed = int(value)
        elif isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
            fixed = int(value.strip())
        if fixed is not None:
            return _repaired(field, value, fixed)
    return _mismatch(field, "int", value)


def as_float(value, field: str, error=PerceiveError, coerce: bool = False, finite: bool = False):
    """A float hint accepts int as PEP 484 says; nothing is converted unless ``coerce``."""
    if is_a(value, float, "builtins.float") or is_a(value, int, "builtins.int"):
        if finite and type(value) is not HostRef and not math.isfinite(value):
            return _mismatch(field, "a finite number", value)
        return value
    if coerce:
        fixed = None
        if _numpy_scalar(value) and isinstance(value.item(), (int, float)) and not isinstance(value.item(), bool):
            fixed = value.item()
        elif isinstance(value, str):
            try:
                fixed = float(value.strip())
            except ValueError:
                fixed = None
        if fixed is not None:
            return _repaired(field, value, fixed)
    return _mismatch(field, "float", value)


def as_bool(value, field: str, error=PerceiveError, coerce: bool = False):
    if is_a(value, bool, "builtins.bool"):
        return value
    if coerce:
        fixed = None
        if _numpy_scalar(value) and isinstance(value.item(), bool):
            fixed = value.item()
        elif type(value) is int and value in (0, 1):
            fixed = bool(value)
        elif isinstance(value, str):
            text = value.strip().lower()
            fixed = True if text in _TRUE else False if text in _FALSE else None
        if fixed is not None:
            return _repaired(field, value, fixed)
    return _mismatch(field, "bool", value)


def as_str(value, field: str, error=PerceiveError, coerce: bool = False):
    if is_a(value, str, "builtins.str"):
        return value
    return _mismatch(field, "str", value)


# --- containers ----------------------------------------------------------------------------

def _array_like(value) -> bool:
    """A NumPy array or the like: typed storage the logic probably uses as such."""
    if type(value) is HostRef:
        return "numpy.ndarray" in value.type_names
    return hasattr(value, "dtype") and hasattr(value, "shape") and hasattr(value, "tolist")


_EXACT = {}  # checker -> the exact type whose items need no call (filled below)


def _check_items(items, field, item, error, coerce):
    """Items checked by ``item``; a new list only if ``coerce`` repaired one."""
    exact = _EXACT.get(item)
    if exact is not None and all(type(entry) is exact for entry in items):
        return items  # the common case, checked at C speed
    fixed_items = None
    for index, entry in enumerate(items):
        fixed = item(entry, f"{field}[{index}]", error=error, coerce=coerce)
        if fixed is not entry and fixed_items is None:
            fixed_items = list(items[:index])
        if fixed_items is not None:
            fixed_items.append(fixed)
    return items if fixed_items is None else fixed_items


def as_list(value, field: str, item=None, drop_missing: bool = False, error=PerceiveError, coerce: bool = False):
    """A list (or a subclass), as it is; items checked by ``item`` when given.

    An array (NumPy or alike) is accepted as a batch, since the logic may rely on
    its methods; with ``drop_missing`` its NaN entries are masked out (keeping the
    array type). With ``drop_missing`` (a domain rule) None and NaN entries are
    removed from a list, reported as a repair; a batch left empty by that is an
    error, since no statistic can be computed on it.
    """
    if _array_like(value):
        return _as_array(value, field, item, drop_missing, error)
    if is_a(value, list, "builtins.list"):
        items = value
    elif coerce and isinstance(value, tuple):
        items = _repaired(field, value, list(value), "tuple to list")
    else:
        return _mismatch(field, "list", value)
    if type(items) is HostRef:
        return items  # a list subclass the host kept: its items are not visible here
    if drop_missing:
        kept = [entry for entry in items if not is_missing(entry)]
        if len(kept) != len(items):
            if not kept:
                raise error(f"{field}: every value is missing (None or NaN)", field=field)
            note("repair", field, f"dropped {len(items) - len(kept)} missing value(s) (None or NaN)")
            items = kept
    if item is not None:
        items = _check_items(items, field, item, error, coerce)
    return items


def _as_array(value, field, item, drop_missing, error):
    if type(value) is HostRef:
        return value  # left in the host: the domain's masking cannot happen here
    kind = getattr(value.dtype, "kind", "O")
    if item in _EXACT and kind not in "fiub":
        return _mismatch(field, "numbers", value)
    if drop_missing and kind == "f":
        mask = value == value  # False exactly at NaN
        if not mask.all():
            kept = value[mask]
            if kept.size == 0:
                raise error(f"{field}: every value is missing (NaN)", field=field)
            note("repair", field, f"dropped {int(value.size - kept.size)} NaN value(s)")
            value = kept
    return value


def as_dict(value, field: str, key=None, item=None, error=PerceiveError, coerce: bool = False):
    if not is_a(value, dict, "builtins.dict"):
        return _mismatch(field, "dict", value)
    if (key is None and item is None) or type(value) is HostRef:
        return value
    result = None  # built only once a coerce repair changed a key or an item
    for index, (k, v) in enumerate(value.items()):
        new_k = key(k, f"{field} key {k!r}", error=error, coerce=coerce) if key is not None else k
        new_v = item(v, f"{field}[{k!r}]", error=error, coerce=coerce) if item is not None else v
        if result is None and (new_k is not k or new_v is not v):
            result = dict(list(value.items())[:index])
        if result is not None:
            result[new_k] = new_v
    return value if result is None else result


def as_instance(value, field: str, cls, error=PerceiveError, coerce: bool = False):
    if is_a(value, cls, f"{cls.__module__}.{cls.__qualname__}"):
        return value
    return _mismatch(field, cls.__name__, value)


def anything(value, field: str, error=PerceiveError, coerce: bool = False):
    return value


_EXACT.update({as_float: float, as_int: int, as_bool: bool, as_str: str})


class Unset:
    """The default of a perceive() parameter the caller did not pass."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


def list_of(item=None, drop_missing: bool = False, coerce: bool = False):
    """A checker for ``list[X]`` built once at import of the generated module."""

    def check(value, field, error=PerceiveError, coerce=coerce):
        return as_list(value, field, item=item, drop_missing=drop_missing, error=error, coerce=coerce)

    return check


def dict_of(key=None, item=None, coerce: bool = False):
    def check(value, field, error=PerceiveError, coerce=coerce):
        return as_dict(value, field, key=key, item=item, error=error, coerce=coerce)

    return check


def instance_of(cls):
    def check(value, field, error=PerceiveError, coerce=False):
        return as_instance(value, field, cls, error=error)

    return check


def named_instance(qualname: str):
    """A checker for a class of the user's module, matched by qualified name along the MRO.

    Generated code cannot import the user's module (it may be ``__main__``, or out of
    reach inside a sandbox), and the value comes from the user's own logic, so the
    class's name is what identifies it.
    """

    def check(value, field, error=PerceiveError, coerce=False):
        names = _names(value)
        if names is not None:
            if any(name.rpartition(".")[2] == qualname or name.endswith("." + qualname) for name in names):
                return value
        else:
            for cls in type(value).__mro__:
                if cls.__qualname__ == qualname:
                    return value
        return _mismatch(field, qualname, value)

    return check


def optional(inner):
    """Wrap a checker so that None passes (``Optional[X]`` / ``X | None``)."""

    def check(value, field, error=PerceiveError, coerce=False):
        if value is None:
            return None
        return inner(value, field, error=error, coerce=coerce)

    return check


def typed_dict(fields: dict, required: frozenset, error=EnforceError):
    """A checker for a TypedDict: required keys present, known keys well-typed (noted)."""

    def check(value, field, error=error, coerce=False):
        if not is_a(value, dict, "builtins.dict"):
            return _mismatch(field, "dict", value)
        if type(value) is HostRef:
            return value
        missing = [name for name in required if name not in value]
        if missing:
            note("mismatch", field, f"missing required key(s) {', '.join(sorted(missing))}")
        result = value
        for name, checker in fields.items():
            if name in value:
                fixed = checker(value[name], f"{field}[{name!r}]", error=error, coerce=coerce)
                if fixed is not value[name]:
                    if result is value:
                        result = dict(value)
                    result[name] = fixed
        return result

    return check


# --- domain rules: refusals of impossible values -------------------------------------------

def finite_in_range(value, field: str, low=None, high=None, error=EnforceError):
    """Refuse a value that is not a finite number within [low, high]; never converts."""
    if type(value) is HostRef or not isinstance(value, (int, float)) or isinstance(value, bool):
        if _numpy_scalar(value):
            number = value.item()
        else:
            raise error(f"{field}: expected a number, got {describe(value)}", field=field)
    else:
        number = value
    if not isinstance(number, (int, float)) or not math.isfinite(number):
        raise error(f"{field}: must be a finite number, got {number!r}", field=field)
    if low is not None and number < low:
        raise error(f"{field}: {number!r} is below {low!r}", field=field)
    if high is not None and number > high:
        raise error(f"{field}: {number!r} is above {high!r}", field=field)
    return value


def one_of(value, field: str, allowed, error=EnforceError):
    if value in allowed:
        return value
    choices = ", ".join(repr(a) for a in allowed)
    raise error(f"{field}: {value!r} is not one of {choices}", field=field)


def require_keys(value, field: str, keys, error=EnforceError):
    if not is_a(value, dict, "builtins.dict"):
        raise error(f"{field}: expected dict, got {describe(value)}", field=field)
    if type(value) is HostRef:
        return value
    missing = [k for k in keys if k not in value]
    if missing:
        raise error(f"{field}: missing required key(s) {', '.join(missing)}", field=field)
    return value

"""The host side of a call whose generated phases run in a sandbox.

The sandbox (a restricted worker, a WASM guest) runs Perceive, the retry policy
and Enforce; when ``operate_prime`` calls the logic, the request comes back here
and the user's own function object runs in the caller's thread, on the caller's
own objects. ``HostCall`` keeps, for one call, every top-level value the host
sent or produced under a token, so that what the sandbox passes on unchanged is
the host's object again (see ``poet_sandbox.crossing`` and docs/CONTRACTS.md).

A backend drives it as a loop: send ``start()``'s message, and while the sandbox
answers ``{"status": "logic"}``, send back ``run_logic(answer)`` (or
``await run_logic_async(answer)``); the last answer goes through ``finish``.
Nothing here is untrusted-safe by accident: tokens are bounds-checked, data is
decoded by the sandbox's own codec under a guard (any exception of the decoder is a
``PhaseError``), and an answer of the wrong shape is a ``PhaseError`` (the sandbox
failed, the caller is not affected).

What comes back is data, and only data the caller can use as the original's answer:
``check_value`` bounds what was decoded (``VALUE_LIMITS``: digits of an int, a
Decimal's digits and exponent, nesting depth, number of items; no signalling NaN,
which raises on ``==``; no types the codecs would not make), before it reaches the
logic as an argument or the caller as a result; a final result that is new data
(not the host's own object) must also fit the logic's return annotation
(``fits_hint``). Time marks must be four ordered non-negative 64-bit ints
(``marks``). Anything else is a ``PhaseError``, and once the logic ran the call
returns the logic's own result (``after_logic``).
"""

from __future__ import annotations

import builtins
import datetime
import decimal
import fractions
import inspect
import types
import typing
import weakref
from dataclasses import dataclass

from poet_runtime.resources import load_facility
from poet_runtime.safe_text import visible

_facility = load_facility()
from poet_sandbox.driver import AfterLogic  # noqa: E402
from poet_sandbox.timeouts import call_with_timeout, call_with_timeout_async  # noqa: E402

from poet_sandbox.validate import is_plain_detail  # noqa: E402  (the guest's own rule for notes)

PhaseError = _facility.PhaseError
_MISSING = object()


def _shown_detail(detail):
    """A note's detail from a sandbox (text, or structured evidence) with every string visible."""
    if type(detail) is str:
        return visible(detail[:2000], allow_newlines=False)
    if type(detail) is dict:
        return {visible(key, allow_newlines=False): _shown_detail(item) for key, item in detail.items()}
    if type(detail) is list:
        return [_shown_detail(item) for item in detail]
    return detail


@dataclass(frozen=True)
class ValueLimits:
    """What one value from a sandbox may be (none of it is a policy field yet: fixed here)."""

    int_digits: int = 4300  # Python's own int/str conversion limit
    decimal_digits: int = 4300
    decimal_exponent: int = 4300  # |adjusted exponent|: int(Decimal('1E+999999999')) would never end
    depth: int = 200
    items: int = 1_000_000  # scalars and containers, all levels together


VALUE_LIMITS = ValueLimits()
_SCALARS = frozenset({str, float, bool, type(None), complex, bytes, datetime.date, datetime.datetime,
                      datetime.time, datetime.timedelta})
_CONTAINERS = frozenset({list, tuple, set, frozenset})
_MAX_MARK = 2**63


def check_value(value, limits: ValueLimits = VALUE_LIMITS) -> None:
    """Raise ``PhaseError`` unless ``value`` is data within ``limits``."""
    kind = type(value)
    if kind in _SCALARS:
        return
    if kind is int:
        if value.bit_length() > limits.int_digits * 3.33:  # ~log2(10) bits per digit
            raise PhaseError(f"the sandbox sent an int of more than {limits.int_digits} digits")
        return
    stack = [(value, 0)]
    count = 0
    max_bits = limits.int_digits * 3.33
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > limits.items:
            raise PhaseError(f"the sandbox sent a value of more than {limits.items} items")
        kind = type(value)
        if kind in _SCALARS:
            continue
        if kind is int:
            if value.bit_length() > max_bits:
                raise PhaseError(f"the sandbox sent an int of more than {limits.int_digits} digits")
        elif kind in _CONTAINERS or kind is dict:
            if depth >= limits.depth:
                raise PhaseError(f"the sandbox sent a value nested more than {limits.depth} deep")
            items = value.items() if kind is dict else value
            for item in items:
                if kind is dict:
                    stack.append((item[0], depth + 1))
                    stack.append((item[1], depth + 1))
                else:
                    stack.append((item, depth + 1))
        elif kind is decimal.Decimal:
            _check_decimal(value, limits)
        elif kind is fractions.Fraction:
            if max(value.numerator.bit_length(), value.denominator.bit_length()) > max_bits:
                raise PhaseError(f"the sandbox sent a Fraction of more than {limits.int_digits} digits")
        else:
            raise PhaseError(f"the sandbox sent a {kind.__name__}, which is not data")


def _check_decimal(value: decimal.Decimal, limits: ValueLimits) -> None:
    if value.is_snan():
        raise PhaseError("the sandbox sent a signalling NaN (it raises on ==)")
    if not value.is_finite():
        return  # quiet NaN and infinities compare and hash like floats
    sign, digits, exponent = value.as_tuple()
    if len(digits) > limits.decimal_digits or abs(value.adjusted()) > limits.decimal_exponent:
        raise PhaseError(f"the sandbox sent a Decimal beyond {limits.decimal_digits} digits or "
                         f"10**±{limits.decimal_exponent}")


# -- the logic's return annotation ---------------------------------------------------------------

_hints: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_NO_HINT = object()


def return_hint(logic):
    """The logic's return annotation, or ``_NO_HINT`` (none, or one that cannot be read)."""
    target = inspect.unwrap(logic) if callable(logic) else logic
    try:
        return _hints[target]
    except (KeyError, TypeError):
        pass
    hint = _NO_HINT
    try:
        hints = typing.get_type_hints(target)  # the user's own annotations, in the user's globals
        hint = hints.get("return", _NO_HINT)
    except Exception:  # a forward reference that does not resolve: no check
        hint = _NO_HINT
    try:
        _hints[target] = hint
    except TypeError:
        pass
    return hint


def fits_hint(value, hint, depth: int = 0) -> bool:
    """Whether data ``value`` can be what a function annotated ``hint`` returns. Only what
    a hint states for sure is checked; a hint it cannot judge (a TypeVar, a Protocol) fits."""
    if hint is _NO_HINT or hint is typing.Any or hint is inspect.Signature.empty or depth > 20:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(fits_hint(value, arm, depth + 1) for arm in typing.get_args(hint))
    if origin is typing.Literal:
        return any(value == choice and type(value) is type(choice) for choice in typing.get_args(hint))
    if origin is typing.Annotated:
        return fits_hint(value, typing.get_args(hint)[0], depth + 1)
    if origin is not None:
        if not isinstance(origin, type):
            return True
        if not isinstance(value, origin):
            return False
        args = typing.get_args(hint)
        if origin in (list, set, frozenset) and len(args) == 1:
            return all(fits_hint(item, args[0], depth + 1) for item in value)
        if origin is dict and len(args) == 2:
            return all(fits_hint(k, args[0], depth + 1) and fits_hint(v, args[1], depth + 1)
                       for k, v in value.items())
        if origin is tuple and args:
            if len(args) == 2 and args[1] is Ellipsis:
                return all(fits_hint(item, args[0], depth + 1) for item in value)
            return len(args) == len(value) and all(fits_hint(v, a, depth + 1) for v, a in zip(value, args))
        return True
    if isinstance(hint, type):
        if typing.is_typeddict(hint):
            return isinstance(value, dict)
        if hint is float:
            return isinstance(value, (int, float))  # PEP 484: an int is a float
        if hint is complex:
            return isinstance(value, (int, float, complex))
        if getattr(hint, "_is_protocol", False):
            return True
        return isinstance(value, hint)
    return True


def type_names(value) -> list[str]:
    """``module.qualname`` along the MRO of ``value``'s type (what a HostRef carries)."""
    return [f"{cls.__module__}.{cls.__qualname__}" for cls in type(value).__mro__][:32]


def nearest_builtin(error: BaseException) -> str:
    for cls in type(error).__mro__:
        if getattr(builtins, cls.__name__, None) is cls:
            return cls.__name__
    return "Exception"


class HostCall:
    """One call crossing a sandbox: tokens, the logic runs, the outcome."""

    __slots__ = ("logic", "values", "encode", "decode", "not_data", "last_result", "last_error", "runs")

    def __init__(self, logic, encode, decode, not_data=(TypeError,)):
        self.logic = logic
        self.values: list = []  # token -> host object
        self.encode, self.decode, self.not_data = encode, decode, not_data
        self.last_result = _MISSING
        self.last_error = None
        self.runs = 0

    # -- values ---------------------------------------------------------------------
    def send_value(self, value) -> list:
        """Token the value and say how it enters the sandbox: data, or a reference."""
        self.values.append(value)
        try:
            return ["d", self.encode(value)]
        except self.not_data:
            return ["r", type_names(value)]
        except RecursionError:
            return ["r", type_names(value)]

    def start(self, args: tuple, kwargs: dict) -> tuple[list, dict]:
        """The call's arguments as they enter the sandbox (tokens 0.. in order)."""
        sent_args = [self.send_value(value) for value in args]
        sent_kwargs = {name: self.send_value(value) for name, value in kwargs.items()}
        return sent_args, sent_kwargs

    def resolve(self, item):
        """A value the sandbox sent back: the host's own object, or decoded data."""
        if type(item) is not list or len(item) != 2:
            raise PhaseError("the sandbox sent a value that is not a [kind, payload] pair")
        kind, payload = item
        if kind == "h":
            if type(payload) is not int or not 0 <= payload < len(self.values):
                raise PhaseError("the sandbox named a value the host never sent")
            return self.values[payload]
        if kind == "d":
            try:
                value = self.decode(payload)
            except Exception as error:  # any decoder failure (InvalidOperation, Overflow, ...) is the sandbox's
                raise PhaseError(f"the sandbox sent malformed data: {type(error).__name__}: "
                                 f"{visible(str(error)[:300], allow_newlines=False)}") from None
            check_value(value)
            return value
        raise PhaseError(f"the sandbox sent a value of unknown kind {visible(repr(kind)[:60])}")

    def _request(self, answer: dict):
        args = answer.get("args")
        kwargs = answer.get("kwargs")
        timeout = answer.get("timeout")
        if type(args) is not list or type(kwargs) is not dict:
            raise PhaseError("the sandbox asked for the logic with malformed arguments")
        if timeout is not None and (type(timeout) not in (int, float) or not timeout > 0):
            raise PhaseError("the sandbox asked for the logic with a bad timeout")
        return [self.resolve(a) for a in args], {str(k): self.resolve(v) for k, v in kwargs.items()}, timeout

    # -- the logic, in the caller's thread ---------------------------------------------
    def _returned(self, result) -> dict:
        self.last_result, self.last_error = result, None
        token = len(self.values)
        return {"op": "logic_return", "token": token, "result": self.send_value(result)}

    def _raised(self, error: Exception) -> dict:
        self.last_error = error
        token = len(self.values)
        self.values.append(error)
        try:
            message = str(error)[:2000]
        except Exception:
            message = "<unprintable>"
        return {"op": "logic_raise", "token": token, "builtin": nearest_builtin(error),
                "type": f"{type(error).__module__}.{type(error).__qualname__}", "message": message}

    def run_logic(self, answer: dict) -> dict:
        """Run the logic for a sandbox's request; the answer to send back.

        An exception that is not an ``Exception`` (KeyboardInterrupt, SystemExit)
        propagates: the backend abandons the sandbox's call and it reaches the caller.
        """
        args, kwargs, timeout = self._request(answer)
        self.runs += 1
        try:
            if timeout is None:
                result = self.logic(*args, **kwargs)
            else:
                result = call_with_timeout(self.logic, args, kwargs, timeout)
        except Exception as error:
            return self._raised(error)
        return self._returned(result)

    async def run_logic_async(self, answer: dict) -> dict:
        args, kwargs, timeout = self._request(answer)
        self.runs += 1
        try:
            if timeout is None:
                result = await self.logic(*args, **kwargs)
            else:
                result = await call_with_timeout_async(self.logic, args, kwargs, timeout)
        except Exception as error:
            return self._raised(error)
        return self._returned(result)

    # -- the outcome -----------------------------------------------------------------
    def result(self, item):
        """The final result the sandbox sent: the host's own object when Enforce kept it;
        new data (a repair) must fit the logic's return annotation."""
        value = self.resolve(item)
        if item[0] == "d":
            hint = return_hint(self.logic)
            if not fits_hint(value, hint):
                raise PhaseError(f"the sandbox's result {type(value).__name__} does not fit the return "
                                 f"annotation {visible(str(hint)[:200], allow_newlines=False)}")
        return value

    @staticmethod
    def marks(value) -> tuple:
        """The sandbox's four time marks, checked: ints, 0 <= t0 <= t1 <= t2 <= t3 < 2**63
        (a forged mark must not overflow the host's arithmetic on them)."""
        if type(value) is not list or len(value) != 4 or any(type(m) is not int for m in value):
            raise PhaseError("the sandbox answered without its four time marks")
        if not 0 <= value[0] <= value[1] <= value[2] <= value[3] < _MAX_MARK:
            raise PhaseError("the sandbox's time marks are out of order or out of range")
        return tuple(value)

    @staticmethod
    def notes(value) -> tuple | None:
        """The sandbox's notes, checked: (kind, field, detail) strings, at most 200 of them,
        each part shown visibly (a note is untrusted text headed for logs and events)."""
        if not value:
            return None
        if type(value) is not list or len(value) > 200:
            raise PhaseError("the sandbox's notes are malformed")
        checked = []
        for note in value:
            if type(note) is not list or len(note) != 3 or type(note[0]) is not str or type(note[1]) is not str:
                raise PhaseError("the sandbox's notes are malformed")
            kind, field, detail = note
            if type(detail) is not str and not (type(detail) in (dict, list) and is_plain_detail(detail)):
                raise PhaseError("the sandbox's notes are malformed")
            checked.append((visible(kind[:2000], allow_newlines=False), visible(field[:2000], allow_newlines=False),
                            _shown_detail(detail)))
        return tuple(checked)

    def raised(self, token):
        """The logic's own exception object that the sandbox says ended the call."""
        if type(token) is not int or not 0 <= token < len(self.values) or not isinstance(self.values[token], BaseException):
            raise PhaseError("the sandbox named an exception the logic never raised")
        return self.values[token]

    def after_logic(self, reason: str, detail: str) -> AfterLogic:
        """A phase failed after the logic ran: the error that tells the host to return
        the logic's own result (or raise its own exception) instead of re-running it."""
        result = AfterLogic.NOTHING if self.last_result is _MISSING else self.last_result
        return AfterLogic(visible(str(reason)[:60], allow_newlines=False) or "after_logic",
                          visible(str(detail)[:2000], allow_newlines=False), result, self.last_error)

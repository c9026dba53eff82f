"""Values as JSON, for arguments and results crossing between host and worker.

Why not pickle: the worker runs untrusted code, and unpickling its replies in the
host would let it construct any object (and run any callable) in the host. This
codec only ever builds a fixed set of plain types, so a hostile worker can at
worst send wrong data. Types are kept (tuple stays tuple, int keys stay int), so
a result looks the same as it would in the host. Anything else (user classes,
functions, Counters, arrays) is not data: ``encode`` raises ``TypeError``, and the
host keeps such a value and sends a reference instead (``poet_sandbox.crossing``).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import fractions
import json

_SCALARS = (str, int, float, bool, type(None))
_TAG = "$"  # plain dicts whose keys are all str without this prefix are sent as is


def encode(value, depth: int = 0):
    t = type(value)
    if t is str or t is int or t is float or t is bool or value is None:
        return value
    if depth > 200:
        raise TypeError("value nested too deeply to cross to a worker")
    depth += 1
    if t is list:
        return [encode(v, depth) for v in value]
    if t is dict:
        if all(type(k) is str and not k.startswith(_TAG) for k in value):
            return {k: encode(v, depth) for k, v in value.items()}
        return {"$d": [[encode(k, depth), encode(v, depth)] for k, v in value.items()]}
    if t is tuple:
        return {"$t": [encode(v, depth) for v in value]}
    if t is set:
        return {"$s": [encode(v, depth) for v in value]}
    if t is frozenset:
        return {"$fs": [encode(v, depth) for v in value]}
    if t is bytes:
        return {"$b": base64.b64encode(value).decode("ascii")}
    if t is complex:
        return {"$c": [value.real, value.imag]}
    if t is decimal.Decimal:
        return {"$dec": str(value)}
    if t is fractions.Fraction:
        return {"$fr": [value.numerator, value.denominator]}
    if t is datetime.datetime:
        return {"$dt": value.isoformat()}
    if t is datetime.date:
        return {"$date": value.isoformat()}
    if t is datetime.time:
        return {"$time": value.isoformat()}
    if t is datetime.timedelta:
        return {"$td": [value.days, value.seconds, value.microseconds]}
    raise TypeError(f"a {t.__module__}.{t.__qualname__} cannot cross to a worker (only plain data can)")


_DECODERS = {
    "$d": lambda v: {decode(k): decode(x) for k, x in v},
    "$t": lambda v: tuple(decode(x) for x in v),
    "$s": lambda v: {decode(x) for x in v},
    "$fs": lambda v: frozenset(decode(x) for x in v),
    "$b": lambda v: base64.b64decode(v),
    "$c": lambda v: complex(v[0], v[1]),
    "$dec": decimal.Decimal,
    "$fr": lambda v: fractions.Fraction(v[0], v[1]),
    "$dt": datetime.datetime.fromisoformat,
    "$date": datetime.date.fromisoformat,
    "$time": datetime.time.fromisoformat,
    "$td": lambda v: datetime.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
}


def decode(value):
    t = type(value)
    if t is list:
        return [decode(v) for v in value]
    if t is dict:
        if len(value) == 1:
            (key, inner), = value.items()
            decoder = _DECODERS.get(key)
            if decoder is not None:
                return decoder(inner)
        return {k: decode(v) for k, v in value.items()}
    return value


_encoder = json.JSONEncoder(separators=(",", ":"))  # made once: json.dumps with options makes one per call
_decoder = json.JSONDecoder()  # json.loads' default decoder, without its per-call checks


try:
    from json.encoder import c_make_encoder as _c_make_encoder, encode_basestring_ascii as _ascii
except ImportError:  # no C accelerator: the encoder's own path
    _c_make_encoder = None
if _c_make_encoder is not None:
    # JSONEncoder.encode builds a C encoder on every call; this is the same one (same
    # separators, ASCII strings, NaN as NaN, no key sorting), built once. Without the
    # circular-reference table (a reused one keeps stale ids after a failed encode):
    # what is dumped is encode()'s fresh, depth-bounded output and protocol fields,
    # and a cycle would still end in RecursionError, not a loop.
    _fast = _c_make_encoder(None, _encoder.default, _ascii, None, ":", ",", False, False, True)

    def _text(value) -> str:
        return "".join(_fast(value, 0))
else:
    _text = _encoder.encode


def dumps(message: dict) -> bytes:
    """One protocol line."""
    return _text(message).encode("utf-8") + b"\n"


def dumps_value(value) -> bytes:
    """A JSON value, no newline (parts of a line the host assembles)."""
    return _text(value).encode("utf-8")


def loads(line: bytes) -> dict:
    # Lines are UTF-8 (the encoder writes ASCII): decoded strictly in one pass, where
    # json.loads would first guess among UTF-8/16/32 and pass lone surrogates through.
    message = _decoder.decode(line.decode("utf-8"))
    if type(message) is not dict:
        raise ValueError("protocol message is not an object")
    return message

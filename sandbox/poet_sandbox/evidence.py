"""What one call's Perceive found, kept for its Enforce; digests; domain notes.

Why: domain rules often need both ends of a call. The ml_monitoring evidence is
computed from the inputs and compared with the verdict in the result; the
financial_risk audit event joins the inputs' digests to the result's. Perceive and
Enforce are separate functions of the generated module, so what Perceive found is
kept here, in a context variable: per thread and per asyncio task, so calls that
interleave never see each other's. ``begin`` starts a call's record (and drops any
left by a call whose logic raised), ``take`` hands it to Enforce once.

``digest`` is a SHA-256 of a canonical encoding of plain data (Decimal by its exact
text, never through float); a value that is not data (a user object, or what stayed
in the host) is digested by its type's name only, and says so.

``note`` reports a domain note (``domain.evidence`` and friends) through
``validate.note``, redacted first when the domain says PII must not leave the call.
"""

import contextvars
import hashlib
import json

from poet_sandbox import validate
from poet_sandbox.crossing import HostRef
from poet_sandbox.pii import redact

_CALL = contextvars.ContextVar("poet_sandbox_evidence", default=None)
_MAX_DEPTH = 30


def begin(**found):
    """Start this call's record with ``found`` (replacing whatever an earlier call left)."""
    _CALL.set(dict(found))


def put(key, value):
    record = _CALL.get()
    if record is None:
        record = {}
        _CALL.set(record)
    record[key] = value


def take():
    """This call's record (a dict, empty when Perceive kept nothing); it is then cleared."""
    record = _CALL.get()
    _CALL.set(None)
    return record if record is not None else {}


class _NotData(Exception):
    pass


def _canonical(value, depth=0):
    if depth > _MAX_DEPTH:
        raise _NotData()
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return value
    if kind is float:
        return {"float": repr(value)}  # NaN and infinities too, and -0.0 apart from 0.0
    if kind.__name__ == "Decimal" and kind.__module__ == "decimal":
        return {"Decimal": str(value)}
    if kind.__name__ == "Fraction" and kind.__module__ == "fractions":
        return {"Fraction": str(value)}
    if kind in (list, tuple):
        return [_canonical(item, depth + 1) for item in value]
    if kind in (set, frozenset):
        return {"set": sorted(json.dumps(_canonical(item, depth + 1), sort_keys=True) for item in value)}
    if kind is dict:
        return {"dict": sorted([json.dumps(_canonical(key, depth + 1), sort_keys=True), _canonical(item, depth + 1)]
                               for key, item in value.items())}
    if kind is bytes:
        return {"bytes": value.hex()}
    raise _NotData()


def digest(value):
    """``"sha256:<hex>"`` of plain data; ``"type:<name>"`` for anything else (its contents are not read)."""
    try:
        text = json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"))
    except (_NotData, TypeError, ValueError, RecursionError):
        if type(value) is HostRef:
            name = value.type_names[0] if value.type_names else "object"
        else:
            name = type(value).__module__ + "." + type(value).__qualname__
        return "type:" + name
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def note(kind, field, detail, pii=False):
    """Report a domain note; with ``pii`` its detail is redacted first."""
    validate.note(kind, field, redact(detail) if pii else detail)


def digests(values, unset=None):
    """``{name: digest}`` of a call's arguments; a parameter not passed is ``"default"``."""
    return {name: ("default" if unset is not None and value is unset else digest(value))
            for name, value in values.items()}

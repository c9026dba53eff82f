"""Redaction of personal data (e-mail addresses, phone and card numbers) from values.

Why here: the ``customer_service`` domain promises that PII never leaves a call. The
host redacts events, logs and recorded inputs (``poet_runtime.redact`` re-exports this
module), and generated code redacts what it notes, wherever it runs: in-process, in a
RestrictedPython worker or in a WASM guest. So the one implementation lives in the
facility library, stdlib only.

A match is replaced by a stable placeholder, ``<email:1a2b>``: the kind, and four hex
digits of a SHA-256 of the matched text, so two mentions of one address read alike
in a log without showing it. Card numbers are redacted only when their digits pass
the Luhn check (a 16-digit order number does not look like a card); phone numbers
need 7 to 15 digits and are told apart from dates and decimal numbers.

``redact`` returns a redacted copy: strings, and the strings inside dicts (keys too),
lists, tuples, sets and frozensets, walked to a bounded depth. Any other object is
returned as it is (its repr is the caller's business). A value with nothing to
redact comes back as the very same object.
"""

import hashlib
import re

_EMAIL = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")
# 13 to 19 digits, single spaces or hyphens between groups.
_CARD = re.compile(r"(?<![\w+-])\d(?:[ -]?\d){12,18}(?![\w-])")
# A run of digits with the separators phone numbers are written with.
_PHONE = re.compile(r"(?<![\w+.-])(?:\+|00)?\(?\d[\d ().-]{5,22}\d(?![\w-]|\.\d)")
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
_DECIMAL = re.compile(r"\d+\.\d+")
_MAX_DEPTH = 20


def _placeholder(kind, text):
    return "<" + kind + ":" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:4] + ">"


def luhn_ok(digits):
    """The Luhn checksum card numbers carry."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value = value * 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card(match):
    text = match.group(0)
    digits = "".join(char for char in text if char.isdigit())
    if 13 <= len(digits) <= 19 and luhn_ok(digits):
        return _placeholder("card", digits)
    return text


def _phone(match):
    text = match.group(0)
    digits = "".join(char for char in text if char.isdigit())
    if not 7 <= len(digits) <= 15:
        return text
    stripped = text.strip()
    if _DATE.fullmatch(stripped) or _DECIMAL.fullmatch(stripped):
        return text
    plain = stripped.isdigit()
    if plain and len(digits) < 10:  # a bare 7-9 digit number is more often an amount or an id
        return text
    if stripped.count("(") != stripped.count(")"):
        return text
    return _placeholder("phone", digits)


def redact_text(text):
    """``text`` with every e-mail address, card and phone number replaced by a placeholder."""
    if "@" in text:
        text = _EMAIL.sub(lambda match: _placeholder("email", match.group(0).lower()), text)
    if any(char.isdigit() for char in text):
        text = _CARD.sub(_card, text)
        text = _PHONE.sub(_phone, text)
    return text


def contains_pii(value):
    """Whether ``redact`` would change ``value``."""
    return redact(value) is not value


def redact(value, depth=0):
    """A redacted copy of ``value`` (see the module docstring); ``value`` itself when nothing changes."""
    kind = type(value)
    if kind is str or isinstance(value, str):
        fixed = redact_text(str(value))
        return value if fixed == value else fixed
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        changed = False
        items = []
        for key, item in value.items():
            new_key = redact(key, depth + 1)
            new_item = redact(item, depth + 1)
            changed = changed or new_key is not key or new_item is not item
            items.append((new_key, new_item))
        if not changed:
            return value
        try:
            copy = value.copy()  # keeps a defaultdict's factory, an OrderedDict's class
            copy.clear()
            copy.update(items)
            return copy
        except Exception:
            return dict(items)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [redact(item, depth + 1) for item in value]
        if all(new is old for new, old in zip(items, value)):
            return value
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
            try:
                return kind(*items)
            except Exception:
                return tuple(items)
        for plain in (list, tuple, set, frozenset):
            if isinstance(value, plain):
                try:
                    return kind(items)
                except Exception:
                    return plain(items)
    return value

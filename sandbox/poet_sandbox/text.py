"""Lossless normalisation and length limits of text, for the customer_service domain.

Why here: customer text arrives in every Unicode form (an "é" typed as one code point
or as "e" and a combining accent); a function comparing or routing on text should see
one form. NFC changes no character a person reads (canonical equivalence), so it is
the one repair this domain makes, and it reports it. Length limits are reported, never
enforced by cutting text. Notes never carry the text itself (it may hold personal
data): only its length and how many code points changed.
"""

import unicodedata

from poet_sandbox import validate


def normalize(value, field, max_length=None):
    """``value`` in NFC (the same object when it already is, or is not a str), reported."""
    if type(value) is not str:
        return value
    if max_length is not None and len(value) > max_length:
        validate.note("domain.warning", field, {"rule": "max_length", "length": len(value), "limit": max_length})
    if value.isascii() or unicodedata.is_normalized("NFC", value):
        return value
    fixed = unicodedata.normalize("NFC", value)
    validate.note("repair", field, "text normalised to Unicode NFC (" + str(len(value)) + " -> "
                  + str(len(fixed)) + " code points; lossless)")
    return fixed


def check_length(value, field, max_length):
    """Report a text result longer than ``max_length``."""
    if type(value) is str and len(value) > max_length:
        validate.note("domain.warning", field, {"rule": "max_length", "length": len(value), "limit": max_length})
    return value

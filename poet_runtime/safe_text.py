"""Text from untrusted places, made safe to put in front of a person.

Generated code, fallback details and event fields can come from an LLM or from a
tampered ``.poet/`` folder. Printed raw, ANSI escapes move the cursor over lines a
reviewer should read, bidi controls reorder what the eye sees against what Python
parses (Trojan Source), and CR/BS/ESC forge log lines. Everything that shows such
text to a person (``show``, ``status``, log records) passes it through
:func:`visible`; the checks of generated code use :func:`hidden_characters` to
refuse it.
"""

from __future__ import annotations

import unicodedata

# Characters that change how the text around them is displayed without being
# visible themselves. Bidi embeddings, overrides and isolates, the marks, and the
# zero-width characters used to hide or join identifiers.
_BIDI_AND_INVISIBLE = frozenset(
    [0x061C, 0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0x2060, 0xFEFF]
    + list(range(0x202A, 0x202F))
    + list(range(0x2066, 0x206A))
)


_HIDDEN_CATEGORIES = frozenset(["Cf", "Zl", "Zp"])


def is_hidden(char: str, *, allow_newlines: bool = True) -> bool:
    """True for a character a terminal would act on or not show: controls, bidi, zero-width."""
    code = ord(char)
    if allow_newlines and char in "\n\t":
        return False
    if code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0:
        return True
    if code in _BIDI_AND_INVISIBLE:
        return True
    # Other format characters (Cf) render as nothing as well; the line and paragraph
    # separators (Zl, Zp: U+2028, U+2029) break lines in editors and browsers that Python
    # and the reader's tools see as one.
    return unicodedata.category(char) in _HIDDEN_CATEGORIES


def visible(text: str, *, allow_newlines: bool = True) -> str:
    """``text`` with every hidden character written out as ``\\xNN`` / ``\\u{NNNN}``.

    Newlines and tabs stay as they are unless ``allow_newlines`` is false (a log
    line must stay one line: there a CR or LF shows as ``\\r``/``\\n``).
    """
    if text.isprintable() and (allow_newlines or "\n" not in text):
        return text
    out = []
    for char in text:
        if not is_hidden(char, allow_newlines=allow_newlines):
            out.append(char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{{{ord(char):04x}}}")
    return "".join(out)


def hidden_characters(text: str) -> list[tuple[int, int, str]]:
    """Every hidden character of ``text`` as (line, column, ``U+NNNN NAME``), 1-based."""
    found = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.isprintable():
            continue
        for column, char in enumerate(line, start=1):
            if is_hidden(char):
                name = unicodedata.name(char, "control")
                found.append((number, column, f"U+{ord(char):04X} {name}"))
    return found

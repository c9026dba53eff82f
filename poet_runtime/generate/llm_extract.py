"""Getting the module out of a model's answer: fenced or not, with or without prose around it.

Models are told to answer with one ```python block, and mostly do; when they do
not, the code is still usually there between a sentence of introduction and a
sentence of explanation. This finds it without judging it: the checks that follow
say whether it is any good, each with its own reason.
"""

from __future__ import annotations

import re
from poet_runtime.generate.parsing import parse

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+.-]*)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_START = re.compile(r'^(?:"""|\'\'\'|import |from |def |async def |class |@|#|[A-Z_][A-Z0-9_]* *=)')
_MAX_TRAILING_PROSE = 40  # lines of explanation we are willing to cut from the end


def extract_code(answer: str | None) -> str:
    """The module's text from ``answer`` ('' when there is nothing that looks like code)."""
    if not answer:
        return ""
    text = answer.replace("\r\n", "\n")
    blocks = [(lang.lower(), body) for _, lang, body in _FENCE.findall(text)]
    if blocks:
        python = [body for lang, body in blocks if lang in ("python", "py", "python3", "")]
        # The longest python block is the module; short ones are usually usage snippets.
        return max(python or [body for _, body in blocks], key=len).strip("\n") + "\n"
    if "```" in text:  # an unclosed fence (the answer was cut off): take what follows it
        text = text.split("```", 1)[1].split("\n", 1)[-1] if "\n" in text.split("```", 1)[1] else ""
    return _unfenced(text)


def _unfenced(text: str) -> str:
    lines = text.split("\n")
    start = next((i for i, line in enumerate(lines) if _CODE_START.match(line)), None)
    if start is None:
        return text.strip() + "\n" if text.strip() else ""
    lines = lines[start:]
    # Cut trailing prose a line at a time until the rest parses; if nothing parses,
    # hand back everything so the syntax check reports the real error.
    for cut in range(0, min(_MAX_TRAILING_PROSE, len(lines) - 1) + 1):
        candidate = "\n".join(lines[:len(lines) - cut]).rstrip() + "\n"
        try:
            parse(candidate)
        except SyntaxError:
            continue
        return candidate
    return "\n".join(lines).rstrip() + "\n"

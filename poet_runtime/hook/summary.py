"""The runner's exit summary on stderr: functions enhanced, calls, and fallbacks with their reasons.

Printed from ``atexit`` so it follows the program's own output and exit handlers.
Reads ``poet_runtime.runtime.stats()`` (a dict ``function_id -> FunctionStats``) and
tolerates missing fields, so a newer or older core never turns exit into a crash.
"""

from __future__ import annotations

import os
import sys

_OWNER = os.getpid()  # forked children inherit atexit handlers; only the runner's process reports


def format_summary(stats: dict) -> list[str]:
    if not stats:
        return ["poet: no @poet function was called"]
    total_calls = enhanced = 0
    reasons: dict[str, int] = {}
    rows = []
    for function_id in sorted(stats):
        entry = stats[function_id]
        calls = int(getattr(entry, "calls", 0) or 0)
        enhanced_calls = int(getattr(entry, "enhanced_calls", 0) or 0)
        fallbacks = dict(getattr(entry, "fallbacks", {}) or {})
        total_calls += calls
        enhanced += enhanced_calls
        for reason, count in fallbacks.items():
            reasons[reason] = reasons.get(reason, 0) + count
        version = getattr(entry, "version", None)
        backend = getattr(entry, "backend", None)
        detail = ", ".join(f"{reason} x{count}" for reason, count in sorted(fallbacks.items()))
        kinds: dict[str, int] = {}
        for (kind, _field), count in dict(getattr(entry, "notes", {}) or {}).items():
            kinds[kind] = kinds.get(kind, 0) + count
        reported = ", ".join(f"{kind} x{count}" for kind, count in sorted(kinds.items()))
        rows.append(
            f"  {function_id}  v{version if version is not None else '-'}"
            f"{' [' + backend + ']' if backend else ''}  calls {calls}, enhanced {enhanced_calls}"
            + (f", fell back: {detail}" if detail else "")
            + (" (never ran enhanced)" if calls and not enhanced_calls else "")
            + (f", reported: {reported}" if reported else "")
        )
    fell_back = sum(reasons.values())
    ran = sum(1 for entry in stats.values() if int(getattr(entry, "enhanced_calls", 0) or 0) > 0)
    # A function none of whose calls ran enhanced is not counted as enhanced: its row says why.
    counted = (f"{len(stats)} function{'s' if len(stats) != 1 else ''}" if ran == len(stats)
               else f"{ran} of {len(stats)} functions")
    head = f"poet: {counted} enhanced, {total_calls} call{'s' if total_calls != 1 else ''}"
    head += f" ({enhanced} enhanced, {fell_back} fell back"
    if reasons:
        head += ": " + ", ".join(f"{reason} x{count}" for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]))
    head += ")"
    return [head, *rows]


def print_summary() -> None:
    if os.getpid() != _OWNER:
        return
    try:
        from poet_runtime.runtime import stats

        lines = format_summary(stats())
    except Exception as error:  # the summary must never change the program's exit
        lines = [f"poet: no summary ({type(error).__name__}: {error})"]
    try:
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass

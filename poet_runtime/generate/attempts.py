"""What a generation tried, in words: each attempt's model, tokens, latency and outcome.

``enhance``, ``show`` and the log must say that a built-in version stands because three
answers were refused (and why), not just "builtin generated". Reads a version's
metadata (``attempts``, ``fallback``, ``request``); no imports beyond the stdlib.
"""

from __future__ import annotations


def describe_attempt(attempt: dict) -> str:
    tokens = attempt.get("tokens") or {}
    parts = [f"#{attempt.get('attempt', '?')}", str(attempt.get("result", "?"))]
    if attempt.get("reason"):
        parts[-1] += f" ({attempt['reason']})"
    if attempt.get("request") and attempt.get("request") != "module":
        parts.append(str(attempt["request"]))
    if attempt.get("model"):
        parts.append(str(attempt["model"]))
    if tokens:
        parts.append(f"{tokens.get('prompt', 0)}+{tokens.get('completion', 0)} tokens")
    if attempt.get("cached"):
        parts.append("cached")
    elif attempt.get("latency_ms") is not None:
        parts.append(f"{attempt['latency_ms'] / 1000:.1f}s")
    return " ".join(parts)


def rows(metadata: dict) -> list[list[str]]:
    """One row per attempt: number, result, reason, request, model, tokens, latency, detail."""
    found = []
    for attempt in metadata.get("attempts") or ():
        tokens = attempt.get("tokens") or {}
        latency = "cached" if attempt.get("cached") else (
            f"{attempt['latency_ms'] / 1000:.2f}s" if attempt.get("latency_ms") is not None else "-")
        found.append([str(attempt.get("attempt", "?")), str(attempt.get("result", "?")),
                      str(attempt.get("reason") or "-"), str(attempt.get("request") or "module"),
                      str(attempt.get("model") or metadata.get("model") or "-"),
                      f"{tokens.get('prompt', 0)}/{tokens.get('completion', 0)}" if tokens else "-", latency,
                      str(attempt.get("detail") or "")[:160]])
    return found


def summary(metadata: dict) -> str:
    """One line: what made this version (and, for a fallback, why no answer was used)."""
    generator = str(metadata.get("generator", "?"))
    attempts = metadata.get("attempts") or []
    fallback = metadata.get("fallback") or {}
    text = generator
    if metadata.get("parts"):
        text += f" ({metadata['parts']})"
    if fallback:
        text += f", fallback: {fallback.get('reason')}"
    if attempts:
        text += "; " + "; ".join(describe_attempt(a) for a in attempts)
    elif fallback:
        text += f": {str(fallback.get('detail', ''))[:200]}"
    return text

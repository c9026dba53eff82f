"""Token estimates and a token/cost budget, for the prompt_optimization domain.

Why here: counting what a prompt costs must work wherever generated code runs, and no
tokenizer ships in the standard library. ``estimate`` is an estimate, not a
tokenizer's count, and the evidence says so: a word counts one token per six
characters (at least one), every other non-space character one; text inside lists and
dicts (chat messages) is counted through.

``check_budget`` runs before the logic: with the usage kept in ``usage`` (a plain dict
the generated module owns, per function and process) it says which limit a call would
break; ``spend`` adds a finished call's tokens. A call over budget is reported
(``domain.warning``); under contract 2 it still runs (the original would run anyway).
"""

import re

_PIECES = re.compile(r"\w+|[^\w\s]")
_MAX_DEPTH = 20


def estimate(value, depth=0):
    """Estimated tokens of the text in ``value`` (0 for values with no text)."""
    if type(value) is str or isinstance(value, str):
        total = 0
        for piece in _PIECES.findall(value):
            total += max(1, (len(piece) + 5) // 6) if piece[0].isalnum() or piece[0] == "_" else 1
        return total
    if depth >= _MAX_DEPTH:
        return 0
    if isinstance(value, dict):
        return sum(estimate(item, depth + 1) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(estimate(item, depth + 1) for item in value)
    return 0


def new_usage():
    return {"calls": 0, "tokens": 0, "cost": 0.0}


def check_budget(usage, prompt_tokens, max_prompt_tokens=0, token_budget=0, cost_per_1k_tokens=0.0,
                 cost_budget=0.0):
    """The limits this call breaks before it runs, as a list of dicts (empty: within budget)."""
    broken = []
    if max_prompt_tokens and prompt_tokens > max_prompt_tokens:
        broken.append({"rule": "max_prompt_tokens", "tokens": prompt_tokens, "limit": max_prompt_tokens})
    if token_budget and usage["tokens"] + prompt_tokens > token_budget:
        broken.append({"rule": "token_budget", "used": usage["tokens"], "tokens": prompt_tokens, "limit": token_budget})
    if cost_budget and cost_per_1k_tokens:
        cost = usage["cost"] + prompt_tokens * cost_per_1k_tokens / 1000.0
        if cost > cost_budget:
            broken.append({"rule": "cost_budget", "used": round(usage["cost"], 6), "cost": round(cost, 6),
                           "limit": cost_budget})
    return broken


def spend(usage, tokens, cost_per_1k_tokens=0.0):
    usage["calls"] += 1
    usage["tokens"] += tokens
    usage["cost"] += tokens * cost_per_1k_tokens / 1000.0
    return usage

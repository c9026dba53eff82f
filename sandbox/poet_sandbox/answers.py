"""Cached answers for repeated identical calls of a pure function (prompt_optimization, optimize_for
cost or latency).

Why: a pure prompt builder called again with the same arguments gives the same answer, and a
call saved is time and, downstream, money. Only where the evidence supports it: the generator
writes this only for functions whose source shows them pure (``generate.purity``); here an
answer is served from the cache only after two calls with the same arguments gave equal
answers of the same type (a function that answered differently is never cached again), only
for arguments that are plain data (digested by ``evidence.digest``) and only for answers that
are immutable plain data (str, numbers, bytes, tuples and frozensets of them), so no caller
can change what another one gets. The cache is bounded, and per loaded version.
"""

from poet_sandbox.evidence import digest

MISS = object()
_IMMUTABLE = (str, int, float, bool, bytes, type(None))


def new_cache(limit=256):
    return {"entries": {}, "limit": int(limit), "hits": 0}


def _immutable(value, depth=0):
    if type(value) in _IMMUTABLE:
        return True
    if depth < 20 and type(value) in (tuple, frozenset):
        return all(_immutable(item, depth + 1) for item in value)
    return False


def key_of(args, kwargs):
    """The arguments' digest, or None when they are not plain data."""
    key = digest([list(args), dict(kwargs)])
    return None if key.startswith("type:") else key


def lookup(cache, key):
    """The confirmed answer for ``key``, or MISS."""
    entry = cache["entries"].get(key) if key is not None else None
    if entry is None or entry[1] is not True:
        return MISS
    cache["hits"] += 1
    return entry[0]


def remember(cache, key, answer):
    """Record an answer the logic gave for ``key``; two equal ones confirm it."""
    if key is None:
        return
    entries = cache["entries"]
    entry = entries.get(key)
    if entry is None:
        if not _immutable(answer):
            return
        while len(entries) >= cache["limit"]:
            del entries[next(iter(entries))]  # the oldest first
        entries[key] = [answer, False]
    elif entry[1] is False:
        same = type(entry[0]) is type(answer) and entry[0] == answer
        entries[key] = [answer, True] if same else [None, None]  # None: answered differently, never cached

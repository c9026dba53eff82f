"""A candidate version: the generator run again with what learning found, stored beside current.

Why not ``resolve.ensure_version``: it answers "which version serves this function",
and the current version still matches the function's key, so it would return that one.
A candidate must be generated anyway, checked the same way, stored with
``make_current=False`` and status "candidate" under the same key (so that promoting it
needs no other change), and left to the engine to promote or reject.
"""

from __future__ import annotations

from poet_runtime.resolve import generate_version


def generate_candidate(state, store, hints: dict):
    """Generate, check and store a candidate for ``state``'s function; returns the StoredVersion."""
    with store.lock():
        return generate_version(
            store, state.spec(), state.config, hints=hints, status="candidate", make_current=False,
            metadata={"reason": "objective degraded", "evidence": hints.get("evidence")},
        )

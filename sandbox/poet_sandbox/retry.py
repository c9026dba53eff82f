"""Exponential backoff with full jitter, for Operate' retries.

Full jitter (a uniform draw between 0 and the exponential cap) spreads retries of
many callers apart; the cap keeps one call's worst case bounded.
"""

import random

_random = random.Random()


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
    ceiling = min(cap, base * (2 ** (attempt - 1)))
    return _random.uniform(0.0, ceiling)


def seed(value: int) -> None:
    """Make the jitter reproducible (tests, benchmarks)."""
    _random.seed(value)

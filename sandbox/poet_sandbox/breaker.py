"""A small circuit breaker for Operate'.

Only failures the domain calls retryable (connection errors, timeouts) count:
a function that raises ``ValueError`` for bad input must not shut itself off
for good inputs.
"""

import time

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures, for ``reset_seconds``."""

    __slots__ = ("failure_threshold", "reset_seconds", "failures", "opened_at", "last_error", "_clock")

    def __init__(self, failure_threshold: int = 5, reset_seconds: float = 30.0, clock=time.monotonic):
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self.failures = 0
        self.opened_at = None  # None while closed
        self.last_error = None
        self._clock = clock

    def configure(self, failure_threshold: int, reset_seconds: float) -> None:
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return CLOSED
        if self._clock() - self.opened_at >= self.reset_seconds:
            return HALF_OPEN
        return OPEN

    def allow(self) -> bool:
        """True when a call may go ahead (closed, or half-open for one trial call)."""
        if self.opened_at is None:
            return True
        return self._clock() - self.opened_at >= self.reset_seconds

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.last_error = None

    def record_failure(self, error: BaseException) -> None:
        self.last_error = error
        if self.opened_at is not None:
            # The half-open trial failed: stay open for another full period.
            self.opened_at = self._clock()
            return
        self.failures += 1
        if self.failures >= self.failure_threshold:
            self.opened_at = self._clock()

"""`CircuitBreaker`: stop calling a cache server that keeps failing, and try it again later.

The breaker is pure bookkeeping over a clock (no I/O, no asyncio), so tests drive it with a
fake clock and the cache decides what a failure is. Its life::

    closed --N consecutive failures--> open --reset_after elapses--> half-open
      ^                                  ^                              |
      |                                  +-------- trial fails ---------+
      +---------------------------------------- trial succeeds ---------+

While open, `allow` answers ``False`` at once: a dead server costs nothing per call. Once
``reset_after`` seconds have passed, one caller is let through as the trial; the others keep
being refused until the trial reports. A trial that never reports (its task was cancelled)
is given up on after another ``reset_after``, and a new trial is allowed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from enum import StrEnum

from worldstate.errors import ValidationError


class BreakerState(StrEnum):
    """Where a `CircuitBreaker` stands; the values are what the operator sees."""

    CLOSED = "closed"
    """Calls go through; consecutive failures are being counted."""
    OPEN = "open"
    """Calls are refused until ``reset_after`` has passed since the breaker opened."""
    HALF_OPEN = "half-open"
    """One trial call may go through; its outcome closes or re-opens the breaker."""


class CircuitBreaker:
    """Counts consecutive failures of a remote service and refuses calls while it is down.

    ``failures``: consecutive failures (int >= 1) that open the breaker.
    ``reset_after``: seconds (> 0) the breaker stays open before one trial call.
    ``clock``: monotonic seconds; injectable for tests.

    Not thread-safe; meant for one event loop, where calls between awaits are atomic.
    """

    __slots__ = (
        "_clock",
        "_consecutive",
        "_opened_at",
        "_state",
        "_trial_at",
        "failures",
        "last_failure",
        "reset_after",
        "times_opened",
    )

    def __init__(
        self,
        failures: int = 3,
        reset_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(failures, bool) or not isinstance(failures, int) or failures < 1:
            raise ValidationError(f"CircuitBreaker failures must be an int >= 1, got {failures!r}")
        if (
            isinstance(reset_after, bool)
            or not isinstance(reset_after, (int, float))
            or not math.isfinite(reset_after)
            or reset_after <= 0
        ):
            raise ValidationError(
                f"CircuitBreaker reset_after must be a finite number of seconds > 0, "
                f"got {reset_after!r}"
            )
        self.failures = failures
        self.reset_after = float(reset_after)
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._trial_at: float | None = None
        self.times_opened = 0
        """How often the breaker has gone from closed (or half-open) to open."""
        self.last_failure: str | None = None
        """Description of the most recent failure, for the operator."""

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose wait is over reads as half-open."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_after:
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive

    def allow(self) -> bool:
        """May a call go through now? ``False`` means skip the service and take the fallback.

        In the half-open state the first caller gets ``True`` (it is the trial) and must
        report with `record_success` or `record_failure`.
        """
        if self._state is BreakerState.CLOSED:
            return True
        now = self._clock()
        if self._state is BreakerState.OPEN:
            if now - self._opened_at < self.reset_after:
                return False
            self._state = BreakerState.HALF_OPEN
            self._trial_at = now
            return True
        # Half-open with a trial in flight: refuse, unless that trial is long overdue.
        if self._trial_at is not None and now - self._trial_at < self.reset_after:
            return False
        self._trial_at = now
        return True

    def record_success(self) -> bool:
        """A call succeeded. Returns ``True`` if this closed a breaker that was not closed."""
        was_closed = self._state is BreakerState.CLOSED
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._trial_at = None
        return not was_closed

    def record_failure(self, reason: str | None = None) -> bool:
        """A call failed. Returns ``True`` if this opened the breaker."""
        self.last_failure = reason
        self._consecutive += 1
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._consecutive >= self.failures
        ):
            self._open()
            return True
        # Already open: a late failure of a call admitted before opening changes nothing.
        return False

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._trial_at = None
        self.times_opened += 1

    def as_dict(self) -> dict[str, object]:
        """State and counters, for the operator CLI and metrics."""
        return {
            "state": str(self.state),
            "consecutive_failures": self._consecutive,
            "failures_to_open": self.failures,
            "reset_after": self.reset_after,
            "times_opened": self.times_opened,
            "last_failure": self.last_failure,
        }

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(state={self.state.value!r}, "
            f"consecutive_failures={self._consecutive}/{self.failures}, "
            f"reset_after={self.reset_after})"
        )

"""Hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014).

A timestamp is one plain non-negative int, ``(wall_ms << 16) | logical``: milliseconds since
the Unix epoch in the high bits, a 16-bit logical counter in the low bits. Comparing two
timestamps as ints is comparing ``(wall_ms, logical)`` lexicographically, so timestamps sort,
hash and store (a signed 64-bit column, a numpy ``int64`` array) as they are.

``wall_ms`` is limited to 47 bits (the year 6429) so that every timestamp fits a *signed*
64-bit integer (PostgreSQL/CockroachDB ``BIGINT``, numpy ``int64``); the top bit stays clear.

With timestamps packed like this, the HLC rules reduce to integer arithmetic:

- send / local event: ``ts = max(last + 1, pack(pt, 0))``
- receive of ``m``:  ``ts = max(last + 1, m + 1, pack(pt, 0))``

where ``pt`` is the physical clock in ms. This is exactly Kulkarni's ``l``/``c`` update,
with a logical counter that would pass 0xFFFF carried into the millisecond part (the clock
then runs up to one ms ahead of wall time per 65,536 events in one ms, and falls back onto the
wall clock as soon as it catches up). The clock never returns the same value twice and every
value is larger than the previous one, whatever the wall clock does.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from typing import Any

from consistency.classes import ConsistencyInputError

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
MAX_WALL_MS = (1 << 47) - 1
"""Largest millisecond value a timestamp can hold (keeps timestamps within signed 64 bits)."""
MAX_TIMESTAMP = (MAX_WALL_MS << LOGICAL_BITS) | LOGICAL_MASK
"""``2**63 - 1``: the largest valid timestamp."""


class ClockError(ConsistencyInputError):
    """A timestamp or wall-clock reading that is not valid for a hybrid logical clock."""


class ClockDriftError(ClockError):
    """A remote timestamp lies too far ahead of this server's wall clock; it was refused and
    the clock did not move. Carries ``remote_ts``, ``wall_ms`` and ``max_drift_ms``."""

    def __init__(self, remote_ts: int, wall_ms: int, max_drift_ms: int) -> None:
        ahead = (remote_ts >> LOGICAL_BITS) - wall_ms
        super().__init__(
            f"remote timestamp {remote_ts} is {ahead} ms ahead of the local wall clock "
            f"(limit {max_drift_ms} ms); refused. A sender's clock is badly off, or the "
            "message is forged"
        )
        self.remote_ts = remote_ts
        self.wall_ms = wall_ms
        self.max_drift_ms = max_drift_ms

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.remote_ts, self.wall_ms, self.max_drift_ms))


def _as_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ClockError(f"{what} must be an int, got {type(value).__name__}")
    return int(value)


def pack(wall_ms: int, logical: int) -> int:
    """The timestamp for ``(wall_ms, logical)``; ``0 <= wall_ms <= MAX_WALL_MS``,
    ``0 <= logical <= 0xFFFF``."""
    ms = _as_int(wall_ms, "wall_ms")
    lc = _as_int(logical, "logical")
    if not 0 <= ms <= MAX_WALL_MS:
        raise ClockError(f"wall_ms must be in 0..{MAX_WALL_MS}, got {ms}")
    if not 0 <= lc <= LOGICAL_MASK:
        raise ClockError(f"logical must be in 0..{LOGICAL_MASK}, got {lc}")
    return (ms << LOGICAL_BITS) | lc


def unpack(ts: int) -> tuple[int, int]:
    """``(wall_ms, logical)`` of a timestamp."""
    value = check_timestamp(ts)
    return value >> LOGICAL_BITS, value & LOGICAL_MASK


def check_timestamp(ts: object) -> int:
    """``ts`` as an int if it is a valid timestamp (``0 <= ts <= MAX_TIMESTAMP``), else
    `ClockError`. Use it on timestamps read from the bus or the store."""
    value = _as_int(ts, "timestamp")
    if not 0 <= value <= MAX_TIMESTAMP:
        raise ClockError(f"timestamp must be in 0..{MAX_TIMESTAMP}, got {value}")
    return value


class HybridClock:
    """A hybrid logical clock for one server.

    ``wall`` returns seconds since the Unix epoch (default `time.time`; inject a fake for
    deterministic tests). ``max_drift`` (seconds) bounds how far ahead of the local wall clock
    a remote timestamp may be before `update` refuses it, so one forged or badly-clocked
    message cannot drag every clock in the mesh into the future.

    Not thread-safe; one clock per server, driven from its event loop.
    """

    __slots__ = ("_last", "_max_drift_ms", "_wall")

    def __init__(self, wall: Callable[[], float] = time.time, max_drift: float = 60.0) -> None:
        if not callable(wall):
            raise ClockError("wall must be a callable returning seconds since the epoch")
        if (
            isinstance(max_drift, bool)
            or not isinstance(max_drift, (int, float))
            or not math.isfinite(max_drift)
            or max_drift <= 0
        ):
            raise ClockError(f"max_drift must be a finite number of seconds > 0, got {max_drift!r}")
        self._wall = wall
        self._max_drift_ms = int(max_drift * 1000)
        self._last = 0

    @property
    def last(self) -> int:
        """The last timestamp returned (0 before the first)."""
        return self._last

    @property
    def max_drift_ms(self) -> int:
        return self._max_drift_ms

    def wall_ms(self) -> int:
        """The wall clock now, in whole milliseconds."""
        seconds = self._wall()
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise ClockError(f"wall clock returned {seconds!r}; expected seconds >= 0")
        ms = int(seconds * 1000)
        if ms > MAX_WALL_MS:
            raise ClockError(f"wall clock reading {seconds!r} s is beyond the timestamp range")
        return ms

    def now(self) -> int:
        """A timestamp for a local or send event: larger than every earlier one."""
        return self._advance(self._last + 1, self.wall_ms() << LOGICAL_BITS)

    def update(self, remote_ts: int) -> int:
        """A timestamp for receiving a message stamped ``remote_ts``: larger than the previous
        local timestamp and than ``remote_ts``.

        Raises `ClockError` for a malformed timestamp and `ClockDriftError` when ``remote_ts``
        is more than ``max_drift`` ahead of the wall clock; the clock is unchanged then.
        """
        remote = check_timestamp(remote_ts)
        wall = self.wall_ms()
        if (remote >> LOGICAL_BITS) - wall > self._max_drift_ms:
            raise ClockDriftError(remote, wall, self._max_drift_ms)
        return self._advance(max(self._last, remote) + 1, wall << LOGICAL_BITS)

    def _advance(self, candidate: int, physical: int) -> int:
        ts = max(candidate, physical)
        if ts > MAX_TIMESTAMP:
            raise ClockError("hybrid clock exhausted the timestamp range")
        self._last = ts
        return ts

    def __repr__(self) -> str:
        ms, lc = self._last >> LOGICAL_BITS, self._last & LOGICAL_MASK
        return f"HybridClock(last=({ms} ms, {lc}), max_drift_ms={self._max_drift_ms})"

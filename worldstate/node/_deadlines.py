"""Deadlines for many waiting futures, on one timer.

`asyncio.timeout` around every submit costs a timer handle, a task lookup and a heap push and
cancel per call — at thousands of causal submits a second, a measurable share of a submit's
CPU. `Deadlines` keeps the deadlines in one heap and one loop timer: when it fires, every
future whose deadline has passed and that is still waiting gets `TimeoutError`; the timer is
then set again for the earliest deadline left, but never sooner than `GRAIN` seconds later,
so a steady stream of submits costs a few timer callbacks a second, not one per submit. A
deadline can thus fire up to `GRAIN` late. Futures that finished meanwhile are skipped (and
dropped from the heap when their deadline comes).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from typing import Any

__all__ = ["GRAIN", "Deadlines"]

GRAIN = 0.05
"""Seconds between two timer firings at most once per this (the lateness bound)."""


class Deadlines:
    """One heap of ``(deadline, future)`` on the running loop's clock (see the module)."""

    def __init__(self, grain: float = GRAIN) -> None:
        self._grain = grain
        self._heap: list[tuple[float, int, asyncio.Future[Any]]] = []
        self._count = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, fut: asyncio.Future[Any], timeout: float) -> None:
        """Fail ``fut`` with `TimeoutError` if it is still pending ``timeout`` s from now."""
        loop = fut.get_loop()
        when = loop.time() + timeout
        heapq.heappush(self._heap, (when, next(self._count), fut))
        if when < self._armed_at:
            self._arm(loop, when)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = when
        self._timer = loop.call_at(when, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._armed_at = math.inf
        now = loop.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            fut = heapq.heappop(heap)[2]
            if not fut.done():
                fut.set_exception(TimeoutError())
        if heap:
            self._arm(loop, max(heap[0][0], now + self._grain))

    def close(self) -> None:
        """Stop the timer and forget every deadline (the futures are left as they are)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_at = math.inf
        self._heap.clear()

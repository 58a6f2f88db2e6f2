"""A deterministic asyncio event loop with virtual time (like trio's ``MockClock`` with
autojump): ``loop.time()`` is virtual, and when every task is idle the loop jumps straight to
the next timer instead of sleeping. Real code (`worldstate.World`, `MeshCoordinator`) runs on
it unchanged: ``asyncio.sleep``, ``asyncio.timeout``, ``call_later`` all use the loop's
clock. A one-minute simulated run takes as long as its callbacks take to execute.

Determinism: asyncio runs ready callbacks FIFO and timers by (when, insertion order); with no
thread and no socket (the simulation's bus and store do neither), the same program and the
same seeds give the same interleaving on every run.

The selector still polls real file descriptors (the loop's self-pipe) without blocking, so a
stray ``call_soon_threadsafe`` is not lost; `Idle` is raised if the loop would wait forever
(no ready callback, no timer): nothing could ever wake it.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Idle(RuntimeError):
    """The loop has nothing to run and no timer: it would block forever."""


class _VirtualSelector(selectors.BaseSelector):
    """Delegates registrations to a real selector; `select` never blocks and advances the
    loop's virtual clock by the timeout it was given instead."""

    def __init__(self) -> None:
        self._real = selectors.DefaultSelector()
        self.loop: VirtualTimeLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Any:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise Idle("the simulated loop has no ready callback and no timer: deadlock")
        assert self.loop is not None
        self.loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock starts at ``start`` and moves only when the loop is idle
    (to the next timer) or by `advance`."""

    def __init__(self, start: float = 0.0) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = float(start)
        self.jumps = 0
        """How many times the clock jumped to a timer."""

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the virtual clock forward (timers due by then fire on the next iteration)."""
        if seconds < 0:
            raise ValueError("virtual time only moves forward")
        self._virtual_now += seconds
        self.jumps += 1


def run_virtual(main: Coroutine[Any, Any, T], *, start: float = 0.0) -> T:
    """Run ``main`` to completion on a fresh `VirtualTimeLoop` (like ``asyncio.run``:
    remaining tasks are cancelled and awaited, async generators shut down, loop closed)."""
    loop = VirtualTimeLoop(start)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


__all__ = ["Idle", "VirtualTimeLoop", "run_virtual"]

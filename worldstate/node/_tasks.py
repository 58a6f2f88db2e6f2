"""The supervisor: the one owner of every background task of a world or a coordinator.

In the manner of aiomqtt's client (and of `asyncio.TaskGroup`), every loop is started through
`Supervisor.spawn`: named, tracked, cancelled and awaited by `Supervisor.close`. What happens
when a task ends by itself depends on what it is:

- a **loop** (``spawn(...)``, the default) is meant to run until close. If it ends — by an
  exception, or by returning — that is a bug or a lost dependency: it is logged with its
  traceback and the supervisor **fails**: `failure` holds the cause, and every ``on_failure``
  callback runs once (the world then fails pending submits and `updates()` iterators with
  `WorldClosed` carrying the cause, and closes itself).
- a **job** (``spawn(..., job=True)``: serving one forwarded op, one coordinator command, one
  publish) may end whenever it likes. If it raises, the exception is logged with its traceback
  and counted (``stats()["crashed_jobs"]``), and only that job fails: one bad input can fail
  only itself.

`close` cancels everything and waits (with a deadline) for it; a task that ignores
cancellation past the deadline is named in a loud log line instead of hanging the caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["LoopExited", "Supervisor"]

log = logging.getLogger("worldstate.tasks")

FailureCallback = Callable[[BaseException], None]


class LoopExited(RuntimeError):
    """A supervised loop returned although it should run until close."""


class Supervisor:
    """Owns the background tasks of one world (or coordinator); see the module docs.

    ``owner`` names the owner in log lines (the server id). Not thread-safe: use it from the
    event loop that runs the world.
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._loops: dict[asyncio.Task[Any], str] = {}
        self._jobs: set[asyncio.Task[Any]] = set()
        self._callbacks: list[FailureCallback] = []
        self._closing = False
        self.failure: BaseException | None = None
        """The first crash of a loop (None while healthy)."""
        self.failed_task: str | None = None
        self.crashed_jobs = 0
        self.jobs_started = 0

    # -- starting ------------------------------------------------------------------------

    def spawn(
        self, coro: Coroutine[Any, Any, Any], name: str, *, job: bool = False
    ) -> asyncio.Task[Any]:
        """Start ``coro`` as a tracked task called ``name``. A loop (default) must run until
        close; a ``job`` may finish at any time (see the module docs)."""
        if self._closing:
            coro.close()
            raise RuntimeError(f"{self.owner}: cannot start {name!r}: the supervisor is closed")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        if job:
            self.jobs_started += 1
            self._jobs.add(task)
            task.add_done_callback(self._job_done)
        else:
            self._loops[task] = name
            task.add_done_callback(self._loop_done)
        return task

    def on_failure(self, callback: FailureCallback) -> None:
        """Call ``callback(cause)`` once when a loop crashes (at once if one already did)."""
        self._callbacks.append(callback)
        if self.failure is not None:
            callback(self.failure)

    # -- watching --------------------------------------------------------------------------

    def _job_done(self, task: asyncio.Task[Any]) -> None:
        self._jobs.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.crashed_jobs += 1
            log.error(
                "%s: background job %s failed",
                self.owner,
                task.get_name(),
                exc_info=(type(exc), exc, exc.__traceback__),
            )

    def _loop_done(self, task: asyncio.Task[Any]) -> None:
        name = self._loops.pop(task, task.get_name())
        if self._closing or task.cancelled():
            return
        exc: BaseException | None = task.exception()
        if exc is None:
            exc = LoopExited(f"the background loop {name!r} of {self.owner} stopped by itself")
            log.error("%s: %s", self.owner, exc)
        else:
            log.error(
                "%s: background loop %s crashed; the world fails",
                self.owner,
                name,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        self.fail(exc, name)

    def fail(self, cause: BaseException, where: str = "caller") -> None:
        """Mark the supervisor failed with ``cause`` (first cause wins) and tell the owner."""
        if self.failure is not None:
            return
        self.failure = cause
        self.failed_task = where
        for cb in list(self._callbacks):
            try:
                cb(cause)
            except Exception:  # a callback bug must not hide the first failure
                log.exception("%s: a failure callback raised", self.owner)

    @property
    def healthy(self) -> bool:
        return self.failure is None and not self._closing

    def status(self) -> dict[str, Any]:
        """For `stats()` and health checks: loops running, jobs in flight, the failure."""
        return {
            "healthy": self.healthy,
            "loops": sorted(self._loops.values()),
            "jobs_in_flight": len(self._jobs),
            "jobs_started": self.jobs_started,
            "crashed_jobs": self.crashed_jobs,
            "failure": None if self.failure is None else repr(self.failure),
            "failed_task": self.failed_task,
        }

    # -- stopping --------------------------------------------------------------------------

    async def close(self, timeout: float = 5.0) -> None:
        """Cancel every task and wait for them (at most ``timeout`` seconds)."""
        self._closing = True
        tasks = [*self._loops, *self._jobs]
        current = asyncio.current_task()
        tasks = [t for t in tasks if t is not current]
        for t in tasks:
            t.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        if pending:
            log.error(
                "%s: %d background task(s) ignored cancellation for %.1fs: %s",
                self.owner,
                len(pending),
                timeout,
                ", ".join(sorted(t.get_name() for t in pending)),
            )

"""Queues and the group-commit loop shared by the region and inventory-shard pipelines.

Each owned region (and each owned inventory shard) has a bounded queue (`Pipeline`). One
committer task per kind drains every queue of that kind into one group, commits it as one
transaction, and starts on the next group as soon as that is done: a lone op waits at most
one ``Config.group_commit_window`` (the committer's only sleep, taken when it wakes from
idle), and ops that arrive while a group commits go into the next one without waiting.

Overflow policy: a full queue refuses new ops at once with `Overloaded` (nothing applied;
resubmit the same op_id later) rather than buffering without bound.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from worldstate.errors import NotAuthoritative, Overloaded, WorldClosed
from worldstate.operations import Operation
from worldstate.results import Result

log = logging.getLogger("worldstate.strong")

K = TypeVar("K", bound=Hashable)

MAX_BATCH = 512
"""Ops of one region (or shard) per group."""
MAX_GROUP_OPS = 2048
"""Ops per group transaction, all regions together."""


@dataclass(eq=False, slots=True)
class Entry:
    """One submitted op waiting for its outcome."""

    op: Operation
    fut: asyncio.Future[Result]
    digest: str
    taken: bool = False
    """True once a committer took it into a transaction (it may then have applied)."""

    def resolve(self, result: Result) -> None:
        if not self.fut.done():
            self.fut.set_result(result)

    def fail(self, err: BaseException) -> None:
        if not self.fut.done():
            self.fut.set_exception(err)


def _retrieve(fut: asyncio.Future[Result]) -> None:
    if not fut.cancelled():
        fut.exception()


class Pipeline(Generic[K]):
    """The queue of one owned region or shard, with what it committed."""

    def __init__(self, key: K, limit: int, wake: Callable[[], None]) -> None:
        self.key = key
        self.limit = limit
        self.queue: deque[Entry] = deque()
        self._wake = wake
        self.batches = 0
        self.ops = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.closed = False
        """Set while the region or shard is handed off: new ops are refused."""

    def submit(self, op: Operation, digest: str) -> Entry:
        if self.closed:
            raise NotAuthoritative(
                f"{self.key} is being handed off; resubmit the op (same op_id) to its next owner"
            )
        if len(self.queue) >= self.limit:
            raise Overloaded(
                f"{self.key}: {len(self.queue)} operations already queued "
                "(Config.region_queue_size); retry later with the same op_id"
            )
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        # the submitter may have stopped waiting (its deadline passed): an error nobody
        # reads is still accounted for, not reported as "never retrieved"
        fut.add_done_callback(_retrieve)
        e = Entry(op, fut, digest)
        self.queue.append(e)
        self.idle.clear()
        self._wake()
        return e

    def take(self, n: int) -> list[Entry]:
        out: list[Entry] = []
        while self.queue and len(out) < n:
            e = self.queue.popleft()
            if e.fut.done():  # timed out or cancelled while queued: never applied
                continue
            e.taken = True
            out.append(e)
        return out

    def withdraw(self, entry: Entry) -> bool:
        """Take a still-queued entry back (its submit timed out): True if it was queued."""
        try:
            self.queue.remove(entry)
        except ValueError:
            return False
        if not self.queue:
            self.idle.set()
        return True

    def fail_all(self, err: BaseException) -> None:
        while self.queue:
            self.queue.popleft().fail(err)
        self.idle.set()


class GroupCommitter(abc.ABC, Generic[K]):
    """Drains the pipelines of one kind into group transactions (see module doc).
    Subclasses implement `commit_group`, which resolves or fails every entry it is given;
    an op-specific failure fails that op alone, and anything it raises is a bug: the loop
    ends with it and the supervisor fails the world loudly (the group's ops get
    `WorldClosed` carrying the cause)."""

    name = "strong"

    def __init__(
        self,
        window: float,
        queue_limit: int,
        spawn: Callable[..., asyncio.Task[Any]],
        concurrency: int = 1,
    ) -> None:
        self.window = window
        self.spawn = spawn
        self.queue_limit = queue_limit
        self.concurrency = max(1, concurrency)
        """Groups in flight at once (`Config.max_concurrent_commits`); each key is in at
        most one of them, so a key's groups commit in order."""
        self.pipelines: dict[K, Pipeline[K]] = {}
        self._work = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self._busy: set[K] = set()
        self.owner = ""
        self.group_commits = 0

    def pipeline(self, key: K) -> Pipeline[K]:
        p = self.pipelines.get(key)
        if p is None:
            p = self.pipelines[key] = Pipeline(key, self.queue_limit, self._work.set)
        return p

    def start(self) -> None:
        self._task = self.spawn(self._run(), f"ws-{self.name}-{self.owner}")

    async def _run(self) -> None:
        inflight: set[asyncio.Task[None]] = set()
        try:
            backlog = False
            while True:
                while len(inflight) >= self.concurrency or not self._ready():
                    await self._wait(inflight)
                if self.window > 0 and not backlog:
                    await asyncio.sleep(self.window)  # the one gathering window
                self._work.clear()
                group = self._take()
                if group:
                    self._busy.update(group)
                    # owned: kept in ``inflight``, awaited (and its crash re-raised) here
                    task = asyncio.get_running_loop().create_task(self._commit(group))  # owned
                    inflight.add(task)
                backlog = False
                for key, p in self.pipelines.items():
                    if key in self._busy:
                        continue
                    if p.queue:
                        backlog = True
                    else:
                        p.idle.set()
                if backlog:
                    self._work.set()
        finally:
            for t in inflight:
                t.cancel()
            if inflight:
                await asyncio.wait(inflight)

    def _ready(self) -> bool:
        """Some pipeline not in a group in flight has queued ops."""
        return self._work.is_set() and any(
            p.queue for k, p in self.pipelines.items() if k not in self._busy
        )

    async def _wait(self, inflight: set[asyncio.Task[None]]) -> None:
        """Until a group in flight ends (its crash is re-raised) or — when a slot is free —
        new work arrives. ``_work`` is set by every submit and by every group that ends
        (`_commit`), so one event covers both."""
        if len(inflight) >= self.concurrency:  # no slot: only an ending group can help
            await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
        else:
            await self._work.wait()
        for t in [t for t in inflight if t.done()]:
            inflight.discard(t)
            t.result()  # a bug in commit_group: the loop ends with it (the supervisor's)
        if not self._ready():
            self._work.clear()

    def _take(self) -> dict[K, list[Entry]]:
        group: dict[K, list[Entry]] = {}
        n = 0
        # with several slots, a group takes its share of the keys, so that the next group
        # (other keys) can commit alongside it instead of waiting for every key to be free
        share = -(-len(self.pipelines) // self.concurrency)
        for key, p in list(self.pipelines.items()):
            if n >= MAX_GROUP_OPS or len(group) >= share:
                break
            if key in self._busy:
                continue
            got = p.take(min(MAX_BATCH, MAX_GROUP_OPS - n))
            if got:
                group[key] = got
                n += len(got)
        return group

    async def _commit(self, group: dict[K, list[Entry]]) -> None:
        try:
            await self.commit_group(group)
        except BaseException as e:
            # cancelled by close, or a bug: the supervisor fails the world loudly with it;
            # no op of the group is left waiting
            cause = None if isinstance(e, asyncio.CancelledError) else e
            err = WorldClosed(
                "the world closed during the commit; the ops may or may not have "
                "applied — resubmit them (same op_ids)",
                cause=cause,
            )
            for es in group.values():
                for x in es:
                    x.fail(err)
            raise
        finally:
            self._busy.difference_update(group)
            for key in group:
                pl = self.pipelines.get(key)
                if pl is not None and not pl.queue:
                    pl.idle.set()
            self._work.set()  # their next ops (queued meanwhile) may go now
        self.group_commits += 1
        for key, es in group.items():
            pl = self.pipelines.get(key)
            if pl is not None:
                pl.batches += 1
                pl.ops += len(es)

    @abc.abstractmethod
    async def commit_group(self, group: dict[K, list[Entry]]) -> None:
        """Commit one group: resolve or fail every entry of it (see the class doc)."""

    async def drop(self, key: K, err: BaseException | None = None) -> None:
        """Stop taking ops for ``key``: queued ones commit first (while the lease is still
        held) unless ``err`` is given, which fails them at once."""
        p = self.pipelines.get(key)
        if p is None:
            return
        p.closed = True
        if err is not None:
            p.fail_all(err)
        else:
            await p.idle.wait()
        if self.pipelines.get(key) is p:
            del self.pipelines[key]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # a crash of it is the supervisor's to report
        err = WorldClosed("the world closed before the commit")
        for p in self.pipelines.values():
            p.fail_all(err)
        self.pipelines.clear()

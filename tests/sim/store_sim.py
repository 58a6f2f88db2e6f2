"""The simulation's store: the REAL `worldstate.store.Store` (its SQL, lease rules, fence
check, strong group commit, mesh tables, causal log) on one in-memory SQLite database per
simulated world, through a driver that runs sqlite3 in the event loop's own thread.

Why not a fake: the node core reaches the store through ``Store.run(body)`` with SQL bodies
from five modules (leases, mesh state, strong commit, event log, inventory); a fake would
re-implement them and drift. Why not aiosqlite: it runs each statement on a thread, and
when a statement finishes relative to virtual time is then up to the OS scheduler. Here
each "await" of the driver completes at once, so a transaction runs atomically at one
instant of virtual time, and the order of transactions is the order of the tasks that run
them — deterministic.

`SimStore` adds the store's side of the fault network per server: a server partitioned from
the store waits and gets `StoreUnavailable`; requests take a latency; a request can stall
(it runs late with the ``now`` read when it was sent — the lease case fencing exists for);
a reply can be lost after the transaction committed (an ambiguous commit: the caller sees
`StoreUnavailable` and must retry under the same op id). Every committed write transaction
is reported to an observer (the harness's invariant checker).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from worldstate.errors import StoreUnavailable
from worldstate.store import Store
from worldstate.store.engine import make_engine
from worldstate.store.retry import RetryPolicy

T = TypeVar("T")

URL = "sqlite+aiosqlite://"


# -- an aiosqlite-shaped driver that does no I/O off the loop ------------------------------


class _Cursor:
    """aiosqlite's cursor surface over a sqlite3 cursor; every coroutine completes at once."""

    def __init__(self, cur: sqlite3.Cursor) -> None:
        self._cur = cur

    @property
    def description(self) -> Any:
        return self._cur.description

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cur.lastrowid

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> _Cursor:
        self._cur.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, seq: Any) -> _Cursor:
        self._cur.executemany(sql, seq)
        return self

    async def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    async def fetchone(self) -> Any:
        return self._cur.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cur.fetchmany(size) if size is not None else self._cur.fetchmany()

    async def close(self) -> None:
        self._cur.close()


class _Queue:
    """Stands in for aiosqlite's request queue (SQLAlchemy's isolation-level setter puts a
    (future, function) pair on it): runs the function at once."""

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as e:  # handed to the awaiting caller, like aiosqlite does
            future.set_exception(e)


class InlineConnection:
    """aiosqlite's connection surface over one sqlite3 connection, run inline."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._tx = _Queue()

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    async def cursor(self) -> _Cursor:
        return _Cursor(self._conn.cursor())

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> _Cursor:
        return _Cursor(self._conn.execute(sql, parameters))

    async def create_function(self, *args: Any, **kw: Any) -> None:
        self._conn.create_function(*args, **kw)

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        """The database outlives every engine of the simulation; `SimDatabase.close` ends it."""

    def stop(self) -> None:
        pass


class SimDatabase:
    """One in-memory SQLite database shared by every server of a simulated world."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self.write_transactions = 0

    async def connect(self) -> InlineConnection:
        return InlineConnection(self.conn)

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        """Read the database directly (the checker; never inside a transaction)."""
        return self.conn.execute(sql, parameters).fetchall()

    def close(self) -> None:
        self.conn.close()


# -- the per-server store with the store's side of the fault network -----------------------


@dataclass(slots=True)
class StoreFaults:
    """The store's network faults (all drawn from the simulation's rng)."""

    latency: tuple[float, float] = (0.001, 0.01)
    """Each way, seconds."""
    stall: float = 0.0
    """Probability that a request stalls for ``stall_for`` seconds before it runs."""
    stall_for: tuple[float, float] = (1.0, 6.0)
    lost_reply: float = 0.0
    """Probability that the reply of a committed write is lost (ambiguous commit)."""
    unreachable_wait: float = 1.0
    """How long a request to an unreachable store waits before `StoreUnavailable`."""


class Network:
    """What the store's network looks like now: who can reach it, and the faults."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.faults = StoreFaults()
        self.cut_off: set[str] = set()
        self.quiet = False
        """No faults at all (the final phase)."""

    def reachable(self, client: str) -> bool:
        return client not in self.cut_off


Observer = Callable[[str, str, bool, float], None]
"""``(client, what, sent_authoritative, sent_at)`` after every committed write transaction."""


class SimStore(Store):
    """The real `Store` over the shared `SimDatabase`, seen from one client (a server or a
    coordinator) with its own clock, through the store's fault network."""

    def __init__(
        self,
        db: SimDatabase,
        *,
        client: str,
        clock: Callable[[], float],
        network: Network,
        observer: Observer | None = None,
        standing: Callable[[], bool] = lambda: True,
    ) -> None:
        super().__init__(
            URL,
            clock=clock,
            policy=RetryPolicy(8, 0.005, 0.2),
            engine=make_engine(URL, async_creator=db.connect),
        )
        self.db = db
        self.client = client
        self.network = network
        self.observer = observer
        self.standing = standing
        self.requests = 0
        self.unavailable = 0
        self.lost_replies = 0
        self.stalls = 0

    async def run(
        self, body: Callable[[AsyncConnection], Awaitable[T]], what: str, *, read: bool = False
    ) -> T:
        net = self.network
        self.requests += 1
        sent_at = self.clock()
        sent_authoritative = self.standing()
        rng = net.rng
        f = net.faults
        if not net.reachable(self.client):
            await asyncio.sleep(f.unreachable_wait)
            self.unavailable += 1
            raise StoreUnavailable(f"{what}: the store is unreachable from {self.client}")
        if not net.quiet:
            await asyncio.sleep(rng.uniform(*f.latency))
            if f.stall and rng.random() < f.stall:
                self.stalls += 1
                await asyncio.sleep(rng.uniform(*f.stall_for))
        before = self.db.conn.total_changes
        result = await super().run(body, what, read=read)
        wrote = self.db.conn.total_changes != before
        if wrote:
            self.db.write_transactions += 1
            if self.observer is not None:
                self.observer(self.client, what, sent_authoritative, sent_at)
        if not net.quiet:
            lose = wrote and f.lost_reply and rng.random() < f.lost_reply
            await asyncio.sleep(rng.uniform(*f.latency))
            if lose or not net.reachable(self.client):
                self.lost_replies += 1
                raise StoreUnavailable(f"{what}: the reply from the store was lost")
        return result

    async def close(self) -> None:
        await self.engine.dispose()


__all__ = ["URL", "InlineConnection", "Network", "SimDatabase", "SimStore", "StoreFaults"]

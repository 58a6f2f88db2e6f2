"""`Store(engine=...)` and `make_engine(async_creator=...)`: the seam the deterministic
simulation uses to run the real Store without aiosqlite's thread."""

from __future__ import annotations

import sqlite3

import pytest

from regions import RegionKey
from tests.sim.store_sim import InlineConnection
from worldstate import ValidationError
from worldstate.store import Store
from worldstate.store.engine import make_engine

URL = "sqlite+aiosqlite://"


async def test_store_runs_on_an_injected_inline_engine() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)

    async def creator() -> InlineConnection:
        return InlineConnection(conn)

    store = Store(URL, engine=make_engine(URL, async_creator=creator), clock=lambda: 100.0)
    try:
        await store.open()
        lease = await store.acquire(RegionKey(1, 2, 3), "gs-1", 5.0)
        assert (lease.owner, lease.epoch, lease.expires_at) == ("gs-1", 1, 105.0)
        # the rows are in the injected connection's database, read directly
        assert conn.execute("SELECT owner, epoch FROM ws_leases").fetchall() == [("gs-1", 1)]
        assert await store.release(RegionKey(1, 2, 3), "gs-1", 1)
        again = await store.acquire(RegionKey(1, 2, 3), "gs-1", 5.0)
        assert again.epoch == 2  # a release ends the lease: the next acquire bumps the epoch
    finally:
        await store.close()
        conn.close()


def test_async_creator_is_for_sqlite_only() -> None:
    async def creator() -> object:
        raise AssertionError("never called")

    with pytest.raises(ValidationError, match="only supported for sqlite"):
        make_engine("postgresql+psycopg://u@127.0.0.1:1/db", async_creator=creator)

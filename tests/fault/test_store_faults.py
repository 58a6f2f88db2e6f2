"""Store faults for real on PostgreSQL: a serialization failure (SQLSTATE 40001) forced by a
concurrent transaction, and connections killed with pg_terminate_backend."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from regions import RegionKey
from tests.worldstate.fix_world import obj, open_world

K = RegionKey(1, 1, 1)


def _dsn(pg_url: str) -> str:
    return pg_url.replace("postgresql+psycopg://", "postgresql://")


async def _wait_until_blocked(dsn: str, app_pid: int) -> None:
    """Wait until some other backend is waiting on a lock held by ``app_pid``."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
        for _ in range(500):
            cur = await c.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                (app_pid,),
            )
            row = await cur.fetchone()
            if row and row[0] > 0:
                return
            await asyncio.sleep(0.01)
    raise AssertionError("the world's transaction never blocked on the held row lock")


async def test_serialization_failure_is_retried(pg_url: str) -> None:
    dsn = _dsn(pg_url)
    async with open_world(pg_url) as w:
        s = await w.load_region(K)
        await w.store_region(s.with_objects([obj("v1", K)]), expected_version=0)
        before = w.store.stats.by_reason.get("40001", 0)
        async with await psycopg.AsyncConnection.connect(dsn) as rival:
            await rival.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            await rival.execute(
                "UPDATE ws_regions SET stored_by = 'rival' WHERE region_key = %s", (K.morton,)
            )
            pid = rival.info.backend_pid
            write = asyncio.create_task(
                w.store_region(s.with_objects([obj("v2", K)]), expected_version=None)
            )
            await _wait_until_blocked(dsn, pid)
            await rival.commit()  # the blocked writer now fails with 40001 and retries
            version = await write
        assert version == 2
        assert w.store.stats.by_reason.get("40001", 0) > before
        got = await w.load_region(K)
        assert (got.version, [o.id for o in got.objects]) == (2, ["v2"])


async def test_killed_connections_are_replaced(pg_url: str) -> None:
    dsn = _dsn(pg_url)
    async with open_world(pg_url) as w:
        s = await w.load_region(K)
        await w.store_region(s.with_objects([obj("a", K)]), expected_version=0)
        db = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(dsn, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (db,),
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        v = await w.store_region(s.with_objects([obj("b", K)]), expected_version=1)
        assert v == 2
        assert [o.id for o in (await w.load_region(K)).objects] == ["b"]


async def test_an_idle_pooled_connection_that_died_is_replaced_by_its_ping(
    pg_url: str, namespace: str, monkeypatch: Any
) -> None:
    """Connections are pinged only after sitting idle (not on every checkout): one killed
    while idle in the pool is replaced before use — the next transaction runs at its first
    attempt (no retry). A connection in steady use is not pinged (a round trip saved)."""
    from worldstate.store import Store, engine

    store = Store(pg_url)
    await store.open()
    try:
        await store.run(lambda c: c.exec_driver_sql("SELECT 1"), "warm", read=True)
        db = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(_dsn(pg_url), autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (db,),
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        monkeypatch.setattr(engine, "PING_AFTER_IDLE", 0.0)  # every pooled one is "idle"
        retries = store.stats.retries
        got = await store.run(lambda c: c.exec_driver_sql("SELECT 41 + 1"), "after", read=True)
        assert got.scalar() == 42
        assert store.stats.retries == retries
    finally:
        await store.close()

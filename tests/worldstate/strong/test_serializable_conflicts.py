"""PostgreSQL at SERIALIZABLE: owners writing different regions do not abort each other.

PostgreSQL implements SERIALIZABLE with predicate locks, and a sequential scan locks the whole
table: the planner's choice for small tables such as ``ws_regions`` and ``ws_leases`` (a few
rows per region), which made every pair of group commits in flight on two servers a
serialization failure (40001) for one of them. The store's PostgreSQL sessions price
sequential scans out (`worldstate.store.engine.PG_SESSION`).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import text

from regions import RegionKey
from tests.fix_services import REDIS_URL, Backend
from tests.worldstate.fix_world import open_world
from worldstate.operations import PlaceStructure
from worldstate.results import Committed
from worldstate.store import strong_rows
from worldstate.store.engine import make_engine

pytestmark = pytest.mark.services

A = RegionKey(0, 0, 0)
B = RegionKey(5, 0, 0)  # far from A: no boundary between them


def place(sid: str, key: RegionKey, x: float) -> PlaceStructure:
    lo = (key.ix * 2000.0 + x, 10.0, 10.0)
    return PlaceStructure(structure_id=sid, lo=lo, hi=(lo[0] + 6.0, 16.0, 14.0))


@pytest.fixture
def pg(pg_url: str, redis_url: str, namespace: str) -> Backend:
    return Backend("postgresql+redis", pg_url, REDIS_URL, namespace)


async def test_two_owners_group_commits_in_flight_together_both_commit(
    pg: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = f"memory://{pg.namespace}"
    async with (
        open_world(pg, "gs-1", bus_url=bus) as one,
        open_world(pg, "gs-2", bus_url=bus) as two,
    ):
        await one.acquire_region(A)
        await two.acquire_region(B)
        for w, k in ((one, A), (two, B)):  # each region's first rows: its version > 0
            assert isinstance(await w.submit(place(f"first-{k.ix}", k, 100.0)), Committed)
        before = one.store.stats.retries + two.store.stats.retries

        # each owner's next group statement runs, then waits until the other's has run
        # too: both transactions are open at once before either commits
        original = strong_rows.write_group
        arrived: list[int] = []
        both = asyncio.Event()

        async def paced(conn: Any, **kw: Any) -> Any:
            out = await original(conn, **kw)
            if len(arrived) < 2:
                arrived.append(1)
                if len(arrived) == 2:
                    both.set()
                await asyncio.wait_for(both.wait(), 10.0)
            return out

        monkeypatch.setattr(strong_rows, "write_group", paced)
        ra, rb = await asyncio.gather(
            one.submit_many([place(f"a{i}", A, 200.0 + 10 * i) for i in range(20)]),
            two.submit_many([place(f"b{i}", B, 200.0 + 10 * i) for i in range(20)]),
        )
        assert both.is_set()
        assert all(isinstance(r, Committed) for r in ra + rb)
        # neither transaction failed (40001) and ran again: they touched different rows
        assert one.store.stats.retries + two.store.stats.retries == before


async def test_keyed_statements_lock_rows_not_tables(pg: Backend) -> None:
    async with open_world(pg, "gs-1", bus_url=f"memory://{pg.namespace}") as w:
        for k in (A, B):  # the tables hold rows (an empty index is locked whole)
            await w.acquire_region(k)
            assert isinstance(await w.submit(place(f"first-{k.ix}", k, 100.0)), Committed)
        engine = w.store.engine
        async with engine.connect() as conn, conn.begin():
            # the statistics autovacuum gathers on a busy store: the planner then knows these
            # tables are a page or two (on a never-analysed table it guesses bigger)
            await conn.execute(text("ANALYZE ws_regions, ws_leases"))

        async def table_locks(seqscan: str | None) -> set[str]:
            async with engine.connect() as conn, conn.begin():
                if seqscan is not None:
                    await conn.execute(text(f"SET LOCAL enable_seqscan = {seqscan}"))
                await conn.execute(
                    text(
                        "UPDATE ws_regions SET version = version"
                        " WHERE region_key = ANY(CAST(:k AS INT8[]))"
                    ),
                    {"k": [A.morton]},
                )
                await conn.execute(
                    text(
                        "SELECT epoch FROM ws_leases WHERE region_key = ANY(CAST(:k AS INT8[]))"
                        " FOR UPDATE"
                    ),
                    {"k": [A.morton]},
                )
                got = await conn.execute(
                    text(
                        "SELECT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                        " WHERE l.pid = pg_backend_pid() AND l.mode = 'SIReadLock'"
                        " AND l.locktype = 'relation'"
                    )
                )
                return {str(r[0]) for r in got}

        # the store's connections: the rows and index pages read, no whole table
        assert await table_locks(None) == set()
        # what the setting prevents: the planner scans these small tables, which locks them
        assert {"ws_regions", "ws_leases"} <= await table_locks("on")


async def test_store_url_options_come_after_the_store_own(pg_url: str) -> None:
    sep = "&" if "?" in pg_url else "?"
    engine = make_engine(f"{pg_url}{sep}options={quote('-c statement_timeout=12345')}")
    try:
        async with engine.connect() as conn:
            seqscan = (await conn.execute(text("SHOW enable_seqscan"))).scalar()
            timeout = (await conn.execute(text("SHOW statement_timeout"))).scalar()
        assert (seqscan, timeout) == ("off", "12345ms")
    finally:
        await engine.dispose()
    engine = make_engine(f"{pg_url}{sep}options={quote('-c enable_seqscan=on')}")
    try:
        async with engine.connect() as conn:  # the URL's setting wins
            assert (await conn.execute(text("SHOW enable_seqscan"))).scalar() == "on"
    finally:
        await engine.dispose()

"""The bank: four servers move gold among ten inventories concurrently on PostgreSQL while
database connections are killed (pg_terminate_backend) and concurrent transactions fail
with serialization errors. Totals are conserved, nothing goes negative, and every
acknowledged transfer is in the final state."""

from __future__ import annotations

import asyncio
import random
from contextlib import AsyncExitStack
from typing import Any

import psycopg

from tests.fix_services import Backend
from tests.worldstate.fix_world import open_world
from worldstate import StoreUnavailable, World
from worldstate.operations import ChangeInventory, TransferItems
from worldstate.results import Committed, Rejected

INVENTORIES = [f"acct-{i}" for i in range(10)]
START = 100


async def _killer(dsn: str, db: str, stop: asyncio.Event) -> int:
    killed = 0
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        while not stop.is_set():
            # one random busy backend at a time: faults, not a denial of service
            cur = await admin.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM ("
                " SELECT pid FROM pg_stat_activity WHERE datname = %s"
                " AND pid <> pg_backend_pid() AND state <> 'idle' ORDER BY random() LIMIT 1) b",
                (db,),
            )
            row = await cur.fetchone()
            killed += int(row[0]) if row else 0
            await asyncio.sleep(0.1)
    return killed


async def test_bank_conserves_totals_under_faults(pg_url: str, namespace: str) -> None:
    backend = Backend("postgresql", pg_url, "memory://", namespace)
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    db = pg_url.rsplit("/", 1)[1]
    async with AsyncExitStack() as stack:
        worlds: list[World] = [
            await stack.enter_async_context(
                open_world(backend, f"gs-{i}", bus_url=f"memory://{namespace}", txn_max_attempts=40)
            )
            for i in range(4)
        ]
        for inv in INVENTORIES:
            await worlds[0].submit(ChangeInventory(inventory_id=inv, item="gold", delta=START))
        rng = random.Random(42)
        plans = [
            TransferItems(
                from_inventory=a, to_inventory=b, item="gold", quantity=rng.randint(1, 40)
            )
            for a, b in (rng.sample(INVENTORIES, 2) for _ in range(160))
        ]
        results: dict[str, Any] = {}

        async def client(w: World, ops: list[TransferItems]) -> None:
            for op in ops:
                try:
                    results[str(op.op_id)] = await w.submit(op)
                except StoreUnavailable as e:  # ambiguous: may or may not have applied
                    results[str(op.op_id)] = e

        stop = asyncio.Event()
        killer = asyncio.create_task(_killer(dsn, db, stop))
        await asyncio.gather(*(client(worlds[i % 4], plans[i::16]) for i in range(16)))
        stop.set()
        killed = await killer

        final = {inv: (await worlds[1].get_inventory(inv)).get("gold", 0) for inv in INVENTORIES}
        assert sum(final.values()) == START * len(INVENTORIES)
        assert all(v >= 0 for v in final.values())

        # which transfers applied: every Committed one, plus ambiguous ones the outcome
        # table records as committed (and nothing else)
        async def outcome_status(c: Any) -> dict[str, str]:
            rows = await c.exec_driver_sql("SELECT op_id, status FROM ws_outcomes")
            return {r[0]: r[1] for r in rows}

        recorded = await worlds[2].store.run(outcome_status, "outcomes", read=True)
        expected = dict.fromkeys(INVENTORIES, START)
        for op in plans:
            res = results[str(op.op_id)]
            if isinstance(res, Committed):
                assert recorded[str(op.op_id)] == "committed"
            elif isinstance(res, Rejected):
                assert recorded[str(op.op_id)] == "rejected"
                continue
            elif recorded.get(str(op.op_id)) != "committed":
                continue
            expected[op.from_inventory] -= op.quantity
            expected[op.to_inventory] += op.quantity
        assert final == expected
        assert sum(isinstance(r, Committed) for r in results.values()) > 40
        retries = sum(w.store.stats.retries for w in worlds)
        assert retries > 0, "no serialization failure or dropped connection was exercised"
        assert killed >= 0

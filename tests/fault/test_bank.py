"""The bank: four servers move gold among ten inventories concurrently while connections
are killed (PostgreSQL: pg_terminate_backend of busy backends; both stores: commits whose
acknowledgement is lost). Same body on SQLite and PostgreSQL (+ Redis).

Totals are conserved at every sample (one read transaction over all inventories), nothing
goes negative, no transfer ends in an error, and every acknowledged transfer is in the
final state (and nothing that was not decided as committed is)."""

from __future__ import annotations

import asyncio
import random
from contextlib import AsyncExitStack
from typing import Any

import psycopg
import pytest
from sqlalchemy.exc import OperationalError

from tests.fix_services import Backend
from tests.worldstate.fix_world import open_world
from worldstate import World
from worldstate.operations import ChangeInventory, TransferItems
from worldstate.results import Committed, Rejected
from worldstate.store import retry

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


async def _total(w: World) -> int:
    async def body(c: Any) -> int:
        rows = await c.exec_driver_sql(
            "SELECT inventory_id, count FROM ws_inventories WHERE item = 'gold'"
        )
        counts = [int(r[1]) for r in rows]
        assert all(n >= 0 for n in counts)
        return sum(counts)

    return await w.store.run(body, "bank total", read=True)


async def test_bank_conserves_totals_under_faults(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = retry._attempt
    rng = random.Random(7)
    lost_acks: list[int] = []

    async def lose_some_acks(engine: Any, body: Any, read: bool) -> Any:
        result = await original(engine, body, read)
        if not read and rng.random() < 0.3:
            lost_acks.append(1)  # committed, but the connection drops before the client hears
            raise OperationalError("COMMIT", {}, Exception("connection lost"), True)
        return result

    async with AsyncExitStack() as stack:
        worlds: list[World] = [
            await stack.enter_async_context(
                open_world(
                    backend, f"gs-{i}", bus_url=f"memory://{backend.namespace}", txn_max_attempts=40
                )
            )
            for i in range(4)
        ]
        for inv in INVENTORIES:
            await worlds[0].submit(ChangeInventory(inventory_id=inv, item="gold", delta=START))
        plans = [
            TransferItems(
                from_inventory=a, to_inventory=b, item="gold", quantity=rng.randint(1, 40)
            )
            for a, b in (rng.sample(INVENTORIES, 2) for _ in range(400))
        ]
        results: dict[str, Any] = {}

        async def client(w: World, ops: list[TransferItems]) -> None:
            for op in ops:
                try:
                    results[str(op.op_id)] = await w.submit(op)
                except Exception as e:  # counted: the bank allows none
                    results[str(op.op_id)] = e

        samples: list[int] = []
        stop = asyncio.Event()

        async def sampler() -> None:
            while not stop.is_set():
                samples.append(await _total(worlds[3]))
                await asyncio.sleep(0.01)

        monkeypatch.setattr(retry, "_attempt", lose_some_acks)
        background: list[asyncio.Task[Any]] = [asyncio.create_task(sampler())]
        if backend.name.startswith("postgresql"):
            dsn = backend.store_url.replace("postgresql+psycopg://", "postgresql://")
            background.append(asyncio.create_task(_killer(dsn, dsn.rsplit("/", 1)[1], stop)))
        # 400 transfers in flight at once, from all four servers
        await asyncio.gather(*(client(worlds[i % 4], plans[i::400]) for i in range(400)))
        stop.set()
        await asyncio.gather(*background)
        monkeypatch.setattr(retry, "_attempt", original)

        errors = [r for r in results.values() if isinstance(r, Exception)]
        assert not errors, errors[:3]
        assert samples and all(t == START * len(INVENTORIES) for t in samples)
        final = {inv: (await worlds[1].get_inventory(inv)).get("gold", 0) for inv in INVENTORIES}
        assert sum(final.values()) == START * len(INVENTORIES)
        assert all(v >= 0 for v in final.values())

        async def outcome_status(c: Any) -> dict[str, str]:
            rows = await c.exec_driver_sql("SELECT op_id, status FROM ws_outcomes")
            return {r[0]: r[1] for r in rows}

        recorded = await worlds[2].store.run(outcome_status, "outcomes", read=True)
        expected = dict.fromkeys(INVENTORIES, START)
        for op in plans:
            res = results[str(op.op_id)]
            if isinstance(res, Committed):
                assert recorded[str(op.op_id)] == "committed"
                expected[op.from_inventory] -= op.quantity
                expected[op.to_inventory] += op.quantity
            else:
                assert isinstance(res, Rejected) and recorded[str(op.op_id)] == "rejected"
        assert final == expected
        assert sum(isinstance(r, Committed) for r in results.values()) > 100
        assert lost_acks, "no ambiguous commit was exercised"

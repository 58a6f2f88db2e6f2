"""World history: checkpoints taken while four servers write (one instant: no torn
transfer), restore (exactly the checkpointed state, old owner fenced, incident recorded),
export/import between SQLite and PostgreSQL (identical queries, inventories, resources and
causal history), refused files (newer version, truncated), per-region export."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import func, select

import worldstate
from regions import RegionKey
from tests.fix_services import Backend
from worldstate import (
    ChangeInventory,
    EmitEvent,
    NotAuthoritative,
    PlaceStructure,
    TransferItems,
)
from worldstate.errors import (
    CheckpointNotFound,
    RestoreRefused,
    StoreUnavailable,
    ValidationError,
)
from worldstate.history import (
    Checkpoint,
    list_checkpoints,
    prune_checkpoints,
    restore_checkpoint,
)
from worldstate.history._checkpoint import iter_rows
from worldstate.history._tables import WORLD_TABLES, Layout, scan
from worldstate.results import Committed, Rejected
from worldstate.store import Store
from worldstate.store import schema as s

from .fix_world import open_world

INVENTORIES = [f"acct-{i}" for i in range(8)]
START = 100
R0, R1 = RegionKey(0, 0, 0), RegionKey(1, 0, 0)


def pos(key: RegionKey, offset: float = 10.0) -> tuple[float, float, float]:
    lo, _ = key.bounds
    return (lo[0] + offset, lo[1] + offset, lo[2] + offset)


def place(sid: str, key: RegionKey, slot: int) -> PlaceStructure:
    lo = pos(key, 5.0 + 3.0 * (slot % 400))
    lo = (lo[0], lo[1] + 3.0 * (slot // 400), lo[2])
    return PlaceStructure(
        structure_id=sid,
        kind="structure",
        lo=lo,
        hi=(lo[0] + 2, lo[1] + 2, lo[2] + 2),
        owner="p1",
        data={"slot": slot},
    )


@asynccontextmanager
async def mesh(backend: Backend, n: int, **changes: Any) -> AsyncIterator[list[worldstate.World]]:
    bus = f"memory://{backend.namespace}"
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                open_world(backend, f"gs-{i}", bus_url=bus, txn_max_attempts=40, **changes)
            )
            for i in range(n)
        ]


async def cp_rows(store: Store, cp: Checkpoint, table: str) -> list[dict[str, Any]]:
    layout = s.metadata.tables[table]
    lay = Layout(table, tuple(cp.tables[table]), Layout.of(layout).binary)
    out: list[dict[str, Any]] = []
    async for rows in iter_rows(store, cp.id, table):
        out.extend(lay.decode(v) for v in rows)
    return out


async def live_rows(store: Store, table: str) -> list[dict[str, Any]]:
    t = s.metadata.tables[table]
    cols = [c.name for c in t.columns]

    async def body(c: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        async for page in scan(c, t):
            out.extend(
                dict(
                    zip(
                        cols, (bytes(v) if isinstance(v, memoryview) else v for v in r), strict=True
                    )
                )
                for r in page
            )
        return out

    return await store.run(body, f"read {table}", read=True)


def key_of(table: str, row: dict[str, Any]) -> tuple[Any, ...]:
    t = s.metadata.tables[table]
    return tuple(row[c.name] for c in t.primary_key.columns)


REGION_STAMPS = {
    "version",
    "payload_version",
    "epoch",
    "checksum",
    "write_id",
    "stored_by",
    "stored_at",
}


def comparable(table: str, rows: Sequence[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Rows by primary key; region rows without what a restore stamps anew."""
    drop = REGION_STAMPS if table == s.regions.name else set()
    return {
        key_of(table, r): {
            k: (bytes(v) if isinstance(v, memoryview) else v) for k, v in r.items() if k not in drop
        }
        for r in rows
    }


async def inventory_total(store: Store, cp: Checkpoint) -> int:
    return sum(
        int(r["count"]) for r in await cp_rows(store, cp, s.inventories.name) if r["item"] == "gold"
    )


# -- checkpoint while writing; restore; fencing ----------------------------------------------


async def test_checkpoint_is_one_instant_while_four_worlds_write_and_restore_is_exact(
    backend: Backend,
) -> None:
    async with mesh(backend, 4) as worlds:
        owner = worlds[0]
        await owner.acquire_region(R0)
        for inv in INVENTORIES:
            assert isinstance(
                await owner.submit(ChangeInventory(inventory_id=inv, item="gold", delta=START)),
                Committed,
            )
        stop = asyncio.Event()
        placed = 0

        async def transfers(w: worldstate.World, seed: int) -> None:
            rng = random.Random(seed)
            while not stop.is_set():
                a, b = rng.sample(INVENTORIES, 2)
                op = TransferItems(
                    from_inventory=a, to_inventory=b, item="gold", quantity=rng.randint(1, 30)
                )
                with contextlib.suppress(StoreUnavailable):
                    assert isinstance(await w.submit(op), (Committed, Rejected))
                await asyncio.sleep(0.002)

        async def emits(w: worldstate.World) -> None:
            i = 0
            while not stop.is_set():
                await w.submit(EmitEvent(position=pos(R1), stream="quest", payload={"i": i}))
                i += 1
                await asyncio.sleep(0.002)

        async def places() -> None:
            nonlocal placed
            while not stop.is_set():
                r = await owner.submit(place(f"s-{placed}", R0, placed))
                assert isinstance(r, Committed)
                placed += 1
                await asyncio.sleep(0.002)

        async def moves(w: worldstate.World) -> None:
            while not stop.is_set():
                await w.submit(worldstate.MoveCreature(creature_id=7, position=pos(R1, 50.0)))
                await asyncio.sleep(0.005)

        tasks = [asyncio.create_task(transfers(w, i)) for i, w in enumerate(worlds)]
        tasks += [asyncio.create_task(emits(w)) for w in worlds[1:3]]
        tasks += [asyncio.create_task(places()), asyncio.create_task(moves(worlds[3]))]
        cps: list[Checkpoint] = []
        try:
            for i in range(3):
                await asyncio.sleep(0.3)
                cps.append(await worlds[2 + i % 2].checkpoint(f"during-{i}"))
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        store = worlds[0].store
        for cp in cps:
            # one instant: every transfer is in it whole or not at all
            assert await inventory_total(store, cp) == START * len(INVENTORIES)
            # the causal log in it is a prefix of each origin's sequence
            seqs: dict[str, list[int]] = {}
            for r in await cp_rows(store, cp, s.events.name):
                seqs.setdefault(r["origin"], []).append(int(r["seq"]))
            assert {o: max(v) for o, v in seqs.items()} == dict(cp.heads)
            for v in seqs.values():
                assert sorted(v) == list(range(1, len(v) + 1))
        assert cps[-1].objects >= 1 and cps[-1].regions >= 1 and cps[-1].bytes > 0
        assert [c.name for c in await list_checkpoints(store)] == [
            "during-0",
            "during-1",
            "during-2",
        ]

        # further writes after the checkpoint we restore
        target = cps[1]
        expected = {
            t.name: comparable(t.name, await cp_rows(store, target, t.name)) for t in WORLD_TABLES
        }
        for i in range(5):
            await owner.submit(place(f"after-{i}", R0, 2000 + i))
            await worlds[2].submit(
                TransferItems(
                    from_inventory="acct-0", to_inventory="acct-1", item="gold", quantity=1
                )
            )
            await worlds[3].submit(
                EmitEvent(position=pos(R1), stream="quest", payload={"after": i})
            )
        await worlds[0].submit(ChangeInventory(inventory_id="late", item="gem", delta=3))

        # a live lease refuses the restore, and nothing changes
        before = comparable(s.inventories.name, await live_rows(store, s.inventories.name))
        with pytest.raises(RestoreRefused, match="gs-0"):
            await restore_checkpoint(store, target.name, by="tester")
        assert comparable(s.inventories.name, await live_rows(store, s.inventories.name)) == before
        old_epoch = owner.leases()[R0].epoch

        report = await restore_checkpoint(store, target.name, force=True, by="tester")
        assert report.fenced and report.fenced[0][1] == "gs-0"
        for t in WORLD_TABLES:
            got = comparable(t.name, await live_rows(store, t.name))
            assert got == expected[t.name], f"{t.name} differs from the checkpoint after restore"
        for inv in INVENTORIES:
            want = next(
                (
                    int(r["count"])
                    for r in expected[s.inventories.name].values()
                    if r["inventory_id"] == inv and r["item"] == "gold"
                ),
                0,
            )
            assert (await worlds[3].get_inventory(inv)).get("gold", 0) == want
        assert await worlds[3].get_inventory("late") == {}
        snap = await worlds[3].load_region(R0)
        want_ids = {r["object_id"] for r in expected[s.objects.name].values()}
        assert {o.id for o in snap.objects} >= want_ids
        assert not any(o.id.startswith("after-") for o in snap.objects)
        lease = await store.lease(R0)
        assert lease is not None and lease.epoch == old_epoch + 1 and lease.owner == "restore"

        # the old owner is fenced: its next strong write is refused, its lease dropped
        with pytest.raises(NotAuthoritative):
            await owner.submit(place("stale-write", R0, 3000))
        assert R0 not in owner.leases()
        assert not any(
            r["object_id"] == "stale-write" for r in await live_rows(store, s.objects.name)
        )
        # a new owner takes over at a higher epoch
        lease2 = await worlds[2].acquire_region(R0)
        assert lease2.epoch == old_epoch + 2
        assert isinstance(await worlds[2].submit(place("fresh", R0, 3001)), Committed)

        incidents = await store.incidents()
        assert incidents[0]["kind"] == "restored" and incidents[0]["region"] == "world"
        assert "during-1" in incidents[0]["detail"] and "tester" in incidents[0]["detail"]


async def test_checkpoint_lookup_names_and_prune(sqlite_url: str) -> None:
    async with open_world(sqlite_url) as w:
        a = await w.checkpoint("a")
        with pytest.raises(ValidationError, match="exists"):
            await w.checkpoint("a")
        b = await w.checkpoint()
        c = await w.checkpoint("c")
        assert b.name.startswith("cp-")
        with pytest.raises(CheckpointNotFound):
            await restore_checkpoint(w.store, "nope")
        gone = await prune_checkpoints(w.store, keep=1)
        assert [x.id for x in gone] == [a.id, b.id]
        assert [x.id for x in await list_checkpoints(w.store)] == [c.id]

        async def chunks(conn: Any) -> int:
            return int(
                (
                    await conn.execute(
                        select(func.count())
                        .select_from(s.checkpoint_chunks)
                        .where(s.checkpoint_chunks.c.checkpoint_id == a.id)
                    )
                ).scalar_one()
            )

        assert await w.store.run(chunks, "count", read=True) == 0

"""World history: checkpoints taken while four servers write (one instant: no torn
transfer), restore (exactly the checkpointed state, old owner fenced, incident recorded),
export/import between SQLite and PostgreSQL (identical queries, inventories, resources and
causal history), refused files (newer version, truncated), per-region export."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

import worldstate
from regions import RegionKey
from tests.fix_services import Backend
from worldstate import (
    ChangeInventory,
    ClaimResource,
    EmitEvent,
    Fenced,
    ModifyTerrain,
    NotAuthoritative,
    PlaceStructure,
    TransferItems,
)
from worldstate.errors import (
    CheckpointNotFound,
    ExportFormatError,
    RestoreRefused,
    StoreUnavailable,
    SubmitTimeout,
    ValidationError,
)
from worldstate.history import (
    Checkpoint,
    export_checkpoint,
    import_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    restore_checkpoint,
)
from worldstate.history._checkpoint import iter_rows
from worldstate.history._tables import WORLD_TABLES, Layout, scan
from worldstate.results import Committed, Rejected
from worldstate.store import Store
from worldstate.store import schema as s

from .fix_world import obj, open_world

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
    async with mesh(backend, 4, snapshot_interval=0.2) as worlds:
        owner = worlds[0]
        await owner.acquire_region(R0)
        for inv in INVENTORIES:
            assert isinstance(
                await owner.submit(ChangeInventory(inventory_id=inv, item="gold", delta=START)),
                Committed,
            )
        stop = asyncio.Event()
        placed = 0
        transferred = [0]

        async def transfers(w: worldstate.World, seed: int) -> None:
            rng = random.Random(seed)
            while not stop.is_set():
                a, b = rng.sample(INVENTORIES, 2)
                op = TransferItems(
                    from_inventory=a, to_inventory=b, item="gold", quantity=rng.randint(1, 30)
                )
                with contextlib.suppress(StoreUnavailable, SubmitTimeout):
                    assert isinstance(await w.submit(op), (Committed, Rejected))
                    transferred[0] += 1
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
                op = place(f"s-{placed}", R0, placed)
                while True:
                    try:
                        r = await owner.submit(op)
                        break
                    except (SubmitTimeout, StoreUnavailable):
                        continue  # a loaded machine: resubmit the same op (same op_id)
                assert isinstance(r, Committed), r
                placed += 1
                await asyncio.sleep(0.002)

        async def moves(w: worldstate.World) -> None:
            i = 0
            while not stop.is_set():
                await w.submit(worldstate.MoveCreature(creature_id=7, position=pos(R1, 50.0)))
                # eventual state in the owned region: its snapshots (every 0.2 s) rewrite
                # the region row while checkpoints are taken
                await owner.submit(
                    worldstate.SetAutomation(
                        entity_id=i % 5, position=pos(R0, 900.0), state={"i": i}
                    )
                )
                i += 1
                await asyncio.sleep(0.005)

        tasks = [asyncio.create_task(transfers(w, i)) for i, w in enumerate(worlds)]
        tasks += [asyncio.create_task(emits(w)) for w in worlds[1:3]]
        tasks += [asyncio.create_task(places()), asyncio.create_task(moves(worlds[3]))]
        cps: list[Checkpoint] = []
        try:
            for i in range(3):
                # progress, not time: each checkpoint lands amid writes of every kind
                want, t_want = placed + 3, transferred[0] + 10
                while placed < want or transferred[0] < t_want:
                    for task in tasks:
                        if task.done():
                            task.result()  # a writer that failed fails the test now
                    await asyncio.sleep(0.01)
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

        # the old owner is fenced: any write under its old epoch is refused by the store …
        stale = worldstate.RegionSnapshot(R0, 0, "gs-0", old_epoch, [obj("stale", R0, 500.0)])
        with pytest.raises(Fenced):
            await owner.store_region(stale, expected_version=None)
        # … and its strong pipeline (which held the pre-restore state) loses the region: its
        # next strong op is refused, unless its eventual snapshot was refused first and it
        # already dropped the lease — then the restored region is unowned, so the op takes
        # it on first use at a new epoch, loading the restored state (never the stale
        # in-memory one), and commits
        try:
            late = await owner.submit(place("after-restore", R0, 3000))
        except NotAuthoritative:
            assert R0 not in owner.leases()
            next_epoch = old_epoch + 2
        else:
            assert isinstance(late, Committed)
            assert owner.leases()[R0].epoch == old_epoch + 2
            assert await owner.release_region(R0)
            next_epoch = old_epoch + 3
        assert not any(r["object_id"] == "stale" for r in await live_rows(store, s.objects.name))
        snap = await worlds[3].load_region(R0)
        assert {o.id for o in snap.objects} >= want_ids  # nothing restored was lost
        # a new owner takes over at a higher epoch
        lease2 = await worlds[2].acquire_region(R0)
        assert lease2.epoch == next_epoch
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


# -- export / import between stores ----------------------------------------------------------


async def build_world(url: str, namespace: str) -> None:
    """A small world with every kind of durable state, written by two servers."""
    bus = f"memory://{namespace}"
    async with (
        open_world(url, "gs-a", bus_url=bus, namespace=namespace) as a,
        open_world(url, "gs-b", bus_url=bus, namespace=namespace) as b,
    ):
        lease = await a.acquire_region(R0)
        await a.store_region(
            worldstate.RegionSnapshot(
                R0,
                0,
                "gs-a",
                lease.epoch,
                [obj("rock-1", R0, 100.0, kind="resource", hp=3), obj("tree-2", R0, 200.0)],
            ),
            expected_version=0,
        )
        for i in range(5):
            assert isinstance(await a.submit(place(f"house-{i}", R0, i)), Committed)
        await a.put_resource("ore-1", pos(R0, 300.0), 50.0)
        assert isinstance(
            await a.submit(
                ClaimResource(
                    resource_id="ore-1", claimant="p1", position=pos(R0, 300.0), amount=20.0
                )
            ),
            Committed,
        )
        await a.submit(ModifyTerrain(center=pos(R0, 400.0), radius=5.0, delta=-1.5))
        await a.submit(ChangeInventory(inventory_id="p1", item="gold", delta=40))
        await a.submit(ChangeInventory(inventory_id="p2", item="wood", delta=7))
        await a.submit(
            TransferItems(from_inventory="p1", to_inventory="p2", item="gold", quantity=15)
        )
        # a causal chain across the two servers
        for i in range(4):
            await a.submit(EmitEvent(position=pos(R0), stream="quest", payload={"step": 2 * i}))
            await b.submit(EmitEvent(position=pos(R1), stream="chat", payload={"line": 2 * i + 1}))
            await asyncio.sleep(0.05)


async def world_view(url: str, namespace: str) -> dict[str, Any]:
    async with open_world(
        url, "gs-view", bus_url=f"memory://{namespace}-v", namespace=namespace
    ) as w:
        lo, hi = R0.bounds
        objects = await w.query((lo, hi))
        events = [
            (
                e.origin,
                e.seq,
                e.payload.op_id,
                e.payload.op_type,
                dict(e.payload.fields),
                dict(e.payload.vclock),
                str(e.payload.cursor),
            )
            async for e in w.events()
        ]
        return {
            "objects": sorted((o.id, o.kind, o.lo, o.hi, dict(o.data)) for o in objects),
            "inventories": {i: await w.get_inventory(i) for i in ("p1", "p2")},
            "resource": await w.get_resource("ore-1"),
            "events": events,
            "quest": [e.payload.fields["payload"] async for e in w.events(stream="quest")],
            "r1": [e.seq async for e in w.events(region=R1)],
        }


@pytest.mark.parametrize("direction", ["sqlite-to-postgresql", "postgresql-to-sqlite"])
async def test_export_import_moves_a_world_between_stores(
    direction: str, sqlite_url: str, pg_url: str, namespace: str, tmp_path: Path
) -> None:
    src, dst = (sqlite_url, pg_url) if direction.startswith("sqlite") else (pg_url, sqlite_url)
    await build_world(src, namespace)
    want = await world_view(src, namespace)
    assert len(want["events"]) == 8 and len(want["objects"]) == 7
    assert want["quest"] == [{"step": 0}, {"step": 2}, {"step": 4}, {"step": 6}]
    out = tmp_path / "world.wscp"
    source = Store(src)
    try:
        await source.open()
        cp = await create_checkpoint_of(source, "before-patch")
        steps: list[tuple[str, int]] = []
        trailer = await export_checkpoint(
            source, "before-patch", out, progress=lambda t, n: steps.append((t, n))
        )
        assert trailer["rows"] == cp.rows and steps
    finally:
        await source.close()
    with gzip.open(out, "rb") as f:
        head = f.readline()
    assert b'"format":"worldstate-checkpoint"' in head and b'"version":1' in head
    target = Store(dst)
    try:
        await target.open()
        got = await import_checkpoint(target, out)
        assert (got.name, got.regions, got.objects, got.rows) == (
            cp.name,
            cp.regions,
            cp.objects,
            cp.rows,
        )
        assert dict(got.heads) == dict(cp.heads)
        await restore_checkpoint(target, "before-patch", by="tester")
    finally:
        await target.close()
    assert await world_view(dst, namespace) == want


async def create_checkpoint_of(store: Store, name: str) -> Checkpoint:
    from worldstate.history import create_checkpoint

    return await create_checkpoint(store, name, by="tester")


async def _exported(sqlite_url: str, namespace: str, tmp_path: Path) -> Path:
    await build_world(sqlite_url, namespace)
    out = tmp_path / "w.wscp"
    store = Store(sqlite_url)
    try:
        await store.open()
        await create_checkpoint_of(store, "x")
        await export_checkpoint(store, "x", out)
    finally:
        await store.close()
    return out


async def _nothing_imported(url: str) -> None:
    store = Store(url)
    try:
        await store.open()

        async def counts(c: Any) -> tuple[int, int]:
            a = (await c.execute(select(func.count()).select_from(s.checkpoints))).scalar_one()
            b = (
                await c.execute(select(func.count()).select_from(s.checkpoint_chunks))
            ).scalar_one()
            return int(a), int(b)

        assert await store.run(counts, "count", read=True) == (0, 0)
    finally:
        await store.close()


async def test_newer_format_and_truncated_files_are_refused(
    sqlite_url: str, pg_url: str, namespace: str, tmp_path: Path
) -> None:
    good = await _exported(sqlite_url, namespace, tmp_path)
    lines = gzip.decompress(good.read_bytes()).split(b"\n")
    newer = tmp_path / "newer.wscp"
    newer.write_bytes(
        gzip.compress(
            lines[0].replace(b'"version":1', b'"version":2') + b"\n" + b"\n".join(lines[1:])
        )
    )
    cut_bytes = tmp_path / "cut.wscp"
    raw = good.read_bytes()
    cut_bytes.write_bytes(raw[: len(raw) * 2 // 3])
    no_trailer = tmp_path / "no-trailer.wscp"
    no_trailer.write_bytes(gzip.compress(b"\n".join(lines[:-2]) + b"\n"))
    bad_count = tmp_path / "bad-count.wscp"
    bad_count.write_bytes(gzip.compress(b"\n".join(lines[:3] + lines[4:])))
    not_ours = tmp_path / "other.wscp"
    not_ours.write_bytes(gzip.compress(b'{"format":"something-else","version":1}\n'))
    target = Store(pg_url)
    try:
        await target.open()
        with pytest.raises(ExportFormatError, match="newer than this worldstate reads"):
            await import_checkpoint(target, newer)
        with pytest.raises(ExportFormatError, match="truncated"):
            await import_checkpoint(target, cut_bytes)
        with pytest.raises(ExportFormatError, match="truncated"):
            await import_checkpoint(target, no_trailer)
        with pytest.raises(ExportFormatError, match="trailer counts"):
            await import_checkpoint(target, bad_count)
        with pytest.raises(ExportFormatError, match="not a worldstate-checkpoint file"):
            await import_checkpoint(target, not_ours)
    finally:
        await target.close()
    await _nothing_imported(pg_url)
    # and the good file still imports
    target = Store(pg_url)
    try:
        await target.open()
        assert (await import_checkpoint(target, good)).name == "x"
    finally:
        await target.close()


async def test_per_region_and_per_inventory_export_restore_only_their_part(
    sqlite_url: str, namespace: str, tmp_path: Path
) -> None:
    await build_world(sqlite_url, namespace)
    store = Store(sqlite_url)
    try:
        await store.open()
        await create_checkpoint_of(store, "full")
        await export_checkpoint(store, "full", tmp_path / "r0.wscp", regions=[(0, 0, 0)])
        await export_checkpoint(store, "full", tmp_path / "p1.wscp", inventories=["p1"])
    finally:
        await store.close()
    async with open_world(
        sqlite_url, "gs-a", bus_url=f"memory://{namespace}", namespace=namespace
    ) as a:
        before_r0 = {o.id for o in (await a.load_region(R0)).objects}
        await a.acquire_region(R0)
        await a.submit(place("extra", R0, 50))
        await a.submit(ChangeInventory(inventory_id="p1", item="gold", delta=1000))
        await a.submit(ChangeInventory(inventory_id="p2", item="wood", delta=1000))
        await a.release_region(R0)
        r0 = await import_checkpoint(a.store, tmp_path / "r0.wscp", name="r0-only")
        p1 = await import_checkpoint(a.store, tmp_path / "p1.wscp", name="p1-only")
        assert r0.scope is not None and r0.scope.regions == {R0.morton}
        assert p1.scope is not None and p1.scope.inventories == {"p1"}
        await restore_checkpoint(a.store, "r0-only")
        await restore_checkpoint(a.store, "p1-only")
        assert {o.id for o in (await a.load_region(R0)).objects} == before_r0
        assert await a.get_inventory("p1") == {"gold": 25}
        assert await a.get_inventory("p2") == {"gold": 15, "wood": 1007}  # not in either scope
        # R1's causal events are untouched by the R0 restore
        assert [e.seq async for e in a.events(region=R1)] == [1, 2, 3, 4]


async def test_corrupt_rows_in_a_file_are_refused(
    sqlite_url: str, pg_url: str, namespace: str, tmp_path: Path
) -> None:
    good = await _exported(sqlite_url, namespace, tmp_path)
    lines = gzip.decompress(good.read_bytes()).split(b"\n")

    def rewrite(name: str, change: Any) -> Path:
        out = []
        for line in lines:
            doc = orjson.loads(line) if line else None
            if isinstance(doc, dict) and doc.get("t") == s.regions.name:
                change(doc["r"])
                line = orjson.dumps(doc)
            out.append(line)
        path = tmp_path / name
        path.write_bytes(gzip.compress(b"\n".join(out)))
        return path

    cols = list(s.regions.c.keys())
    i_payload, i_version = cols.index("payload"), cols.index("version")

    def flip(row: list[Any]) -> None:
        b = row[i_payload]
        row[i_payload] = b[:-8] + ("A" if b[-8] != "A" else "B") + b[-7:]

    def wrong_type(row: list[Any]) -> None:
        row[i_version] = "seven"

    rotten, typed = rewrite("rotten.wscp", flip), rewrite("typed.wscp", wrong_type)
    target = Store(pg_url)
    try:
        await target.open()
        with pytest.raises(ExportFormatError, match=r"ws_regions\.version: str value"):
            await import_checkpoint(target, typed)
        await import_checkpoint(target, rotten)  # well-formed: stored as it is
        with pytest.raises(ExportFormatError, match="fails its checksum"):
            await restore_checkpoint(target, "x")
        assert await live_rows(target, s.regions.name) == []  # the restore changed nothing
    finally:
        await target.close()

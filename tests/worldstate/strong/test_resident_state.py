"""Strong path v2 on SQLite + in-process cache and PostgreSQL + Redis (same bodies): the
owner's resident state, boundary overlaps between owners, ambiguous commits, an owner crash,
tampered object rows, poison ops, reused op ids, deadlines and inventory versions."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError, OperationalError

import worldstate
from regions import RegionKey
from tests.fix_services import Backend
from tests.worldstate.fix_world import FakeClock, open_world
from worldstate import SubmitTimeout, ValidationError
from worldstate.operations import ChangeInventory, EmitEvent, PlaceStructure, TransferItems
from worldstate.results import Committed, Rejected
from worldstate.store import retry, strong_rows

K0 = RegionKey(0, 0, 0)
K1 = RegionKey(1, 0, 0)


@asynccontextmanager
async def worlds(backend: Backend, n: int, **changes: Any) -> AsyncIterator[list[worldstate.World]]:
    async with AsyncExitStack() as stack:
        out = [
            await stack.enter_async_context(
                open_world(
                    backend, f"gs-{i + 1}", bus_url=f"memory://{backend.namespace}", **changes
                )
            )
            for i in range(n)
        ]
        yield out


def box(sid: str, x: float, y: float = 10.0, size: float = 10.0, **kw: Any) -> PlaceStructure:
    return PlaceStructure(structure_id=sid, lo=(x, y, 10.0), hi=(x + size, y + size, 20.0), **kw)


def overlaps(a: Any, b: Any) -> bool:
    return all(a.lo[i] < b.hi[i] and b.lo[i] < a.hi[i] for i in range(3))


async def test_state_is_resident_and_losers_name_the_winner(backend: Backend) -> None:
    async with worlds(backend, 1) as (a,):
        await a.acquire_region(K0)
        st = a.strong.regions.states[K0]  # loaded on acquire
        first = await a.submit(box("w1", 100.0))
        assert isinstance(first, Committed) and "w1" in st.structures
        loads = a.strong.regions.reloads
        res = await a.submit_many([box(f"c{i}", 103.0 + i) for i in range(5)])
        assert all(isinstance(r, Rejected) and r.winner_op_id == first.op_id for r in res)
        assert a.strong.regions.reloads == loads  # decided in memory: no reload, no re-read


async def test_cross_boundary_overlaps_from_two_owners_have_one_winner(backend: Backend) -> None:
    async with worlds(backend, 2) as (a, b):
        await a.acquire_region(K0)
        await b.acquire_region(K1)
        pairs = []
        for i in range(12):
            y = 20.0 + 30 * i
            # a's op is centred in region 0, b's in region 1; they overlap across x = 2000
            pairs.append((box(f"a{i}", 1985.0, y, 12.0), box(f"b{i}", 1995.0, y + 2, 12.0)))
        results = await asyncio.gather(
            *(w.submit(op) for p in pairs for w, op in zip((a, b), p, strict=True))
        )
        for i in range(len(pairs)):
            ra, rb = results[2 * i], results[2 * i + 1]
            assert [isinstance(ra, Committed), isinstance(rb, Committed)].count(True) == 1, i
        placed = [o for k in (K0, K1) for o in (await a.load_region(k)).objects]
        assert not any(overlaps(x, y) for i, x in enumerate(placed) for y in placed[i + 1 :])


async def test_ambiguous_commits_apply_once(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = retry._attempt
    lost: list[int] = []
    rng = random.Random(3)

    async def lose_every_other_ack(engine: Any, body: Any, read: bool) -> Any:
        result = await original(engine, body, read)
        if not read and len(lost) < 6 and rng.random() < 0.5:
            lost.append(1)  # the COMMIT went through; the client never hears of it
            raise OperationalError("COMMIT", {}, Exception("connection lost"), True)
        return result

    async with worlds(backend, 1) as (a,):
        await a.acquire_region(K0)
        await a.submit(ChangeInventory(inventory_id="bag", item="gold", delta=100))
        monkeypatch.setattr(retry, "_attempt", lose_every_other_ack)
        ops = [box(f"s{i}", 10.0 + 20 * i) for i in range(20)]
        moves = [
            TransferItems(from_inventory="bag", to_inventory="chest", item="gold", quantity=1)
            for _ in range(20)
        ]
        for _ in range(3):  # resubmitting the same ops changes nothing
            res = await asyncio.gather(*(a.submit(o) for o in ops + moves))
            assert all(isinstance(r, Committed) for r in res)
        monkeypatch.setattr(retry, "_attempt", original)
        assert lost
        assert sorted(o.id for o in (await a.load_region(K0)).objects) == sorted(
            o.structure_id for o in ops
        )
        assert await a.get_inventory("bag") == {"gold": 80}
        assert await a.get_inventory("chest") == {"gold": 20}


async def test_owner_crash_then_new_owner_loses_nothing_acknowledged(backend: Backend) -> None:
    clock = FakeClock()
    bus = f"memory://{backend.namespace}"
    async with (
        open_world(backend, "gs-1", clock=clock, bus_url=bus) as a,
        open_world(backend, "gs-2", clock=clock, bus_url=bus) as b,
    ):
        await a.acquire_region(K0)
        ops = [box(f"s{i}", 10.0 + 20 * i) for i in range(40)]
        tasks = [asyncio.create_task(a.submit(o)) for o in ops]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        # the owner dies mid-stream: its pipeline stops, its lease is never released
        await a.strong.regions.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        acked = [o for o, r in zip(ops, results, strict=True) if isinstance(r, Committed)]
        assert acked
        a.authority._leases.clear()
        clock.advance(30.0)  # the lease runs out
        lease = await b.acquire_region(K0)
        assert lease.epoch == 2
        state = b.strong.regions.states[K0]  # reloaded from the store by the new owner
        assert {o.structure_id for o in acked} <= set(state.structures)
        r = await b.submit(box("late", acked[0].lo[0] + 1))
        assert isinstance(r, Rejected) and r.winner_op_id == acked[0].op_id


async def test_tampered_object_rows_are_detected_and_repaired(backend: Backend) -> None:
    async with worlds(backend, 1) as (a,):
        await a.acquire_region(K0)
        assert isinstance(await a.submit(box("good", 10.0)), Committed)
        assert isinstance(await a.submit(box("bad", 50.0)), Committed)

        async def tamper(c: Any) -> None:
            await c.execute(text("UPDATE ws_objects SET hix = hix + 500 WHERE object_id = 'bad'"))

        await a.store.run(tamper, "tamper")
        snap = await a.load_region(K0)
        assert [o.id for o in snap.objects] == ["good"]  # never served
        incidents = await a.store.incidents()
        assert any(i["kind"] == "tampered-object" for i in incidents)
        # the owner still holds the good copy: a reload writes it back
        a.strong.regions.mark_stale(K0)
        assert isinstance(await a.submit(box("more", 90.0)), Committed)
        again = await a.load_region(K0)
        got = {o.id: o for o in again.objects}
        assert set(got) == {"good", "bad", "more"} and got["bad"].hi[0] == 60.0


async def test_poison_op_fails_alone_in_a_batch_of_100(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = strong_rows.insert_objects

    async def refuse_poison(conn: Any, rows: Any) -> None:
        if any(r["object_id"] == "poison" for r in rows):
            raise DataError("INSERT", {}, Exception("value the database refuses"))
        await original(conn, rows)

    original_group = strong_rows.write_group

    async def refuse_poison_group(conn: Any, **kw: Any) -> Any:
        if any(r["object_id"] == "poison" for r in kw["objects"]):
            raise DataError("WITH", {}, Exception("value the database refuses"))
        return await original_group(conn, **kw)

    # both ways a group is written: one statement (PostgreSQL), table by table (SQLite)
    monkeypatch.setattr(strong_rows, "insert_objects", refuse_poison)
    monkeypatch.setattr(strong_rows, "write_group", refuse_poison_group)
    async with worlds(backend, 1, group_commit_window=0.05) as (a,):
        await a.acquire_region(K0)
        good = [box(f"g{i}", 10.0 + 15 * (i % 100), 10.0 + 15 * (i // 100)) for i in range(100)]
        bad = box("poison", 10.0, 900.0)
        tasks = [asyncio.create_task(a.submit(o)) for o in [*good[:50], bad, *good[50:]]]
        res = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(res[50], ValidationError) and "poison" not in [
            o.id for o in (await a.load_region(K0)).objects
        ]
        rest = res[:50] + res[51:]
        assert all(isinstance(r, Committed) for r in rest), [
            r for r in rest if not isinstance(r, Committed)
        ][:3]
        assert a.strong.regions.splits > 0
        assert isinstance(await a.submit(box("after", 10.0, 1200.0)), Committed)  # alive


async def test_reused_op_id_with_a_different_op_is_refused(backend: Backend) -> None:
    async with worlds(backend, 2) as (a, b):
        inv = ChangeInventory(inventory_id="bag", item="gold", delta=5)
        first = await a.submit(inv)
        assert isinstance(first, Committed)
        assert await b.submit(inv) == first  # the same op: its first outcome
        other = ChangeInventory(inventory_id="bag", item="gold", delta=500, op_id=inv.op_id)
        for w in (a, b):
            with pytest.raises(ValidationError, match="different operation"):
                await w.submit(other)
        assert await a.get_inventory("bag") == {"gold": 5}


async def test_inventory_commits_return_real_versions(backend: Backend) -> None:
    async with worlds(backend, 2) as (a, b):
        r1 = await a.submit(ChangeInventory(inventory_id="bag", item="gold", delta=5))
        r2 = await b.submit(ChangeInventory(inventory_id="bag", item="gem", delta=1))  # forwarded
        assert isinstance(r1, Committed) and isinstance(r2, Committed)
        assert (r1.version, r2.version) == (1, 2)
        assert b.strong.forwarded == 1


async def test_submit_deadline_says_whether_the_op_may_have_applied(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with worlds(backend, 1) as (a,):
        await a.acquire_region(K0)
        gate = asyncio.Event()
        real = a.strong.regions._transaction

        entered = asyncio.Event()

        async def slow(*args: Any) -> Any:
            entered.set()
            await gate.wait()
            return await real(*args)

        monkeypatch.setattr(a.strong.regions, "_transaction", slow)
        inside = asyncio.create_task(a.submit(box("inside", 10.0), timeout=1.0))
        await asyncio.wait_for(entered.wait(), 5)  # taken into the (stalled) commit
        queued = asyncio.create_task(a.submit(box("queued", 40.0), timeout=0.2))
        with pytest.raises(SubmitTimeout) as e2:
            await queued
        assert e2.value.may_have_applied is False
        with pytest.raises(SubmitTimeout) as e1:
            await inside
        assert e1.value.may_have_applied is True
        gate.set()
        with pytest.raises(ValidationError):
            await a.submit(box("x", 70.0), timeout=-1)
        # once a later op has committed, every group before it has ended: "inside" (taken
        # into the stalled commit) applied, the withdrawn "queued" never did
        assert isinstance(await a.submit(box("after", 70.0), timeout=30.0), Committed)
        objects = {o.id for o in (await a.load_region(K0)).objects}
        assert objects == {"inside", "after"}


class _NotRegistered(PlaceStructure):
    pass


class _NotRegisteredEvent(EmitEvent):
    pass


async def test_an_unregistered_op_type_is_refused_where_it_would_cross_the_bus(
    backend: Backend,
) -> None:
    """A subclass nobody registered runs where it is submitted, but it cannot travel: the
    owner of another server's region (or a causal receiver) could not decode it. It is
    refused with a clear error, nothing applied; registered, it is forwarded and commits."""
    async with worlds(backend, 2) as (a, b):
        await b.acquire_region(K1)
        op = _NotRegistered(structure_id="u1", lo=(2010.0, 10, 10), hi=(2020.0, 20, 20))
        with pytest.raises(ValidationError, match="register_operation"):
            await a.submit(op)
        assert [o.id for o in (await b.load_region(K1)).objects] == []
        ev = _NotRegisteredEvent(position=(10.0, 10, 10), stream="chat", payload={"m": 1})
        with pytest.raises(ValidationError, match="register_operation"):
            await a.submit(ev)
        for w in (a, b):
            w.register_operation(_NotRegistered, "strong")
        assert isinstance(await a.submit(op), Committed)
        assert [o.id for o in (await b.load_region(K1)).objects] == ["u1"]


async def test_a_neighbours_new_structure_is_seen_across_the_boundary(backend: Backend) -> None:
    """The owner remembers a foreign neighbour's rows near its region (read once, at the
    neighbour's version); when the neighbour's owner commits, the next decision reads them
    again — an overlap across the boundary still loses, naming the winner."""
    async with worlds(backend, 2) as (a, b):
        await a.acquire_region(K0)
        await b.acquire_region(K1)
        assert isinstance(await a.submit(box("a0", 1985.0, 20.0)), Committed)  # reads K1
        won = box("b1", 2001.0, 300.0)  # centred in K1, 9 m from the boundary
        assert isinstance(await b.submit(won), Committed)
        lost = await a.submit(box("a1", 1992.0, 302.0))  # overlaps b1 across x = 2000
        assert isinstance(lost, Rejected) and lost.winner_op_id == won.op_id
        assert isinstance(await a.submit(box("a2", 1985.0, 600.0)), Committed)
        if backend.store_url.startswith("postgresql"):
            assert a.strong.regions.near_moved >= 1  # the cached rows were refused once
        ids = {o.id for k in (K0, K1) for o in (await a.load_region(k)).objects}
        assert ids == {"a0", "b1", "a2"}


@pytest.mark.parametrize("slots", [1, 2])
async def test_concurrent_commits_take_disjoint_regions(backend: Backend, slots: int) -> None:
    """``Config.max_concurrent_commits`` groups are in flight at once, over disjoint
    regions: with 2, a region's op commits while another region's group is stalled; with 1
    it waits. A region's own next group waits for its group in flight either way."""
    async with worlds(backend, 1, max_concurrent_commits=slots) as (a,):
        await a.acquire_region(K0)
        await a.acquire_region(K1)
        gate = asyncio.Event()
        entered = asyncio.Event()
        real = a.strong.regions._transaction

        async def stall_k0(live: Any, taken: Any) -> Any:
            if K0 in live:
                entered.set()
                await gate.wait()
            return await real(live, taken)

        a.strong.regions._transaction = stall_k0  # type: ignore[method-assign]
        first = asyncio.create_task(a.submit(box("k0-first", 10.0)))
        await asyncio.wait_for(entered.wait(), 5)
        k0_next = asyncio.create_task(a.submit(box("k0-next", 40.0)))
        other = asyncio.create_task(a.submit(box("k1", 2010.0)))
        done, _ = await asyncio.wait({other, k0_next}, timeout=1.0)
        assert k0_next not in done  # its region's group is still in flight
        assert (other in done) == (slots == 2)
        gate.set()
        results = await asyncio.gather(first, k0_next, other)
        assert all(isinstance(r, Committed) for r in results)


async def test_inventory_shard_leases_renew_together_and_a_stolen_one_is_dropped(
    backend: Backend,
) -> None:
    """All of a server's shard leases are renewed in one transaction; a lease taken over
    behind its back (another owner, a higher epoch) is dropped by that renewal alone."""
    from worldstate.strong._inventory import shard_of

    async with worlds(backend, 1) as (a,):
        n = a.config.inventory_shards
        invs: dict[int, str] = {}
        i = 0
        while len(invs) < 2:
            inv = f"acct-{i}"
            invs.setdefault(shard_of(inv, n).shard, inv)
            i += 1
        (kept, kept_inv), (stolen, stolen_inv) = sorted(invs.items())
        for inv in (kept_inv, stolen_inv):
            await a.submit(ChangeInventory(inventory_id=inv, item="gold", delta=5))
        shards = a.strong.inventories
        before = {k.shard: lease.expires_at for k, lease in shards.leases.items()}
        assert {kept, stolen} <= set(before)

        async def steal(c: Any) -> None:
            await c.execute(
                text(
                    "UPDATE ws_shard_leases SET owner = 'thief', epoch = epoch + 1 WHERE shard = :s"
                ),
                {"s": stolen},
            )

        await a.store.run(steal, "steal a shard lease")
        transactions = a.store.stats.transactions
        await asyncio.sleep(0.01)
        await shards.renew()
        assert a.store.stats.transactions == transactions + 1  # one, for every shard
        after = {k.shard: lease.expires_at for k, lease in shards.leases.items()}
        assert stolen not in after
        assert after[kept] >= before[kept]


async def test_own_eventual_snapshot_moves_the_strong_state_without_a_reload(
    backend: Backend,
) -> None:
    """The owner's eventual snapshot rewrites the region (a new version) with every strong
    row as it was: the strong state moves to that version instead of having its next commit
    refused and reloaded. A snapshot written any other way still reloads."""
    async with worlds(backend, 1) as (a,):
        await a.acquire_region(K0)
        assert isinstance(await a.submit(box("w1", 100.0)), Committed)
        st = a.strong.regions.states[K0]
        before = st.version
        a.move_entities([7], [[500.0, 500.0, 10.0]], [[0.0, 0.0, 0.0]])
        assert await a.eventual.snapshot_region(K0)
        assert st.version == (await a.load_region(K0)).version == before + 1
        assert a.strong.regions.kept_versions == 1
        loads = a.strong.regions.reloads
        assert isinstance(await a.submit(box("w2", 300.0)), Committed)
        assert a.strong.regions.reloads == loads  # no refused commit, no reload
        assert a.strong.regions.states[K0] is st and st.version == before + 2
        ids = {o.id for o in (await a.load_region(K0)).objects}
        assert {"w1", "w2", "creature:7"} <= ids  # the eventual object stayed too

        # a state that is not the one the snapshot read is left alone (no false move)
        assert not a.strong.regions.strong_rows_kept(K0, before, before + 5)
        assert st.version == before + 2

        # a snapshot stored through `store_region` (any objects) reloads before the next op
        snap = await a.load_region(K0)
        await a.store_region(snap, expected_version=snap.version)
        assert isinstance(await a.submit(box("w3", 500.0)), Committed)
        assert a.strong.regions.reloads == loads + 1
        assert {"w1", "w2", "w3"} <= {o.id for o in (await a.load_region(K0)).objects}

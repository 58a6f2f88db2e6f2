"""The strong path on SQLite + in-process cache/bus and PostgreSQL + Redis: group commit
in owned regions, forwarding to the owner, direct commits in unowned regions, conflicts
against committed state, idempotency, inventories, validation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

import worldstate
from regions import RegionKey
from tests.fix_services import Backend
from worldstate import NotAuthoritative, Overloaded, ValidationError
from worldstate.operations import (
    ChangeInventory,
    ClaimResource,
    ModifyTerrain,
    PickUpItem,
    PlaceStructure,
    TransferItems,
)
from worldstate.results import Committed, Rejected
from worldstate.store import retry

from .fix_world import open_world

K = RegionKey(0, 0, 0)


@asynccontextmanager
async def mesh(
    backend: Backend, n: int = 2, **changes: Any
) -> AsyncIterator[list[worldstate.World]]:
    bus = f"memory://{backend.namespace}"
    async with open_world(backend, "gs-1", bus_url=bus, **changes) as a:
        if n == 1:
            yield [a]
            return
        async with open_world(backend, "gs-2", bus_url=bus, **changes) as b:
            if n == 2:
                yield [a, b]
                return
            async with open_world(backend, "gs-3", bus_url=bus, **changes) as c:
                yield [a, b, c]


def place(sid: str, lo: float, size: float = 10.0, **kw: Any) -> PlaceStructure:
    return PlaceStructure(structure_id=sid, lo=(lo, lo, lo), hi=(lo + size,) * 3, **kw)


async def test_owner_group_commits_and_conflicts_resolve(backend: Backend) -> None:
    async with mesh(backend, 1) as (a,):
        await a.acquire_region(K)
        ops = [place(f"s{i}", 10.0 + 5 * i) for i in range(10)]  # each overlaps its neighbour
        results = await a.submit_many(ops)
        won = [r for r in results if isinstance(r, Committed)]
        lost = [r for r in results if isinstance(r, Rejected)]
        assert len(won) + len(lost) == 10 and won and lost
        # the winners form a non-overlapping set (alternate boxes), losers name a reason
        assert all(r.reason for r in lost)
        snap = await a.load_region(K)
        placed = sorted(o.id for o in snap.objects)
        assert placed == sorted(
            o.structure_id for o, r in zip(ops, results, strict=True) if isinstance(r, Committed)
        )
        assert a.strong.pipelines[K].batches < 10  # grouped


async def test_forwarded_to_owner_and_unowned_region_acquired(backend: Backend) -> None:
    async with mesh(backend, 2) as (a, b):
        await a.acquire_region(K)
        r1 = await b.submit(place("fwd", 10.0))
        assert isinstance(r1, Committed)
        assert b.strong.forwarded == 1 and a.strong.served_forwards == 1
        r2 = await b.submit(place("clash", 15.0))
        assert isinstance(r2, Rejected) and "fwd" in r2.reason
        assert r2.winner_op_id == r1.op_id  # the loser to committed state names the winner
        far = RegionKey(3, 3, 3)
        r3 = await b.submit(place("free", far.bounds[0][0] + 10))
        # nobody owned it: b took the lease and committed as its owner (no direct commits)
        assert isinstance(r3, Committed) and b.holds(far) and b.strong.direct_commits == 0
        assert [o.id for o in (await a.load_region(far)).objects] == ["free"]


async def test_cross_region_structures_conflict(backend: Backend) -> None:
    async with mesh(backend, 1) as (a,):
        # centred in region 0 but reaching into region 1
        r1 = await a.submit(PlaceStructure(structure_id="wide", lo=(1990, 0, 0), hi=(2004, 10, 10)))
        r2 = await a.submit(PlaceStructure(structure_id="next", lo=(2001, 0, 0), hi=(2020, 10, 10)))
        assert isinstance(r1, Committed) and isinstance(r2, Rejected)
        assert "wide" in r2.reason


async def test_same_op_id_applies_once_and_returns_first_outcome(backend: Backend) -> None:
    async with mesh(backend, 2) as (a, b):
        await a.acquire_region(K)
        op = place("once", 100.0)
        first = await a.submit(op)
        again = await b.submit(op)  # via the owner
        assert first == again and isinstance(first, Committed)
        dup = place("other-id-same-op", 300.0, op_id=op.op_id)
        with pytest.raises(ValidationError, match="different operation"):
            await a.submit(dup)  # same op_id, another operation: refused, nothing applied
        with pytest.raises(ValidationError, match="different operation"):
            await b.submit(dup)  # through the owner too
        assert sorted(o.id for o in (await a.load_region(K)).objects) == ["once"]
        inv = ChangeInventory(inventory_id="bag", item="gold", delta=5)
        assert await a.submit(inv) == await b.submit(inv)
        assert await a.get_inventory("bag") == {"gold": 5}


async def test_lost_commit_acknowledgement_applies_once(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The COMMIT succeeds but the client sees the connection drop: the retry finds the
    recorded outcome instead of applying the op again."""
    original = retry._attempt
    failed: list[str] = []

    async def lose_ack(engine: Any, body: Any, read: bool) -> Any:
        result = await original(engine, body, read)
        if not read and not failed:
            failed.append("once")
            raise OperationalError(
                "COMMIT",
                {},
                Exception("server closed the connection unexpectedly"),
                connection_invalidated=True,
            )
        return result

    async with mesh(backend, 1) as (a,):
        await a.submit(ChangeInventory(inventory_id="bag", item="gold", delta=10))
        monkeypatch.setattr(retry, "_attempt", lose_ack)
        res = await a.submit(
            TransferItems(from_inventory="bag", to_inventory="chest", item="gold", quantity=3)
        )
        assert failed == ["once"] and isinstance(res, Committed)
        monkeypatch.setattr(retry, "_attempt", original)
        assert await a.get_inventory("bag") == {"gold": 7}
        assert await a.get_inventory("chest") == {"gold": 3}


async def test_resources_items_terrain(backend: Backend) -> None:
    async with mesh(backend, 2) as (a, b):
        await a.acquire_region(K)
        await a.put_resource("ore", (50, 50, 50), 10)
        claims = [
            ClaimResource(resource_id="ore", claimant=f"p{i}", position=(50, 50, 50), amount=3)
            for i in range(5)
        ]
        res = await asyncio.gather(*(w.submit(c) for w, c in zip([a, b] * 3, claims, strict=False)))
        assert sum(isinstance(r, Committed) for r in res) == 3
        node = await b.get_resource("ore")
        assert node is not None and node.remaining == pytest.approx(1.0)
        bad = await a.submit(
            ClaimResource(resource_id="nope", claimant="p", position=(1, 1, 1), amount=1)
        )
        assert isinstance(bad, Rejected)
        picks = [PickUpItem(item_id="sword", picker=f"p{i}", position=(9, 9, 9)) for i in range(4)]
        pres = await asyncio.gather(*(w.submit(p) for w, p in zip([a, b] * 2, picks, strict=True)))
        winners = [r for r in pres if isinstance(r, Committed)]
        assert len(winners) == 1
        losers = [r for r in pres if isinstance(r, Rejected)]
        assert len(losers) == 3
        edits = [ModifyTerrain(center=(20, 20, 20), radius=5, delta=d) for d in (1.0, -0.5, 2.0)]
        tres = await a.submit_many(edits)
        assert all(isinstance(r, Committed) for r in tres)  # overlapping deltas merge


async def test_inventories_never_go_negative_and_transfers_are_atomic(backend: Backend) -> None:
    async with mesh(backend, 1) as (a,):
        await a.submit(ChangeInventory(inventory_id="a", item="gem", delta=5))
        r = await a.submit(ChangeInventory(inventory_id="a", item="gem", delta=-6))
        assert isinstance(r, Rejected) and "would leave -1" in r.reason
        t = await a.submit(
            TransferItems(from_inventory="a", to_inventory="b", item="gem", quantity=6)
        )
        assert isinstance(t, Rejected)
        assert await a.get_inventory("a") == {"gem": 5} and await a.get_inventory("b") == {}


async def test_fenced_owner_is_not_authoritative(backend: Backend) -> None:
    async with mesh(backend, 2) as (a, b):
        await a.acquire_region(K)
        assert isinstance(await a.submit(place("x", 10.0)), Committed)
        a.authoritative = False  # as a minority partition would (next issue)
        with pytest.raises(NotAuthoritative):
            await a.submit(place("y", 100.0))
        a.authoritative = True
        # another server takes the region over behind a's back (a's lease expired)
        from worldstate.store import leases as lease_ops

        await b.store.run(lambda c: lease_ops.release(c, K, "gs-1", a.leases()[K].epoch), "rel")
        await b.acquire_region(K)
        with pytest.raises(NotAuthoritative):
            await a.submit(place("z", 200.0))
        assert K not in a.leases()


async def test_full_queue_refuses_with_overloaded(backend: Backend) -> None:
    async with mesh(backend, 1, region_queue_size=2, group_commit_window=0.05) as (a,):
        await a.acquire_region(K)
        ops = [place(f"q{i}", 10.0 + 20 * i) for i in range(6)]
        results = await asyncio.gather(*(a.submit(o) for o in ops), return_exceptions=True)
        assert any(isinstance(r, Overloaded) for r in results)
        assert any(isinstance(r, Committed) for r in results)


@pytest.mark.parametrize(
    "make",
    [
        lambda: PlaceStructure(structure_id="s", lo=(float("nan"), 0, 0), hi=(1, 1, 1)),
        lambda: PlaceStructure(structure_id="s", lo=(5, 5, 5), hi=(1, 1, 1)),
        lambda: PlaceStructure(structure_id="", lo=(0, 0, 0), hi=(1, 1, 1)),
        lambda: ClaimResource(resource_id="r", claimant="c", position=(0, 0, 0), amount=-1),
        lambda: ChangeInventory(inventory_id="i", item="x", delta=1.5),  # type: ignore[arg-type]
        lambda: TransferItems(from_inventory="a", to_inventory="a", item="x", quantity=1),
        lambda: PickUpItem(item_id="i", picker="p", position=(0, 0)),  # type: ignore[arg-type]
        lambda: PlaceStructure(structure_id="s", op_id="not-a-uuid", lo=(0, 0, 0), hi=(1, 1, 1)),  # type: ignore[arg-type]
    ],
)
def test_bad_operations_refused_when_built(make: Any) -> None:
    with pytest.raises(ValidationError):
        make()


async def test_bad_operations_refused_at_submit(backend: Backend) -> None:
    async with mesh(backend, 1) as (a,):
        with pytest.raises(ValidationError):  # outside world bounds
            await a.submit(place("far", 1e12))
        with pytest.raises(ValidationError):
            await a.submit(PlaceStructure(structure_id="x" * 1000, lo=(0, 0, 0), hi=(1, 1, 1)))
        with pytest.raises(ValidationError):
            await a.submit("not an op")  # type: ignore[arg-type]
        with pytest.raises(ValidationError):  # one bad op: nothing submitted
            await a.submit_many([place("ok", 10.0), place("bad", float("inf"))])
        assert (await a.load_region(K)).objects == ()


async def test_register_operation_routes_game_types(backend: Backend) -> None:
    from consistency import ConsistencyClass

    class PlaceBeacon(PlaceStructure):
        pass

    async with mesh(backend, 1) as (a,):
        assert a.consistency_of(PlaceBeacon) is ConsistencyClass.STRONG  # inherits
        assert worldstate.consistency_of(ChangeInventory) is ConsistencyClass.STRONG
        a.register_operation(PlaceBeacon, "strong")
        r = await a.submit(PlaceBeacon(structure_id="b1", lo=(1, 1, 1), hi=(2, 2, 2)))
        assert isinstance(r, Committed)
        with pytest.raises(ValidationError):
            a.register_operation(int, "strong")  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            a.register_operation(PlaceBeacon, "sometimes")


async def test_conflict_decisions_are_recorded(backend: Backend) -> None:
    async with mesh(backend, 1) as (a,):
        await a.acquire_region(K)
        await a.submit_many([place("p1", 10.0), place("p2", 12.0)])
        rows = await a.store.conflicts(limit=10)
        assert rows and rows[0]["conflict_type"] == "structure_overlap"
        assert uuid.UUID(rows[0]["losers"][0])


async def test_a_server_demoted_while_routing_writes_nothing(backend: Backend) -> None:
    """Found by tests/sim (seed 3): the standing is checked at submit, but routing awaits
    the store (the owner lookup); a server demoted meanwhile must not then commit directly
    into the unowned region."""
    async with mesh(backend, 1) as (a,):
        owner_of = a.strong._owner

        async def demoted_while_looking(key: Any) -> str | None:
            found = await owner_of(key)
            a.authority.demote("a partition, noticed during routing")
            return found

        a.strong._owner = demoted_while_looking  # type: ignore[method-assign,assignment]
        op = place("late", 10.0)
        with pytest.raises(NotAuthoritative):
            await a.submit(op)
        a.authority.promote("healed")
        a.strong._owner = owner_of  # type: ignore[method-assign]
        assert a.strong.direct_commits == 0
        assert not (await a.load_region(K)).objects
        assert isinstance(await a.submit(op), Committed)  # same op_id: it was never applied

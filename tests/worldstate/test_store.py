"""Region state on the store: write modes, versions, concurrency, fencing, recovery,
validation. Every test body runs against SQLite + in-process cache and PostgreSQL + Redis
(``backend``)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from sqlalchemy import select, update

import worldstate
from regions import RegionKey, Sphere, WorldBounds
from tests.fix_services import Backend
from worldstate import Fenced, RegionOwned, ValidationError, VersionConflict
from worldstate.objects import WorldObject
from worldstate.store import schema

from .fix_world import FakeClock, obj, open_world

K = RegionKey(3, -2, 0)


async def test_never_stored_region_is_empty_version_zero(backend: Backend) -> None:
    async with open_world(backend) as w:
        snap = await w.load_region(K)
        assert (snap.version, snap.objects, snap.owner, snap.epoch) == (0, (), None, 0)


async def test_store_and_load_round_trip(backend: Backend) -> None:
    async with open_world(backend) as w:
        empty = await w.load_region(K)
        objs = (obj("a", K, 1.0), obj("b", K, 30.0, hp=12, tags=["x", "y"]))
        v1 = await w.store_region(empty.with_objects(objs), expected_version=0)
        assert v1 == 1
        got = await w.load_region(K)
        assert got.version == 1
        assert [o.id for o in got.objects] == ["a", "b"]
        assert dict(got.objects[1].data) == {"hp": 12, "tags": ["x", "y"]}
        assert got.objects[0].lo == objs[0].lo


async def test_three_write_modes(backend: Backend) -> None:
    async with open_world(backend) as w:
        s0 = await w.load_region(K)
        assert await w.store_region(s0.with_objects([obj("a", K)]), expected_version=0) == 1
        with pytest.raises(VersionConflict) as e:  # if-absent on an existing region
            await w.store_region(s0.with_objects([obj("b", K)]), expected_version=0)
        assert (e.value.expected, e.value.actual) == (0, 1)
        assert await w.store_region(s0.with_objects([obj("c", K)]), expected_version=1) == 2
        with pytest.raises(VersionConflict):  # stale if-version-matches
            await w.store_region(s0.with_objects([obj("d", K)]), expected_version=1)
        assert await w.store_region(s0.with_objects([obj("e", K)]), expected_version=None) == 3
        final = await w.load_region(K)
        assert (final.version, [o.id for o in final.objects]) == (3, ["e"])


async def test_concurrent_writers_exactly_one_wins(backend: Backend) -> None:
    async with open_world(backend) as w:
        base = await w.load_region(K)
        await w.store_region(base.with_objects([obj("seed", K)]), expected_version=0)
        snap = await w.load_region(K)

        async def writer(i: int) -> int | None:
            try:
                return await w.store_region(
                    snap.with_objects([obj(f"w{i}", K)]), expected_version=snap.version
                )
            except VersionConflict:
                return None

        results = await asyncio.gather(*(writer(i) for i in range(20)))
        winners = [i for i, r in enumerate(results) if r is not None]
        assert len(winners) == 1, results
        final = await w.load_region(K)
        assert final.version == 2
        assert [o.id for o in final.objects] == [f"w{winners[0]}"]


async def test_fencing_after_takeover(backend: Backend) -> None:
    clock = FakeClock()
    async with (
        open_world(backend, "gs-a", clock=clock) as a,
        open_world(backend, "gs-b", clock=clock) as b,
    ):
        la = await a.acquire_region(K)
        assert (la.owner, la.epoch) == ("gs-a", 1)
        with pytest.raises(RegionOwned):
            await b.acquire_region(K)
        snap_a = await a.load_region(K)
        assert (snap_a.owner, snap_a.epoch) == ("gs-a", 1)
        assert await a.store_region(snap_a.with_objects([obj("a1", K)]), expected_version=0) == 1
        # b cannot write while a's lease is live, even with the right epoch
        with pytest.raises(RegionOwned):
            await b.store_region(snap_a.with_objects([obj("b0", K)]), expected_version=None)
        clock.advance(11.0)  # a's lease expires; b takes over
        lb = await b.acquire_region(K)
        assert (lb.owner, lb.epoch) == ("gs-b", 2)
        with pytest.raises(Fenced) as e:
            await a.store_region(snap_a.with_objects([obj("a2", K)]), expected_version=None)
        assert (e.value.epoch, e.value.current, e.value.owner) == (1, 2, "gs-b")
        with pytest.raises(Fenced):
            await a.store.renew(K, "gs-a", 1, 10.0)
        state = await b.load_region(K)
        assert (state.version, [o.id for o in state.objects]) == (1, ["a1"])
        assert (state.owner, state.epoch) == ("gs-b", 2)
        assert await b.store_region(state.with_objects([obj("b1", K)]), expected_version=1) == 2


async def test_release_bumps_epoch_for_next_owner(backend: Backend) -> None:
    async with open_world(backend, "gs-a") as a, open_world(backend, "gs-b") as b:
        la = await a.acquire_region(K)
        again = await a.acquire_region(K)  # renewal by the live holder keeps the epoch
        assert again.epoch == la.epoch
        assert await a.release_region(K) is True
        lb = await b.acquire_region(K)
        assert lb.epoch == la.epoch + 1
        assert await a.release_region(K) is False


async def test_lease_renewal_keeps_epoch_and_extends(backend: Backend) -> None:
    clock = FakeClock()
    async with open_world(backend, clock=clock) as w:
        lease = await w.acquire_region(K)
        clock.advance(5.0)
        await w.renew_leases()
        renewed = w.leases()[K]
        assert renewed.epoch == lease.epoch
        assert renewed.expires_at == pytest.approx(lease.expires_at + 5.0)


async def _corrupt(w: worldstate.World, table: Any, key: RegionKey, version: int | None) -> None:
    async def body(conn: Any) -> None:
        q = update(table).where(table.c.region_key == key.morton)
        if version is not None:
            q = q.where(table.c.version == version)
        await conn.execute(q.values(payload=b'{"f":1,"o":[["evil"'))

    await w.store.run(body, "corrupt")


async def test_corrupt_current_row_recovered_from_its_history_copy(backend: Backend) -> None:
    async with open_world(backend) as w:
        s = await w.load_region(K)
        for i in range(3):
            await w.store_region(s.with_objects([obj(f"v{i}", K)]), expected_version=i)
        await _corrupt(w, schema.regions, K, None)
        got = await w.load_region(K)
        assert (got.version, [o.id for o in got.objects]) == (3, ["v2"])
        assert w.recoveries == 1
        incidents = await w.store.incidents()
        assert incidents[0]["kind"] == "recovered" and "lost: nothing" in incidents[0]["detail"]
        again = await w.load_region(K)  # the row was repaired: no second recovery
        assert again.version == 3 and w.recoveries == 1


async def test_corrupt_current_and_copy_recovered_from_older_version(backend: Backend) -> None:
    async with open_world(backend) as w:
        s = await w.load_region(K)
        for i in range(3):
            await w.store_region(s.with_objects([obj(f"v{i}", K)]), expected_version=i)
        await _corrupt(w, schema.regions, K, None)
        await _corrupt(w, schema.region_history, K, 3)
        got = await w.load_region(K)
        # version 2's state comes back as a new version 4; writers expecting 3 must reload
        assert (got.version, [o.id for o in got.objects]) == (4, ["v1"])
        with pytest.raises(VersionConflict):
            await w.store_region(s.with_objects([obj("late", K)]), expected_version=3)
        incidents = await w.store.incidents()
        assert "lost: snapshot versions 3..3" in incidents[0]["detail"]


async def test_no_valid_version_left_is_a_clear_error(backend: Backend) -> None:
    async with open_world(backend) as w:
        s = await w.load_region(K)
        for i in range(2):
            await w.store_region(s.with_objects([obj(f"v{i}", K)]), expected_version=i)
        await _corrupt(w, schema.regions, K, None)
        await _corrupt(w, schema.region_history, K, None)
        with pytest.raises(worldstate.CorruptRegion) as e:
            await w.load_region(K)
        assert str(K) in str(e.value) and e.value.versions_checked == [2, 1]


async def test_history_keeps_last_n_versions(backend: Backend) -> None:
    async with open_world(backend, history_versions=3) as w:
        s = await w.load_region(K)
        for i in range(6):
            await w.store_region(s.with_objects([obj(f"v{i}", K)]), expected_version=i)
        hist = await w.store.history(K)
        assert [h.version for h in hist] == [6, 5, 4]
        assert all(h.valid for h in hist)


BAD_OBJECTS: list[tuple[str, Any]] = [
    ("nan", lambda k: WorldObject("x", "structure", (math.nan, 0, 0), (1, 1, 1))),
    ("inf", lambda k: WorldObject("x", "structure", (0, 0, 0), (math.inf, 1, 1))),
    ("inverted", lambda k: WorldObject("x", "structure", (5, 5, 5), (1, 1, 1))),
    ("malformed kind", lambda k: obj("x", k, kind="dragon\x00egg")),
    ("overlong kind", lambda k: obj("x", k, kind="k" * 65)),
    ("empty id", lambda k: obj("", k)),
    ("control char id", lambda k: obj("a\x00b", k)),
    ("slash id", lambda k: obj("a/b", k)),
    ("non-json data", lambda k: obj("x", k, blob=object())),
    ("nan in data", lambda k: obj("x", k, hp=math.nan)),
    ("outside region", lambda k: obj("x", k, offset=5000.0)),
    ("not an object", lambda k: {"id": "x"}),
    ("string coords", lambda k: WorldObject("x", "structure", ("0", 0, 0), (1, 1, 1))),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("name,make", BAD_OBJECTS, ids=[b[0] for b in BAD_OBJECTS])
async def test_bad_objects_refused_and_nothing_written(
    backend: Backend, name: str, make: Any
) -> None:
    k = RegionKey(0, 0, 0)
    async with open_world(backend) as w:
        s = await w.load_region(k)
        await w.store_region(s.with_objects([obj("good", k)]), expected_version=0)
        s1 = await w.load_region(k)
        with pytest.raises(ValidationError):
            await w.store_region(s1.with_objects([obj("good2", k), make(k)]), expected_version=1)
        after = await w.load_region(k)
        assert (after.version, [o.id for o in after.objects]) == (1, ["good"])


async def test_out_of_world_bounds_and_oversized_refused(backend: Backend) -> None:
    bounds = WorldBounds((0, 0, 0), (4000, 4000, 4000))
    async with open_world(backend, world_bounds=bounds, max_snapshot_bytes=2000) as w:
        k = RegionKey(0, 0, 0)
        s = await w.load_region(k)
        with pytest.raises(ValidationError):
            await w.store_region(
                s.with_objects([WorldObject("x", "structure", (-1, 0, 0), (1, 1, 1))]),
                expected_version=None,
            )
        big = [obj(f"o{i}", k, offset=float(i)) for i in range(100)]
        with pytest.raises(ValidationError, match="limit"):
            await w.store_region(s.with_objects(big), expected_version=None)
        with pytest.raises(ValidationError):
            await w.load_region((1 << 22, 0, 0))
        with pytest.raises(ValidationError):
            await w.store_region(s, expected_version=-1)
        with pytest.raises(ValidationError):
            await w.store_region("not a snapshot", expected_version=None)  # type: ignore[arg-type]
        assert (await w.load_region(k)).version == 0


@pytest.mark.parametrize(
    "oid", ["it's", 'x"; DROP TABLE ws_regions; --', "Ünïcødé-ドラゴン-🐉", "a;b;c", "%s %(x)s ?"]
)
async def test_hostile_ids_are_stored_literally(backend: Backend, oid: str) -> None:
    async with open_world(backend) as w:
        s = await w.load_region(K)
        await w.store_region(s.with_objects([obj(oid, K, note=oid)]), expected_version=0)
        got = await w.load_region(K)
        assert [o.id for o in got.objects] == [oid]
        assert got.objects[0].data["note"] == oid


async def test_query_box_and_sphere_and_kinds(backend: Backend) -> None:
    async with open_world(backend) as w:
        k0, k1 = RegionKey(0, 0, 0), RegionKey(1, 0, 0)
        s0, s1 = await w.load_region(k0), await w.load_region(k1)
        await w.store_region(
            s0.with_objects([obj("s", k0, 10.0), obj("r", k0, 100.0, kind="resource")]),
            expected_version=0,
        )
        await w.store_region(s1.with_objects([obj("far", k1, 1500.0)]), expected_version=0)
        near = await w.query(((0, 0, 0), (50, 50, 50)))
        assert [o.id for o in near] == ["s"]
        everything = await w.query(((0, 0, 0), (4000, 2000, 2000)))
        assert sorted(o.id for o in everything) == ["far", "r", "s"]
        res = await w.query(((0, 0, 0), (4000, 2000, 2000)), kinds=["resource"])
        assert [o.id for o in res] == ["r"]
        sphere = await w.query(Sphere((3501, 1505, 1505), 5.0))
        assert [o.id for o in sphere] == ["far"]
        miss = await w.query(Sphere((0, 0, 0), 5.0))
        assert miss == []
        huge = await w.query(((0, 0, 0), (1e9, 1e9, 1e9)))  # a sparse world: 2 regions
        assert sorted(o.id for o in huge) == ["far", "r", "s"]
        with pytest.raises(ValidationError):
            await w.query(((0, 0, 0), (50, 50, 50)), kinds=["dra\ngon"])
        assert await w.query(((0, 0, 0), (50, 50, 50)), kinds=["dragon"]) == []


async def test_query_sees_other_servers_writes_after_staleness(backend: Backend) -> None:
    clock = FakeClock()
    async with (
        open_world(backend, "gs-a", clock=clock) as a,
        open_world(backend, "gs-b", clock=clock) as b,
    ):
        assert await b.query(((0, 0, 0), (50, 50, 50))) == []
        s = await a.load_region(RegionKey(0, 0, 0))
        await a.store_region(s.with_objects([obj("new", RegionKey(0, 0, 0))]), expected_version=0)
        clock.advance(2.0)
        assert [o.id for o in await b.query(((0, 0, 0), (50, 50, 50)))] == ["new"]


async def test_schema_creation_is_idempotent_and_versioned(backend: Backend) -> None:
    async with open_world(backend) as w:
        await w.store.open()

        async def version(conn: Any) -> str:
            return str(
                (
                    await conn.execute(
                        select(schema.meta.c.value).where(schema.meta.c.name == "schema_version")
                    )
                ).scalar_one()
            )

        assert await w.store.run(version, "v") == str(schema.SCHEMA_VERSION)


async def test_loads_keep_working_when_redis_dies(pg_url: str, private_redis: Any) -> None:
    async with open_world(pg_url, cache_url=private_redis.url, cache_breaker_reset=60.0) as w:
        s = await w.load_region(K)
        await w.store_region(s.with_objects([obj("a", K)]), expected_version=0)
        cached = await w.load_region(K, consistent=False)
        assert w.cache.stats.hits == 1 and cached.version == 1
        private_redis.kill()
        for _ in range(5):
            got = await w.load_region(K, consistent=False)
            assert (got.version, [o.id for o in got.objects]) == (1, ["a"])
        v = await w.store_region(got.with_objects([obj("b", K)]), expected_version=1)
        assert v == 2
        assert [o.id for o in (await w.load_region(K, consistent=False)).objects] == ["b"]
        assert w.cache.stats.errors >= 1 and w.cache.stats.bypassed >= 1


async def test_released_lease_is_not_renewed(backend: Backend) -> None:
    async with open_world(backend) as w:
        lease = await w.acquire_region(K)
        assert await w.release_region(K)
        with pytest.raises(Fenced):  # a renewal racing the release must not revive it
            await w.store.renew(K, "gs-1", lease.epoch, 10.0)
        await w.renew_leases()
        assert K not in w.leases()


async def test_delayed_renewal_never_shortens_a_lease(backend: Backend) -> None:
    clock = FakeClock()
    async with open_world(backend, clock=clock) as w:
        await w.acquire_region(K)
        clock.advance(5.0)
        newer = await w.store.renew(K, "gs-1", 1, 10.0)
        clock.advance(-3.0)  # a renewal computed earlier arrives after the newer one
        late = await w.store.renew(K, "gs-1", 1, 10.0)
        assert late.expires_at == newer.expires_at
        stored = await w.store.lease(K)
        assert stored is not None and stored.expires_at == newer.expires_at


async def test_a_store_of_an_older_schema_version_is_refused_clearly(sqlite_url: str) -> None:
    from sqlalchemy import update

    from worldstate import StoreUnavailable
    from worldstate.store import Store

    first = Store(sqlite_url)
    await first.open()

    async def downgrade(c: Any) -> None:
        await c.execute(
            update(schema.meta).where(schema.meta.c.name == "schema_version").values(value="1")
        )

    await first.run(downgrade, "pretend version 1")
    await first.close()
    again = Store(sqlite_url)
    with pytest.raises(StoreUnavailable, match="schema version 1"):
        await again.open()
    await again.close()


async def test_rewriting_unchanged_strong_rows_updates_none_of_them(backend: Backend) -> None:
    """A snapshot that carries the region's strong-placed objects as they are (every
    eventual snapshot does) writes none of their rows; a changed one is written."""
    from sqlalchemy import event

    async with open_world(backend) as w:
        await w.acquire_region(K)
        lo, _ = K.bounds_for(w.config.region_size)
        for i in range(3):
            a = (lo[0] + 10.0 * i + 1, lo[1] + 1, lo[2] + 1)
            b = (a[0] + 4, a[1] + 4, a[2] + 4)
            got = await w.submit(worldstate.PlaceStructure(structure_id=f"s{i}", lo=a, hi=b))
            assert isinstance(got, worldstate.Committed), got
        updates: list[str] = []

        def seen(conn: Any, clause: Any, *_: Any) -> None:
            text = str(clause)
            if text.startswith("UPDATE ws_objects"):
                updates.append(text)

        event.listen(w.store.engine.sync_engine, "before_execute", seen)
        try:
            snap = await w.load_region(K)
            assert {o.id for o in snap.objects} >= {"s0", "s1", "s2"}
            extra = obj("loose", K, 3.0)
            await w.store_region(
                snap.with_objects([*snap.objects, extra]), expected_version=snap.version
            )
            assert updates == []
            snap = await w.load_region(K)
            changed = [
                o if o.id != "s1" else WorldObject(o.id, o.kind, o.lo, o.hi, {"hp": 3})
                for o in snap.objects
            ]
            await w.store_region(snap.with_objects(changed), expected_version=snap.version)
            assert len(updates) == 1
        finally:
            event.remove(w.store.engine.sync_engine, "before_execute", seen)
        by_id = {o.id: o for o in (await w.load_region(K)).objects}
        assert dict(by_id["s1"].data) == {"hp": 3} and "loose" in by_id

"""Spatial queries that follow the data (issue 9, item 4): objects found from every region
they overlap, big boxes costing what the data costs, ``limit``. Every body runs on SQLite +
in-process cache and PostgreSQL + Redis (``backend``)."""

from __future__ import annotations

import pytest

from regions import RegionKey, Sphere
from tests.fix_services import Backend
from worldstate import ValidationError
from worldstate.objects import WorldObject
from worldstate.operations import PlaceStructure
from worldstate.results import Committed

from .fix_world import obj, open_world

LEFT, RIGHT = RegionKey(0, 0, 0), RegionKey(1, 0, 0)


def box(oid: str, lo: tuple[float, float, float], hi: tuple[float, float, float]) -> WorldObject:
    return WorldObject(oid, "structure", lo, hi)


async def test_straddling_structures_are_found_from_either_side(backend: Backend) -> None:
    async with open_world(backend, "gs-a") as a, open_world(backend, "gs-b") as b:
        await a.acquire_region(LEFT)
        # centre x 1999 (region 0), spanning into region 1: placed through the strong path
        r = await a.submit(
            PlaceStructure(structure_id="bridge", lo=(1990, 10, 10), hi=(2008, 12, 12))
        )
        assert isinstance(r, Committed)
        # centre x 2002.5 (region 1), spanning back into region 0: stored as a snapshot
        s = await b.load_region(RIGHT)
        await b.store_region(
            s.with_objects([box("gate", (1995, 50, 10), (2010, 52, 12))]), expected_version=0
        )
        for w in (a, b):
            only_right = await w.query(((2001, 0, 0), (2007, 100, 100)))
            assert [o.id for o in only_right] == ["bridge", "gate"]
            only_left = await w.query(((1991, 0, 0), (1998, 100, 100)))
            assert [o.id for o in only_left] == ["bridge", "gate"]
            sphere = await w.query(Sphere((2005, 11, 11), 1.0))
            assert [o.id for o in sphere] == ["bridge"]
            assert await w.query(((2011, 0, 0), (2020, 100, 100))) == []


async def test_a_200_km_query_over_a_sparse_world_reads_only_what_exists(
    backend: Backend,
) -> None:
    far = [RegionKey(-40, 3, 0), RegionKey(0, 0, 0), RegionKey(45, -45, 2)]
    async with open_world(backend, "gs-a") as a, open_world(backend, "gs-b") as b:
        for i, k in enumerate(far):
            s = await a.load_region(k)
            await a.store_region(s.with_objects([obj(f"o{i}", k)]), expected_version=0)
        lo, hi = (-100_000.0, -100_000.0, -100_000.0), (100_000.0, 100_000.0, 100_000.0)
        got = await b.query((lo, hi))  # 1,030,301 regions by volume; 3 stored
        by_morton = sorted(range(3), key=lambda i: far[i].morton)
        assert [o.id for o in got] == [f"o{i}" for i in by_morton]
        assert b.stats()["regions_in_view"] == 3, "only the stored regions were read"
        assert [o.id for o in await b.query((lo, hi), limit=2)] == [f"o{i}" for i in by_morton[:2]]


async def test_limit_stops_reading_and_big_boxes_are_bounded(backend: Backend) -> None:
    keys = [RegionKey(x, 0, 0) for x in range(8)]
    async with (
        open_world(backend, "gs-a") as a,
        open_world(backend, "gs-b", max_query_regions=4, query_scan_regions=8) as b,
    ):
        for k in keys:
            s = await a.load_region(k)
            await a.store_region(
                s.with_objects([obj(f"{k.ix}-a", k), obj(f"{k.ix}-b", k, 100.0)]),
                expected_version=0,
            )
        everything = ((0, 0, 0), (16_000, 1_000, 1_000))
        with pytest.raises(ValidationError, match="max_query_regions"):
            await b.query(everything)
        assert b.stats()["regions_in_view"] == 0, "a refused query read nothing"
        first = await b.query(everything, limit=3)
        order = sorted(keys, key=lambda k: k.morton)
        assert [o.id for o in first] == [f"{order[0].ix}-a", f"{order[0].ix}-b", f"{order[1].ix}-a"]
        assert b.stats()["regions_in_view"] < len(keys), "limit stopped the reads"
        assert len(await a.query(everything, limit=100)) == 16
        assert len(await a.query(everything)) == 16  # a's default bound (4096) allows it
        for bad in (0, -1, 1.5, True, "3"):
            with pytest.raises(ValidationError, match="limit"):
                await a.query(everything, limit=bad)  # type: ignore[arg-type]


async def test_objects_larger_than_the_reach_bound_are_refused(backend: Backend) -> None:
    async with open_world(backend, max_structure_size=100.0, region_size=2000.0) as w:
        s = await w.load_region(LEFT)
        with pytest.raises(ValidationError, match="max_structure_size"):
            await w.store_region(
                s.with_objects([box("long", (100, 0, 0), (300, 1, 1))]), expected_version=0
            )
        assert (await w.load_region(LEFT)).version == 0


async def test_store_lists_regions_in_a_box_page_by_page(backend: Backend) -> None:
    keys = [RegionKey(x, y, 0) for x in range(-3, 3) for y in (-1, 5)]
    async with open_world(backend) as w:
        for k in keys:
            s = await w.load_region(k)
            await w.store_region(s.with_objects([obj(f"{k}", k)]), expected_version=0)
        lo, hi = RegionKey(-2, -1, 0), RegionKey(1, 4, 0)
        want = sorted((k for k in keys if -2 <= k.ix <= 1 and k.iy == -1), key=lambda k: k.morton)
        pages, after = [], -1
        while True:
            found, resume = await w.store.regions_in_box(lo, hi, after=after, limit=2)
            pages.extend(found)
            if resume is None:
                break
            after = resume
        assert [p.key for p in pages] == want
        assert all(p.version == 1 for p in pages)

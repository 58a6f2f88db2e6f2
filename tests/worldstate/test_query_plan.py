"""`worldstate.node._query`: which regions a query must consider (pure planning) and the
driver over fake views and a fake store directory."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regions import Box, RegionKey, Shape, Sphere, region_of
from worldstate import ValidationError
from worldstate.node._query import check_limit, plan_query, run_query
from worldstate.objects import WorldObject
from worldstate.store import StoredVersion


def test_the_reach_adds_one_ring_of_neighbours() -> None:
    p = plan_query(Box((500, 500, 500), (1500, 1500, 1500)), region_size=2000.0, reach=1000.0)
    assert (p.lo, p.hi) == (RegionKey(-1, -1, -1), RegionKey(1, 1, 1))
    assert p.count == 27 and len(p.region_keys()) == 27
    keys = p.region_keys()
    assert list(keys) == sorted(keys, key=lambda k: k.morton)


def test_no_reach_is_the_regions_the_shape_touches() -> None:
    p = plan_query(Box((2001, 10, 10), (2007, 11, 11)), region_size=2000.0, reach=0.0)
    assert (p.lo, p.hi) == (RegionKey(1, 0, 0), RegionKey(1, 0, 0))
    edge = plan_query(Box((2000, 10, 10), (2007, 11, 11)), region_size=2000.0, reach=0.0)
    assert edge.lo.ix == 0, "a millimetre of margin: a centre rounded onto the face counts"


def test_a_straddler_centred_left_is_in_reach_of_a_query_on_the_right() -> None:
    # centre x 1999 lies in region 0; a query over x 2001..2007 must read region 0
    p = plan_query(Box((2001, 0, 0), (2007, 1, 1)), region_size=2000.0, reach=9.0)
    assert p.lo.ix == 0 and p.hi.ix == 1


def test_spheres_use_their_bounding_box_and_huge_shapes_clip_to_the_key_range() -> None:
    p = plan_query(Sphere((0, 0, 0), 10.0), region_size=2000.0, reach=0.0)
    assert (p.lo, p.hi) == (RegionKey(-1, -1, -1), RegionKey(0, 0, 0))
    huge = plan_query(Box((-1e12, 0, 0), (1e12, 1, 1)), region_size=2000.0, reach=0.0)
    assert huge.lo.ix == -(2**20) and huge.hi.ix == 2**20 - 1


def test_bad_reach_and_limits_are_refused() -> None:
    with pytest.raises(ValidationError):
        plan_query(Box((0, 0, 0), (1, 1, 1)), region_size=2000.0, reach=float("nan"))
    assert check_limit(None) is None and check_limit(5) == 5
    for bad in (0, -3, 2.0, False, "1"):
        with pytest.raises(ValidationError):
            check_limit(bad)


class FakeViews:
    """Views over a dict of stored regions (key -> (version, objects)), counting reads."""

    def __init__(self, stored: dict[RegionKey, tuple[int, list[WorldObject]]]) -> None:
        self.stored = stored
        self.seen: dict[RegionKey, int] = {}
        self.reads: list[RegionKey] = []
        self.absents: list[RegionKey] = []

    def stale(self, key: RegionKey, at_least: int | None) -> bool:
        v = self.seen.get(key)
        return v is None or (at_least is not None and v < at_least)

    async def refresh(self, key: RegionKey, at_least: int | None) -> None:
        self.reads.append(key)
        self.seen[key] = self.stored.get(key, (0, []))[0]

    def absent(self, key: RegionKey) -> None:
        self.absents.append(key)
        self.seen[key] = 0

    def matches(self, key: RegionKey, shape: Shape) -> Sequence[WorldObject]:
        objs = self.stored.get(key, (0, []))[1]
        assert isinstance(shape, Box)
        return [o for o in objs if shape.intersects(Box(o.lo, o.hi))]


class FakeDirectory:
    def __init__(self, views: FakeViews) -> None:
        self.views = views
        self.scans = 0

    async def regions_in_box(
        self, lo: RegionKey, hi: RegionKey, *, after: int = -1, limit: int = 1000
    ) -> tuple[list[StoredVersion], int | None]:
        self.scans += 1
        inside = sorted(
            (
                k
                for k in self.views.stored
                if all(
                    a <= x <= b
                    for a, x, b in zip(
                        (lo.ix, lo.iy, lo.iz),
                        (k.ix, k.iy, k.iz),
                        (hi.ix, hi.iy, hi.iz),
                        strict=True,
                    )
                )
                and k.morton > after
            ),
            key=lambda k: k.morton,
        )
        page = inside[:limit]
        resume = page[-1].morton if len(inside) > limit else None
        return [StoredVersion(k, self.views.stored[k][0]) for k in page], resume


def _one(key: RegionKey, name: str) -> WorldObject:
    lo = key.bounds[0]
    a = (lo[0] + 10, lo[1] + 10, lo[2] + 10)
    return WorldObject(name, "structure", a, (a[0] + 1, a[1] + 1, a[2] + 1))


async def test_a_small_query_validates_its_stale_neighbours_with_one_scan() -> None:
    home = RegionKey(0, 0, 0)
    views = FakeViews({home: (3, [_one(home, "a")])})
    directory = FakeDirectory(views)
    plan = plan_query(Box((5, 5, 5), (50, 50, 50)), region_size=2000.0, reach=1000.0)
    got = await run_query(
        plan, views, directory, kinds=None, limit=None, scan_regions=64, max_regions=10
    )
    assert [o.id for o in got] == ["a"]
    assert directory.scans == 1 and views.reads == [home], "only the stored region is read"
    assert len(views.absents) == plan.count - 1
    again = await run_query(
        plan, views, directory, kinds=None, limit=None, scan_regions=64, max_regions=10
    )
    assert [o.id for o in again] == ["a"] and directory.scans == 1, "fresh views: no I/O"


async def test_big_boxes_page_stop_at_the_limit_and_refuse_beyond_the_bound() -> None:
    keys = [RegionKey(x, 0, 0) for x in range(-20, 20, 2)]
    views = FakeViews({k: (1, [_one(k, f"o{k.ix}")]) for k in keys})
    directory = FakeDirectory(views)
    plan = plan_query(Box((-1e5, 0, 0), (1e5, 10, 10)), region_size=2000.0, reach=0.0)
    with pytest.raises(ValidationError, match="max_query_regions"):
        await run_query(
            plan, views, directory, kinds=None, limit=None, scan_regions=64, max_regions=5
        )
    assert views.reads == [], "a refused query read nothing"
    first = await run_query(
        plan, views, directory, kinds=None, limit=3, scan_regions=64, max_regions=5
    )
    order = sorted(keys, key=lambda k: k.morton)
    assert [o.id for o in first] == [f"o{k.ix}" for k in order[:3]]
    assert len(views.reads) == 3, "stopped once the limit was met"
    everything = await run_query(
        plan, views, directory, kinds=None, limit=None, scan_regions=64, max_regions=100
    )
    assert [o.id for o in everything] == [f"o{k.ix}" for k in order]
    none = await run_query(
        plan,
        views,
        directory,
        kinds=frozenset({"tree"}),
        limit=None,
        scan_regions=64,
        max_regions=100,
    )
    assert none == []


def _meets(shape: Shape, o: WorldObject) -> bool:
    b = Box(o.lo, o.hi)
    return shape.intersects_box(b) if isinstance(shape, Sphere) else shape.intersects(b)


class ShapeViews(FakeViews):
    def matches(self, key: RegionKey, shape: Shape) -> Sequence[WorldObject]:
        return [o for o in self.stored.get(key, (0, []))[1] if _meets(shape, o)]


SIZE, MAX = 10.0, 10.0  # small regions, objects up to a whole region across
coord = st.integers(-40, 40).map(lambda v: v / 2)
flat = st.integers(1, 17).map(lambda v: v / 2)  # z mostly in one layer: overlaps are common
extent = st.integers(0, 20).map(lambda v: v / 2)


@st.composite
def world_and_query(draw: st.DrawFn) -> tuple[list[WorldObject], Shape, int | None]:
    objs = []
    for i in range(draw(st.integers(0, 40))):
        c = (draw(coord), draw(coord), draw(flat))
        h = (draw(extent) / 2, draw(extent) / 2, draw(extent) / 2)
        objs.append(
            WorldObject(
                f"o{i}",
                "structure",
                (c[0] - h[0], c[1] - h[1], c[2] - h[2]),
                (c[0] + h[0], c[1] + h[1], c[2] + h[2]),
            )
        )
    a = (draw(coord), draw(coord), draw(flat))
    if draw(st.booleans()):
        e = (draw(extent), draw(extent), draw(extent))
        shape: Shape = Box(a, (a[0] + e[0], a[1] + e[1], a[2] + e[2]))
    else:
        shape = Sphere(a, draw(extent))
    return objs, shape, draw(st.one_of(st.none(), st.integers(1, 5)))


@given(world_and_query(), st.sampled_from([1, 8, 64]))
def test_queries_find_exactly_the_objects_that_meet_the_shape(
    case: tuple[list[WorldObject], Shape, int | None], scan_regions: int
) -> None:
    """Against brute force over every object: found from every region it overlaps, in
    (region Morton, stored) order, cut at ``limit`` — through the small path (enumerated
    keys) and the big one (store scan), by ``scan_regions``."""
    objs, shape, limit = case
    stored: dict[RegionKey, tuple[int, list[WorldObject]]] = {}
    for o in objs:  # each object in the region holding its centre, as the store keeps it
        k = region_of(*o.center, size=SIZE)
        stored.setdefault(k, (1, []))[1].append(o)
    views = ShapeViews(stored)
    plan = plan_query(shape, region_size=SIZE, reach=MAX / 2)
    got = asyncio.run(
        run_query(
            plan,
            views,
            FakeDirectory(views),
            kinds=None,
            limit=limit,
            scan_regions=scan_regions,
            max_regions=10_000,
        )
    )
    order = sorted(stored, key=lambda k: k.morton)
    want = [o for k in order for o in stored[k][1] if _meets(shape, o)]
    assert [o.id for o in got] == [o.id for o in want][:limit]

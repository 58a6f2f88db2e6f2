"""`worldstate.node._query.plan_query`: which regions a query must consider (pure)."""

from __future__ import annotations

import pytest

from regions import Box, RegionKey, Sphere
from worldstate import ValidationError
from worldstate.node._query import check_limit, plan_query


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

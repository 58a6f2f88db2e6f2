"""Region keys: `RegionKey`, point -> region (scalar and numpy batch), box/sphere -> keys
against brute force, and `WorldBounds`.

Regions own half-open cubes ``[i*s, (i+1)*s)`` per axis (a point on a face belongs to the upper
region). For the sizes used here, ``floor(x / s)`` in floating point equals the exact floor for
every normal float ``x`` (the products ``i * s`` are exact), so the brute-force references
compare coordinates with cube faces directly. Subnormal coordinates are left out: below 0, the
division underflows to -0.0 (``region_of(-5e-324, 0, 0)`` is region 0, by 1e-323 m).
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from fractions import Fraction
from itertools import product
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regions import (
    DEFAULT_BOUNDS,
    REGION_SIZE,
    Box,
    GeometryError,
    RegionKey,
    Sphere,
    WorldBounds,
    as_region_key,
    keys_in_box,
    keys_in_sphere,
    keys_of_shape,
    region_indices,
    region_keys,
    region_of,
)
from regions.morton import AXIS_MAX, AXIS_MIN, MORTON_MAX

# The costlier properties run a third of the profile's examples (10 at least).
FEW = settings(max_examples=max(10, settings().max_examples // 3))

S = REGION_SIZE
WORLD_LO = AXIS_MIN * S  # inclusive
WORLD_HI = (AXIS_MAX + 1) * S  # exclusive
BELOW_WORLD_HI = math.nextafter(WORLD_HI, 0.0)
EXACT_SIZES = [2000.0, 1000.0, 250.0, 1.0, 0.5, 4096.0]

# ---------------------------------------------------------------- strategies

axis = st.one_of(
    st.integers(AXIS_MIN, AXIS_MAX),
    st.sampled_from([AXIS_MIN, AXIS_MIN + 1, -1, 0, 1, AXIS_MAX - 1, AXIS_MAX]),
)
keys = st.builds(RegionKey, axis, axis, axis)
near_edge_axis = st.sampled_from([AXIS_MIN, AXIS_MIN + 1, 0, AXIS_MAX - 1, AXIS_MAX])
edge_keys = st.builds(RegionKey, near_edge_axis, near_edge_axis, near_edge_axis)

BOUNDARY_OFFSETS = [0.0, -0.0, -1e-9, 1e-9, 1999.9999999, -1999.9999999, 1e-300, -1e-300]
coord = st.one_of(
    # anywhere in the addressable range
    st.floats(WORLD_LO, WORLD_HI, exclude_max=True, allow_subnormal=False),
    # near the origin, where most of a game happens
    st.floats(-1e5, 1e5, allow_subnormal=False),
    # exact multiples of the region size and values hugging a face
    st.builds(
        lambda n, d: n * S + d,
        st.integers(-50, 50),
        st.sampled_from(BOUNDARY_OFFSETS),
    ),
    st.sampled_from(
        [WORLD_LO, BELOW_WORLD_HI, math.nextafter(2000.0, 0.0), math.nextafter(-2000.0, 0.0)]
    ),
)
point = st.tuples(coord, coord, coord)
points = st.lists(point, min_size=0, max_size=40)


def exact_index(x: float, s: float = S) -> int:
    """``floor(x / s)`` in exact arithmetic."""
    return math.floor(Fraction(x) / Fraction(s))


# ---------------------------------------------------------------- RegionKey


@given(keys)
def test_neighbours_match_brute_force(k: RegionKey) -> None:
    for diagonal in (True, False):
        got = k.neighbours(diagonal=diagonal)
        want = set()
        for d in product((-1, 0, 1), repeat=3):
            if d == (0, 0, 0) or (not diagonal and sum(map(abs, d)) != 1):
                continue
            c = (k.ix + d[0], k.iy + d[1], k.iz + d[2])
            if all(AXIS_MIN <= v <= AXIS_MAX for v in c):
                want.add(RegionKey(*c))
        assert set(got) == want
        assert len(got) == len(want)
        assert [n.morton for n in got] == sorted(n.morton for n in got)


@pytest.mark.parametrize(
    ("k", "n_all", "n_face"),
    [
        (RegionKey(0, 0, 0), 26, 6),
        (RegionKey(AXIS_MIN, AXIS_MIN, AXIS_MIN), 7, 3),
        (RegionKey(AXIS_MAX, AXIS_MAX, AXIS_MAX), 7, 3),
        (RegionKey(AXIS_MAX, 0, 0), 17, 5),
        (RegionKey(AXIS_MIN, AXIS_MAX, 5), 11, 4),
    ],
)
def test_neighbour_counts(k: RegionKey, n_all: int, n_face: int) -> None:
    assert len(k.neighbours()) == n_all
    assert len(k.neighbours(diagonal=False)) == n_face
    assert k not in k.neighbours()


@given(edge_keys)
def test_neighbours_are_adjacent_and_in_range(k: RegionKey) -> None:
    for n in k.neighbours():
        assert max(abs(n.ix - k.ix), abs(n.iy - k.iy), abs(n.iz - k.iz)) == 1
    for n in k.neighbours(diagonal=False):
        assert abs(n.ix - k.ix) + abs(n.iy - k.iy) + abs(n.iz - k.iz) == 1


@given(keys)
def test_bounds(k: RegionKey) -> None:
    lo, hi = k.bounds
    assert lo == (k.ix * S, k.iy * S, k.iz * S)
    assert hi == ((k.ix + 1) * S, (k.iy + 1) * S, (k.iz + 1) * S)
    assert region_of(*lo) == k
    # just below the upper faces (below 0, skip the subnormals: x / s underflows to -0.0)
    inside = tuple(math.nextafter(h, -math.inf) if h else -1e-300 for h in hi)
    assert region_of(*inside) == k
    assert k.box() == Box(lo, hi)
    lo5, hi5 = k.bounds_for(5.0)
    assert lo5 == (k.ix * 5.0, k.iy * 5.0, k.iz * 5.0)
    assert hi5 == (lo5[0] + 5.0, lo5[1] + 5.0, lo5[2] + 5.0)


def test_upper_face_belongs_to_next_region() -> None:
    k = RegionKey(3, -2, 0)
    _, hi = k.bounds
    assert region_of(*hi) == RegionKey(4, -1, 1)


@pytest.mark.parametrize("size", [0, -1.0, math.nan, math.inf, True, "2000", None])
def test_bad_region_size(size: object) -> None:
    with pytest.raises(GeometryError):
        RegionKey(0, 0, 0).bounds_for(size)  # type: ignore[arg-type]
    with pytest.raises(GeometryError):
        region_of(0.0, 0.0, 0.0, size)  # type: ignore[arg-type]
    with pytest.raises(GeometryError):
        region_keys(np.zeros((1, 3)), size)  # type: ignore[arg-type]
    with pytest.raises(GeometryError):
        keys_in_box((0, 0, 0), (1, 1, 1), size)  # type: ignore[arg-type]


def test_numpy_scalar_sizes_and_radii_accepted() -> None:
    assert region_of(2500.0, 0.0, 0.0, np.float32(1000.0)) == RegionKey(2, 0, 0)  # type: ignore[arg-type]
    assert RegionKey(1, 1, 1).bounds_for(np.int64(10)) == ((10.0, 10.0, 10.0), (20.0, 20.0, 20.0))  # type: ignore[arg-type]
    assert keys_in_sphere((1.0, 1.0, 1.0), np.int64(0)) == [RegionKey(0, 0, 0)]  # type: ignore[arg-type]


@given(keys)
def test_parse_round_trips(k: RegionKey) -> None:
    assert RegionKey.parse(f"{k.ix},{k.iy},{k.iz}") == k
    assert RegionKey.parse(f"({k.ix},{k.iy},{k.iz})") == k
    assert RegionKey.parse(f"  ( {k.ix}, {k.iy} ,{k.iz} ) ") == k
    assert RegionKey.parse(str(k)) == k
    assert RegionKey.parse(str(k.morton)) == k
    assert RegionKey.parse(f" {k.morton}\n") == k


@pytest.mark.parametrize(
    "text",
    [
        "",
        "()",
        "1,2",
        "1,2,3,4",
        "a,b,c",
        "1.5,2,3",
        "1,,3",
        "-1",
        str(MORTON_MAX + 1),
        "12abc",
        "0x10",
        "1 2 3",
        f"{AXIS_MAX + 1},0,0",
        f"0,{AXIS_MIN - 1},0",
    ],
)
def test_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(GeometryError, match="cannot parse region key"):
        RegionKey.parse(text)


@pytest.mark.parametrize("bad", [None, 5, b"1,2,3", (1, 2, 3)])
def test_parse_rejects_non_str(bad: object) -> None:
    with pytest.raises(GeometryError):
        RegionKey.parse(bad)  # type: ignore[arg-type]


@given(keys, keys)
def test_ordering_and_hash(a: RegionKey, b: RegionKey) -> None:
    ta, tb = (a.ix, a.iy, a.iz), (b.ix, b.iy, b.iz)
    assert (a < b) == (ta < tb)
    assert (a <= b) == (ta <= tb)
    assert (a == b) == (ta == tb)
    if a == b:
        assert hash(a) == hash(b)
    copy = RegionKey(a.ix, a.iy, a.iz)
    assert copy == a and hash(copy) == hash(a)
    assert {a: 1, copy: 2} == {a: 2}
    assert pickle.loads(pickle.dumps(a)) == a


@given(axis, axis, axis)
def test_numpy_ints_are_normalised(ix: int, iy: int, iz: int) -> None:
    k = RegionKey(np.int64(ix), np.int32(iy), np.int64(iz))  # type: ignore[arg-type]
    assert (type(k.ix), type(k.iy), type(k.iz)) == (int, int, int)
    assert k == RegionKey(ix, iy, iz)
    assert hash(k) == hash(RegionKey(ix, iy, iz))
    assert str(k) == f"({ix},{iy},{iz})"
    assert as_region_key(np.int64(k.morton)) == k
    assert as_region_key((np.int64(ix), iy, iz)) == k


@pytest.mark.parametrize(
    "args",
    [
        (1.0, 0, 0),
        (0, True, 0),
        (0, 0, "1"),
        (AXIS_MAX + 1, 0, 0),
        (0, AXIS_MIN - 1, 0),
        (0, 0, np.float64(1.0)),
    ],
)
def test_region_key_rejects(args: tuple[object, object, object]) -> None:
    with pytest.raises(GeometryError):
        RegionKey(*args)  # type: ignore[arg-type]


def test_region_key_is_frozen() -> None:
    k = RegionKey(1, 2, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        k.ix = 5  # type: ignore[misc]


def test_as_region_key() -> None:
    k = RegionKey(-3, 4, 5)
    assert as_region_key(k) is k
    assert as_region_key((-3, 4, 5)) == k
    assert as_region_key([-3, 4, 5]) == k
    assert as_region_key(k.morton) == k
    for bad in ["(-3,4,5)", (1, 2), True, 1.0, None, -1]:
        with pytest.raises(GeometryError):
            as_region_key(bad)


# ---------------------------------------------------------------- point -> region


@given(point)
def test_region_of_is_the_exact_floor(p: tuple[float, float, float]) -> None:
    k = region_of(*p)
    assert (k.ix, k.iy, k.iz) == tuple(exact_index(c) for c in p)
    lo, hi = k.bounds
    assert all(a <= c < b for a, c, b in zip(lo, p, hi, strict=True))


@given(points)
def test_batch_mapping_equals_scalar(ps: list[tuple[float, float, float]]) -> None:
    arr = np.array(ps, dtype=np.float64).reshape(-1, 3)
    want = [region_of(*p) for p in ps]
    codes = region_keys(arr)
    assert codes.dtype == np.int64 and codes.shape == (len(ps),)
    assert codes.tolist() == [k.morton for k in want]
    idx = region_indices(arr)
    assert idx.dtype == np.int64 and idx.shape == (len(ps), 3)
    assert idx.tolist() == [[k.ix, k.iy, k.iz] for k in want]
    # plain lists, float32 data and non-contiguous views give the same answers
    if ps:
        assert region_keys(ps).tolist() == codes.tolist()
    wide = np.zeros((len(ps), 6))
    wide[:, ::2] = arr
    assert region_keys(wide[:, ::2]).tolist() == codes.tolist()
    assert region_keys(np.asfortranarray(arr)).tolist() == codes.tolist()
    f32 = arr.astype(np.float32)  # may round a point out of the key range
    try:
        want32 = [region_of(*p).morton for p in f32.tolist()]
    except GeometryError:
        with pytest.raises(GeometryError):
            region_keys(f32)
    else:
        assert region_keys(f32).tolist() == want32


@FEW
@given(points, st.sampled_from([*EXACT_SIZES, 3.7, 1e-3, 1e9]))
def test_batch_mapping_equals_scalar_for_any_size(
    ps: list[tuple[float, float, float]], size: float
) -> None:
    arr = np.array(ps, dtype=np.float64).reshape(-1, 3)
    try:
        want = [region_of(*p, size=size) for p in ps]
    except GeometryError:  # some point is outside the key range at this size
        with pytest.raises(GeometryError):
            region_keys(arr, size)
        with pytest.raises(GeometryError):
            region_indices(arr, size)
        return
    assert region_keys(arr, size).tolist() == [k.morton for k in want]
    assert region_indices(arr, size).tolist() == [[k.ix, k.iy, k.iz] for k in want]


def test_batch_mapping_input_is_not_modified() -> None:
    arr = np.array([[1.5, -2.5, 4000.0], [-1e-9, 1999.9999999, 2000.0]])
    before = arr.copy()
    assert region_keys(arr).tolist() == [
        region_of(1.5, -2.5, 4000.0).morton,
        region_of(-1e-9, 1999.9999999, 2000.0).morton,
    ]
    assert np.array_equal(arr, before)


def test_known_boundary_values() -> None:
    arr = np.array(
        [
            [-1e-9, 1999.9999999, 2000.0],
            [0.0, -0.0, -2000.0],
            [math.nextafter(-2000.0, 0.0), 3999.999999999, -4000.0000001],
        ]
    )
    assert region_indices(arr).tolist() == [[-1, 0, 1], [0, 0, -1], [-1, 1, -3]]


@FEW
@given(st.lists(point, min_size=1, max_size=20), st.data())
def test_non_finite_rows_are_named(
    ps: list[tuple[float, float, float]], data: st.DataObject
) -> None:
    arr = np.array(ps, dtype=np.float64)
    row = data.draw(st.integers(0, len(ps) - 1))
    col = data.draw(st.integers(0, 2))
    arr[row, col] = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    if data.draw(st.booleans()) and row + 1 < len(ps):  # a later bad row too
        arr[row + 1, (col + 1) % 3] = math.nan
    with pytest.raises(GeometryError, match=rf"positions\[{row}\]"):
        region_keys(arr)
    with pytest.raises(GeometryError, match=rf"positions\[{row}\]"):
        region_indices(arr)
    with pytest.raises(GeometryError):
        region_of(*arr[row].tolist())


@pytest.mark.parametrize(
    "bad",
    [
        [WORLD_HI, 0.0, 0.0],
        [0.0, math.nextafter(WORLD_LO, -math.inf), 0.0],
        [0.0, 0.0, 1e300],
        [-1e300, 0.0, 0.0],
    ],
)
def test_out_of_key_range_raises(bad: list[float]) -> None:
    arr = np.array([[0.0, 0.0, 0.0], bad, [0.0, 0.0, 0.0]])
    with pytest.raises(GeometryError, match=r"positions\[1\].*key range"):
        region_keys(arr)
    with pytest.raises(GeometryError, match=r"positions\[1\].*key range"):
        region_indices(arr)
    with pytest.raises(GeometryError):
        region_of(*bad)


def test_key_range_ends_are_addressable() -> None:
    arr = np.array([[WORLD_LO] * 3, [BELOW_WORLD_HI] * 3])
    assert region_keys(arr).tolist() == [0, MORTON_MAX]


@pytest.mark.parametrize(
    "shape", [(3,), (0,), (2, 2), (2, 4), (1, 3, 1), (0, 2), (3, 1), (1, 1, 3)]
)
def test_wrong_shapes_raise(shape: tuple[int, ...]) -> None:
    with pytest.raises(GeometryError, match="shape"):
        region_keys(np.zeros(shape))
    with pytest.raises(GeometryError, match="shape"):
        region_indices(np.zeros(shape))


def test_scalar_and_unconvertible_inputs_raise() -> None:
    with pytest.raises(GeometryError):
        region_keys(np.float64(1.0))
    bads: list[Any] = [[[1.0, 2.0], [3.0]], [["a", "b", "c"]], [[None, 1.0, 2.0]]]
    for bad in bads:
        with pytest.raises(GeometryError):
            region_keys(bad)


def test_empty_batch() -> None:
    assert region_keys(np.zeros((0, 3))).shape == (0,)
    assert region_keys(np.zeros((0, 3))).dtype == np.int64
    assert region_indices(np.zeros((0, 3))).shape == (0, 3)


@pytest.mark.parametrize(
    "bad",
    [(math.nan, 0, 0), (0, math.inf, 0), (0, 0), (0, 0, 0, 0), "abc", None, (True, 0, 0)],
)
def test_region_of_rejects(bad: tuple[object, ...] | str | None) -> None:
    with pytest.raises((GeometryError, TypeError)):
        region_of(*bad)  # type: ignore[misc]


# ---------------------------------------------------------------- box -> keys

grid_coord = st.one_of(
    st.integers(-6, 6).map(lambda n: n * S),
    st.integers(-24_000, 24_000).map(lambda n: n / 2),
    st.floats(-12_000, 12_000, allow_subnormal=False),
    st.sampled_from([-1e-9, 1999.9999999, math.nextafter(2000.0, 0.0), -0.0]),
)


@st.composite
def boxes(
    draw: st.DrawFn, c: st.SearchStrategy[float] = grid_coord
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    pairs = [sorted((draw(c), draw(c))) for _ in range(3)]
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def brute_box_keys(lo: tuple[float, ...], hi: tuple[float, ...], s: float = S) -> set[RegionKey]:
    """Every key near the box whose half-open cube meets the closed box, found by scanning."""
    scan = [
        range(math.floor(a / s) - 2, math.floor(b / s) + 3) for a, b in zip(lo, hi, strict=True)
    ]
    out = set()
    for ijk in product(*scan):
        if all(i * s <= b and a < (i + 1) * s for i, a, b in zip(ijk, lo, hi, strict=True)) and all(
            AXIS_MIN <= i <= AXIS_MAX for i in ijk
        ):
            out.add(RegionKey(*ijk))
    return out


def assert_sorted_unique(ks: list[RegionKey]) -> None:
    codes = [k.morton for k in ks]
    assert codes == sorted(set(codes))


@given(boxes())
def test_keys_in_box_equals_brute_force(b: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
    lo, hi = b
    got = keys_in_box(lo, hi)
    assert_sorted_unique(got)
    assert set(got) == brute_box_keys(lo, hi)
    # every corner lies in one of the returned regions
    for corner in product(*zip(lo, hi, strict=True)):
        assert region_of(*corner) in got
    assert keys_of_shape(Box(lo, hi)) == got  # type: ignore[arg-type]


@FEW
@given(boxes(), st.sampled_from(EXACT_SIZES))
def test_keys_in_box_other_sizes(
    b: tuple[tuple[float, ...], tuple[float, ...]], size: float
) -> None:
    f = size / S  # the same boxes, measured in regions of this size
    lo, hi = tuple(x * f for x in b[0]), tuple(x * f for x in b[1])
    got = keys_in_box(lo, hi, size)
    assert_sorted_unique(got)
    assert set(got) == brute_box_keys(lo, hi, size)


def test_keys_in_box_face_rule() -> None:
    # a box reaching a face from below touches the region above it; from above, not the one below
    assert keys_in_box((0, 0, 0), (2000, 1, 1)) == sorted(
        [RegionKey(0, 0, 0), RegionKey(1, 0, 0)], key=lambda k: k.morton
    )
    assert keys_in_box((2000, 1, 1), (3000, 1, 1)) == [RegionKey(1, 0, 0)]
    assert keys_in_box((5, 5, 5), (5, 5, 5)) == [RegionKey(0, 0, 0)]


def test_keys_in_box_clipped_to_key_range() -> None:
    lo = (AXIS_MAX * S - 1.0, 0.0, 0.0)
    hi = (AXIS_MAX * S + 9000.0, 0.0, 0.0)
    assert {k.ix for k in keys_in_box(lo, hi)} == {AXIS_MAX - 1, AXIS_MAX}
    lo = (WORLD_LO - 9000.0, 0.0, 0.0)
    hi = (WORLD_LO, 0.0, 0.0)
    assert {k.ix for k in keys_in_box(lo, hi)} == {AXIS_MIN}


@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 12), st.integers(1, 2000))
def test_keys_in_box_limit(nx: int, ny: int, nz: int, limit: int) -> None:
    lo = (10.0, -10.0, 0.0)
    hi = (lo[0] + (nx - 1) * S, lo[1] + (ny - 1) * S, lo[2] + (nz - 1) * S)
    n = nx * ny * nz
    if n > limit:
        with pytest.raises(GeometryError, match=str(limit)):
            keys_in_box(lo, hi, max_keys=limit)
    else:
        assert len(keys_in_box(lo, hi, max_keys=limit)) == n


def test_huge_box_hits_default_limit_without_enumerating() -> None:
    with pytest.raises(GeometryError, match="limit"):
        keys_in_box((WORLD_LO,) * 3, (BELOW_WORLD_HI,) * 3)


@pytest.mark.parametrize(
    ("lo", "hi"),
    [
        ((1, 0, 0), (0, 1, 1)),
        ((0, 0, 0), (1, 1, -1e-9)),
        ((math.nan, 0, 0), (1, 1, 1)),
        ((0, 0, 0), (1, math.inf, 1)),
        ((0, 0), (1, 1)),
        ((0, 0, 0), "abc"),
        ((0, 0, 0), None),
    ],
)
def test_keys_in_box_rejects(lo: object, hi: object) -> None:
    with pytest.raises(GeometryError):
        keys_in_box(lo, hi)


# ---------------------------------------------------------------- sphere -> keys


def exact_sphere_hits_region(
    center: tuple[float, ...], radius: float, k: RegionKey, s: float = S
) -> bool:
    """Does the closed ball share a point with the half-open cube of ``k``? Exact arithmetic.

    If the closed cube's nearest point ``q`` is strictly within reach, the ball also meets the
    cube's interior. At exactly the radius, ``q`` is the only shared point of the closed cube,
    and the region owns it unless it lies on one of the cube's upper faces."""
    fd2 = sum(
        (c - min(max(c, i * s), (i + 1) * s)) ** 2
        for c, i in zip(center, (k.ix, k.iy, k.iz), strict=True)
    )
    fr2 = radius * radius
    if fr2 > 1e-250:  # clear cases in floats (a wide margin), to keep the test fast
        if fd2 < fr2 * (1 - 1e-6):
            return True
        if fd2 > fr2 * (1 + 1e-6):
            return False
    d2 = Fraction(0)
    on_upper_face = False
    for c, i in zip(center, (k.ix, k.iy, k.iz), strict=True):
        lo, hi = Fraction(i * s), Fraction((i + 1) * s)
        q = min(max(Fraction(c), lo), hi)
        d2 += (Fraction(c) - q) ** 2
        on_upper_face |= q == hi
    r2 = Fraction(radius) ** 2
    return d2 < r2 or (d2 == r2 and not on_upper_face)


def brute_sphere_keys(center: tuple[float, ...], radius: float, s: float = S) -> set[RegionKey]:
    scan = [
        range(math.floor((c - radius) / s) - 1, math.floor((c + radius) / s) + 2) for c in center
    ]
    return {
        RegionKey(*ijk)
        for ijk in product(*scan)
        if exact_sphere_hits_region(center, radius, RegionKey(*ijk), s)
    }


# Integer centres and radii: every float operation is exact, so tangencies are exact too.
int_centre = st.tuples(*[st.integers(-5000, 5000).map(float)] * 3)
int_radius = st.one_of(st.integers(0, 3000).map(float), st.integers(0, 6).map(lambda n: n * 500.0))


@FEW
@given(int_centre, int_radius)
def test_keys_in_sphere_equals_brute_force_exact(c: tuple[float, float, float], r: float) -> None:
    got = keys_in_sphere(c, r)
    assert_sorted_unique(got)
    assert set(got) == brute_sphere_keys(c, r)
    assert keys_of_shape(Sphere(c, r)) == got


@given(
    st.sampled_from([(3.0, 4.0), (0.0, 5.0), (5.0, 0.0), (-3.0, 4.0), (3.0, -4.0), (-3.0, -4.0)]),
    st.sampled_from([-2000.0, 0.0, 2000.0]),
    st.sampled_from([-2000.0, 0.0, 2000.0]),
)
def test_keys_in_sphere_tangencies(d: tuple[float, float], fx: float, fy: float) -> None:
    # a radius-5 sphere grazing the edge (or face) at x=fx, y=fy from a 3-4-5 offset
    c = (fx + d[0], fy + d[1], 1000.0)
    got = set(keys_in_sphere(c, 5.0))
    assert got == brute_sphere_keys(c, 5.0)
    assert region_of(*c) in got


def test_keys_in_sphere_face_and_corner_examples() -> None:
    # grazing a lower face from above: the region below is not touched (its cube is [0, 2000))
    assert keys_in_sphere((2005.0, 1000.0, 1000.0), 5.0) == [RegionKey(1, 0, 0)]
    # grazing an upper face from below: the region above owns the touching point
    assert set(keys_in_sphere((1995.0, 1000.0, 1000.0), 5.0)) == {
        RegionKey(0, 0, 0),
        RegionKey(1, 0, 0),
    }
    # grazing the (0,0) cube's upper x/y edge from outside: not touched
    assert RegionKey(0, 0, 0) not in keys_in_sphere((2003.0, 2004.0, 1000.0), 5.0)
    assert keys_in_sphere((2000.0, 2000.0, 2000.0), 0.0) == [RegionKey(1, 1, 1)]


sphere_coord = st.one_of(
    st.floats(-9000, 9000, allow_subnormal=False),
    st.builds(lambda n, d: n * S + d, st.integers(-4, 4), st.floats(-1e-6, 1e-6)),
)
sphere_radius = st.one_of(
    st.floats(0, 5000, allow_subnormal=False),
    st.floats(0, 1e-6, allow_subnormal=False),
    st.sampled_from([0.0, 1e-300, 2000.0, 1000.0]),
)


@FEW
@given(st.tuples(sphere_coord, sphere_coord, sphere_coord), sphere_radius)
def test_keys_in_sphere_equals_brute_force_floats(c: tuple[float, float, float], r: float) -> None:
    got = keys_in_sphere(c, r)
    assert_sorted_unique(got)
    assert set(got) == brute_sphere_keys(c, r)
    # and in plain float point-to-box distances, away from ties
    scan = [range(math.floor((x - r) / S) - 1, math.floor((x + r) / S) + 2) for x in c]
    r2 = r * r
    for ijk in product(*scan):
        k = RegionKey(*ijk)
        lo, hi = k.bounds
        d2 = sum((x - min(max(x, a), b)) ** 2 for x, a, b in zip(c, lo, hi, strict=True))
        if r2 <= 1e-290:  # squares underflow: only the exact check above holds
            continue
        if d2 < r2 * (1 - 1e-9):
            assert k in got
        elif d2 > r2 * (1 + 1e-9):
            assert k not in got


@FEW
@given(
    st.tuples(sphere_coord, sphere_coord, sphere_coord),
    st.floats(0, 3000, allow_subnormal=False),
    st.lists(st.tuples(*[st.floats(-1, 1)] * 3), max_size=10),
)
def test_keys_in_sphere_contains_regions_of_its_points(
    c: tuple[float, float, float], r: float, dirs: list[tuple[float, float, float]]
) -> None:
    got = set(keys_in_sphere(c, r))
    assert region_of(*c) in got
    axes = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]
    probes = [
        tuple(x + sgn * r * e for x, e in zip(c, ax, strict=True)) for ax in axes for sgn in (1, -1)
    ]
    probes += [tuple(x + r * e for x, e in zip(c, d, strict=True)) for d in dirs]
    for p in probes:
        dist2 = sum((Fraction(a) - Fraction(b)) ** 2 for a, b in zip(p, c, strict=True))
        if dist2 <= Fraction(r) ** 2:  # the probe really is inside (rounding may push it out)
            assert region_of(*p) in got


def test_keys_in_sphere_limit() -> None:
    c, r = (0.0, 0.0, 0.0), 5000.0  # bounding box spans 6 x 6 x 6 = 216 regions
    assert len(keys_in_sphere(c, r)) <= 216
    with pytest.raises(GeometryError, match="limit 100"):
        keys_in_sphere(c, r, max_keys=100)
    keys_in_sphere(c, r, max_keys=216)
    with pytest.raises(GeometryError, match="limit"):
        keys_in_sphere(c, WORLD_HI)


@pytest.mark.parametrize(
    ("c", "r"),
    [
        ((0, 0, 0), -1.0),
        ((0, 0, 0), -1e-300),
        ((0, 0, 0), math.nan),
        ((0, 0, 0), math.inf),
        ((0, 0, 0), True),
        ((0, 0, 0), "5"),
        ((math.nan, 0, 0), 1.0),
        ((0, 0), 1.0),
        (None, 1.0),
    ],
)
def test_keys_in_sphere_rejects(c: object, r: object) -> None:
    with pytest.raises(GeometryError):
        keys_in_sphere(c, r)  # type: ignore[arg-type]


# ---------------------------------------------------------------- WorldBounds

small = WorldBounds((-100.0, -100.0, 0.0), (100.0, 100.0, 50.0))
small_coord = st.floats(-150, 150, allow_subnormal=False)


@given(st.tuples(small_coord, small_coord, small_coord))
def test_check_point_matches_bounds(p: tuple[float, float, float]) -> None:
    inside = all(a <= c < b for a, c, b in zip(small.lo, p, small.hi, strict=True))
    if inside:
        assert small.check_point(p) == p
        assert small.check_point(np.array(p)) == p
    else:
        with pytest.raises(GeometryError, match="outside the world bounds"):
            small.check_point(p)


@given(st.lists(st.tuples(small_coord, small_coord, small_coord), min_size=1, max_size=30))
def test_check_points_matches_check_point(ps: list[tuple[float, float, float]]) -> None:
    arr = np.array(ps)
    bad = []
    for i, p in enumerate(ps):
        try:
            small.check_point(p)
        except GeometryError:
            bad.append(i)
    if bad:
        with pytest.raises(GeometryError, match=rf"positions\[{bad[0]}\]"):
            small.check_points(arr)
    else:
        small.check_points(arr)


@FEW
@given(
    st.lists(st.tuples(small_coord, small_coord, small_coord), min_size=1, max_size=10), st.data()
)
def test_check_points_refuses_non_finite(
    ps: list[tuple[float, float, float]], data: st.DataObject
) -> None:
    arr = np.clip(np.array(ps), [-100, -100, 0], [99, 99, 49])
    small.check_points(arr)
    row = data.draw(st.integers(0, len(ps) - 1))
    arr[row, data.draw(st.integers(0, 2))] = data.draw(
        st.sampled_from([math.nan, math.inf, -math.inf])
    )
    with pytest.raises(GeometryError, match=rf"positions\[{row}\]"):
        small.check_points(arr)
    with pytest.raises(GeometryError):
        small.check_point(arr[row])


def test_bounds_edges() -> None:
    small.check_point((-100.0, -100.0, 0.0))  # lo inclusive
    for p in [(100.0, 0.0, 0.0), (0.0, 100.0, 0.0), (0.0, 0.0, 50.0), (0.0, 0.0, -1e-300)]:
        with pytest.raises(GeometryError):
            small.check_point(p)
    for bad in [(math.nan, 0.0, 0.0), (0.0, 0.0), "xyz", None]:
        with pytest.raises(GeometryError):
            small.check_point(bad)
    small.check_box(Box((-100, -100, 0), (100, 100, 50)))
    with pytest.raises(GeometryError):
        small.check_box(Box((-100, -100, -1), (0, 0, 0)))


@pytest.mark.parametrize(
    ("lo", "hi"),
    [
        ((0, 0, 0), (0, 1, 1)),
        ((0, 0, 2), (1, 1, 1)),
        ((math.nan, 0, 0), (1, 1, 1)),
        ((0, 0), (1, 1)),
    ],
)
def test_bad_world_bounds(lo: object, hi: object) -> None:
    with pytest.raises(GeometryError):
        WorldBounds(lo, hi)  # type: ignore[arg-type]


@given(st.tuples(coord, coord, coord))
def test_default_bounds_accept_exactly_the_addressable_points(
    p: tuple[float, float, float],
) -> None:
    # every point the default bounds accept maps to a key, and vice versa
    try:
        DEFAULT_BOUNDS.check_point(p)
    except GeometryError:
        with pytest.raises(GeometryError):
            region_of(*p)
    else:
        region_of(*p)
        DEFAULT_BOUNDS.check_points(np.array([p]))
        region_keys(np.array([p]))


def test_default_bounds_ends() -> None:
    DEFAULT_BOUNDS.check_point((WORLD_LO, WORLD_LO, WORLD_LO))
    DEFAULT_BOUNDS.check_point((BELOW_WORLD_HI,) * 3)
    with pytest.raises(GeometryError):
        DEFAULT_BOUNDS.check_point((WORLD_HI, 0.0, 0.0))
    with pytest.raises(GeometryError):
        DEFAULT_BOUNDS.check_points(np.array([[0.0, 0.0, 0.0], [0.0, WORLD_HI, 0.0]]))

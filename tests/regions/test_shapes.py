"""Query shapes: `as_vec3`, `Box`, `Sphere`, `as_shape`."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from regions import Box, GeometryError, Sphere, as_shape, as_vec3

TINY = Fraction(1, 10**290)
small = st.integers(-20, 20).map(float)  # exact arithmetic: tangencies are exact
coord = st.one_of(small, st.floats(-1e6, 1e6, allow_subnormal=False))
vec = st.tuples(coord, coord, coord)


@st.composite
def boxes(draw: st.DrawFn, c: st.SearchStrategy[float] = coord) -> Box:
    pairs = [sorted((draw(c), draw(c))) for _ in range(3)]
    return Box((pairs[0][0], pairs[1][0], pairs[2][0]), (pairs[0][1], pairs[1][1], pairs[2][1]))


# ---------------------------------------------------------------- as_vec3


@given(vec)
def test_as_vec3_accepts_sequences_and_arrays(v: tuple[float, float, float]) -> None:
    assert as_vec3(v) == v
    assert as_vec3(list(v)) == v
    assert as_vec3(np.array(v)) == v
    out = as_vec3((np.float64(v[0]), np.float32(1.5), np.int64(7)))
    assert out == (v[0], 1.5, 7.0)
    assert all(type(c) is float for c in out)


@pytest.mark.parametrize(
    "bad",
    [
        (1.0, 2.0),
        (1.0, 2.0, 3.0, 4.0),
        (math.nan, 0.0, 0.0),
        (0.0, math.inf, 0.0),
        (0.0, 0.0, -math.inf),
        (True, 0.0, 0.0),
        ("1", 0.0, 0.0),
        (None, 0.0, 0.0),
        (1j, 0.0, 0.0),
        "abc",
        b"abc",
        None,
        5.0,
        {1: 1, 2: 2, 3: 3},
        np.zeros(2),
        np.zeros((1, 3)),
        np.array([0.0, np.nan, 0.0]),
    ],
)
def test_as_vec3_rejects(bad: object) -> None:
    with pytest.raises(GeometryError, match="where"):
        as_vec3(bad, "where")


# ---------------------------------------------------------------- Box


@given(vec, vec)
def test_box_requires_lo_le_hi(
    a: tuple[float, float, float], b: tuple[float, float, float]
) -> None:
    if all(x <= y for x, y in zip(a, b, strict=True)):
        box = Box(a, b)
        assert box.lo == a and box.hi == b
        assert box.bbox == (*a, *b)
    else:
        with pytest.raises(GeometryError, match="exceeds"):
            Box(a, b)


def test_box_normalises_and_is_frozen() -> None:
    box = Box([0, 1, 2], np.array([3, 4, 5]))  # type: ignore[arg-type]
    assert box.lo == (0.0, 1.0, 2.0) and box.hi == (3.0, 4.0, 5.0)
    assert Box((1, 1, 1), (1, 1, 1)).bbox == (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)  # degenerate is fine
    assert hash(box) == hash(Box((0, 1, 2), (3, 4, 5)))
    with pytest.raises(AttributeError):
        box.lo = (0, 0, 0)  # type: ignore[misc]
    for lo, hi in [((math.nan, 0, 0), (1, 1, 1)), ((0, 0, 0), (1, 1)), ("abc", (1, 1, 1))]:
        with pytest.raises(GeometryError):
            Box(lo, hi)  # type: ignore[arg-type]


@given(boxes(small), boxes(small))
def test_box_intersects_is_closed_and_symmetric(a: Box, b: Box) -> None:
    want = all(
        a.lo[i] <= b.hi[i] and b.lo[i] <= a.hi[i] for i in range(3)
    )  # closed: touching faces count
    assert a.intersects(b) == want
    assert b.intersects(a) == want
    # brute force on the integer grid: a shared lattice point exists iff they intersect
    shared = all(
        max(math.ceil(a.lo[i]), math.ceil(b.lo[i])) <= min(math.floor(a.hi[i]), math.floor(b.hi[i]))
        for i in range(3)
    )
    assert shared == want  # integer corners: intersecting boxes share a lattice point


@given(boxes(), vec)
def test_box_contains_point(box: Box, p: tuple[float, float, float]) -> None:
    want = all(box.lo[i] <= p[i] <= box.hi[i] for i in range(3))
    assert box.contains_point(p) == want
    assert box.contains_point(box.lo) and box.contains_point(box.hi)
    assert box.intersects(Box(p, p)) == want


# ---------------------------------------------------------------- Sphere


@pytest.mark.parametrize("r", [-1.0, -1e-300, math.nan, math.inf, -math.inf, True, "1", None])
def test_sphere_rejects_bad_radius(r: object) -> None:
    with pytest.raises(GeometryError, match="radius"):
        Sphere((0.0, 0.0, 0.0), r)  # type: ignore[arg-type]


def test_sphere_accepts_numbers() -> None:
    for r in (0, 0.0, 3, 2.5, np.float64(2.5), np.float32(2.5), np.int64(3), Fraction(5, 2)):
        s = Sphere((1, 2, 3), r)  # type: ignore[arg-type]
        assert type(s.radius) is float and s.radius == float(r)
        assert s.center == (1.0, 2.0, 3.0)
    with pytest.raises(GeometryError):
        Sphere((0, 0), 1.0)  # type: ignore[arg-type]


@given(vec, st.floats(0, 1e6, allow_subnormal=False))
def test_sphere_box(c: tuple[float, float, float], r: float) -> None:
    box = Sphere(c, r).box
    assert box.lo == (c[0] - r, c[1] - r, c[2] - r)
    assert box.hi == (c[0] + r, c[1] + r, c[2] + r)
    assert box.contains_point(c)


@given(st.tuples(small, small, small), st.integers(0, 30).map(float), boxes(small))
def test_sphere_intersects_box_exact(c: tuple[float, float, float], r: float, box: Box) -> None:
    # exact distance from the centre to the closed box, in rationals
    d2 = sum(
        (Fraction(x) - min(max(Fraction(x), Fraction(lo)), Fraction(hi))) ** 2
        for x, lo, hi in zip(c, box.lo, box.hi, strict=True)
    )
    assert Sphere(c, r).intersects_box(box) == (d2 <= Fraction(r) ** 2)  # closed: tangent counts


@given(vec, st.floats(0, 1e5, allow_subnormal=False), boxes())
def test_sphere_intersects_box_floats(c: tuple[float, float, float], r: float, box: Box) -> None:
    d2 = sum(
        (Fraction(x) - min(max(Fraction(x), Fraction(lo)), Fraction(hi))) ** 2
        for x, lo, hi in zip(c, box.lo, box.hi, strict=True)
    )
    r2 = Fraction(r) ** 2
    hit = Sphere(c, r).intersects_box(box)
    if d2 < r2 * Fraction(999_999, 1_000_000):
        assert hit
    elif d2 > r2 * Fraction(1_000_001, 1_000_000) + TINY:  # squares of ~1e-160 underflow
        assert not hit
    if box.contains_point(c):
        assert hit


# ---------------------------------------------------------------- as_shape


def test_as_shape() -> None:
    box = Box((0, 0, 0), (1, 1, 1))
    sphere = Sphere((0, 0, 0), 1.0)
    assert as_shape(box) is box
    assert as_shape(sphere) is sphere
    assert as_shape(((0, 0, 0), (1, 1, 1))) == box
    assert as_shape([[0, 0, 0], [1, 1, 1]]) == box
    assert as_shape((np.zeros(3), np.ones(3))) == box
    for bad in [None, "ab", (1, 2, 3), ((1, 1, 1), (0, 0, 0)), ((0, 0, 0),), 5, {"lo": 1}]:
        with pytest.raises(GeometryError):
            as_shape(bad)

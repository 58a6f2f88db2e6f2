"""`regions.morton.box_ranges`: Morton ranges covering an index box (checked by brute force)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regions import GeometryError
from regions import morton as m

axis = st.integers(-40, 40)


def _box(a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[tuple[int, ...], ...]:
    lo = tuple(min(x, y) for x, y in zip(a, b, strict=True))
    hi = tuple(max(x, y) for x, y in zip(a, b, strict=True))
    return lo, hi


@given(st.tuples(axis, axis, axis), st.tuples(axis, axis, axis), st.integers(1, 64))
def test_ranges_cover_every_code_of_the_box_and_respect_the_budget(
    a: tuple[int, int, int], b: tuple[int, int, int], budget: int
) -> None:
    lo, hi = _box(a, b)
    ranges = m.box_ranges(lo, hi, max_ranges=budget)  # type: ignore[arg-type]
    assert 1 <= len(ranges) <= budget
    assert ranges == sorted(ranges)
    for (_, last), (first, _) in itertools.pairwise(ranges):
        assert first > last + 1, "ranges are disjoint and not adjacent"
    for x in range(lo[0], hi[0] + 1):
        for y in range(lo[1], hi[1] + 1):
            for z in range(lo[2], hi[2] + 1):
                c = m.encode(x, y, z)
                assert any(f <= c <= t for f, t in ranges), (x, y, z)


@given(st.tuples(axis, axis, axis), st.tuples(axis, axis, axis))
def test_a_generous_budget_covers_exactly_the_box(
    a: tuple[int, int, int], b: tuple[int, int, int]
) -> None:
    lo, hi = _box(a, b)
    n = 1
    for i in range(3):
        n *= hi[i] - lo[i] + 1
    ranges = m.box_ranges(lo, hi, max_ranges=n)  # type: ignore[arg-type]
    assert sum(t - f + 1 for f, t in ranges) == n, "no code outside the box"


def test_a_huge_box_is_a_few_ranges() -> None:
    ranges = m.box_ranges((-50, -50, -50), (49, 49, 49), max_ranges=32)
    assert len(ranges) <= 32
    assert m.in_box(m.encode(0, 0, 0), (-50, -50, -50), (49, 49, 49))
    assert not m.in_box(m.encode(50, 0, 0), (-50, -50, -50), (49, 49, 49))


def test_bad_input_raises() -> None:
    with pytest.raises(GeometryError):
        m.box_ranges((1, 0, 0), (0, 0, 0))
    with pytest.raises(GeometryError):
        m.box_ranges((0, 0, 0), (1, 1, 1), max_ranges=0)
    with pytest.raises(GeometryError):
        m.box_ranges((0, 0, 0), (m.AXIS_MAX + 1, 0, 0))

"""Morton codes: bijective over the whole key range, int64-safe, bit layout, locality."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regions import GeometryError, RegionKey
from regions.morton import (
    AXIS_BITS,
    AXIS_MAX,
    AXIS_MIN,
    AXIS_OFFSET,
    MORTON_MAX,
    decode,
    encode,
    encode_many,
)

# The costlier properties run a third of the profile's examples (10 at least).
FEW = settings(max_examples=max(10, settings().max_examples // 3))

INT64_MAX = 2**63 - 1

# the whole axis range, with its ends and the sign change weighted in
axis = st.one_of(
    st.integers(AXIS_MIN, AXIS_MAX),
    st.sampled_from([AXIS_MIN, AXIS_MIN + 1, -1, 0, 1, AXIS_MAX - 1, AXIS_MAX]),
)
triples = st.tuples(axis, axis, axis)
codes = st.one_of(st.integers(0, MORTON_MAX), st.sampled_from([0, 1, 7, 8, MORTON_MAX]))


def reference_encode(ix: int, iy: int, iz: int) -> int:
    """The documented layout, one bit at a time: bit ``3b + a`` is bit ``b`` of axis ``a``."""
    code = 0
    for a, v in enumerate((ix, iy, iz)):
        u = v + AXIS_OFFSET
        for b in range(AXIS_BITS):
            code |= ((u >> b) & 1) << (3 * b + a)
    return code


def test_constants() -> None:
    assert AXIS_MIN == -(2**20) and AXIS_MAX == 2**20 - 1
    assert MORTON_MAX == 2**63 - 1 == INT64_MAX
    assert encode(AXIS_MIN, AXIS_MIN, AXIS_MIN) == 0
    assert encode(AXIS_MAX, AXIS_MAX, AXIS_MAX) == MORTON_MAX


@given(triples)
def test_round_trip_over_whole_range(t: tuple[int, int, int]) -> None:
    code = encode(*t)
    assert type(code) is int
    assert 0 <= code <= INT64_MAX
    assert int(np.int64(code)) == code  # fits a signed 64-bit column
    assert decode(code) == t
    assert RegionKey(*t).morton == code
    assert RegionKey.from_morton(code) == RegionKey(*t)


@given(triples)
def test_matches_documented_bit_layout(t: tuple[int, int, int]) -> None:
    assert encode(*t) == reference_encode(*t)


@given(codes)
def test_every_code_decodes_and_re_encodes(code: int) -> None:
    t = decode(code)
    assert all(AXIS_MIN <= v <= AXIS_MAX for v in t)
    assert encode(*t) == code


@given(codes)
def test_decode_accepts_numpy_integers(code: int) -> None:
    assert decode(np.int64(code)) == decode(code)  # type: ignore[arg-type]
    assert decode(np.uint64(code)) == decode(code)  # type: ignore[arg-type]


@FEW
@given(st.lists(triples, max_size=50))
def test_encode_many_matches_scalar(ts: list[tuple[int, int, int]]) -> None:
    arr = np.array(ts, dtype=np.int64).reshape(-1, 3)
    got = encode_many(arr)
    assert got.dtype == np.int64
    assert got.shape == (len(ts),)
    assert got.tolist() == [encode(*t) for t in ts]
    assert (got >= 0).all()


@FEW
@given(triples)
def test_encode_many_on_non_contiguous_input(t: tuple[int, int, int]) -> None:
    arr = np.array([t, t[::-1], t], dtype=np.int64)
    assert encode_many(arr[::2]).tolist() == [encode(*t)] * 2
    flipped = np.asfortranarray(arr)
    assert encode_many(flipped).tolist() == [encode(*r) for r in arr.tolist()]


@given(
    st.integers(AXIS_MIN // 2, AXIS_MAX // 2),
    st.integers(AXIS_MIN // 2, AXIS_MAX // 2),
    st.integers(AXIS_MIN // 2, AXIS_MAX // 2),
)
def test_aligned_2x2x2_block_has_consecutive_codes(hx: int, hy: int, hz: int) -> None:
    bx, by, bz = 2 * hx, 2 * hy, 2 * hz  # even, hence aligned (the offset 2**20 is even)
    children = [(bx + dx, by + dy, bz + dz) for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)]
    got = sorted(encode(*c) for c in children)
    base = encode(bx, by, bz)
    assert base % 8 == 0
    assert got == list(range(base, base + 8))
    # x is the lowest bit, then y, then z
    assert encode(bx + 1, by, bz) == base + 1
    assert encode(bx, by + 1, bz) == base + 2
    assert encode(bx, by, bz + 1) == base + 4


@given(st.integers(1, 3), st.data())
def test_aligned_blocks_of_any_level_are_contiguous(level: int, data: st.DataObject) -> None:
    side = 2**level
    lo, hi = AXIS_MIN // side, AXIS_MAX // side
    b = [data.draw(st.integers(lo, hi)) * side for _ in range(3)]
    cells = [
        encode(b[0] + dx, b[1] + dy, b[2] + dz)
        for dx in range(side)
        for dy in range(side)
        for dz in range(side)
    ]
    base = encode(*b)
    assert sorted(cells) == list(range(base, base + side**3))


@pytest.mark.parametrize(
    "bad",
    [-1, MORTON_MAX + 1, 2**64, -(2**63), True, False, 1.0, "5", None, np.float64(3.0)],
)
def test_decode_rejects(bad: object) -> None:
    with pytest.raises(GeometryError):
        decode(bad)  # type: ignore[arg-type]
    with pytest.raises(GeometryError):
        RegionKey.from_morton(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", [AXIS_MIN - 1, AXIS_MAX + 1, 2**40, True, 0.0, 1.5, "0", None, np.float32(1.0)]
)
@pytest.mark.parametrize("position", [0, 1, 2])
def test_encode_rejects(bad: object, position: int) -> None:
    args: list[object] = [0, 0, 0]
    args[position] = bad
    with pytest.raises(GeometryError):
        encode(*args)  # type: ignore[arg-type]

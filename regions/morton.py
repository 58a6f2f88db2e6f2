"""Signed 64-bit Morton (Z-order) codes for region indices.

Each axis index is a signed integer in ``[-2**20, 2**20)``; it is offset by ``2**20`` to a
21-bit unsigned value, and the three are bit-interleaved (x in bit 0, y in bit 1, z in bit 2,
then the next bit of each, ...) into 63 bits. Every code is therefore a non-negative value that
fits a signed 64-bit column (``BIGINT``/``INT8``), and regions near each other in space are near
each other in key order: a CockroachDB range holds a contiguous piece of the world.

Scalar and numpy-vectorised versions give identical results (tested by property).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from regions.errors import GeometryError

AXIS_BITS = 21
AXIS_OFFSET = 1 << (AXIS_BITS - 1)  # 2**20
AXIS_MIN = -AXIS_OFFSET
AXIS_MAX = AXIS_OFFSET - 1
MORTON_MAX = (1 << (3 * AXIS_BITS)) - 1

_M = [
    0x1FFFFF,
    0x1F00000000FFFF,
    0x1F0000FF0000FF,
    0x100F00F00F00F00F,
    0x10C30C30C30C30C3,
    0x1249249249249249,
]


def _spread(v: int) -> int:
    v &= _M[0]
    v = (v | (v << 32)) & _M[1]
    v = (v | (v << 16)) & _M[2]
    v = (v | (v << 8)) & _M[3]
    v = (v | (v << 4)) & _M[4]
    v = (v | (v << 2)) & _M[5]
    return v


def _compact(v: int) -> int:
    v &= _M[5]
    v = (v ^ (v >> 2)) & _M[4]
    v = (v ^ (v >> 4)) & _M[3]
    v = (v ^ (v >> 8)) & _M[2]
    v = (v ^ (v >> 16)) & _M[1]
    v = (v ^ (v >> 32)) & _M[0]
    return v


def check_axis(ix: int, name: str = "index") -> int:
    """Return ``ix`` if it is an int within the Morton axis range, else raise."""
    if isinstance(ix, bool) or not isinstance(ix, (int, np.integer)):
        raise GeometryError(f"region {name} must be an int, got {type(ix).__name__}")
    ix = int(ix)
    if not AXIS_MIN <= ix <= AXIS_MAX:
        raise GeometryError(f"region {name} {ix} is outside [{AXIS_MIN}, {AXIS_MAX}]")
    return ix


def encode(ix: int, iy: int, iz: int) -> int:
    """Morton code of one region index triple."""
    ix, iy, iz = check_axis(ix, "ix"), check_axis(iy, "iy"), check_axis(iz, "iz")
    return (
        _spread(ix + AXIS_OFFSET)
        | (_spread(iy + AXIS_OFFSET) << 1)
        | (_spread(iz + AXIS_OFFSET) << 2)
    )


def decode(code: int) -> tuple[int, int, int]:
    """Inverse of :func:`encode`."""
    if isinstance(code, bool) or not isinstance(code, (int, np.integer)):
        raise GeometryError(f"Morton code must be an int, got {type(code).__name__}")
    code = int(code)
    if not 0 <= code <= MORTON_MAX:
        raise GeometryError(f"Morton code {code} is outside [0, {MORTON_MAX}]")
    return (
        _compact(code) - AXIS_OFFSET,
        _compact(code >> 1) - AXIS_OFFSET,
        _compact(code >> 2) - AXIS_OFFSET,
    )


# Spread tables for the batch encoder: two lookups in small tables (16 KiB + 8 KiB, pre-shifted
# per axis) take half the array passes of five shift-or-mask rounds, and run ~2x faster.
_LO_BITS = 11
_SPREAD_LO = np.array([_spread(i) for i in range(1 << _LO_BITS)], dtype=np.uint64)
_SPREAD_HI = np.array(
    [_spread(i << _LO_BITS) for i in range(1 << (AXIS_BITS - _LO_BITS))], dtype=np.uint64
)
_TABLES = tuple((_SPREAD_LO << np.uint64(a), _SPREAD_HI << np.uint64(a)) for a in range(3))


def encode_many(indices: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Morton codes of an ``(N, 3)`` array of region indices (already range-checked)."""
    n = len(indices)
    code = np.zeros(n, dtype=np.uint64)
    part = np.empty(n, dtype=np.uint64)
    for axis, (lo_table, hi_table) in enumerate(_TABLES):
        u = np.add(indices[:, axis], AXIS_OFFSET, dtype=np.intp)
        hi = u >> _LO_BITS
        hi &= (1 << (AXIS_BITS - _LO_BITS)) - 1  # masks like _spread: never an out-of-range take
        u &= (1 << _LO_BITS) - 1
        np.take(lo_table, u, out=part, mode="clip")  # in range: clip skips the bounds check
        code |= part
        np.take(hi_table, hi, out=part, mode="clip")
        code |= part
    return code.view(np.int64)


def box_ranges(
    lo: tuple[int, int, int], hi: tuple[int, int, int], *, max_ranges: int = 32
) -> list[tuple[int, int]]:
    """Inclusive Morton ranges ``[(first, last), ...]`` whose union holds every code of the
    index box ``lo..hi`` (inclusive on each axis), sorted, disjoint and not adjacent.

    The box is cut into aligned octree cubes (each one contiguous run of codes), level by
    level, until cutting further would exceed ``max_ranges``; cubes still only partly inside
    the box are then kept whole. So the union may hold codes outside the box (a caller
    scanning a table filters them with `decode`), but never misses one inside it, and the
    number of ranges never exceeds ``max_ranges``. Cost: O(max_ranges) cubes per level.
    """
    if isinstance(max_ranges, bool) or not isinstance(max_ranges, int) or max_ranges < 1:
        raise GeometryError(f"max_ranges must be an int >= 1, got {max_ranges!r}")
    a = [check_axis(v, "lo index") + AXIS_OFFSET for v in lo]
    b = [check_axis(v, "hi index") + AXIS_OFFSET for v in hi]
    if any(x > y for x, y in zip(a, b, strict=True)):
        raise GeometryError(f"box lo {tuple(lo)} exceeds hi {tuple(hi)} on some axis")
    level = max((x ^ y).bit_length() for x, y in zip(a, b, strict=True))
    origin = tuple(x >> level << level for x in a)

    def code(p: tuple[int, ...]) -> int:
        return _spread(p[0]) | (_spread(p[1]) << 1) | (_spread(p[2]) << 2)

    def whole(p: tuple[int, ...], lv: int) -> tuple[int, int]:
        first = code(p)
        return first, first + (1 << (3 * lv)) - 1

    done: list[tuple[int, int]] = []
    partial: list[tuple[int, ...]] = [origin]
    while partial:
        side = 1 << level
        rest = []
        for p in partial:
            if all(x >= lo_ and x + side - 1 <= hi_ for x, lo_, hi_ in zip(p, a, b, strict=True)):
                done.append(whole(p, level))
            else:
                rest.append(p)
        if not rest:
            break
        if level == 0:  # unreachable: a single cell meeting the box lies inside it
            done.extend(whole(p, level) for p in rest)
            break
        half = 1 << (level - 1)
        children: list[tuple[int, ...]] = []
        for p in rest:
            for dz in (0, half):
                for dy in (0, half):
                    for dx in (0, half):
                        c = (p[0] + dx, p[1] + dy, p[2] + dz)
                        if all(
                            x <= hi_ and x + half - 1 >= lo_
                            for x, lo_, hi_ in zip(c, a, b, strict=True)
                        ):
                            children.append(c)
        if len(done) + len(children) > max_ranges:
            done.extend(whole(p, level) for p in rest)
            break
        level -= 1
        partial = children
    done.sort()
    merged: list[tuple[int, int]] = []
    for first, last in done:
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def in_box(code: int, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> bool:
    """True when the region of Morton ``code`` lies in the index box ``lo..hi``."""
    p = decode(code)
    return all(a <= x <= b for a, x, b in zip(lo, p, hi, strict=True))

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


def _spread_v(v: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    v = v & np.uint64(_M[0])
    v = (v | (v << np.uint64(32))) & np.uint64(_M[1])
    v = (v | (v << np.uint64(16))) & np.uint64(_M[2])
    v = (v | (v << np.uint64(8))) & np.uint64(_M[3])
    v = (v | (v << np.uint64(4))) & np.uint64(_M[4])
    v = (v | (v << np.uint64(2))) & np.uint64(_M[5])
    return v


def encode_many(indices: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Morton codes of an ``(N, 3)`` array of region indices (already range-checked)."""
    u = (indices + AXIS_OFFSET).astype(np.uint64)
    code = _spread_v(u[:, 0]) | (_spread_v(u[:, 1]) << np.uint64(1))
    code |= _spread_v(u[:, 2]) << np.uint64(2)
    return code.astype(np.int64)

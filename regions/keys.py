"""Region keys: which 2 km cube a point lies in, and which cubes a shape touches."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from regions import morton
from regions.errors import GeometryError
from regions.shapes import Box, Sphere, Vec3, as_vec3

REGION_SIZE = 2000.0
"""Edge of a region cube, in metres."""

DEFAULT_MAX_KEYS = 1_000_000
"""Box/sphere key enumeration refuses shapes that touch more regions than this."""


def _check_size(size: float) -> float:
    if isinstance(size, bool) or not isinstance(size, numbers.Real):  # numpy scalars too
        raise GeometryError(f"region size must be a number, got {type(size).__name__}")
    size = float(size)
    if not math.isfinite(size) or size <= 0:
        raise GeometryError(f"region size must be finite and > 0, got {size}")
    return size


@dataclass(frozen=True, slots=True, order=True)
class RegionKey:
    """One cubic region, by integer index on each axis: ``ix = floor(x / size)``."""

    ix: int
    iy: int
    iz: int

    def __post_init__(self) -> None:
        morton.check_axis(self.ix, "ix")
        morton.check_axis(self.iy, "iy")
        morton.check_axis(self.iz, "iz")
        # normalise numpy ints to Python ints so keys hash and compare as plain values
        object.__setattr__(self, "ix", int(self.ix))
        object.__setattr__(self, "iy", int(self.iy))
        object.__setattr__(self, "iz", int(self.iz))

    @property
    def morton(self) -> int:
        """The key's signed-64-bit-safe Morton (Z-order) code."""
        return morton.encode(self.ix, self.iy, self.iz)

    @classmethod
    def from_morton(cls, code: int) -> RegionKey:
        return cls(*morton.decode(code))

    def bounds_for(self, size: float = REGION_SIZE) -> tuple[Vec3, Vec3]:
        """``(lo, hi)`` corners of the cube for a given region size."""
        s = _check_size(size)
        lo = (self.ix * s, self.iy * s, self.iz * s)
        return lo, (lo[0] + s, lo[1] + s, lo[2] + s)

    @property
    def bounds(self) -> tuple[Vec3, Vec3]:
        """``(lo, hi)`` corners in metres for the default 2 km size."""
        return self.bounds_for(REGION_SIZE)

    def box(self, size: float = REGION_SIZE) -> Box:
        lo, hi = self.bounds_for(size)
        return Box(lo, hi)

    def neighbours(self, *, diagonal: bool = True) -> list[RegionKey]:
        """Adjacent keys (26 with ``diagonal``, else the 6 face neighbours), clipped to the key
        range, sorted by Morton code."""
        out = []
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for dz in (-1, 0, 1):
                    if (dx, dy, dz) == (0, 0, 0):
                        continue
                    if not diagonal and abs(dx) + abs(dy) + abs(dz) != 1:
                        continue
                    x, y, z = self.ix + dx, self.iy + dy, self.iz + dz
                    if all(morton.AXIS_MIN <= v <= morton.AXIS_MAX for v in (x, y, z)):
                        out.append(RegionKey(x, y, z))
        return sorted(out, key=lambda k: k.morton)

    def __str__(self) -> str:
        return f"({self.ix},{self.iy},{self.iz})"

    @classmethod
    def parse(cls, text: str) -> RegionKey:
        """Parse ``"ix,iy,iz"`` (optionally in parentheses) or a decimal Morton code."""
        if not isinstance(text, str):
            raise GeometryError(f"region key text must be a str, got {type(text).__name__}")
        t = text.strip().strip("()")
        try:
            if "," in t:
                parts = [int(p) for p in t.split(",")]
                if len(parts) != 3:
                    raise ValueError
                return cls(*parts)
            return cls.from_morton(int(t))
        except (ValueError, GeometryError) as e:
            raise GeometryError(
                f"cannot parse region key {text!r}: use 'ix,iy,iz' or a Morton code ({e})"
            ) from None


def as_region_key(value: Any) -> RegionKey:
    """Accept a `RegionKey`, an ``(ix, iy, iz)`` triple or a Morton code int."""
    if isinstance(value, RegionKey):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return RegionKey.from_morton(int(value))
    if isinstance(value, (tuple, list)) and len(value) == 3:
        return RegionKey(*value)
    raise GeometryError(
        f"expected a RegionKey, an (ix, iy, iz) triple or a Morton code, got {value!r:.80}"
    )


@dataclass(frozen=True, slots=True)
class WorldBounds:
    """The playable volume; positions outside it are refused.

    The default is the whole range the 21-bit-per-axis key space can address at 2 km
    (about ±2.1 million km per axis). Games narrow it in `worldstate.Config`.
    """

    lo: Vec3 = (
        morton.AXIS_MIN * REGION_SIZE,
        morton.AXIS_MIN * REGION_SIZE,
        morton.AXIS_MIN * REGION_SIZE,
    )
    hi: Vec3 = (
        (morton.AXIS_MAX + 1) * REGION_SIZE,
        (morton.AXIS_MAX + 1) * REGION_SIZE,
        (morton.AXIS_MAX + 1) * REGION_SIZE,
    )

    def __post_init__(self) -> None:
        lo, hi = as_vec3(self.lo, "world lo"), as_vec3(self.hi, "world hi")
        if any(a >= b for a, b in zip(lo, hi, strict=True)):
            raise GeometryError(f"world bounds lo {lo} must be below hi {hi} on every axis")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    def check_point(self, p: object, name: str = "position") -> Vec3:
        """Validate a point: 3 finite numbers inside ``[lo, hi)``."""
        v = as_vec3(p, name)
        for c, lo, hi in zip(v, self.lo, self.hi, strict=True):
            if not lo <= c < hi:
                raise GeometryError(f"{name} {v} is outside the world bounds {self.lo}..{self.hi}")
        return v

    def check_box(self, box: Box, name: str = "box") -> Box:
        for lo, hi, wlo, whi in zip(box.lo, box.hi, self.lo, self.hi, strict=True):
            if lo < wlo or hi > whi:
                raise GeometryError(
                    f"{name} {box.lo}..{box.hi} is outside the world bounds {self.lo}..{self.hi}"
                )
        return box

    def check_points(self, positions: npt.NDArray[Any], name: str = "positions") -> None:
        """Validate an ``(N, 3)`` array: finite and inside ``[lo, hi)``."""
        lo = np.asarray(self.lo)
        hi = np.asarray(self.hi)
        ok = np.isfinite(positions).all(axis=1)
        ok &= (positions >= lo).all(axis=1) & (positions < hi).all(axis=1)
        if not ok.all():
            bad = int(np.flatnonzero(~ok)[0])
            raise GeometryError(
                f"{name}[{bad}] = {positions[bad].tolist()} is non-finite or outside the "
                f"world bounds {self.lo}..{self.hi}"
            )


DEFAULT_BOUNDS = WorldBounds()


def _axis_index(c: float, size: float) -> int:
    i = math.floor(c / size)
    return morton.check_axis(i, "index")


def region_of(x: float, y: float, z: float, size: float = REGION_SIZE) -> RegionKey:
    """The region containing point ``(x, y, z)``."""
    p = as_vec3((x, y, z), "position")
    s = _check_size(size)
    try:
        return RegionKey(_axis_index(p[0], s), _axis_index(p[1], s), _axis_index(p[2], s))
    except GeometryError:
        raise GeometryError(f"position {p} lies outside the addressable key range") from None


def region_indices(positions: npt.ArrayLike, size: float = REGION_SIZE) -> npt.NDArray[np.int64]:
    """``(N, 3)`` integer region indices of ``(N, 3)`` positions (validated)."""
    s = _check_size(size)
    try:
        arr = np.asarray(positions, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise GeometryError(f"positions must be an (N, 3) array of numbers ({e})") from None
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise GeometryError(f"positions must have shape (N, 3), got {arr.shape}")
    idx = arr / s
    np.floor(idx, out=idx)
    # one pass each for min and max: NaN propagates and fails both tests, as does inf
    if idx.size and not (idx.min() >= morton.AXIS_MIN and idx.max() <= morton.AXIS_MAX):
        finite = np.isfinite(arr).all(axis=1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise GeometryError(f"positions[{bad}] = {arr[bad].tolist()} is not finite")
        outside = ((idx < morton.AXIS_MIN) | (idx > morton.AXIS_MAX)).any(axis=1)
        bad = int(np.flatnonzero(outside)[0])
        raise GeometryError(
            f"positions[{bad}] = {arr[bad].tolist()} lies outside the addressable key range"
        )
    return idx.astype(np.int64)


def region_keys(positions: npt.ArrayLike, size: float = REGION_SIZE) -> npt.NDArray[np.int64]:
    """Morton codes (int64) of the regions of ``(N, 3)`` positions, vectorised."""
    return morton.encode_many(region_indices(positions, size))


def _index_range(lo: float, hi: float, size: float) -> range:
    a = max(math.floor(lo / size), morton.AXIS_MIN)
    b = min(math.floor(hi / size), morton.AXIS_MAX)
    return range(a, b + 1)


def keys_in_box(
    lo: object, hi: object, size: float = REGION_SIZE, *, max_keys: int = DEFAULT_MAX_KEYS
) -> list[RegionKey]:
    """Every region the closed box ``[lo, hi]`` touches, sorted by Morton code."""
    box = Box(as_vec3(lo, "box lo"), as_vec3(hi, "box hi"))
    s = _check_size(size)
    rx, ry, rz = (_index_range(box.lo[i], box.hi[i], s) for i in range(3))
    n = len(rx) * len(ry) * len(rz)
    if n > max_keys:
        raise GeometryError(f"box touches {n} regions, more than the limit {max_keys}")
    keys = [RegionKey(x, y, z) for x in rx for y in ry for z in rz]
    return sorted(keys, key=lambda k: k.morton)


def _sphere_touches_region(sphere: Sphere, cube: Box) -> bool:
    """Does the closed sphere share a point with the half-open cube ``[lo, hi)``?

    Within reach (``d < r``) it always does. At exactly ``d == r`` the only point shared with
    the closed cube is its nearest one, which the region owns unless it lies on an upper face.
    Clear cases are settled in floats; near-ties (and tiny radii) exactly, in rationals."""
    d2 = 0.0
    for c, lo, hi in zip(sphere.center, cube.lo, cube.hi, strict=True):
        d2 += (c - min(max(c, lo), hi)) ** 2
    r2 = sphere.radius * sphere.radius
    if r2 > 1e-290:  # no underflow: the float error is below 1e-14 relative
        if d2 < r2 * (1 - 1e-12):
            return True
        if d2 > r2 * (1 + 1e-12):
            return False
    ed2 = Fraction(0)
    on_upper_face = False
    for c, lo, hi in zip(sphere.center, cube.lo, cube.hi, strict=True):
        ec, elo, ehi = Fraction(c), Fraction(lo), Fraction(hi)
        q = min(max(ec, elo), ehi)
        ed2 += (ec - q) ** 2
        on_upper_face = on_upper_face or q == ehi
    er2 = Fraction(sphere.radius) ** 2
    return ed2 < er2 or (ed2 == er2 and not on_upper_face)


def _sphere_index_range(c: float, r: float, size: float) -> range:
    lo = c - r
    a = math.floor(lo / size)
    # ``c - r`` may have rounded up onto a face, hiding the region just below it
    if a * size >= lo and Fraction(c) - Fraction(r) < Fraction(a * size):
        a -= 1
    b = math.floor((c + r) / size)  # rounding up here only adds a region the test drops
    return range(max(a, morton.AXIS_MIN), min(b, morton.AXIS_MAX) + 1)


def keys_in_sphere(
    center: object, radius: float, size: float = REGION_SIZE, *, max_keys: int = DEFAULT_MAX_KEYS
) -> list[RegionKey]:
    """Every region holding at least one point of the (closed) sphere, sorted by Morton code.

    A region owns the half-open cube ``[lo, hi)`` (as `region_of` assigns points), so a sphere
    that only grazes a cube's upper face, edge or corner does not touch that region; one that
    grazes its lower face does (same rule as `keys_in_box`)."""
    sphere = Sphere(as_vec3(center, "sphere center"), radius)
    s = _check_size(size)
    rx, ry, rz = (_sphere_index_range(c, sphere.radius, s) for c in sphere.center)
    n = len(rx) * len(ry) * len(rz)
    if n > max_keys:
        raise GeometryError(f"sphere touches up to {n} regions, more than the limit {max_keys}")
    out = []
    for x in rx:
        for y in ry:
            for z in rz:
                k = RegionKey(x, y, z)
                if _sphere_touches_region(sphere, k.box(s)):
                    out.append(k)
    return sorted(out, key=lambda k: k.morton)


def keys_of_shape(
    shape: Box | Sphere, size: float = REGION_SIZE, *, max_keys: int = DEFAULT_MAX_KEYS
) -> list[RegionKey]:
    if isinstance(shape, Sphere):
        return keys_in_sphere(shape.center, shape.radius, size, max_keys=max_keys)
    return keys_in_box(shape.lo, shape.hi, size, max_keys=max_keys)

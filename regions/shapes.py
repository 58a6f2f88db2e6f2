"""Query shapes: axis-aligned boxes and spheres in world metres."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

from regions.errors import GeometryError

Vec3 = tuple[float, float, float]


_PLAIN = (float, int)


def as_vec3(value: object, name: str = "point") -> Vec3:
    """Validate and convert a 3-sequence of finite real numbers to a float tuple."""
    if type(value) is tuple and len(value) == 3:
        x, y, z = value
        if type(x) in _PLAIN and type(y) in _PLAIN and type(z) in _PLAIN:  # the common case
            fx, fy, fz = float(x), float(y), float(z)
            if math.isfinite(fx) and math.isfinite(fy) and math.isfinite(fz):
                return (fx, fy, fz)
            raise GeometryError(f"{name} has a non-finite coordinate: {value!r}")
    return _as_vec3_slow(value, name)


def _as_vec3_slow(value: object, name: str) -> Vec3:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        try:
            import numpy as np

            if isinstance(value, np.ndarray) and value.shape == (3,):
                value = value.tolist()
            else:
                raise TypeError
        except TypeError:
            raise GeometryError(
                f"{name} must be a sequence of 3 numbers, got {type(value).__name__}"
            ) from None
    assert isinstance(value, Sequence)
    if len(value) != 3:
        raise GeometryError(f"{name} must have 3 coordinates, got {len(value)}")
    out = []
    for c in value:
        if isinstance(c, bool) or not isinstance(c, numbers.Real):
            raise GeometryError(f"{name} coordinates must be numbers, got {type(c).__name__}")
        f = float(c)
        if not math.isfinite(f):
            raise GeometryError(f"{name} has a non-finite coordinate: {value!r}")
        out.append(f)
    return (out[0], out[1], out[2])


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box ``lo <= p <= hi`` (metres); ``lo`` must not exceed ``hi``."""

    lo: Vec3
    hi: Vec3

    def __post_init__(self) -> None:
        lo = as_vec3(self.lo, "box lo")
        hi = as_vec3(self.hi, "box hi")
        if any(a > b for a, b in zip(lo, hi, strict=True)):
            raise GeometryError(f"box lo {lo} exceeds hi {hi} on some axis")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    @property
    def bbox(self) -> tuple[float, float, float, float, float, float]:
        """Interleaved bounds ``(minx, miny, minz, maxx, maxy, maxz)`` as rtree takes them."""
        return (*self.lo, *self.hi)

    def intersects(self, other: Box) -> bool:
        return all(
            a_lo <= b_hi and b_lo <= a_hi
            for a_lo, a_hi, b_lo, b_hi in zip(self.lo, self.hi, other.lo, other.hi, strict=True)
        )

    def contains_point(self, p: Vec3) -> bool:
        return all(lo <= c <= hi for lo, c, hi in zip(self.lo, p, self.hi, strict=True))


@dataclass(frozen=True, slots=True)
class Sphere:
    """A solid sphere (metres); ``radius`` must be finite and non-negative."""

    center: Vec3
    radius: float

    def __post_init__(self) -> None:
        c = as_vec3(self.center, "sphere center")
        r = self.radius
        if isinstance(r, bool) or not isinstance(r, numbers.Real):  # numpy scalars too
            raise GeometryError(f"sphere radius must be a number, got {type(r).__name__}")
        r = float(r)
        if not math.isfinite(r) or r < 0:
            raise GeometryError(f"sphere radius must be finite and >= 0, got {r}")
        object.__setattr__(self, "center", c)
        object.__setattr__(self, "radius", r)

    @property
    def box(self) -> Box:
        """The sphere's bounding box."""
        r = self.radius
        c = self.center
        return Box((c[0] - r, c[1] - r, c[2] - r), (c[0] + r, c[1] + r, c[2] + r))

    def intersects_box(self, box: Box) -> bool:
        """True when the sphere and the box share at least one point."""
        d2 = 0.0
        for c, lo, hi in zip(self.center, box.lo, box.hi, strict=True):
            q = min(max(c, lo), hi)
            d2 += (c - q) ** 2
        return d2 <= self.radius * self.radius


Shape = Box | Sphere


def as_shape(value: object) -> Shape:
    """Accept a `Box`, a `Sphere`, or a plain ``(lo, hi)`` pair of 3-tuples (a box)."""
    if isinstance(value, (Box, Sphere)):
        return value
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) == 2:
        return Box(value[0], value[1])
    raise GeometryError(
        f"expected a Box, a Sphere or a (lo, hi) pair of 3-tuples, got {type(value).__name__}"
    )

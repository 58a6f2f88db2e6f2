"""Terrain merge: overlap groups of edits and the commutative sum of their deltas."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from conflicts._candidates import TerrainEdit, unique_candidates
from conflicts._errors import ConflictInputError, geometry_as_input_errors
from conflicts._overlap import Balls, join
from conflicts._policy import canonical_key
from regions import Vec3, as_vec3

F64 = npt.NDArray[np.float64]


def balls_of(edits: list[TerrainEdit]) -> Balls:
    n = len(edits)
    centers = np.array([e.center for e in edits], dtype=np.float64).reshape(n, 3)
    radii = np.array([e.radius for e in edits], dtype=np.float64).reshape(n)
    return Balls(centers, radii)


def _points(points: npt.ArrayLike) -> F64:
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConflictInputError("points must be numbers, shape (N, 3)") from None
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ConflictInputError(f"points must have shape (N, 3), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ConflictInputError("points contain non-finite coordinates")
    return arr


def _field(edits: tuple[TerrainEdit, ...], pts: F64) -> F64:
    # Summed in the canonical order of the edits, so the same set of edits gives the same
    # bits on every server, whatever order the edits arrived or were merged in.
    out = np.zeros(len(pts), dtype=np.float64)
    for e in edits:
        d = pts - np.asarray(e.center)
        inside = d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2] <= e.radius * e.radius
        out += np.where(inside, e.delta, 0.0)
    return out


@dataclass(frozen=True, slots=True)
class TerrainGroup:
    """A connected set of overlapping edits (overlap is transitive within a group).

    ``edits`` in canonical order; ``lo``/``hi`` bound the union of their balls. Balls of
    distinct groups do not overlap, so each group's delta field can be applied on its own.
    """

    edits: tuple[TerrainEdit, ...]
    lo: Vec3
    hi: Vec3

    @property
    def op_ids(self) -> tuple[str, ...]:
        return tuple(e.op_id for e in self.edits)

    def delta_field(self, points: npt.ArrayLike) -> F64:
        """The group's summed density delta at each of ``points`` (shape (N, 3))."""
        return _field(self.edits, _points(points))


@dataclass(frozen=True, slots=True)
class TerrainMerge:
    """The merge of a set of terrain edits: every edit applies; deltas add.

    A value: equal sets of edits give equal merges. ``combine`` is commutative and
    associative (it merges the union of the edits), and the delta field at a point is the
    sum of the deltas of the edits whose closed ball contains the point, summed in canonical
    order — bit-identical on every server. ``groups`` are the overlap groups, ordered by their
    first edit in canonical order.
    """

    edits: tuple[TerrainEdit, ...]
    groups: tuple[TerrainGroup, ...] = field(compare=False)

    @property
    def op_ids(self) -> tuple[str, ...]:
        return tuple(e.op_id for e in self.edits)

    def combine(self, other: TerrainMerge) -> TerrainMerge:
        """The merge of both sets of edits."""
        if not isinstance(other, TerrainMerge):
            raise ConflictInputError(f"can only combine with a TerrainMerge, got {type(other)}")
        return merge_terrain(self.edits + other.edits)

    def delta_field(self, points: npt.ArrayLike) -> F64:
        """The summed density delta at each of ``points`` (shape (N, 3))."""
        return _field(self.edits, _points(points))

    def delta_at(self, point: object) -> float:
        """The summed density delta at one point."""
        with geometry_as_input_errors():
            p = as_vec3(point, "point")
        return float(_field(self.edits, np.array([p]))[0])


def _components(n: int, first: npt.NDArray[np.int64], second: npt.NDArray[np.int64]) -> list[int]:
    """Union-find root per index; roots are the smallest index of each component."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(first.tolist(), second.tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [find(i) for i in range(n)]


def terrain_groups(
    edits: list[TerrainEdit], first: npt.NDArray[np.int64], second: npt.NDArray[np.int64]
) -> tuple[TerrainGroup, ...]:
    """Overlap groups of ``edits`` (canonical order) given their overlapping index pairs."""
    roots = _components(len(edits), first, second)
    members: dict[int, list[TerrainEdit]] = {}
    for root, e in zip(roots, edits, strict=True):
        members.setdefault(root, []).append(e)
    groups = []
    for group in members.values():
        lo = tuple(min(e.center[ax] - e.radius for e in group) for ax in range(3))
        hi = tuple(max(e.center[ax] + e.radius for e in group) for ax in range(3))
        groups.append(TerrainGroup(tuple(group), (lo[0], lo[1], lo[2]), (hi[0], hi[1], hi[2])))
    return tuple(groups)


def merge_terrain(edits: Iterable[TerrainEdit], *, method: str = "rtree") -> TerrainMerge:
    """Merge terrain edits: all of them apply, none is lost; see `TerrainMerge`.

    A pure function of the set of edits (a repeated record counts once). ``method`` picks
    the overlap detector for the groups: ``"rtree"`` or the ``"pairwise"`` reference.
    """
    items = sorted(unique_candidates(edits, (TerrainEdit,), "merge_terrain"), key=canonical_key)
    first, second = join(balls_of(items), method)
    return TerrainMerge(tuple(items), terrain_groups(items, first, second))


def detect_terrain_overlaps(
    edits: Iterable[TerrainEdit], *, method: str = "rtree"
) -> list[tuple[str, str]]:
    """Pairs of op ids of edits whose balls share a point, each pair and the list sorted."""
    items = unique_candidates(edits, (TerrainEdit,), "detect_terrain_overlaps")
    first, second = join(balls_of(items), method)
    pairs = (
        tuple(sorted((items[i].op_id, items[j].op_id)))
        for i, j in zip(first.tolist(), second.tolist(), strict=True)
    )
    return sorted((a, b) for a, b in pairs)

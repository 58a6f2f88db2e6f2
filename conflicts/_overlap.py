"""Geometric overlap joins over a batch: the R-tree join and the pairwise reference.

Both joins apply the same exact predicate to candidate pairs, so they return the same
pairs, bit for bit; they differ only in how candidate pairs are found.

The R-tree join (`self_join`) orders the batch in sort-tile order, cuts it into runs of
`CLUSTER_SIZE` consecutive boxes, bulk-loads the runs' bounding boxes into a
`regions.SpatialIndex` and queries it with the same boxes (one vectorised
``intersection_many`` call). For each pair of intersecting runs, only the members that
touch the other run's box are paired, and those pairs are tested exactly with numpy.
Querying per run rather than per object keeps the number of R-tree queries (the costly
part of libspatialindex, some tens of microseconds each) small; the candidate pairs remain
a superset of the overlapping ones because each box lies inside its run's box.

Pairs are index pairs ``(i, j)`` with ``i < j`` into the arrays given, sorted.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from conflicts._errors import ConflictInputError, geometry_as_input_errors
from regions import SpatialIndex

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

CLUSTER_SIZE = 16
"""Boxes per run in the R-tree join (measured best on 10k-structure batches)."""

PAIRWISE_BLOCK = 256
"""Rows per block in the pairwise join (bounds its temporaries to 256 x n)."""

_EMPTY = np.empty(0, dtype=np.int64)


class Geometry(Protocol):
    """A batch of shapes with its exact overlap predicate, evaluated two ways that agree
    element for element: on index pairs (R-tree candidates) and on row blocks (pairwise)."""

    lo: F64
    hi: F64
    """Bounding boxes (for balls, padded outward; see `sphere_bounds`)."""

    def test(self, a: I64, b: I64) -> Mask:
        """Whether shapes ``a[k]`` and ``b[k]`` overlap, for each k."""
        ...

    def block(self, s: int, e: int) -> Mask:
        """``(e - s, n - s)`` matrix: whether shape ``s + r`` overlaps shape ``s + c``."""
        ...


class Boxes:
    """Axis-aligned boxes; two overlap when they share interior volume:
    ``max(lo_a, lo_b) < min(hi_a, hi_b)`` on every axis (touching faces do not overlap)."""

    def __init__(self, lo: F64, hi: F64) -> None:
        self.lo, self.hi = lo, hi

    def test(self, a: I64, b: I64) -> Mask:
        # axis by axis, each on the pairs still standing: most candidates fail early
        lo, hi = self.lo, self.hi
        alive = np.arange(len(a))
        for ax in (0, 1, 2):
            x, y = a[alive], b[alive]
            keep = np.maximum(lo[x, ax], lo[y, ax]) < np.minimum(hi[x, ax], hi[y, ax])
            alive = alive[keep]
        m: Mask = np.zeros(len(a), dtype=bool)
        m[alive] = True
        return m

    def block(self, s: int, e: int) -> Mask:
        m: Mask | None = None
        for ax in range(3):
            lo, hi = self.lo[:, ax], self.hi[:, ax]
            t = np.maximum(lo[s:e, None], lo[None, s:]) < np.minimum(hi[s:e, None], hi[None, s:])
            m = t if m is None else (m & t)
        assert m is not None
        return m


class Balls:
    """Closed balls; two overlap when they share a point: ``|c_a - c_b|^2 <= (r_a + r_b)^2``
    (squared distance summed x, y, z in that order, identically in both evaluations)."""

    def __init__(self, centers: F64, radii: F64) -> None:
        self.centers, self.radii = centers, radii
        self.lo, self.hi = sphere_bounds(centers, radii)

    def test(self, a: I64, b: I64) -> Mask:
        c, r = self.centers, self.radii
        dx, dy, dz = (c[a, ax] - c[b, ax] for ax in range(3))
        s = r[a] + r[b]
        m: Mask = dx * dx + dy * dy + dz * dz <= s * s
        return m

    def block(self, s: int, e: int) -> Mask:
        c, r = self.centers, self.radii
        dx, dy, dz = (c[s:e, None, ax] - c[None, s:, ax] for ax in range(3))
        t = r[s:e, None] + r[None, s:]
        m: Mask = dx * dx + dy * dy + dz * dz <= t * t
        return m


def sphere_bounds(centers: F64, radii: F64) -> tuple[F64, F64]:
    """Bounding boxes of balls, padded outward so that float rounding can never drop a
    pair the exact test accepts (padding only adds candidates, which the test removes)."""
    pad = (np.abs(centers).max(axis=1) + radii) * 1e-9 + 1e-12
    r = (radii + pad)[:, None]
    big = np.finfo(np.float64).max  # a ball reaching past the float range is clipped to it
    with np.errstate(over="ignore"):
        return np.clip(centers - r, -big, big), np.clip(centers + r, -big, big)


def tile_order(lo: F64, hi: F64, k: int) -> I64:
    """Sort-tile order of the boxes' centres (STR packing on the two widest axes): slabs
    along the widest axis, each sorted along the second, so that every run of ``k``
    consecutive boxes stays inside one slab and is compact. Deterministic (stable sorts)."""
    n = len(lo)
    centres = (lo + hi) * 0.5
    spread = centres.max(axis=0) - centres.min(axis=0)
    first, second = np.argsort(-spread, kind="stable")[:2]
    runs = -(-n // k)
    slabs = max(1, int(np.ceil(np.sqrt(runs))))
    per_slab = k * -(-runs // slabs)
    # sort each slab along the second axis in one row-wise argsort: the slabs are rows of a
    # matrix of second-axis centres (the last row padded with +inf, which sorts last)
    by_first = np.argsort(centres[:, first], kind="stable")
    rows = -(-n // per_slab)
    key = np.full(rows * per_slab, np.inf)
    key[:n] = centres[by_first, second]
    within = np.argsort(key.reshape(rows, per_slab), axis=1, kind="stable")
    pos = (within + (np.arange(rows) * per_slab)[:, None]).reshape(-1)
    order: I64 = by_first[pos[pos < n]].astype(np.int64)
    return order


class Runs:
    """A batch cut into runs of ``k`` consecutive boxes in sort-tile order, with run boxes."""

    def __init__(self, lo: F64, hi: F64, k: int = CLUSTER_SIZE) -> None:
        n = len(lo)
        self.n = n
        self.k = k
        self.perm = tile_order(lo, hi, k) if n else _EMPTY
        starts = np.arange(0, n, k)
        self.count = len(starts)
        if n:
            self.lo: F64 = np.minimum.reduceat(lo[self.perm], starts, axis=0)
            self.hi: F64 = np.maximum.reduceat(hi[self.perm], starts, axis=0)
        else:
            self.lo = self.hi = np.empty((0, 3))

    def members(self, runs: I64) -> tuple[I64, Mask]:
        """``(P, k)`` object indices of the given runs, and which of them exist."""
        slots = runs[:, None] * self.k + np.arange(self.k)[None, :]
        valid = slots < self.n
        return self.perm[np.where(valid, slots, 0)], valid


def _index_of(lo: F64, hi: F64) -> tuple[SpatialIndex[int], I64]:
    """A SpatialIndex over boxes ``0..n-1``, and the map from its handles to row numbers."""
    index: SpatialIndex[int] = SpatialIndex()
    n = len(lo)
    with geometry_as_input_errors():
        index.bulk_load(range(n), np.concatenate([lo, hi], axis=1))
    handles = np.array(list(map(index.handle_of, range(n))), dtype=np.int64).reshape(n)
    row_of = np.empty(int(handles.max()) + 1 if n else 0, dtype=np.int64)
    row_of[handles] = np.arange(n)
    return index, row_of


def _query(index: SpatialIndex[int], row_of: I64, lo: F64, hi: F64) -> tuple[I64, I64]:
    """All ``(query row, indexed row)`` pairs whose boxes intersect (closed boxes)."""
    with geometry_as_input_errors():
        hits, offsets = index.intersection_many(lo, hi)
    q = np.repeat(np.arange(len(lo), dtype=np.int64), np.diff(offsets))
    return q, row_of[hits]


def _touches(geom: Geometry, members: I64, runs: Runs, other: I64) -> Mask:
    """``(P, k)``: whether each member's box meets (closed) the box of run ``other[p]``."""
    m: Mask | None = None
    for ax in range(3):
        olo, ohi = runs.lo[other, ax][:, None], runs.hi[other, ax][:, None]
        t = (geom.lo[members, ax] <= ohi) & (olo <= geom.hi[members, ax])
        m = t if m is None else (m & t)
    assert m is not None
    return m


def _normalise(a: I64, b: I64) -> tuple[I64, I64]:
    i, j = np.minimum(a, b), np.maximum(a, b)
    order = np.lexsort((j, i))
    return i[order], j[order]


def self_join(geom: Geometry, k: int = CLUSTER_SIZE) -> tuple[I64, I64]:
    """Overlapping pairs of ``geom`` found through the R-tree (see the module docstring)."""
    n = len(geom.lo)
    if n < 2:
        return _EMPTY, _EMPTY
    runs = Runs(geom.lo, geom.hi, k)
    if runs.count == 1:  # the whole batch is one run: nothing to index
        ra = rb = np.zeros(1, dtype=np.int64)
    else:
        index, row_of = _index_of(runs.lo, runs.hi)
        ra, rb = _query(index, row_of, runs.lo, runs.hi)
        keep = ra <= rb
        ra, rb = ra[keep], rb[keep]
    ma, va = runs.members(ra)  # (P, k)
    mb, vb = runs.members(rb)
    # keep the members of each run that touch the other run's box (a member always touches
    # its own run's box); only pairs of such members can overlap
    ta = va & _touches(geom, ma, runs, rb)
    tb = vb & _touches(geom, mb, runs, ra)
    ar = np.arange(k)
    same = (ra == rb)[:, None, None]
    upper = (ar[:, None] < ar[None, :])[None, :, :]
    ok = ta[:, :, None] & tb[:, None, :] & (~same | upper)
    a = np.broadcast_to(ma[:, :, None], ok.shape)[ok]
    b = np.broadcast_to(mb[:, None, :], ok.shape)[ok]
    hit = geom.test(a, b)
    return _normalise(a[hit], b[hit])


def pairwise_join(geom: Geometry) -> tuple[I64, I64]:
    """The O(n^2) reference: every pair is tested, numpy-vectorised in blocks of rows."""
    n = len(geom.lo)
    out_i: list[I64] = []
    out_j: list[I64] = []
    for s in range(0, n, PAIRWISE_BLOCK):
        e = min(n, s + PAIRWISE_BLOCK)
        m = geom.block(s, e)
        m &= np.arange(s, e)[:, None] < np.arange(s, n)[None, :]
        r, c = np.nonzero(m)
        out_i.append(r.astype(np.int64) + s)
        out_j.append(c.astype(np.int64) + s)
    if not out_i:
        return _EMPTY, _EMPTY
    return _normalise(np.concatenate(out_i), np.concatenate(out_j))


def join(geom: Geometry, method: str) -> tuple[I64, I64]:
    """Overlapping pairs by ``method``: ``"rtree"`` (default everywhere) or ``"pairwise"``."""
    if method == "rtree":
        return self_join(geom)
    if method == "pairwise":
        return pairwise_join(geom)
    raise ConflictInputError(f"unknown detection method {method!r}; expected 'rtree' or 'pairwise'")


def index_hits(
    index: SpatialIndex[str], lo: F64, hi: F64, k: int = CLUSTER_SIZE
) -> list[tuple[int, str]]:
    """``(row, id)`` for every box ``lo[row]..hi[row]`` sharing interior volume with an entry
    of ``index`` (whose ids must be str), sorted. Queries the index once per run of ``k``."""
    n = len(lo)
    if n == 0 or len(index) == 0:
        return []
    runs = Runs(lo, hi, k)
    with geometry_as_input_errors():
        handles, offsets = index.intersection_many(runs.lo, runs.hi)
    if len(handles) == 0:
        return []
    run_of = np.repeat(np.arange(runs.count, dtype=np.int64), np.diff(offsets))
    uniq, inverse = np.unique(handles, return_inverse=True)
    ids = [index.id_of_handle(int(h)) for h in uniq]
    for sid in ids:
        if not isinstance(sid, str):
            raise ConflictInputError(f"committed structure ids must be str, got {sid!r}")
    boxes = np.array([index.bbox(sid) for sid in ids], dtype=np.float64).reshape(-1, 6)
    rows, valid = runs.members(run_of)  # (H, k)
    hit_row = rows[valid]
    hit_box = np.broadcast_to(inverse.reshape(-1)[:, None], rows.shape)[valid]
    clo, chi = boxes[hit_box, :3], boxes[hit_box, 3:]
    ok = np.maximum(lo[hit_row, 0], clo[:, 0]) < np.minimum(hi[hit_row, 0], chi[:, 0])
    for ax in (1, 2):
        ok &= np.maximum(lo[hit_row, ax], clo[:, ax]) < np.minimum(hi[hit_row, ax], chi[:, ax])
    pairs = {(int(r), ids[int(h)]) for r, h in zip(hit_row[ok], hit_box[ok], strict=True)}
    return sorted(pairs)

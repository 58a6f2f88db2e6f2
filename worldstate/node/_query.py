"""Spatial queries that follow the data.

Objects are stored in the region that holds their centre (`store_region` checks it; a
`PlaceStructure` is routed by its centre), and no object is larger than
``Config.max_structure_size`` on any axis. So an object meeting a query shape has its centre
within half that size (the *reach*) of the shape's bounding box: a query reads every region
its bounding box grown by the reach touches — the neighbour regions included — and
filters with each region's R-tree. A structure spanning x 1990..2008 is thus found from
both sides of the boundary at x 2000. (The other design, indexing each object under every
region it touches, would write an object into up to 8 regions; this one writes it once and
reads at most one ring of neighbours more.)

Cost follows data, not volume: when the grown box covers more than ``scan_regions``
regions, the store is asked which regions *exist* in it (a Morton-range scan, see
`worldstate.store.region_scan`), and only those are read, in Morton order, page by page.
With ``limit`` the query stops reading as soon as it has that many objects.

Pure planning (`plan_query`) plus one driver (`run_query`) over two narrow interfaces, so
the node's region views and the store plug in without a `World`.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from regions import Box, RegionKey, Shape, Sphere
from regions import morton as m
from worldstate.errors import ValidationError
from worldstate.objects import WorldObject
from worldstate.store.region_scan import StoredVersion

__all__ = [
    "QueryPlan",
    "QueryViews",
    "RegionDirectory",
    "check_limit",
    "plan_query",
    "run_query",
]

_PARALLEL = 16
"""Regions read at once by one query."""
_LIMITED_PAGE = 256
"""Stored regions listed per round trip by a query with a ``limit``."""


class QueryViews(Protocol):
    """The node's per-region views (a version and an R-tree per region)."""

    def stale(self, key: RegionKey, at_least: int | None) -> bool:
        """Whether the view of ``key`` must be refreshed: it is missing, older than
        ``at_least`` (when the store listed that version), or, without ``at_least``, older
        than the staleness bound. A current view may be marked as seen now."""

    async def refresh(self, key: RegionKey, at_least: int | None) -> None:
        """Make the view of ``key`` current (see `stale`)."""

    def absent(self, key: RegionKey) -> None:
        """The store holds no row for ``key``: remember it as empty (version 0), seen now."""

    def matches(self, key: RegionKey, shape: Shape) -> Sequence[WorldObject]:
        """The objects of the view of ``key`` meeting ``shape``, as stored."""


class RegionDirectory(Protocol):
    """Which regions the store holds (`worldstate.store.Store.regions_in_box`)."""

    async def regions_in_box(
        self, lo: RegionKey, hi: RegionKey, *, after: int = -1, limit: int = 1000
    ) -> tuple[list[StoredVersion], int | None]: ...


@dataclass(frozen=True, slots=True)
class QueryPlan:
    """The regions a query must consider: the index box ``lo..hi`` (inclusive)."""

    shape: Shape
    lo: RegionKey
    hi: RegionKey

    @property
    def count(self) -> int:
        """Regions in the index box."""
        return (
            (self.hi.ix - self.lo.ix + 1)
            * (self.hi.iy - self.lo.iy + 1)
            * (self.hi.iz - self.lo.iz + 1)
        )

    def region_keys(self) -> tuple[RegionKey, ...]:
        """Every key of the index box, in Morton order (call only for small boxes)."""
        lo, hi = self.lo, self.hi
        return _keys_between(lo.ix, lo.iy, lo.iz, hi.ix, hi.iy, hi.iz)


@functools.lru_cache(maxsize=4096)
def _keys_between(ax: int, ay: int, az: int, bx: int, by: int, bz: int) -> tuple[RegionKey, ...]:
    """The keys of a small index box in Morton order, memoised: game servers query the same
    neighbourhoods again and again, and building and sorting 27 keys is most of the cost
    of a query answered from views."""
    keys = [
        RegionKey(x, y, z)
        for x in range(ax, bx + 1)
        for y in range(ay, by + 1)
        for z in range(az, bz + 1)
    ]
    return tuple(sorted(keys, key=lambda k: k.morton))


def _bbox(shape: Shape) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if isinstance(shape, Sphere):
        c, r = shape.center, shape.radius
        return tuple(v - r for v in c), tuple(v + r for v in c)
    assert isinstance(shape, Box)
    return shape.lo, shape.hi


def _index(v: float, size: float) -> int:
    return min(max(math.floor(v / size), m.AXIS_MIN), m.AXIS_MAX)


def plan_query(shape: Shape, *, region_size: float, reach: float) -> QueryPlan:
    """The index box of regions whose objects (centred in them, at most ``2 * reach``
    across) can meet ``shape``."""
    if not (math.isfinite(reach) and reach >= 0):
        raise ValidationError(f"query reach must be finite and >= 0, got {reach!r}")
    lo, hi = _bbox(shape)
    reach = reach * (1 + 1e-9) + 1e-3  # a millimetre more: float rounding of the centres
    a = [_index(v - reach, region_size) for v in lo]
    b = [_index(v + reach, region_size) for v in hi]
    return QueryPlan(shape, RegionKey(*a), RegionKey(*b))


def check_limit(limit: object) -> int | None:
    """``limit`` as given if it is None or an int >= 1, else `ValidationError`."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError(f"query limit must be None or an int >= 1, got {limit!r}")
    return limit


async def _all_in_box(
    plan: QueryPlan, directory: RegionDirectory, most: int
) -> list[StoredVersion]:
    """Every stored region of a small index box (at most ``most`` exist)."""
    found: list[StoredVersion] = []
    after = -1
    while True:
        page, resume = await directory.regions_in_box(plan.lo, plan.hi, after=after, limit=most + 1)
        found.extend(page)
        if resume is None:
            return found
        after = resume


async def run_query(
    plan: QueryPlan,
    views: QueryViews,
    directory: RegionDirectory,
    *,
    kinds: frozenset[str] | None,
    limit: int | None,
    scan_regions: int,
    max_regions: int,
) -> list[WorldObject]:
    """Objects meeting ``plan.shape`` (of ``kinds``, when given), ordered by region
    (Morton), then as stored; at most ``limit``.

    Without ``limit`` a big box may read at most ``max_regions`` stored regions: more raise
    `ValidationError` before anything is read (pass ``limit`` or a smaller box)."""
    out: list[WorldObject] = []
    seen: set[str] = set()

    async def read(batch: Sequence[tuple[RegionKey, int | None]]) -> bool:
        """Read a batch of regions and collect its matches; True once ``limit`` is met."""
        sem = asyncio.Semaphore(_PARALLEL)

        async def one(key: RegionKey, at_least: int | None) -> None:
            async with sem:
                await views.refresh(key, at_least)

        step = min(_PARALLEL, limit) if limit is not None else max(len(batch), 1)
        for i in range(0, len(batch), step):
            chunk = batch[i : i + step]
            todo = [(k, v) for k, v in chunk if views.stale(k, v)]
            if todo:
                await asyncio.gather(*(one(k, v) for k, v in todo))
            for key, _ in chunk:
                for o in views.matches(key, plan.shape):
                    if (kinds is not None and o.kind not in kinds) or o.id in seen:
                        continue
                    seen.add(o.id)
                    out.append(o)
                    if limit is not None and len(out) >= limit:
                        return True
        return False

    if plan.count <= scan_regions:
        keys = plan.region_keys()
        stale = [k for k in keys if views.stale(k, None)]
        if len(stale) <= 1:
            await read([(k, None) for k in keys])
            return out
        # several regions to re-read (the neighbours are often empty, and an empty region
        # is in no cache): one scan says which exist and at what version
        listed = {s.key: s.version for s in await _all_in_box(plan, directory, len(keys))}
        for k in stale:
            if k not in listed:
                views.absent(k)
        await read([(k, listed.get(k)) for k in keys])
        return out
    if limit is not None:  # read page by page, stop once enough was found
        after = -1
        while True:
            found, resume = await directory.regions_in_box(
                plan.lo, plan.hi, after=after, limit=_LIMITED_PAGE
            )
            if await read([(s.key, s.version) for s in found]) or resume is None:
                return out
            after = resume
    stored: list[StoredVersion] = []
    after = -1
    while True:  # list first, so that a refused query has read nothing
        found, resume = await directory.regions_in_box(
            plan.lo, plan.hi, after=after, limit=max_regions + 1
        )
        stored.extend(found)
        if len(stored) > max_regions:
            raise ValidationError(
                f"the query box holds more than {max_regions} stored regions "
                "(Config.max_query_regions); pass limit= or query a smaller box"
            )
        if resume is None:
            break
        after = resume
    await read([(s.key, s.version) for s in stored])
    return out

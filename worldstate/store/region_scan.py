"""Which regions exist in a box: a Morton-range scan of ``ws_regions``.

A box of region indices is covered by a few contiguous Morton ranges
(`regions.morton.box_ranges`), so "which stored regions lie in this box" is one indexed
range scan over the primary key, whatever the box's volume: a 200 km box over a sparse world
reads the handful of rows that exist, not a million keys. Rows in the ranges but outside the
box (the ranges may over-cover) are filtered here. Runs inside a caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from regions import RegionKey
from regions import morton as m
from worldstate.store import schema as s

__all__ = ["MAX_RANGES", "StoredVersion", "regions_in_box"]

MAX_RANGES = 32
"""Morton ranges per scan: more ranges over-cover less but make a longer predicate."""


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """A stored region and its current version."""

    key: RegionKey
    version: int


async def regions_in_box(
    conn: AsyncConnection,
    lo: RegionKey,
    hi: RegionKey,
    *,
    after: int = -1,
    limit: int = 1000,
) -> tuple[list[StoredVersion], int | None]:
    """Stored regions whose keys lie in the index box ``lo..hi`` (inclusive), in Morton
    order, starting after the Morton code ``after``; at most ``limit`` rows are scanned.

    Returns ``(found, resume)``: ``resume`` is the Morton code to pass as ``after`` for the
    next page, or None when the scan reached the end of the box."""
    lo_i, hi_i = (lo.ix, lo.iy, lo.iz), (hi.ix, hi.iy, hi.iz)
    ranges = m.box_ranges(lo_i, hi_i, max_ranges=MAX_RANGES)
    r = s.regions
    spans = [
        and_(r.c.region_key >= first, r.c.region_key <= last)
        for first, last in ranges
        if last > after
    ]
    if not spans:
        return [], None
    q = (
        select(r.c.region_key, r.c.version)
        .where(r.c.region_key > after, or_(*spans))
        .order_by(r.c.region_key)
        .limit(limit)
    )
    rows = (await conn.execute(q)).all()
    found = [
        StoredVersion(RegionKey.from_morton(int(row.region_key)), int(row.version))
        for row in rows
        if m.in_box(int(row.region_key), lo_i, hi_i)
    ]
    resume = int(rows[-1].region_key) if len(rows) == limit else None
    return found, resume

"""`RegionViews`: regions as this server last saw them — load and store through the cache
and the store, one bulk-loaded R-tree per region for queries (planned and driven by
`worldstate.node._query`: neighbours within reach, Morton-range scans for big boxes,
``limit``), staleness marks from the other servers' commit notices."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from regions import (
    Box,
    RegionKey,
    Shape,
    SpatialIndex,
    Sphere,
    as_region_key,
    as_shape,
)
from worldstate._codec import (
    CodecError,
    Columns,
    decode_cache_entry,
    decode_objects,
    encode_cache_entry,
    encode_objects,
)
from worldstate._validation import KindRule, check_kind_filter, check_region_objects, geometry
from worldstate.bus import Message
from worldstate.errors import ValidationError
from worldstate.node._context import NodeContext
from worldstate.node._fanout import Fanout
from worldstate.node._query import check_limit, plan_query, run_query
from worldstate.objects import RegionSnapshot, WorldObject
from worldstate.protocol import _topics as topics
from worldstate.updates import RegionChanged

__all__ = ["RegionViews"]

log = logging.getLogger("worldstate")

NOTICE_TOPIC = topics.NOTICES
"""Strong-commit notices go to ``notice/{morton}``: ``{"v": version, "s": sender}``."""


@dataclass
class _RegionView:
    """A region as this server last saw it, with its own R-tree (bulk-loaded)."""

    version: int
    loaded_at: float
    index: SpatialIndex[int]
    objects: Sequence[WorldObject]


class RegionViews:
    """Region load/store/query for one server (see the module docs)."""

    def __init__(self, ctx: NodeContext, fanout: Fanout, kinds: KindRule) -> None:
        self.ctx = ctx
        self.fanout = fanout
        self.kinds = kinds
        self._view: dict[RegionKey, _RegionView] = {}
        self.recoveries = 0
        self.dropped_notices = 0

    # -- load / store ----------------------------------------------------------------------

    async def load(self, key: RegionKey, *, consistent: bool = True) -> RegionSnapshot:
        """The region's state. ``consistent=True`` reads the store (the truth, linearizable
        with `store`); ``consistent=False`` may be served from the cache (possibly a little
        stale, never older than a version some server stored)."""
        ctx = self.ctx
        if not consistent:
            cached = await self._from_cache(key)
            if cached is not None:
                self._index(cached)
                return cached
        result = await ctx.store.load_region(key)
        if result.recovered_from is not None:
            self.recoveries += 1
        snap = result.snapshot
        if snap.version > 0:
            await ctx.cache.put(
                key.morton,
                snap.version,
                encode_cache_entry(snap.epoch, snap.owner, snap.stored_at, result.payload),
            )
        self._index(snap)
        return snap

    async def _from_cache(self, k: RegionKey) -> RegionSnapshot | None:
        got = await self.ctx.cache.get(k.morton)
        if got is None:
            return None
        try:
            epoch, owner, stored_at, payload = decode_cache_entry(got.payload)
            objects = decode_objects(payload)
        except CodecError as e:
            log.warning("cache entry for region %s is unreadable (%s); dropping it", k, e)
            await self.ctx.cache.invalidate(k.morton)
            return None
        return RegionSnapshot(k, got.version, owner, epoch, objects, stored_at)

    async def store(self, snapshot: RegionSnapshot, *, expected_version: int | None) -> int:
        """Write the snapshot's objects as the region's next version; returns it (see
        `World.store_region` for the write modes and fencing)."""
        if not isinstance(snapshot, RegionSnapshot):
            raise ValidationError(f"expected a RegionSnapshot, got {type(snapshot).__name__}")
        if expected_version is not None and (
            isinstance(expected_version, bool)
            or not isinstance(expected_version, int)
            or expected_version < 0
        ):
            raise ValidationError(
                f"expected_version must be None or an int >= 0, got {expected_version!r}"
            )
        if (
            isinstance(snapshot.epoch, bool)
            or not isinstance(snapshot.epoch, int)
            or snapshot.epoch < 0
        ):
            raise ValidationError(f"snapshot epoch must be an int >= 0, got {snapshot.epoch!r}")
        ctx = self.ctx
        c = ctx.config
        k: RegionKey = geometry(as_region_key, snapshot.key)
        objects = check_region_objects(
            k,
            snapshot.objects,
            region_size=c.region_size,
            bounds=c.world_bounds,
            kinds=self.kinds,
            max_objects=c.max_objects_per_region,
            max_id_length=c.max_id_length,
            max_data_bytes=c.max_object_data_bytes,
        )
        for o in objects:  # queries reach neighbours by this bound (worldstate.node._query)
            size = max(h - lo for lo, h in zip(o.lo, o.hi, strict=True))
            if size > c.max_structure_size:
                raise ValidationError(
                    f"object {o.id!r} is {size:.1f} m across; the limit is "
                    f"{c.max_structure_size} m (Config.max_structure_size)"
                )
        payload = encode_objects(objects)
        if len(payload) > c.max_snapshot_bytes:
            raise ValidationError(
                f"region {k} snapshot is {len(payload)} bytes; the limit is {c.max_snapshot_bytes}"
            )
        version = await ctx.store.store_region(
            k,
            objects,
            expected_version=expected_version,
            epoch=snapshot.epoch,
            writer=ctx.server_id,
            history_versions=c.history_versions,
        )
        stored = RegionSnapshot(k, version, ctx.server_id, snapshot.epoch, objects, ctx.clock())
        await ctx.cache.put(
            k.morton,
            version,
            encode_cache_entry(stored.epoch, stored.owner, stored.stored_at, payload),
        )
        self._index(stored)
        return version

    # -- staleness -------------------------------------------------------------------------

    def mark_stale(self, key: RegionKey) -> None:
        view = self._view.get(key)
        if view is not None:
            view.loaded_at = float("-inf")

    def on_notice(self, msg: Message) -> None:
        """A strong commit elsewhere changed a region: mark it stale, tell the streams."""
        try:
            morton = int(msg.topic.rsplit("/", 1)[1])
            key = RegionKey.from_morton(morton)
            doc = orjson.loads(msg.payload)
            version, sender = doc["v"], doc["s"]
            if not (isinstance(version, int) and isinstance(sender, str)):
                raise ValueError("bad notice")
        except (ValueError, KeyError, TypeError, IndexError, orjson.JSONDecodeError):
            self.dropped_notices += 1
            return
        if sender == self.ctx.server_id:
            return
        self.mark_stale(key)
        self.fanout.publish(key, RegionChanged(key, version, sender))

    # -- spatial queries -------------------------------------------------------------------

    def _index(self, snap: RegionSnapshot) -> None:
        """Remember the region for queries. A new version replaces the region's R-tree
        with a bulk-loaded one (far cheaper than per-object deletes); the same version
        only refreshes the time it was seen."""
        old = self._view.get(snap.key)
        now = self.ctx.clock()
        if old is not None and old.version >= snap.version:
            if old.version == snap.version:
                old.loaded_at = now
            return  # never go back to an older version
        index: SpatialIndex[int] = SpatialIndex()
        if snap.objects:
            objs = snap.objects
            boxes = objs.boxes if isinstance(objs, Columns) else [o.bbox for o in objs]
            index.bulk_load(range(len(objs)), boxes)
        self._view[snap.key] = _RegionView(snap.version, now, index, snap.objects)

    async def query(
        self,
        shape: Shape | tuple[Any, Any],
        kinds: Iterable[str] | None = None,
        *,
        limit: int | None = None,
    ) -> list[WorldObject]:
        """Objects whose boxes meet ``shape``, at most ``limit``; see `World.query` and
        `worldstate.node._query` (this class is its `QueryViews`, the store its
        `RegionDirectory`)."""
        c = self.ctx.config
        q: Box | Sphere = geometry(as_shape, shape)
        kind_set = check_kind_filter(kinds, self.kinds)
        n = check_limit(limit)
        plan = plan_query(q, region_size=c.region_size, reach=c.max_structure_size / 2)
        return await run_query(
            plan,
            self,
            self.ctx.store,
            kinds=kind_set,
            limit=n,
            scan_regions=c.query_scan_regions,
            max_regions=c.max_query_regions,
        )

    # `QueryViews` (worldstate.node._query)

    def stale(self, key: RegionKey, at_least: int | None) -> bool:
        """Whether a query must re-read ``key``: no view, a view older than the version the
        store listed, or (without one) older than ``Config.query_staleness``."""
        view = self._view.get(key)
        if view is None:
            return True
        if at_least is None:
            return self.ctx.clock() - view.loaded_at > self.ctx.config.query_staleness
        if view.version >= at_least:
            view.loaded_at = self.ctx.clock()  # the store just vouched for this version
            return False
        return True

    async def refresh(self, key: RegionKey, at_least: int | None) -> None:
        """Re-read ``key`` for a query, from the cache when it is recent enough."""
        snap = await self.load(key, consistent=False)
        if at_least is not None and snap.version < at_least:  # the cache is behind
            await self.load(key)

    def absent(self, key: RegionKey) -> None:
        """The store holds no row for ``key``: an empty view at version 0, seen now."""
        view = self._view.get(key)
        if view is not None and view.version > 0:  # gone from the store (a restore)
            del self._view[key]
        self._index(RegionSnapshot(key, 0, None, 0, ()))

    def matches(self, key: RegionKey, shape: Shape) -> Sequence[WorldObject]:
        """The objects of the view of ``key`` meeting ``shape``, as stored."""
        view = self._view.get(key)
        if view is None or not view.objects:
            return ()
        objs = view.objects
        return [objs[i] for i in sorted(view.index.intersection(shape))]

    def stats(self) -> dict[str, Any]:
        return {
            "regions_in_view": len(self._view),
            "objects_in_view": sum(len(v.objects) for v in self._view.values()),
            "recoveries": self.recoveries,
        }

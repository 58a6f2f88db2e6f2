"""`World`: one game server's connection to the world state, and `connect()`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from regions import (
    Box,
    RegionKey,
    Shape,
    SpatialIndex,
    Sphere,
    as_region_key,
    as_shape,
    keys_of_shape,
)
from worldstate.cache import RegionCache, open_cache
from worldstate.codec import (
    CodecError,
    Columns,
    decode_cache_entry,
    decode_objects,
    encode_cache_entry,
    encode_objects,
)
from worldstate.config import Config
from worldstate.errors import NotAuthoritative, StoreUnavailable, ValidationError, WorldClosed
from worldstate.ids import check_id
from worldstate.objects import Lease, RegionSnapshot, WorldObject
from worldstate.store import Store
from worldstate.store.retry import RetryPolicy
from worldstate.validation import check_kind, check_region_objects, geometry, kinds_of

log = logging.getLogger("worldstate")


@dataclass
class _RegionView:
    """A region as this server last saw it, with its own R-tree (bulk-loaded)."""

    version: int
    loaded_at: float
    index: SpatialIndex[int]
    objects: Sequence[WorldObject]


class World:
    """A game server's handle on the world. Open with `worldstate.connect`.

    Not thread-safe: use it from the event loop that opened it (the R-tree, the Redis
    client and the MQTT client are all bound to that loop).
    """

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.kinds = kinds_of(config.extra_object_kinds)
        self.store = Store(
            config.store_url,
            policy=RetryPolicy(
                config.txn_max_attempts, config.txn_backoff_base, config.txn_backoff_max
            ),
            pool_size=config.pool_size,
            clock=clock,
        )
        self.cache: RegionCache = open_cache(
            config.cache_url,
            prefix=f"{config.namespace}:",
            ttl=config.cache_ttl,
            max_entries=config.cache_max_entries,
            timeout=config.cache_timeout,
            breaker_failures=config.cache_breaker_failures,
            breaker_reset=config.cache_breaker_reset,
        )
        self._leases: dict[RegionKey, Lease] = {}
        self._view: dict[RegionKey, _RegionView] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._opened = False
        self.recoveries = 0

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def server_id(self) -> str:
        return self.config.server_id

    async def open(self) -> World:
        if self._opened:
            raise RuntimeError("World.open() called twice")
        self._opened = True
        try:
            await self.store.open()
        except BaseException:
            await self.cache.close()
            await self.store.close()
            raise
        self._tasks.append(
            asyncio.create_task(self._renew_loop(), name=f"ws-renew-{self.server_id}")
        )
        return self

    async def close(self) -> None:
        """Release held leases (best effort), stop background tasks, close connections."""
        if self._closed:
            return
        self._closed = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for key, lease in list(self._leases.items()):
            with contextlib.suppress(Exception):
                await self.store.release(key, self.server_id, lease.epoch)
        self._leases.clear()
        await self.cache.close()
        await self.store.close()

    async def __aenter__(self) -> World:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise WorldClosed("this world is closed; open a new one with worldstate.connect()")

    def _key(self, key: object) -> RegionKey:
        k: RegionKey = geometry(as_region_key, key)
        return k

    # -- authority -------------------------------------------------------------------------

    async def acquire_region(self, key: RegionKey | tuple[int, int, int] | int) -> Lease:
        """Take the region's lease (renewed in the background while this server is healthy).
        Raises `RegionOwned` when another live server holds it."""
        self._check_open()
        k = self._key(key)
        lease = await self.store.acquire(k, self.server_id, self.config.lease_ttl)
        self._leases[k] = lease
        return lease

    async def release_region(self, key: RegionKey | tuple[int, int, int] | int) -> bool:
        """Give the lease up at once (the next owner gets epoch + 1). False if not held."""
        self._check_open()
        k = self._key(key)
        lease = self._leases.pop(k, None)
        if lease is None:
            return False
        return await self.store.release(k, self.server_id, lease.epoch)

    def leases(self) -> dict[RegionKey, Lease]:
        """Leases this server believes it holds (and still live by its clock)."""
        now = self.clock()
        return {k: v for k, v in self._leases.items() if v.live(now)}

    def lease_of(self, key: RegionKey) -> Lease:
        """This server's live lease on ``key``, or `NotAuthoritative`."""
        lease = self._leases.get(key)
        if lease is None or not lease.live(self.clock()):
            raise NotAuthoritative(
                f"{self.server_id} holds no live lease on region {key}; acquire_region() first",
                key=key,
            )
        return lease

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.lease_renew_interval)
            await self.renew_leases()

    async def renew_leases(self) -> None:
        """Renew every held lease once (the background task calls this periodically)."""
        for key, lease in list(self._leases.items()):
            try:
                self._leases[key] = await self.store.renew(
                    key, self.server_id, lease.epoch, self.config.lease_ttl
                )
            except StoreUnavailable as e:
                log.warning("renewing lease on %s failed: %s", key, e)
            except Exception as e:  # Fenced: somebody took it over
                log.warning("lease on %s lost: %s", key, e)
                self._leases.pop(key, None)

    # -- state -----------------------------------------------------------------------------

    async def load_region(
        self, key: RegionKey | tuple[int, int, int] | int, *, consistent: bool = True
    ) -> RegionSnapshot:
        """The region's state. ``consistent=True`` reads the store (the truth, linearizable
        with store_region); ``consistent=False`` may be served from the cache (possibly a
        little stale, never older than a version some server stored)."""
        self._check_open()
        k = self._key(key)
        if not consistent:
            cached = await self._from_cache(k)
            if cached is not None:
                self._index_region(cached)
                return cached
        result = await self.store.load_region(k)
        if result.recovered_from is not None:
            self.recoveries += 1
        snap = result.snapshot
        if snap.version > 0:
            await self.cache.put(
                k.morton,
                snap.version,
                encode_cache_entry(snap.epoch, snap.owner, snap.stored_at, result.payload),
            )
        self._index_region(snap)
        return snap

    async def _from_cache(self, k: RegionKey) -> RegionSnapshot | None:
        got = await self.cache.get(k.morton)
        if got is None:
            return None
        try:
            epoch, owner, stored_at, payload = decode_cache_entry(got.payload)
            objects = decode_objects(payload)
        except CodecError as e:
            log.warning("cache entry for region %s is unreadable (%s); dropping it", k, e)
            await self.cache.invalidate(k.morton)
            return None
        return RegionSnapshot(k, got.version, owner, epoch, objects, stored_at)

    async def store_region(self, snapshot: RegionSnapshot, *, expected_version: int | None) -> int:
        """Write the snapshot's objects as the region's next version; returns it.

        Write modes: ``expected_version=None`` unconditional; ``0`` only if the region was
        never stored; ``n`` only if the stored version is ``n`` (else `VersionConflict`).
        The write is fenced by ``snapshot.epoch``: it must equal the region's lease epoch
        (else `Fenced`), and a live lease held by another server refuses it (`RegionOwned`).
        """
        self._check_open()
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
        k = self._key(snapshot.key)
        c = self.config
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
        payload = encode_objects(objects)
        if len(payload) > c.max_snapshot_bytes:
            raise ValidationError(
                f"region {k} snapshot is {len(payload)} bytes; the limit is {c.max_snapshot_bytes}"
            )
        version = await self.store.store_region(
            k,
            payload,
            len(objects),
            expected_version=expected_version,
            epoch=snapshot.epoch,
            writer=self.server_id,
            history_versions=c.history_versions,
        )
        stored = RegionSnapshot(k, version, self.server_id, snapshot.epoch, objects, self.clock())
        await self.cache.put(
            k.morton,
            version,
            encode_cache_entry(stored.epoch, stored.owner, stored.stored_at, payload),
        )
        self._index_region(stored)
        return version

    # -- spatial queries -------------------------------------------------------------------

    def _index_region(self, snap: RegionSnapshot) -> None:
        """Remember the region for queries. A new version replaces the region's R-tree
        with a bulk-loaded one (far cheaper than per-object deletes); the same version
        only refreshes the time it was seen."""
        old = self._view.get(snap.key)
        now = self.clock()
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
        self, shape: Shape | tuple[Any, Any], kinds: Iterable[str] | None = None
    ) -> list[WorldObject]:
        """Objects whose boxes meet ``shape`` (a `Box`, a `Sphere` or a ``(lo, hi)`` pair),
        optionally only of some ``kinds``; answered by the R-tree over the regions it
        touches, each read (from cache when possible) if not seen within
        ``Config.query_staleness`` seconds. Ordered by region (Morton), then as stored."""
        self._check_open()
        q: Box | Sphere = geometry(as_shape, shape)
        kind_set = None if kinds is None else {check_kind(k, self.kinds) for k in kinds}
        keys: list[RegionKey] = geometry(
            keys_of_shape, q, self.config.region_size, max_keys=self.config.max_query_regions
        )
        now = self.clock()
        stale = [
            k
            for k in keys
            if (e := self._view.get(k)) is None or now - e.loaded_at > self.config.query_staleness
        ]
        sem = asyncio.Semaphore(16)

        async def refresh(k: RegionKey) -> None:
            async with sem:
                await self.load_region(k, consistent=False)

        await asyncio.gather(*(refresh(k) for k in stale))
        out: list[WorldObject] = []
        for k in keys:
            view = self._view.get(k)
            if view is None or not view.objects:
                continue
            out.extend(view.objects[i] for i in sorted(view.index.intersection(q)))
        if kind_set is not None:
            out = [o for o in out if o.kind in kind_set]
        return out

    # -- observability ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            "server_id": self.server_id,
            "leases": len(self.leases()),
            "regions_in_view": len(self._view),
            "objects_in_view": sum(len(v.objects) for v in self._view.values()),
            "cache": self.cache.stats.as_dict(),
            "store": {
                "transactions": self.store.stats.transactions,
                "retries": self.store.stats.retries,
                "retry_reasons": dict(self.store.stats.by_reason),
                "exhausted": self.store.stats.exhausted,
                "recoveries": self.recoveries,
            },
        }


class _Connect:
    """What `connect` returns: use ``async with`` (closes on exit) or ``await`` it."""

    def __init__(self, config: Config, clock: Callable[[], float]) -> None:
        self._world = World(config, clock=clock)

    async def __aenter__(self) -> World:
        return await self._world.open()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._world.close()

    def __await__(self) -> Generator[Any, None, World]:
        return self._world.open().__await__()


def connect(
    store: str | None = None,
    /,
    *,
    cache: str | None = None,
    bus: str | None = None,
    server_id: str | None = None,
    config: Config | None = None,
    clock: Callable[[], float] = time.time,
) -> _Connect:
    """Open a world: ``async with worldstate.connect(url, server_id="gs-1") as world``.

    Arguments override the matching fields of ``config`` (default: `Config.from_env()`).
    ``store`` is a SQLAlchemy URL (``cockroachdb+psycopg://``, ``postgresql+psycopg://`` or
    ``sqlite+aiosqlite:///file.db``); ``cache`` is ``redis://…`` or ``memory://``; ``bus``
    is ``mqtt://…`` or ``memory://[name]``.
    """
    base = config if config is not None else Config.from_env()
    if not isinstance(base, Config):
        raise ValidationError(f"config must be a worldstate.Config, got {type(base).__name__}")
    changes: dict[str, Any] = {}
    if store is not None:
        changes["store_url"] = store
    if cache is not None:
        changes["cache_url"] = cache
    if bus is not None:
        changes["bus_url"] = bus
    if server_id is not None:
        changes["server_id"] = check_id(server_id, "server_id", base.max_id_length)
    cfg = base.replace(**changes) if changes else base
    return _Connect(cfg, clock)

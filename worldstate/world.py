"""`World`: one game server's connection to the world state, and `connect()`."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson
from sqlalchemy import select

import conflicts as cf
from consistency import ConsistencyClass, ConsistencyInputError, HybridClock, Registry
from regions import (
    Box,
    RegionKey,
    Shape,
    SpatialIndex,
    Sphere,
    as_region_key,
    as_shape,
    keys_of_shape,
    region_of,
)
from worldstate._codec import (
    CodecError,
    Columns,
    decode_cache_entry,
    decode_objects,
    encode_cache_entry,
    encode_objects,
)
from worldstate._validation import check_id, check_kind, check_region_objects, geometry, kinds_of
from worldstate._validation import check_op_limits as _check_op_limits
from worldstate.bus import Bus, Message, open_bus
from worldstate.cache import RegionCache, open_cache
from worldstate.config import Config
from worldstate.errors import (
    NotAuthoritative,
    StoreUnavailable,
    ValidationError,
    WorldClosed,
    WorldStateError,
)
from worldstate.objects import Lease, RegionSnapshot, ResourceNode, WorldObject
from worldstate.operations import (
    BUILTIN_OPERATIONS,
    Operation,
    PlaceStructure,
)
from worldstate.results import Result
from worldstate.store import Store
from worldstate.store.retry import RetryPolicy
from worldstate.updates import RegionChanged, Update, UpdateStream, interest_keys

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

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        policy: cf.Policy = cf.DEFAULT_POLICY,
    ) -> None:
        self.config = config
        self.clock = clock
        self.policy = policy
        self.hlc = HybridClock(wall=clock)
        self.registry = Registry({t: t.default_consistency for t in BUILTIN_OPERATIONS})
        self.op_types: dict[str, type[Operation]] = {t.__name__: t for t in BUILTIN_OPERATIONS}
        self.authoritative = True
        """False while this server is on the losing side of a partition (no strong writes)."""
        from worldstate.mesh._agent import last_will

        self.bus: Bus = open_bus(
            config.bus_url,
            client_id=config.server_id,
            prefix=config.namespace,
            will=last_will(config.server_id),  # clears our retained presence if we die
        )
        self._streams: set[UpdateStream] = set()
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
        self._lease_lock = asyncio.Lock()
        """Orders renewals against acquire/release: a renewal in flight must not undo a
        release (the store would extend the released row) nor resurrect a lease."""
        self._view: dict[RegionKey, _RegionView] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._opened = False
        self.dropped_messages = 0
        self.recoveries = 0

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def server_id(self) -> str:
        return self.config.server_id

    async def open(self) -> World:
        if self._opened:
            raise RuntimeError("World.open() called twice")
        self._opened = True
        from worldstate.causal._path import CausalPath
        from worldstate.eventual._path import EventualPath
        from worldstate.strong._path import StrongPath

        self.strong = StrongPath(self)
        self.causal = CausalPath(self)
        self.eventual = EventualPath(self)
        try:
            await self.store.open()
            await self.bus.start()
            self.bus.subscribe("notice/+", self._on_notice)
            self.bus.on_lost(self._on_bus_lost)
            await self.strong.start()
            await self.causal.start()
            await self.eventual.start()
            # mesh: coordinator commands, then membership (heartbeats, split-brain verdict)
            from worldstate.mesh._agent import MembershipAgent
            from worldstate.mesh._handoff import CommandHandler

            self.commands = CommandHandler(self)
            self.commands.start()
            self.membership = MembershipAgent(self)
            await self.membership.start()
        except BaseException:
            await self._shutdown()
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
        await self._shutdown()

    async def _shutdown(self) -> None:
        for stream in list(self._streams):
            stream.fail(WorldClosed("the world was closed"))
        for part in ("membership", "commands"):  # leave the mesh first
            p = getattr(self, part, None)
            if p is not None:
                with contextlib.suppress(Exception):
                    await p.close()
        for path in ("eventual", "causal", "strong"):
            p = getattr(self, path, None)
            if p is not None:
                with contextlib.suppress(Exception):
                    await p.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for key, lease in list(self._leases.items()):
            with contextlib.suppress(Exception):
                await self.store.release(key, self.server_id, lease.epoch)
        self._leases.clear()
        with contextlib.suppress(Exception):
            await self.bus.close()
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
        async with self._lease_lock:
            lease = await self.store.acquire(k, self.server_id, self.config.lease_ttl)
            self._leases[k] = lease
        await self.strong.on_acquired(k, lease)  # the owner loads its committed strong state
        try:  # pick up the eventual state the previous owner snapshotted
            self.eventual.seed_region(await self.load_region(k))
        except WorldStateError as e:
            log.warning("seeding eventual state of %s failed: %s", k, e)
        return lease

    async def release_region(self, key: RegionKey | tuple[int, int, int] | int) -> bool:
        """Give the lease up at once (the next owner gets epoch + 1). False if not held."""
        self._check_open()
        k = self._key(key)
        if k not in self._leases:
            return False
        await self.strong.drop_pipeline(k)
        await self.eventual.flush_region(k)
        async with self._lease_lock:
            lease = self._leases.pop(k, None)
            if lease is None:
                return False
            return await self.store.release(k, self.server_id, lease.epoch)

    def leases(self) -> dict[RegionKey, Lease]:
        """Leases this server believes it holds (and still live by its clock)."""
        now = self.clock()
        return {k: v for k, v in self._leases.items() if v.live(now)}

    def holds(self, key: RegionKey) -> bool:
        """True when this server holds a live lease on ``key`` and may write it."""
        lease = self._leases.get(key)
        return (
            lease is not None
            and lease.live(self.clock() + self.config.clock_skew_margin)
            and self.authoritative
        )

    def partition_status(self) -> dict[str, Any]:
        """This server's standing in the mesh: ``{"view": [...], "majority": bool, "since":
        time, "membership": [...], "reason": str, "generation": int, ...}`` (see
        `worldstate.mesh._agent`)."""
        agent = getattr(self, "membership", None)
        if agent is None:
            return {
                "view": [self.server_id],
                "majority": self.authoritative,
                "since": None,
                "membership": [],
                "reason": "not open",
                "generation": 0,
            }
        doc: dict[str, Any] = agent.status()
        return doc

    def lost_lease(self, key: RegionKey, why: str) -> None:
        if self._leases.pop(key, None) is not None:
            log.warning("%s lost its lease on %s: %s", self.server_id, key, why)

    def lease_of(self, key: RegionKey) -> Lease:
        """This server's live lease on ``key``, or `NotAuthoritative`."""
        if not self.authoritative:
            raise NotAuthoritative(
                f"{self.server_id} is on the minority side of a partition: no strong writes",
                key=key,
            )
        lease = self._leases.get(key)
        if lease is None or not lease.live(self.clock() + self.config.clock_skew_margin):
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
        """Renew every held lease once (the background task calls this periodically). A
        server in a minority partition renews nothing: its leases run out."""
        if not self.authoritative:
            return
        for key, lease in list(self._leases.items()):
            async with self._lease_lock:
                if self._leases.get(key) is not lease:
                    continue  # released or re-acquired meanwhile
                try:
                    self._leases[key] = await self.store.renew(
                        key, self.server_id, lease.epoch, self.config.lease_ttl
                    )
                except StoreUnavailable as e:
                    log.warning("renewing lease on %s failed: %s", key, e)
                except Exception as e:  # Fenced: somebody took it over
                    log.warning("lease on %s lost: %s", key, e)
                    self._leases.pop(key, None)
        await self.strong.renew()  # inventory shards' leases

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
            objects,
            expected_version=expected_version,
            epoch=snapshot.epoch,
            writer=self.server_id,
            history_versions=c.history_versions,
        )
        self.strong.snapshot_stored(k)
        stored = RegionSnapshot(k, version, self.server_id, snapshot.epoch, objects, self.clock())
        await self.cache.put(
            k.morton,
            version,
            encode_cache_entry(stored.epoch, stored.owner, stored.stored_at, payload),
        )
        self._index_region(stored)
        return version

    # -- operations ------------------------------------------------------------------------

    def register_operation(self, cls: type[Operation], consistency: ConsistencyClass | str) -> None:
        """Route a game-defined operation type (a subclass of a built-in operation, so the
        world knows how to apply it) through ``consistency``."""
        if not isinstance(cls, type) or not issubclass(cls, Operation):
            raise ValidationError(f"{cls!r} is not an Operation subclass")
        try:
            self.registry.register(cls, consistency)
        except ConsistencyInputError as e:
            raise ValidationError(str(e)) from None
        self.op_types[cls.__name__] = cls

    def consistency_of(self, op_or_type: object) -> ConsistencyClass:
        try:
            return self.registry.of(op_or_type)
        except ConsistencyInputError as e:
            raise ValidationError(str(e)) from None

    def region_key_of(self, op: Operation) -> RegionKey | None:
        """The region an operation belongs to (None for non-spatial ones); the position is
        checked against the world bounds."""
        where = op.where()
        if where is None:
            return None
        p = geometry(self.config.world_bounds.check_point, where, f"{op.op_type} position")
        key: RegionKey = geometry(region_of, *p, self.config.region_size)
        return key

    def _prepare(self, op: object) -> tuple[Operation, ConsistencyClass, RegionKey | None]:
        if not isinstance(op, Operation):
            raise ValidationError(f"expected an Operation, got {type(op).__name__}")
        cls = self.consistency_of(op)
        key = self.region_key_of(op)
        _check_op_limits(op, self.config)
        if isinstance(op, PlaceStructure):
            size = max(h - lo for lo, h in zip(op.lo, op.hi, strict=True))
            if size > self.config.max_structure_size:
                raise ValidationError(
                    f"structure {op.structure_id!r} is {size:.1f} m across; the limit is "
                    f"{self.config.max_structure_size} m (Config.max_structure_size)"
                )
        # the op was validated when built: stamp a copy without validating it again
        stamped = copy.copy(op)
        object.__setattr__(stamped, "server_id", self.server_id)
        object.__setattr__(stamped, "hlc", self.hlc.now())
        return stamped, cls, key

    async def submit(self, op: Operation, *, timeout: float | None = None) -> Result:
        """Route one operation by its consistency class (see the module docs of
        `worldstate.strong._path`, `causal_path` and `eventual_path`).

        Strong: `Committed` only once durable, or `Rejected` with the rule that decided;
        raises `NotAuthoritative` in a minority partition. Causal/eventual: `Accepted`.
        Submitting an ``op_id`` again never applies it twice and returns the first outcome
        (the same op_id with a different operation: `ValidationError`). A strong submit
        raises `SubmitTimeout` when ``timeout`` (default ``Config.submit_timeout``) passes.
        """
        self._check_open()
        stamped, cls, key = self._prepare(op)
        result: Result
        if cls is ConsistencyClass.STRONG:
            if not self.authoritative:
                raise NotAuthoritative(
                    f"{self.server_id} is on the minority side of a partition: strong "
                    "operations are refused until it rejoins"
                )
            result = await self.strong.submit(stamped, key, timeout=timeout)
        elif cls is ConsistencyClass.CAUSAL:
            result = await self.causal.submit(stamped, key)
        else:
            result = self.eventual.submit(stamped, key)
        return result

    async def submit_many(self, ops: Iterable[Operation]) -> list[Result]:
        """Submit several operations concurrently; results in the same order. Every op is
        validated before any is submitted (one bad op: `ValidationError`, nothing done)."""
        self._check_open()
        items = list(ops)
        for o in items:
            self._prepare(o)
        return list(await asyncio.gather(*(self.submit(o) for o in items)))

    async def get_inventory(self, inventory_id: str) -> dict[str, int]:
        """The inventory's item counts (a strong read from the store); {} if empty."""
        self._check_open()
        inv = check_id(inventory_id, "inventory_id", self.config.max_id_length)
        from worldstate.store import schema

        t = schema.inventories

        async def body(c: Any) -> dict[str, int]:
            rows = await c.execute(
                select(t.c.item, t.c["count"].label("n"))
                .where(t.c.inventory_id == inv)
                .order_by(t.c.item)
            )
            return {r.item: int(r.n) for r in rows if r.n}

        return await self.store.run(body, f"read inventory {inv}", read=True)

    async def put_resource(
        self, resource_id: str, position: tuple[float, float, float], amount: float
    ) -> ResourceNode:
        """Create (or refill) a resource node with ``amount`` to claim (world generation)."""
        self._check_open()
        rid = check_id(resource_id, "resource_id", self.config.max_id_length)
        p = geometry(self.config.world_bounds.check_point, position, "resource position")
        if (
            isinstance(amount, bool)
            or not isinstance(amount, (int, float))
            or not (math.isfinite(amount) and amount >= 0)
        ):
            raise ValidationError(f"resource amount must be finite and >= 0, got {amount!r}")
        key = geometry(region_of, *p, self.config.region_size)
        from worldstate.store import schema

        t = schema.resources

        async def body(c: Any) -> None:
            ins = schema.insert_for(c.dialect.name, t).values(
                resource_id=rid,
                region_key=key.morton,
                x=p[0],
                y=p[1],
                z=p[2],
                capacity=float(amount),
                remaining=float(amount),
            )
            await c.execute(
                ins.on_conflict_do_update(
                    index_elements=["resource_id"],
                    set_={
                        "capacity": ins.excluded.capacity,
                        "remaining": ins.excluded.remaining,
                        "x": ins.excluded.x,
                        "y": ins.excluded.y,
                        "z": ins.excluded.z,
                        "region_key": ins.excluded.region_key,
                    },
                )
            )

        await self.store.run(body, f"put resource {rid}")
        return ResourceNode(rid, p, float(amount), float(amount))

    async def get_resource(self, resource_id: str) -> ResourceNode | None:
        """A resource node's capacity and what remains (a strong read), or None."""
        self._check_open()
        rid = check_id(resource_id, "resource_id", self.config.max_id_length)
        from worldstate.store import schema

        t = schema.resources

        async def body(c: Any) -> ResourceNode | None:
            r = (await c.execute(select(t).where(t.c.resource_id == rid))).first()
            if r is None:
                return None
            return ResourceNode(rid, (r.x, r.y, r.z), float(r.capacity), float(r.remaining))

        return await self.store.run(body, f"read resource {rid}", read=True)

    def move_entities(self, ids: Any, positions: Any, velocities: Any = None) -> int:
        """Vectorised eventual path: move many creatures at once (``ids`` int64 ``(N,)``,
        ``positions`` float64 ``(N, 3)``). Applied locally now, broadcast with the next tick's
        batch. Returns how many rows were applied."""
        self._check_open()
        applied: int = self.eventual.move_entities(ids, positions, velocities)
        return applied

    def updates(self, interest: object = None, *, capacity: int = 10_000) -> UpdateStream:
        """What other servers change inside ``interest`` (region keys, a Box, a Sphere, a
        ``(lo, hi)`` pair, or None for everything): eventual batches, eventual state
        changes, causal events in causal order and strong-commit notices.

        ``async for update in world.updates(box): ...`` — the iterator ends with
        `WorldClosed` when the world closes or loses its bus, and with `Overloaded` when the
        consumer falls ``capacity`` updates behind."""
        self._check_open()
        keys = interest_keys(
            interest,
            region_size=self.config.region_size,
            max_keys=self.config.max_query_regions,
        )
        stream = UpdateStream(keys, capacity, self._streams.discard)
        self._streams.add(stream)
        return stream

    def publish_update(self, region: RegionKey | None, update: Update) -> None:
        """Hand an update to every stream interested in ``region`` (called by the paths)."""
        for s in list(self._streams):
            if s.wants(region):
                s.put(update)

    def mark_stale(self, key: RegionKey) -> None:
        view = self._view.get(key)
        if view is not None:
            view.loaded_at = float("-inf")

    def _on_notice(self, msg: Message) -> None:
        try:
            morton = int(msg.topic.rsplit("/", 1)[1])
            key = RegionKey.from_morton(morton)
            doc = orjson.loads(msg.payload)
            version, sender = doc["v"], doc["s"]
            if not (isinstance(version, int) and isinstance(sender, str)):
                raise ValueError("bad notice")
        except (ValueError, KeyError, TypeError, IndexError, orjson.JSONDecodeError):
            self.dropped_messages += 1
            return
        if sender == self.server_id:
            return
        self.mark_stale(key)
        self.publish_update(key, RegionChanged(key, version, sender))

    def _on_bus_lost(self, err: Exception) -> None:
        for stream in list(self._streams):
            stream.fail(WorldClosed(f"the world's bus was lost: {err}"))

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
            "strong": {
                "group_commits": self.strong.group_commits,
                "forwarded": self.strong.forwarded,
                "served_forwards": self.strong.served_forwards,
                "direct_commits": self.strong.direct_commits,
                "dropped_requests": self.strong.dropped_requests,
                "pipelines": len(self.strong.pipelines),
                **self.strong.stats(),
            },
            "causal": self.causal.stats(),
            "eventual": self.eventual.stats(),
            "bus": dataclasses.asdict(self.bus.stats),
            "dropped_messages": self.dropped_messages,
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

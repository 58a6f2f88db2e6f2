"""`World`: one game server's connection to the world state, and `connect()`.

`World` is the composition root of a server: it builds the node's shared services
(`worldstate.node`: context, supervisor, authority, router, region views, fan-out), the
three consistency paths and the mesh agents, wires them together, and is the public facade
over them. Nothing below imports this module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Mapping
from types import TracebackType
from typing import Any

import numpy as np

import conflicts as cf
from consistency import CausalEvent, ConsistencyClass, HybridClock, Registry
from regions import RegionKey, Shape, as_region_key, region_keys, region_of
from worldstate._validation import MAX_STREAM_CAPACITY, check_id, check_int, check_ops, geometry
from worldstate.bus import Bus, SignedBus, open_bus
from worldstate.cache import MemoryCache, RegionCache, open_cache
from worldstate.causal import CausalPath
from worldstate.config import Config
from worldstate.errors import (
    BusUnavailable,
    NotAuthoritative,
    SubmitTimeout,
    ValidationError,
    WorldClosed,
    WorldStateError,
)
from worldstate.eventual import EventualPath
from worldstate.history import Checkpoint, create_checkpoint, prune_events, read_events
from worldstate.history._resume import start_resume
from worldstate.mesh import CommandHandler, MembershipAgent, last_will
from worldstate.node import (
    NOTICE_TOPIC,
    Authority,
    Fanout,
    NodeContext,
    RegionViews,
    Router,
    Supervisor,
)
from worldstate.node._subscriptions import SUBSCRIBE_TIMEOUT, InterestSubscriptions
from worldstate.objects import Lease, RegionSnapshot, ResourceNode, WorldObject
from worldstate.operations import Operation
from worldstate.protocol import _topics as topics
from worldstate.results import Result
from worldstate.store import Store, bus_keys
from worldstate.store import resources as resource_sql
from worldstate.store.retry import RetryPolicy
from worldstate.strong import StrongPath
from worldstate.updates import Cursor, Update, UpdateStream, interest_keys

log = logging.getLogger("worldstate")

CLOSE_TIMEOUT = 5.0
"""Seconds `close` waits for background tasks to stop after cancelling them."""
ACQUIRE_SUBSCRIBE_WAIT = 2.0
"""Seconds `acquire_region` waits for the broker to acknowledge the new region's topics
before it seeds the region anyway (well inside a coordinator command's 5 s deadline; the
subscription loop goes on waiting, and says so)."""
CLOSE_STEP_TIMEOUT = 15.0
"""Seconds any one step of `close` may take (leave the mesh, close a path, release leases,
close a connection) before close logs it and goes on: closing never waits forever."""


class World:
    """A game server's handle on the world. Open with `worldstate.connect`.

    Not thread-safe: use it from the event loop that opened it (the R-tree, the Redis
    client and the MQTT client are all bound to that loop).

    ``clock``, ``rng``, ``store``, ``bus`` and ``cache`` may be injected (the deterministic
    simulation drives the real node this way); by default they come from ``config``.
    """

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        policy: cf.Policy = cf.DEFAULT_POLICY,
        rng: random.Random | None = None,
        store: Store | None = None,
        bus: Bus | None = None,
        cache: RegionCache | None = None,
    ) -> None:
        sid = config.server_id
        built_bus = bus is None
        if bus is None:
            bus = open_bus(
                config.bus_url,
                client_id=sid,
                prefix=config.namespace,
                will=last_will(sid),  # clears our retained presence if we die
            )
        if store is None:
            store = Store(
                config.store_url,
                policy=RetryPolicy(
                    config.txn_max_attempts, config.txn_backoff_base, config.txn_backoff_max
                ),
                pool_size=config.pool_size,
                clock=clock,
            )
        if cache is None:
            cache = open_cache(
                config.cache_url,
                prefix=f"{config.namespace}:",
                ttl=config.cache_ttl,
                max_entries=config.cache_max_entries,
                timeout=config.cache_timeout,
                breaker_failures=config.cache_breaker_failures,
                breaker_reset=config.cache_breaker_reset,
            )
        self.tasks = Supervisor(sid)
        if built_bus:
            # every message signed and verified (worldstate.bus._signed; docs/security.md),
            # with keys from the store; an injected bus is the caller's to secure
            bus = SignedBus(
                bus,
                load_keys=bus_keys.loader(store, clock),
                clock=clock,
                max_age=config.bus_max_age,
                skew=config.bus_clock_skew,
                refresh=config.bus_key_refresh,
                spawn=lambda coro, name: self.tasks.spawn(coro, name),
            )
        hlc = HybridClock(wall=clock)
        self.ctx = ctx = NodeContext(
            server_id=sid,
            config=config,
            clock=clock,
            hlc=hlc,
            rng=rng if rng is not None else random.Random(),
            store=store,
            bus=bus,
            cache=cache,
            policy=policy,
            tasks=self.tasks,
        )
        self.authority = Authority(ctx)
        self.router = Router(sid, config, hlc)
        self.kinds = self.router.kinds
        self.fanout = Fanout()
        self.views = RegionViews(ctx, self.fanout, self.kinds)
        self.strong = StrongPath(ctx, self.authority, self.router, self.views)
        self.causal = CausalPath(ctx, self.router, self.fanout)
        self.eventual = EventualPath(
            ctx,
            self.authority,
            self.fanout,
            self.views,
            router=self.router,
            peers=lambda: self.partition_status()["view"],
        )
        self.interest = InterestSubscriptions(
            ctx,
            self.authority,
            self.fanout,
            {topics.EVENTUAL: self.eventual.on_message, NOTICE_TOPIC: self.views.on_notice},
            seed=self._seed_heard,
        )
        """The regional subscriptions, following ownership and streams (docs/fanout.md)."""
        self.commands = CommandHandler(
            ctx, self.authority, acquire=self.acquire_region, release=self.release_region
        )
        self.membership = MembershipAgent(ctx, self.authority, self._load_counters)
        self.strong.acquire_region = self.acquire_region  # first use of an unowned region
        self.eventual.strong_rows_kept = self.strong.strong_rows_kept  # no reload after one
        self._closed = False
        self._opened = False
        self._closing: asyncio.Task[None] | None = None
        self.tasks.on_failure(self._on_crash)
        self._metrics: Any = None
        """worldstate.metrics.WorldMetrics, created by the first access to `metrics`."""

    # -- the node's parts, for callers that used to reach them here ------------------------

    @property
    def server_id(self) -> str:
        return self.ctx.server_id

    @property
    def config(self) -> Config:
        return self.ctx.config

    @property
    def clock(self) -> Callable[[], float]:
        return self.ctx.clock

    @property
    def hlc(self) -> HybridClock:
        return self.ctx.hlc

    @property
    def policy(self) -> cf.Policy:
        return self.ctx.policy

    @property
    def store(self) -> Store:
        return self.ctx.store

    @property
    def bus(self) -> Bus:
        return self.ctx.bus

    @property
    def cache(self) -> RegionCache:
        return self.ctx.cache

    @property
    def registry(self) -> Registry:
        return self.router.registry

    @property
    def op_types(self) -> Mapping[str, type[Operation]]:
        return self.router.op_types

    @property
    def authoritative(self) -> bool:
        """False while this server is on the losing side of a partition (no strong writes)."""
        return self.authority.authoritative

    @authoritative.setter
    def authoritative(self, value: bool) -> None:
        if value:
            self.authority.promote("set by the caller")
        else:
            self.authority.demote("set by the caller")

    @property
    def recoveries(self) -> int:
        return self.views.recoveries

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> World:
        if self._opened:
            raise RuntimeError("World.open() called twice")
        self._opened = True
        try:
            await self.store.open()
            await self.bus.start()
            self.interest.start()  # eventual batches and notices of what we care about
            self.bus.on_lost(self._on_bus_lost)
            await self.strong.start()
            await self.causal.start()
            await self.eventual.start()
            if not await self.interest.wait_ready(SUBSCRIBE_TIMEOUT):
                log.warning("%s: regional subscriptions not yet acknowledged", self.server_id)
            # mesh: coordinator commands, then membership (heartbeats, split-brain verdict)
            self.commands.start()
            await self.membership.start()
            self.authority.start()
            c = self.config
            if c.event_retention is not None or c.event_retention_count is not None:
                self.tasks.spawn(self._prune_loop(), f"ws-prune-{self.server_id}")
        except BaseException:
            self._closed = True
            await self._shutdown(WorldClosed("the world failed to open"))
            raise
        return self

    async def close(self) -> None:
        """Release held leases (best effort), stop background tasks, close connections."""
        if self._closing is None:
            self._closed = True
            # owned: this task is the close itself; awaited here and by every later close()
            self._closing = asyncio.get_running_loop().create_task(  # owned
                self._shutdown(WorldClosed("the world was closed")),
                name=f"ws-close-{self.server_id}",
            )
        await asyncio.shield(self._closing)

    def _on_crash(self, cause: BaseException) -> None:
        """A supervised loop crashed: fail loudly — every stream and pending submit ends
        with `WorldClosed` carrying the cause, and the world closes itself."""
        err = self._crash_error()
        self.fanout.fail_all(err)
        if self._closing is None:
            self._closed = True
            # owned: awaited by close(), which the owner of the world still calls
            self._closing = asyncio.get_running_loop().create_task(  # owned
                self._shutdown(err), name=f"ws-close-{self.server_id}"
            )

    def _crash_error(self) -> WorldClosed:
        cause = self.tasks.failure
        return WorldClosed(
            f"world {self.server_id} failed: its background task {self.tasks.failed_task!r} "
            f"crashed ({cause!r}); open a new world with worldstate.connect()",
            cause=cause,
        )

    async def _shutdown(self, reason: WorldClosed) -> None:
        """Stop everything, in order, whatever fails on the way: a step that raises is
        logged with its traceback and the next step still runs, so close always completes."""
        self.fanout.fail_all(reason)
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("leave the mesh", self.membership.close),  # first: stop heartbeating
            ("stop serving commands", self.commands.close),
            ("close the eventual path", self.eventual.close),
            ("close the causal path", self.causal.close),
            ("close the strong path", self.strong.close),
            ("stop background tasks", lambda: self.tasks.close(CLOSE_TIMEOUT)),
            ("release leases", self.authority.release_all),
            ("drop regional subscriptions", self._close_interest),
            ("close the bus", self.bus.close),
            ("close the cache", self.cache.close),
            ("close the store", self.store.close),
        ]
        for what, step in steps:
            try:
                async with asyncio.timeout(CLOSE_STEP_TIMEOUT):  # close never hangs
                    await step()
            except TimeoutError:
                log.error(
                    "%s: %s took over %.0fs; going on", self.server_id, what, CLOSE_STEP_TIMEOUT
                )
            except WorldStateError as e:
                log.warning("%s: %s: %s", self.server_id, what, e)
            except Exception:  # logged loudly; closing goes on so nothing is left open
                log.exception("%s: %s failed", self.server_id, what)

    async def _seed_heard(self, key: RegionKey) -> None:
        """Anti-entropy for a region heard but not owned: merge its stored snapshot into
        the eventual state, last-writer-wins — from the shared cache (Redis: every owner
        puts what it stores) when there, else from the store (an in-process cache holds
        only what this server itself read or wrote)."""
        shared = not isinstance(self.cache, MemoryCache)
        self.eventual.seed_region(await self.views.load(key, consistent=not shared))

    async def _close_interest(self) -> None:
        self.interest.close()

    async def __aenter__(self) -> World:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self.tasks.failure is not None:
            raise self._crash_error()
        if self._closed:
            raise WorldClosed("this world is closed; open a new one with worldstate.connect()")

    def _key(self, key: object) -> RegionKey:
        k: RegionKey = geometry(as_region_key, key)
        return k

    def health(self) -> dict[str, Any]:
        """Liveness for `/healthz`: ``{"ok": bool, "closed": bool, "tasks": {...}}`` — ok
        while every supervised loop runs and the world is open."""
        status = self.tasks.status()
        return {
            "ok": status["healthy"] and not self._closed,
            "closed": self._closed,
            "authoritative": self.authoritative,
            "tasks": status,
        }

    # -- authority -------------------------------------------------------------------------

    async def acquire_region(self, key: RegionKey | tuple[int, int, int] | int) -> Lease:
        """Take the region's lease (renewed in the background while this server is healthy).
        Raises `RegionOwned` when another live server holds it."""
        self._check_open()
        k = self._key(key)
        lease = await self.authority.acquire(k)
        # hear the region (and its neighbours) before seeding it, so that nothing written
        # after the snapshot is missed; bounded, and loud if the broker does not answer
        if self.bus.connected and not await self.interest.wait_ready(ACQUIRE_SUBSCRIBE_WAIT):
            log.warning("%s: subscriptions for %s not acknowledged yet", self.server_id, k)
        await self.strong.on_acquired(k, lease)  # the owner loads its committed strong state
        try:  # pick up the eventual state the previous owner snapshotted
            self.eventual.take_over(await self.views.load(k))
        except WorldStateError as e:
            log.warning("seeding eventual state of %s failed: %s", k, e)
        return lease

    async def release_region(self, key: RegionKey | tuple[int, int, int] | int) -> bool:
        """Give the lease up at once (the next owner gets epoch + 1). False if not held."""
        self._check_open()
        k = self._key(key)
        if k not in self.authority.held():
            return False
        await self.strong.drop_pipeline(k)
        await self.eventual.flush_region(k)
        return await self.authority.release(k)

    def leases(self) -> dict[RegionKey, Lease]:
        """Leases this server believes it holds (and still live by its clock)."""
        return self.authority.live()

    def holds(self, key: RegionKey) -> bool:
        """True when this server holds a live lease on ``key`` and may write it."""
        return self.authority.holds(key)

    def lease_of(self, key: RegionKey) -> Lease:
        """This server's live lease on ``key``, or `NotAuthoritative`."""
        return self.authority.lease_of(key)

    def lost_lease(self, key: RegionKey, why: str) -> None:
        self.authority.lost(key, why)

    async def renew_leases(self) -> None:
        """Renew every held lease once (the background task calls this periodically). A
        server in a minority partition renews nothing: its leases run out."""
        await self.authority.renew_all()

    def partition_status(self) -> dict[str, Any]:
        """This server's standing in the mesh: ``{"view": [...], "majority": bool, "since":
        time, "membership": [...], "reason": str, "generation": int, ...}`` (see
        `worldstate.mesh`)."""
        if not self._opened:
            return {
                "view": [self.server_id],
                "majority": self.authoritative,
                "since": None,
                "membership": [],
                "reason": "not open",
                "generation": 0,
            }
        doc: dict[str, Any] = self.membership.status()
        return doc

    def _load_counters(self) -> tuple[dict[int, int], dict[RegionKey, int]]:
        """For the membership agent: eventual entities per region, strong ops per region."""
        entities: dict[int, int] = {}
        table = self.eventual.positions
        if len(table):
            codes = region_keys(table.positions_of(table.ids), self.config.region_size)
            uniq, counts = np.unique(codes, return_counts=True)
            entities = dict(zip(uniq.tolist(), counts.tolist(), strict=True))
        ops = {k: p.ops for k, p in self.strong.pipelines.items()}
        return entities, ops

    # -- state -----------------------------------------------------------------------------

    async def load_region(
        self, key: RegionKey | tuple[int, int, int] | int, *, consistent: bool = True
    ) -> RegionSnapshot:
        """The region's state. ``consistent=True`` reads the store (the truth, linearizable
        with store_region); ``consistent=False`` may be served from the cache (possibly a
        little stale, never older than a version some server stored)."""
        self._check_open()
        return await self.views.load(self._key(key), consistent=consistent)

    async def store_region(self, snapshot: RegionSnapshot, *, expected_version: int | None) -> int:
        """Write the snapshot's objects as the region's next version; returns it.

        Write modes: ``expected_version=None`` unconditional; ``0`` only if the region was
        never stored; ``n`` only if the stored version is ``n`` (else `VersionConflict`).
        The write is fenced by ``snapshot.epoch``: it must equal the region's lease epoch
        (else `Fenced`), and a live lease held by another server refuses it (`RegionOwned`).
        """
        self._check_open()
        version = await self.views.store(snapshot, expected_version=expected_version)
        self.strong.snapshot_stored(self._key(snapshot.key))  # its version moved: reload
        return version

    def mark_stale(self, key: RegionKey) -> None:
        self.views.mark_stale(key)

    # -- operations ------------------------------------------------------------------------

    def register_operation(
        self,
        cls: type[Operation],
        consistency: ConsistencyClass | str,
        *,
        delivery: str | None = None,
    ) -> None:
        """Route a game-defined operation type (a subclass of a built-in operation, so the
        world knows how to apply it) through ``consistency``, with a delivery guarantee:

        - ``"at-most-once"``: fire and forget (eventual tick batches, QoS 0); the default
          for EVENTUAL.
        - ``"at-least-once"``: acknowledged and redelivered until every server that hears
          this one acknowledges; a receiver may see an op twice (EVENTUAL; for CAUSAL it is
          served as effectively-once).
        - ``"effectively-once"``: at-least-once plus deduplication by ``op_id``; the
          default (and the only choice) for STRONG, the default for CAUSAL.

        Every server of the world must register the same types the same way."""
        self.router.register(cls, consistency, delivery=delivery)

    def delivery_of(self, op_or_type: object) -> str:
        """The delivery guarantee of an operation or type (see `register_operation`)."""
        return self.router.delivery_of(op_or_type)

    def consistency_of(self, op_or_type: object) -> ConsistencyClass:
        return self.router.consistency_of(op_or_type)

    def region_key_of(self, op: Operation) -> RegionKey | None:
        """The region an operation belongs to (None for non-spatial ones); the position is
        checked against the world bounds."""
        return self.router.region_key_of(op)

    async def submit(self, op: Operation, *, timeout: float | None = None) -> Result:
        """Route one operation by its consistency class (see `worldstate.strong`,
        `worldstate.causal` and `worldstate.eventual`).

        Strong: `Committed` only once durable, or `Rejected` with the rule that decided;
        raises `NotAuthoritative` in a minority partition. Causal/eventual: `Accepted`.
        Submitting an ``op_id`` again never applies it twice and returns the first outcome
        (the same op_id with a different operation: `ValidationError`).

        Nothing waits forever: after ``timeout`` seconds (default `Config.submit_timeout`)
        the call raises `SubmitTimeout` — the op may still apply; resubmit the same op to
        learn its outcome.
        """
        self._check_open()
        stamped, cls, key = self.router.prepare(op)
        limit = self.config.submit_timeout if timeout is None else _check_timeout(timeout)
        if self._metrics is None:
            return await self._submit(stamped, cls, key, limit)
        t0 = time.perf_counter()
        try:
            result = await self._submit(stamped, cls, key, limit)
        except BaseException as e:
            self._metrics.observe_op(cls, e, time.perf_counter() - t0)
            raise
        self._metrics.observe_op(cls, result, time.perf_counter() - t0)
        return result

    async def _submit(
        self, stamped: Operation, cls: ConsistencyClass, key: RegionKey | None, limit: float
    ) -> Result:
        try:
            # the strong path keeps the deadline itself (it knows whether the op may have
            # applied when it fires), the causal path keeps its submits' deadlines on one
            # timer, and an eventual submit does not wait
            return await self._route(stamped, cls, key, limit)
        except TimeoutError:
            raise SubmitTimeout(
                f"{stamped.op_type} {stamped.op_id} got no outcome within {limit}s; it may "
                "still apply — resubmit the same op (same op_id) to learn its outcome",
                op_id=stamped.op_id,
                may_have_applied=cls is not ConsistencyClass.EVENTUAL,
            ) from None
        except WorldClosed as e:
            if self.tasks.failure is None and e.cause is not None:
                self.tasks.fail(e.cause, "strong path")  # its loop is ending with it now
            if self.tasks.failure is not None:
                raise self._crash_error() from self.tasks.failure
            raise

    async def _route(
        self, op: Operation, cls: ConsistencyClass, key: RegionKey | None, limit: float
    ) -> Result:
        if cls is ConsistencyClass.STRONG:
            if not self.authoritative:
                raise NotAuthoritative(
                    f"{self.server_id} is on the minority side of a partition: strong "
                    "operations are refused until it rejoins"
                )
            return await self.strong.submit(op, key, timeout=limit)
        if cls is ConsistencyClass.CAUSAL:
            self.router.check_travels(op, "every other server (it is a causal event)")
            return await self.causal.submit(op, key, timeout=limit)
        return self.eventual.submit(op, key)

    async def submit_many(
        self, ops: Iterable[Operation], *, timeout: float | None = None
    ) -> list[Result]:
        """Submit several operations concurrently; results in the same order. Every op is
        validated before any is submitted (one bad op: `ValidationError`, nothing done)."""
        self._check_open()
        items = check_ops(ops)
        for o in items:
            self.router.check(o)
        return list(await asyncio.gather(*(self.submit(o, timeout=timeout) for o in items)))

    async def get_inventory(self, inventory_id: str) -> dict[str, int]:
        """The inventory's item counts (a strong read from the store); {} if empty."""
        self._check_open()
        inv = check_id(inventory_id, "inventory_id", self.config.max_id_length)
        return await self.store.run(
            lambda c: resource_sql.read_inventory(c, inv), f"read inventory {inv}", read=True
        )

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
        await self.store.run(
            lambda c: resource_sql.put_resource(c, rid, key, p, amount), f"put resource {rid}"
        )
        return ResourceNode(rid, p, float(amount), float(amount))

    async def get_resource(self, resource_id: str) -> ResourceNode | None:
        """A resource node's capacity and what remains (a strong read), or None."""
        self._check_open()
        rid = check_id(resource_id, "resource_id", self.config.max_id_length)
        return await self.store.run(
            lambda c: resource_sql.read_resource(c, rid), f"read resource {rid}", read=True
        )

    def move_entities(self, ids: Any, positions: Any, velocities: Any = None) -> int:
        """Vectorised eventual path: move many creatures at once (``ids`` int64 ``(N,)``,
        ``positions`` float64 ``(N, 3)``). Applied locally now, broadcast with the next tick's
        batch. Returns how many rows were applied."""
        self._check_open()
        applied: int = self.eventual.move_entities(ids, positions, velocities)
        if self._metrics is not None:
            self._metrics.observe_moves(applied)
        return applied

    def updates(
        self, interest: object = None, *, since: object = None, capacity: int = 10_000
    ) -> UpdateStream:
        """What other servers change inside ``interest`` (region keys, a Box, a Sphere, a
        ``(lo, hi)`` pair, or None for everything): eventual batches, eventual state
        changes, causal events in causal order and strong-commit notices.

        ``async for update in world.updates(box): ...`` — the iterator ends with
        `WorldClosed` when the world closes or fails, with `BusUnavailable` when the bus
        loses its connection (updates may have been missed: open a new stream, with
        ``since`` to resume without a gap; it hears everything again once the bus is
        back), and with `Overloaded` when the consumer falls ``capacity`` updates behind.

        ``since``: None is live from now. A cursor (``CausalDelivery.cursor``, or the
        token ``str(cursor)`` a game stored) first delivers, in causal order, every causal
        event in the interest after it (read from the durable log), then continues live
        with no gap and no duplicate (`worldstate.history._resume`). A cursor older than
        the log's retention ends the stream with `CursorExpired`.

        Opening a stream subscribes this server to the eventual batches and commit notices
        of the interest's regions (None: of every region) and closing it gives them up
        (docs/fanout.md): on the in-process bus at once, on MQTT once the broker has
        acknowledged — ``await world.wait_subscribed()`` waits for that."""
        self._check_open()
        capacity = check_int(capacity, "capacity", 1, MAX_STREAM_CAPACITY)
        keys = interest_keys(
            interest,
            region_size=self.config.region_size,
            max_keys=self.config.max_query_regions,
        )
        cursor = Cursor.decode(since) if since is not None else None
        stream = self.fanout.open(keys, capacity)
        if cursor is not None:
            start_resume(
                stream,
                since=cursor,
                live_from=self.causal.cursor,
                store=self.store,
                server_id=self.server_id,
                op_types=self.op_types,
                spawn=lambda coro, name: self.tasks.spawn(coro, name, job=True),
            )
        return stream

    async def wait_subscribed(self, timeout: float = SUBSCRIBE_TIMEOUT) -> bool:
        """Wait (at most ``timeout`` s) until the broker has acknowledged the subscriptions
        this server's ownership and open `updates` streams need (`updates` subscribes at
        once, but on MQTT the broker's acknowledgement takes a round trip). False on
        timeout."""
        self._check_open()
        return await self.interest.wait_ready(_check_timeout(timeout))

    # -- history ---------------------------------------------------------------------------

    async def checkpoint(self, name: str | None = None) -> Checkpoint:
        """A consistent copy of the world's durable state, kept in the store, taken in one
        read-only snapshot without stopping writes (`worldstate.history`)."""
        self._check_open()
        return await create_checkpoint(self.store, name, by=self.server_id)

    async def events(
        self,
        *,
        stream: str | None = None,
        region: object = None,
        since: object = None,
        until: object = None,
    ) -> AsyncIterator[CausalEvent]:
        """The durable causal log in causal order (the deterministic linearisation of
        `worldstate.history._events`), optionally one ``stream`` (`EmitEvent.stream`), one
        ``region`` (a region key; ``"world"`` for the world-wide stream), after ``since``
        and up to ``until`` (each a cursor or a time in seconds). Each `CausalEvent`'s
        payload is its `CausalDelivery` with a ``cursor``. Raises `CursorExpired` when
        ``since`` is older than the log's retention."""
        self._check_open()
        regions = None
        if region == "world":
            regions = [-1]
        elif region is not None:
            regions = [self._key(region).morton]
        if stream is not None:
            check_id(stream, "stream", self.config.max_id_length)
        async for event in read_events(
            self.store,
            stream=stream,
            regions=regions,
            since=_point(since, "since"),
            until=_point(until, "until"),
            op_types=self.op_types,
        ):
            yield event

    async def _prune_loop(self) -> None:
        """Keep the causal log within ``Config.event_retention``/``event_retention_count``
        (supervised; a failed prune is logged and retried at the next interval)."""
        c = self.config
        while True:
            await asyncio.sleep(c.event_prune_interval)
            try:
                await prune_events(
                    self.store, retention=c.event_retention, keep_per_origin=c.event_retention_count
                )
            except WorldStateError as e:
                log.warning("pruning the causal log failed (will retry): %s", e)

    def publish_update(self, region: RegionKey | None, update: Update) -> None:
        """Hand an update to every stream interested in ``region``."""
        self.fanout.publish(region, update)

    def _on_bus_lost(self, err: Exception) -> None:
        """The bus lost its connection (`BusUnavailable`: it reconnects by itself) or was
        closed (`WorldClosed`). Either way the open streams may have missed updates and
        end; only a closed bus keeps later streams from opening (a transient loss must not:
        a stream opened after the reconnection hears everything again, and its interest
        is what keeps this server subscribed to the regions it watches)."""
        if isinstance(err, WorldClosed):
            self.fanout.fail_all(WorldClosed(f"the world's bus was closed: {err}"))
        else:
            self.fanout.fail_all(
                BusUnavailable(
                    f"the world's bus lost its connection: {err}; open a new stream (with "
                    "since=cursor to resume without a gap)"
                ),
                final=False,
            )

    # -- spatial queries -------------------------------------------------------------------

    async def query(
        self,
        shape: Shape | tuple[Any, Any],
        kinds: Iterable[str] | None = None,
        *,
        limit: int | None = None,
    ) -> list[WorldObject]:
        """Objects whose boxes meet ``shape`` (a `Box`, a `Sphere` or a ``(lo, hi)`` pair),
        optionally only of some ``kinds``, at most ``limit`` of them; ordered by region
        (Morton), then as stored.

        Objects are found from every region they overlap: the query reads the regions its
        shape touches plus the neighbours within half ``Config.max_structure_size`` (see
        `worldstate.node._query`). A big box asks the store which regions exist in it, so
        its cost follows the data, not the volume. Each region is read (from cache when
        possible) if not seen within ``Config.query_staleness`` seconds."""
        self._check_open()
        return await self.views.query(shape, kinds, limit=limit)

    # -- observability ---------------------------------------------------------------------

    @property
    def metrics(self) -> Any:
        """This world's Prometheus registry (a ``prometheus_client.CollectorRegistry``):
        every ``worldstate_*`` family, read from the world's counters at scrape time, plus
        per-class op latency histograms observed by `submit` from the first access on. A
        game mounts it on its own endpoint (``prometheus_client.generate_latest(world.
        metrics)``); ``worldstate serve`` serves it on ``/metrics``."""
        if self._metrics is None:
            from worldstate.metrics import WorldMetrics

            self._metrics = WorldMetrics(self)
        return self._metrics.registry

    async def readiness(self, *, timeout: float = 1.0) -> dict[str, Any]:
        """Readiness: the store answers within ``timeout`` s, this server is on the majority
        side, and held leases are being renewed. ``{"ok": bool, "checks": {...}}``."""
        checks: dict[str, Any] = {}
        try:
            async with asyncio.timeout(timeout):
                await self.store.ping()
            checks["store"] = "ok"
        except (TimeoutError, WorldStateError, OSError) as e:
            checks["store"] = f"unreachable: {str(e)[:200] or type(e).__name__}"
        checks["majority"] = "ok" if self.authoritative else "minority side of a partition"
        if not self.authority.held():
            checks["leases"] = "ok (none held)"
        else:
            last = self.authority.last_renewal_ok
            limit = 2 * self.config.lease_renew_interval + timeout
            if last is None or self.clock() - last <= limit:
                checks["leases"] = "ok"  # None: acquired since the last pass (fresh)
            else:
                checks["leases"] = f"no successful renewal for {self.clock() - last:.1f} s"
        refused = self.interest.refused
        checks["subscriptions"] = (
            "ok" if not refused else f"refused by the broker: {', '.join(sorted(refused))}"
        )
        health = self.health()
        tasks = health["tasks"]
        checks["loops"] = (
            "ok"
            if health["ok"]
            else ("closed" if health["closed"] else f"{tasks['failed_task']}: {tasks['failure']}")
        )
        ok = all(str(v).startswith("ok") for v in checks.values())
        return {"ok": ok, "checks": checks}

    async def drain(self) -> list[RegionKey]:
        """Leave the mesh and hand every held region back: stop heartbeating (the
        coordinator drops this server and places nothing more on it), stop taking
        commands, then for each region drain its strong pipeline (queued ops commit and are
        acknowledged), flush its eventual state into a snapshot and release the lease (the
        next owner gets epoch + 1). Returns the regions released. The world stays open
        (reads and forwarded ops still work) until `close`."""
        self._check_open()
        for what, step in (
            ("leave the mesh", self.membership.close),
            ("stop serving commands", self.commands.close),
        ):
            try:
                await step()
            except Exception as e:  # draining goes on: the regions matter more
                log.warning("%s: drain: %s: %s", self.server_id, what, e)
        released: list[RegionKey] = []
        for key in sorted(self.authority.held(), key=lambda k: k.morton):
            try:
                if await self.release_region(key):
                    released.append(key)
            except WorldStateError as e:
                log.warning("drain: releasing %s failed: %s", key, e)
        return released

    def stats(self) -> dict[str, Any]:
        return {
            "server_id": self.server_id,
            "leases": len(self.leases()),
            **self.views.stats(),
            "cache": self.cache.stats.as_dict(),
            "store": {
                "transactions": self.store.stats.transactions,
                "retries": self.store.stats.retries,
                "retry_reasons": dict(self.store.stats.by_reason),
                "exhausted": self.store.stats.exhausted,
                "recoveries": self.views.recoveries,
            },
            "strong": {
                "group_commits": self.strong.group_commits,
                "forwarded": self.strong.forwarded,
                "served_forwards": self.strong.served_forwards,
                "direct_commits": self.strong.direct_commits,
                "dropped_requests": self.strong.dropped_requests,
                "dropped_replies": self.strong.rpc.dropped_replies,
                "pipelines": len(self.strong.pipelines),
                **self.strong.stats(),
            },
            "causal": self.causal.stats(),
            "eventual": self.eventual.stats(),
            "interest": self.interest.stats(),
            "bus": dataclasses.asdict(self.bus.stats),
            "tasks": self.tasks.status(),
            "dropped_messages": self.views.dropped_notices,
        }


def _point(v: object, what: str) -> Cursor | float | None:
    """A resume point: None, a time (seconds) or a cursor (token, `Cursor`, mapping)."""
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    try:
        return Cursor.decode(v)
    except ValidationError:
        raise ValidationError(f"{what} must be a cursor or a time, got {v!r:.60}") from None


def _check_timeout(timeout: object) -> float:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not (math.isfinite(timeout) and timeout > 0)
    ):
        raise ValidationError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
    return float(timeout)


class _Connect:
    """What `connect` returns: use ``async with`` (closes on exit) or ``await`` it."""

    def __init__(self, config: Config, clock: Callable[[], float], policy: cf.Policy) -> None:
        self._world = World(config, clock=clock, policy=policy)

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
    policy: cf.Policy | None = None,
) -> _Connect:
    """Open a world: ``async with worldstate.connect(url, server_id="gs-1") as world``.

    Arguments override the matching fields of ``config`` (default: `Config.from_env()`).
    ``store`` is a SQLAlchemy URL (``cockroachdb+psycopg://``, ``postgresql+psycopg://`` or
    ``sqlite+aiosqlite:///file.db``); ``cache`` is ``redis://…`` or ``memory://``; ``bus``
    is ``mqtt://…`` or ``memory://[name]``. ``policy`` is the `conflicts.Policy` the strong
    path resolves conflicts with (default `conflicts.DEFAULT_POLICY`; a field may hold a
    `conflicts.CustomStrategy`). Every server of a mesh must use the same policy: it is
    what makes their decisions agree.
    """
    if policy is not None and not isinstance(policy, cf.Policy):
        raise ValidationError(f"policy must be a conflicts.Policy, got {type(policy).__name__}")
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
    return _Connect(cfg, clock, policy if policy is not None else cf.DEFAULT_POLICY)

"""The strong path: where each strong operation commits.

- A region this server owns: the op joins the region's queue; the region committer
  (`worldstate.strong._regions`) decides it in memory against the region's resident state
  and writes the group's deltas in one fenced transaction.
- An inventory op: it belongs to the inventory shard of the inventory it takes from
  (`worldstate.strong._inventory`); the shard's owner batches it the same way.
- A region or shard another live server owns: the op is forwarded to that owner
  (`worldstate.strong._forward`).
- A region or shard nobody owns: this server acquires it first (one writer per key, never
  a free-for-all of direct commits), then commits it as its owner. A region whose lease was
  *released* (a hand-off in progress, or a server that closed) is left to its next owner
  for `HANDOFF_GRACE` seconds first, so that auto-acquisition never races the coordinator.

Every submit has a deadline (``Config.submit_timeout`` or ``timeout=``): when it passes the
caller gets `SubmitTimeout`, saying whether the op may have applied. Commit notices and
cache updates are sent by a notifier task after the futures are resolved, off the commit's
critical path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from consistency import ConsistencyClass
from regions import RegionKey
from worldstate.errors import (
    NotAuthoritative,
    RegionOwned,
    SubmitTimeout,
    ValidationError,
    WorldStateError,
)
from worldstate.objects import Lease
from worldstate.operations import ChangeInventory, Operation, TransferItems
from worldstate.protocol import _topics as topics
from worldstate.protocol._rpc import Rpc
from worldstate.results import Result
from worldstate.store.leases import RELEASED
from worldstate.strong._forward import Forwarder, NotOwner
from worldstate.strong._inventory import InventoryCommitter, ShardKey, home_inventory, shard_of
from worldstate.strong._outcomes import OutcomeMemory, op_digest, to_result
from worldstate.strong._pipeline import Entry, Pipeline
from worldstate.strong._regions import RegionCommitter

if TYPE_CHECKING:
    from worldstate.node import Authority, NodeContext, RegionViews, Router

log = logging.getLogger("worldstate.strong")

__all__ = ["StrongPath", "to_result"]

Route = RegionKey | ShardKey

HANDOFF_GRACE = 1.0
"""Seconds a region released on purpose (its lease ended by a release, as a hand-off does)
is left to its next owner before a submitting server acquires it itself."""


@dataclass(slots=True)
class _Track:
    """Where a submit got to, for the timeout's "may it have applied?"."""

    entry: Entry | None = None
    pipeline: Pipeline[Any] | None = None
    forwarded: bool = False


class StrongPath:
    """The strong path of one server; takes only the node services it uses."""

    def __init__(
        self, ctx: NodeContext, authority: Authority, router: Router, views: RegionViews
    ) -> None:
        self.ctx = ctx
        self.authority = authority
        self.router = router
        self.views = views
        cfg = ctx.config
        self.acquire_region: Callable[[RegionKey], Awaitable[Lease]] = self._acquire_region
        """How a region nobody owns is taken on first use; the composition root sets it to
        `World.acquire_region` (lease, strong state, eventual seed)."""
        self.outcomes = OutcomeMemory()
        self.regions = RegionCommitter(
            store=ctx.store,
            config=cfg,
            server_id=ctx.server_id,
            clock=ctx.clock,
            policy=lambda: ctx.policy,
            lease_of=authority.lease_of,
            lost=authority.lost,
            notify=self._notify,
            outcomes=self.outcomes,
            spawn=ctx.tasks.spawn,
        )
        self.inventories = InventoryCommitter(
            store=ctx.store,
            config=cfg,
            server_id=ctx.server_id,
            clock=ctx.clock,
            authoritative=lambda: authority.authoritative,
            outcomes=self.outcomes,
            spawn=ctx.tasks.spawn,
        )
        self.forwarder = Forwarder(
            bus=ctx.bus,
            spawn=ctx.tasks.spawn,
            server_id=ctx.server_id,
            # the owner answers when its commit is done: the submit's own deadline bounds the
            # wait (`SubmitTimeout`), forward_timeout only the case of no deadline
            timeout=max(cfg.forward_timeout, cfg.submit_timeout + 1.0),
            op_types=router.op_types,
            serve=self._serve,
        )
        self._owner_cache: dict[Route, tuple[str | None, float]] = {}
        self._acquiring: dict[Route, asyncio.Future[None]] = {}
        self._looking: dict[Route, asyncio.Future[str | None]] = {}
        self._released: dict[RegionKey, int | None] = {}
        """region -> the epoch of its lease if that lease was released (not expired)"""
        self._released_seen: dict[RegionKey, tuple[tuple[int, str | None], float]] = {}
        self._notices: dict[RegionKey, int] = {}
        self._notice_event = asyncio.Event()
        self._notifier: asyncio.Task[Any] | None = None
        self._renewer: asyncio.Task[Any] | None = None
        self.auto_acquired = 0
        self.timeouts = 0

    # -- compatibility and stats -----------------------------------------------------------

    @property
    def pipelines(self) -> dict[RegionKey, Pipeline[RegionKey]]:
        return self.regions.pipelines

    @property
    def group_commits(self) -> int:
        return self.regions.group_commits + self.inventories.group_commits

    @property
    def forwarded(self) -> int:
        return self.forwarder.forwarded

    @property
    def served_forwards(self) -> int:
        return self.forwarder.served

    @property
    def dropped_requests(self) -> int:
        return self.forwarder.dropped

    @property
    def direct_commits(self) -> int:
        return 0  # unowned regions are acquired first (see module doc)

    def stats(self) -> dict[str, Any]:
        return {
            "region_groups": self.regions.group_commits,
            "inventory_groups": self.inventories.group_commits,
            "state_loads": self.regions.reloads,
            "snapshot_versions_kept": self.regions.kept_versions,
            "boundary_reads": self.regions.boundary_reads,
            "splits": self.regions.splits,
            "poisoned": self.regions.poisoned,
            "auto_acquired": self.auto_acquired,
            "timeouts": self.timeouts,
            "shards": len(self.inventories.leases),
            "outcomes_in_memory": len(self.outcomes),
        }

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def rpc(self) -> Rpc:
        return self.forwarder.rpc

    async def start(self) -> None:
        me = self.ctx.server_id
        self.regions.start()
        self.inventories.start()
        self.forwarder.start()
        self._notifier = self.ctx.tasks.spawn(self._notify_loop(), f"ws-strong-notices-{me}")
        self._renewer = self.ctx.tasks.spawn(self._renew_loop(), f"ws-shard-renew-{me}")

    async def close(self) -> None:
        await self.regions.close()
        await self.inventories.close()
        await self.forwarder.close()
        for t in (self._notifier, self._renewer):
            if t is not None:
                t.cancel()
                await asyncio.wait([t])  # a crash of it is the supervisor's to report
        for fut in self._acquiring.values():
            if not fut.done():
                fut.cancel()
        with contextlib.suppress(Exception):
            await self.inventories.release_all()

    async def _acquire_region(self, key: RegionKey) -> Lease:
        lease = await self.authority.acquire(key)
        await self.on_acquired(key, lease)
        return lease

    async def on_acquired(self, key: RegionKey, lease: Lease) -> None:
        """The world took a region's lease: load its committed strong state now."""
        try:
            await self.regions.load(key, lease.epoch)
        except WorldStateError as e:  # loaded on the first batch instead
            log.warning("loading the strong state of %s failed: %s", key, e)

    async def drop_pipeline(self, key: RegionKey) -> None:
        """The region is being released: queued ops commit first, then its state goes."""
        await self.regions.drop(key)
        self.regions.forget(key)

    def snapshot_stored(self, key: RegionKey) -> None:
        """A snapshot write changed the region's version: reload before the next group."""
        self.regions.mark_stale(key)

    def strong_rows_kept(self, key: RegionKey, read: int, written: int) -> None:
        """This server's eventual snapshot moved ``key`` from version ``read`` to
        ``written`` without touching a strong row (`RegionPipelines.strong_rows_kept`)."""
        self.regions.strong_rows_kept(key, read, written)

    async def _renew_loop(self) -> None:
        """Renew the inventory-shard leases, as often as the region leases are."""
        while True:
            await asyncio.sleep(self.ctx.config.lease_renew_interval)
            await self.inventories.renew()

    # -- routing ---------------------------------------------------------------------------

    def _route(self, op: Operation, key: RegionKey | None) -> Route:
        if key is not None:
            return key
        if not isinstance(op, (ChangeInventory, TransferItems)):
            raise ValidationError(f"{op.op_type} has no region and is not an inventory op")
        return shard_of(home_inventory(op), self.ctx.config.inventory_shards)

    def _holds(self, route: Route) -> bool:
        if isinstance(route, ShardKey):
            return self.inventories.holds(route)
        return self.authority.holds(route)

    def _pipeline(self, route: Route) -> Pipeline[Any]:
        if isinstance(route, ShardKey):
            return self.inventories.pipeline(route)
        return self.regions.pipeline(route)

    async def submit(
        self, op: Operation, key: RegionKey | None, *, timeout: float | None = None
    ) -> Result:
        t = self.ctx.config.submit_timeout if timeout is None else timeout
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ValidationError(f"timeout must be a finite number of seconds > 0, got {t!r}")
        route = self._route(op, key)
        track = _Track()
        try:
            async with asyncio.timeout(t):
                return await self._submit(op, route, track)
        except TimeoutError:
            self.timeouts += 1
            may = True
            if track.entry is not None and track.pipeline is not None:
                may = not track.pipeline.withdraw(track.entry) and track.entry.taken
            elif not track.forwarded:
                may = False
            maybe = "it may have applied" if may else "it was withdrawn and did not apply"
            raise SubmitTimeout(
                f"{op.op_type} {op.op_id} got no outcome within {t}s ({maybe}); resubmit the "
                "same op (same op_id) to learn its outcome — it never applies twice",
                op_id=op.op_id,
                may_have_applied=may,
            ) from None

    async def _submit(self, op: Operation, route: Route, track: _Track) -> Result:
        digest = op_digest(op)
        me = self.ctx.server_id
        attempts = 0
        while attempts < 4:
            attempts += 1
            if self._holds(route):
                p = self._pipeline(route)
                entry = p.submit(op, digest)
                track.entry, track.pipeline = entry, p
                # not shielded: a submitter whose deadline passes cancels the entry's future,
                # so a still-queued op is skipped by the committer (never applied) and a taken
                # one is reported as "may have applied" (see `submit`)
                return await entry.fut
            owner = await self._owner(route)
            if isinstance(route, RegionKey) and (
                owner == me or (owner is None and self._released.get(route) is not None)
            ):
                # released on purpose (a hand-off moves it), or being released by this very
                # server: give its next owner a moment before taking it on first use
                mark = (self._released.get(route) or 0, owner)
                seen = self._released_seen.get(route)
                if seen is None or seen[0] != mark:
                    seen = self._released_seen[route] = (mark, self.ctx.clock())
                if self.ctx.clock() - seen[1] < HANDOFF_GRACE:
                    attempts -= 1  # waiting, not failing: bounded by the submit deadline
                    self._owner_cache.pop(route, None)
                    await asyncio.sleep(0.02)
                    continue
            if owner is None or owner == me:
                if isinstance(route, RegionKey):
                    self._released_seen.pop(route, None)
                self._require_authority(route)  # a demoted server takes nothing on
                await self._acquire(route)
                continue
            try:
                track.forwarded = True
                return await self.forwarder.forward(owner, op)
            except NotOwner:
                self._owner_cache.pop(route, None)
                continue
        raise NotAuthoritative(
            f"{route}: ownership kept moving while routing op {op.op_id}; retry it (same op_id)",
            key=route,
        )

    def _require_authority(self, route: Route) -> None:
        """No strong write leaves a demoted server, whatever path it takes (the standing
        may have changed while the op was being routed)."""
        if not self.authority.authoritative:
            raise NotAuthoritative(
                f"{self.ctx.server_id} is on the minority side of a partition: strong "
                "operations are refused until it rejoins",
                key=route,
            )

    async def _acquire(self, route: Route) -> None:
        """Take an unowned region or shard (one attempt at a time per key)."""
        pending = self._acquiring.get(route)
        if pending is not None:
            with contextlib.suppress(WorldStateError):
                await asyncio.shield(pending)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acquiring[route] = fut
        try:
            log.info("%s acquires %s on first use", self.ctx.server_id, route)
            if isinstance(route, ShardKey):
                await self.inventories.acquire(route)
            else:
                await self.acquire_region(route)
            self.auto_acquired += 1
            self._owner_cache.pop(route, None)
            if not fut.done():  # close() may have cancelled it meanwhile
                fut.set_result(None)
        except RegionOwned as e:
            self._owner_cache[route] = (e.owner, e.expires_at)
            if not fut.done():
                fut.set_result(None)
        except Exception as e:
            if not fut.done():
                fut.set_exception(e)
                fut.exception()  # retrieved here: the waiters retry on their own
            raise
        except BaseException:
            fut.cancel()
            raise
        finally:
            if self._acquiring.get(route) is fut:
                del self._acquiring[route]

    async def _owner(self, route: Route) -> str | None:
        """Who holds ``route``'s lease (cached until it expires; one store read at a time
        per key however many submits ask)."""
        now = self.ctx.clock()
        hit = self._owner_cache.get(route)
        if hit is not None and (
            (hit[0] is None and hit[1] > self.ctx.clock()) or (hit[0] is not None and hit[1] > now)
        ):
            return hit[0]
        pending = self._looking.get(route)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._looking[route] = fut
        try:
            owner = await self._read_owner(route, now)
            if not fut.done():
                fut.set_result(owner)
            return owner
        except BaseException as e:
            if fut.done():
                pass
            elif isinstance(e, Exception):
                fut.set_exception(e)
                fut.exception()
            else:
                fut.cancel()
            raise
        finally:
            self._looking.pop(route, None)

    async def _read_owner(self, route: Route, now: float) -> str | None:
        if isinstance(route, ShardKey):
            g = await self.inventories.grant(route)
            if g is not None and g.expires_at > now:
                self._owner_cache[route] = (g.owner, g.expires_at)
                return g.owner
            self._owner_cache[route] = (None, self.ctx.clock())
            return None
        lease = await self.ctx.store.lease(route)
        if lease is not None and lease.live(now):
            self._owner_cache[route] = (lease.owner, lease.expires_at)
            self._released.pop(route, None)
            if lease.owner != self.ctx.server_id:
                self._released_seen.pop(route, None)
            return lease.owner
        self._owner_cache[route] = (None, self.ctx.clock())
        released = lease is not None and lease.expires_at <= RELEASED
        self._released[route] = lease.epoch if lease is not None and released else None
        return None

    async def _serve(self, op: Operation) -> Result | None:
        """A forwarded op: run it if this server owns its region or shard."""
        _, cls, key = self.router.check_received(op)  # the same rules as a local submit
        if cls is not ConsistencyClass.STRONG:
            raise ValidationError(f"{op.op_type} is not a strong operation")
        route = self._route(op, key)
        if not self._holds(route):
            return None
        entry = self._pipeline(route).submit(op, op_digest(op))
        async with asyncio.timeout(self.ctx.config.submit_timeout):
            return await asyncio.shield(entry.fut)

    # -- notices ---------------------------------------------------------------------------

    def _notify(self, key: RegionKey, version: int) -> None:
        if version > self._notices.get(key, 0):
            self._notices[key] = version
        self._notice_event.set()

    async def _notify_loop(self) -> None:
        while True:
            await self._notice_event.wait()
            self._notice_event.clear()
            batch, self._notices = self._notices, {}
            for key, version in batch.items():
                try:
                    await self.after_commit(key, version)
                except WorldStateError as e:
                    log.warning("commit notice for %s failed: %s", key, e)

    async def after_commit(self, key: RegionKey, version: int) -> None:
        """Tell caches and other servers the region changed."""
        ctx = self.ctx
        await ctx.cache.mark_newer(key.morton, version)  # older snapshots are refused
        self.views.mark_stale(key)
        with contextlib.suppress(WorldStateError):
            await ctx.bus.publish(
                topics.of(topics.NOTICES, key.morton),
                orjson.dumps({"v": version, "s": ctx.server_id}),
                qos=0,
            )

"""`Authority`: the leases one server holds, and whether it may use them.

The lease table (region → `Lease`) and the partition standing (``authoritative``) live here
and nowhere else: the strong path asks `lease_of` before a commit, the eventual path asks
`holds`, the membership agent calls `demote` / `promote`, the command handler and the world
call `acquire` / `release`. A background loop (started by `start`, owned by the node's
supervisor) renews every held lease while the server is in the majority.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

from regions import RegionKey
from worldstate.errors import AuthorityLost, NotAuthoritative, StoreUnavailable
from worldstate.node._context import NodeContext
from worldstate.objects import Lease

__all__ = ["Authority"]

log = logging.getLogger("worldstate.authority")


class Authority:
    """One server's leases and partition standing (see the module docs)."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._leases: dict[RegionKey, Lease] = {}
        self._lock = asyncio.Lock()
        """Orders renewals against acquire/release: a renewal in flight must not undo a
        release (the store would extend the released row) nor resurrect a lease."""
        self.authoritative = True
        """False while this server is on the losing side of a partition (no strong writes,
        no renewals)."""
        self.renewed = 0
        self.lost_count = 0
        self.last_renewal_ok: float | None = None
        """When a renewal pass last completed without a store failure (readiness)."""
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` whenever the set of held regions changes (acquire, release,
        a lease lost, release at close): the interest subscriptions follow ownership."""
        self._listeners.append(callback)

    def _changed(self) -> None:
        for cb in list(self._listeners):
            try:
                cb()
            except Exception:  # a listener bug must not undo a lease change
                log.exception("%s: a lease-change listener failed", self.ctx.server_id)

    # -- standing --------------------------------------------------------------------------

    def demote(self, why: str) -> None:
        """Stop using authority at once (minority side of a partition)."""
        self.authoritative = False

    def promote(self, why: str) -> None:
        self.authoritative = True

    # -- the table -------------------------------------------------------------------------

    def held(self) -> Mapping[RegionKey, Lease]:
        """Every lease this server believes it holds, live or not (read-only view)."""
        return self._leases

    def live(self) -> dict[RegionKey, Lease]:
        """Leases this server holds that are still live by its clock."""
        now = self.ctx.clock()
        return {k: v for k, v in self._leases.items() if v.live(now)}

    def holds(self, key: RegionKey) -> bool:
        """True when this server holds a live lease on ``key`` and may write it."""
        lease = self._leases.get(key)
        return (
            lease is not None
            and self.authoritative
            and lease.live(self.ctx.clock() + self.ctx.config.clock_skew_margin)
        )

    def lease_of(self, key: RegionKey) -> Lease:
        """This server's live lease on ``key``, or `NotAuthoritative`."""
        me = self.ctx.server_id
        if not self.authoritative:
            raise NotAuthoritative(
                f"{me} is on the minority side of a partition: no strong writes", key=key
            )
        lease = self._leases.get(key)
        if lease is None or not lease.live(self.ctx.clock() + self.ctx.config.clock_skew_margin):
            raise NotAuthoritative(
                f"{me} holds no live lease on region {key}; acquire_region() first", key=key
            )
        return lease

    def lost(self, key: RegionKey, why: str) -> None:
        """Forget the lease on ``key`` (the store said somebody else holds it now)."""
        if self._leases.pop(key, None) is not None:
            self.lost_count += 1
            log.warning("%s lost its lease on %s: %s", self.ctx.server_id, key, why)
            self._changed()

    # -- store round trips -----------------------------------------------------------------

    async def acquire(self, key: RegionKey) -> Lease:
        """Take the region's lease in the store (`RegionOwned` if another live owner)."""
        ctx = self.ctx
        async with self._lock:
            lease = await ctx.store.acquire(key, ctx.server_id, ctx.config.lease_ttl)
            new = key not in self._leases
            self._leases[key] = lease
        if new:
            self._changed()
        return lease

    async def release(self, key: RegionKey) -> bool:
        """Give the lease up in the store (the next owner gets epoch + 1)."""
        async with self._lock:
            lease = self._leases.pop(key, None)
            if lease is None:
                return False
            self._changed()
            return await self.ctx.store.release(key, self.ctx.server_id, lease.epoch)

    async def release_all(self) -> None:
        """Best effort at close: a lease not released here simply expires."""
        for key, lease in list(self._leases.items()):
            with contextlib.suppress(StoreUnavailable, AuthorityLost, OSError):
                await self.ctx.store.release(key, self.ctx.server_id, lease.epoch)
        if self._leases:
            self._leases.clear()
            self._changed()

    async def renew_all(self) -> None:
        """Renew every held lease once. A server in a minority partition renews nothing:
        its leases run out."""
        if not self.authoritative:
            return
        ctx = self.ctx
        failed = False
        for key, lease in list(self._leases.items()):
            async with self._lock:
                if self._leases.get(key) is not lease:
                    continue  # released or re-acquired meanwhile
                try:
                    self._leases[key] = await ctx.store.renew(
                        key, ctx.server_id, lease.epoch, ctx.config.lease_ttl
                    )
                    self.renewed += 1
                except StoreUnavailable as e:
                    failed = True
                    log.warning("renewing lease on %s failed: %s", key, e)
                except AuthorityLost as e:  # Fenced / RegionOwned: somebody took it over
                    self._leases.pop(key, None)
                    self.lost_count += 1
                    log.warning("lease on %s lost: %s", key, e)
                    self._changed()
        if not failed:
            self.last_renewal_ok = ctx.clock()

    def start(self) -> None:
        self.ctx.tasks.spawn(self._renew_loop(), f"ws-renew-{self.ctx.server_id}")

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.config.lease_renew_interval)
            await self.renew_all()

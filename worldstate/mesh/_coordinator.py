"""`MeshCoordinator`: who owns which region, and who belongs to the mesh.

Any number of coordinators may run (``worldstate coordinator``); one acts. The acting one
holds a lease in the store on a well-known name (``ws_coordinator``), taken and renewed
like a region lease, so leader election is the store's consensus, never a home-made one.
A coordinator claims or renews it only while it hears a majority of the agreed membership
(the same rule as the servers'), and gives it up at once when it does not: the coordinator
on the surviving side of a partition is the one that acts. The lease's epoch goes with
every command, and servers refuse commands of an older epoch than they have seen.

What the acting coordinator does, every ``Config.lease_renew_interval`` seconds and as soon
as it hears a server appear or go:

- **Membership.** Records the agreed membership in the store (``ws_membership``, one
  generation per change, conditional writes) and publishes it, retained, on
  ``mesh/membership``: the servers it hears (their retained presence heartbeats, see
  `worldstate.mesh._agent`), minus those that left cleanly. Servers it hears join; servers
  unheard for twice ``Config.partition_timeout`` drop out (by then they have demoted
  themselves). It changes the membership only while what it hears holds a majority of it.
  Every coordinator, acting or not, also drops members that are *gone*: left cleanly, or
  silent on the bus and in the store for ``gone_after`` seconds (dead, not partitioned: a
  partitioned server still heartbeats the store). That keeps a mesh whose majority died,
  or a stale membership left by a previous run, from staying demoted forever; the delay is
  long so that a slow store never passes for a dead server.
- **Placement.** Every known region (stored in ``ws_regions``, leased, or registered with
  `register_region` / `assign`) without a live lease is given to an eligible server — one it
  hears that reports itself authoritative — preferring the server it was last assigned to,
  else the least loaded. A region held by a dead or demoted server is left alone until that
  lease expires; the new owner's acquire then bumps the epoch, and any write of the old
  owner is refused by the store. A lease that lapsed (not released) while its owner still
  heartbeats authority gets one more lease TTL to be renewed (a slow store, not a failure)
  before the region is placed again — on that same owner.
- **Rebalancing** (`rebalance`, and every ``rebalance_interval`` seconds): moves
  regions from the most to the least loaded server by clean hand-offs. A region's load is
  ``1 + entities / ENTITY_UNIT + strong ops per second / OPS_UNIT`` as its owner reports in
  its heartbeats. Hysteresis: nothing moves unless the busiest server carries more than
  ``(1 + hysteresis)`` times the mean, a move must shrink the gap between the two servers,
  and a region moved once stays put for ``cooldown`` seconds.
- **Hand-off** (`handoff`): asks the owner to release (it drains its strong pipeline and
  flushes eventual state into the snapshot), then asks the new owner to acquire (epoch + 1)
  and load the region. Acknowledged strong writes are never lost: they are in the store
  before the release answers, and a late write of the old owner is fenced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import conflicts
from consistency import PartitionState
from regions import RegionKey, as_region_key
from worldstate._validation import check_id
from worldstate.bus import Bus, SignedBus, open_bus
from worldstate.config import Config
from worldstate.errors import (
    BusUnavailable,
    HandoffFailed,
    NotAuthoritative,
    ValidationError,
    WorldStateError,
)
from worldstate.mesh._agent import MEMBERSHIP_TOPIC, PresenceTracker, encode_membership
from worldstate.mesh._handoff import Command
from worldstate.mesh._placement import (
    LeaseView,
    plan_placements,
    plan_rebalance,
    region_weight,
)
from worldstate.node._tasks import Supervisor
from worldstate.objects import Lease
from worldstate.protocol import _topics as topics
from worldstate.protocol._rpc import Rpc
from worldstate.store import Store, bus_keys, mesh_state
from worldstate.store.mesh_state import AgreedMembership, CoordinatorLease, MemberRow
from worldstate.store.retry import RetryPolicy

log = logging.getLogger("worldstate.mesh._coordinator")

REGIONS_REFRESH = 10
"""Cycles between re-reads of the known regions (a `register_region` refreshes at once)."""


@dataclass(frozen=True, slots=True)
class Move:
    """One region moved by `MeshCoordinator.rebalance`."""

    key: RegionKey
    from_server: str
    to_server: str
    epoch: int


class MeshCoordinator:
    """Region assignment, hand-off, rebalancing and membership for one world's mesh.

    ``async with MeshCoordinator(config) as coordinator: ...`` (or `start` / `close`). It
    uses ``config``'s store, bus and namespace, and its timing (``heartbeat_interval``,
    ``partition_timeout``, ``lease_ttl``, ``lease_renew_interval``).

    Keyword-only arguments:
        coordinator_id: this coordinator's id on the bus (never a member of the mesh);
            default ``coord-`` and 8 random hex digits.
        clock: wall clock (seconds since the Unix epoch), as the servers'.
        rebalance_interval: seconds between automatic `rebalance` calls (default 60; the
            first one an interval after start); None: only when called.
        hysteresis: see the module docs (default 0.25).
        cooldown: seconds a moved region stays put (default ``10 * lease_ttl``).
        command_timeout: seconds to wait for a server to answer a command (default
            ``max(5, Config.forward_timeout)``).
        gone_after: seconds a member must be silent on the bus *and* in the store before
            any coordinator, even one without a majority, drops it from the membership
            (default ``max(10 * partition_timeout, 3 * lease_ttl)``).
        max_parallel_commands: placement commands in flight at once.
        store, bus: use these (e.g. the deterministic simulation's) instead of opening the
            ones ``config`` names; the coordinator still closes them on `close`.
    """

    def __init__(
        self,
        config: Config,
        *,
        coordinator_id: str | None = None,
        clock: Callable[[], float] = time.time,
        rebalance_interval: float | None = 60.0,
        hysteresis: float = 0.25,
        cooldown: float | None = None,
        command_timeout: float | None = None,
        gone_after: float | None = None,
        max_parallel_commands: int = 16,
        store: Store | None = None,
        bus: Bus | None = None,
    ) -> None:
        if not isinstance(config, Config):
            raise ValidationError(f"config must be a worldstate.Config, got {type(config)}")
        self.config = config
        self.coordinator_id = check_id(
            coordinator_id if coordinator_id is not None else f"coord-{uuid.uuid4().hex[:8]}",
            "coordinator_id",
            config.max_id_length,
        )
        self.clock = clock
        for name, value in (
            ("rebalance_interval", rebalance_interval),
            ("cooldown", cooldown),
            ("command_timeout", command_timeout),
            ("gone_after", gone_after),
        ):
            if value is not None and not (isinstance(value, int | float) and value > 0):
                raise ValidationError(f"{name} must be None or > 0 seconds, got {value!r}")
        if not (isinstance(hysteresis, int | float) and hysteresis >= 0):
            raise ValidationError(f"hysteresis must be >= 0, got {hysteresis!r}")
        if isinstance(max_parallel_commands, bool) or not (
            isinstance(max_parallel_commands, int) and max_parallel_commands >= 1
        ):
            raise ValidationError("max_parallel_commands must be an int >= 1")
        self.rebalance_interval = rebalance_interval
        self.gone_after = (
            gone_after
            if gone_after is not None
            else max(10 * config.partition_timeout, 3 * config.lease_ttl)
        )
        self.hysteresis = float(hysteresis)
        self.cooldown = cooldown if cooldown is not None else 10 * config.lease_ttl
        self.command_timeout = (
            command_timeout if command_timeout is not None else max(5.0, config.forward_timeout)
        )
        self.period = config.lease_renew_interval
        self.store = (
            store
            if store is not None
            else Store(
                config.store_url,
                policy=RetryPolicy(
                    config.txn_max_attempts, config.txn_backoff_base, config.txn_backoff_max
                ),
                pool_size=min(config.pool_size, 4),
                clock=clock,
            )
        )
        self.signed_bus: SignedBus | None = None
        """The signing layer around the coordinator's own bus (None for an injected bus:
        the deterministic simulation brings its own)."""
        if bus is None:
            self.signed_bus = SignedBus(
                open_bus(config.bus_url, client_id=self.coordinator_id, prefix=config.namespace),
                load_keys=bus_keys.loader(self.store, clock),
                clock=clock,
                max_age=config.bus_max_age,
                skew=config.bus_clock_skew,
                refresh=config.bus_key_refresh,
                spawn=lambda coro, name: self.tasks.spawn(coro, name),
            )
            bus = self.signed_bus
        self.bus: Bus = bus
        self.rpc = Rpc(self.bus)
        self.tracker = PresenceTracker(
            self.coordinator_id, config.partition_timeout, clock, self._poke, self._poke
        )
        self.state = PartitionState(self.coordinator_id)
        self.events: deque[tuple[float, str]] = deque(maxlen=500)
        """Recent decisions (time, text), newest last: membership changes, placements,
        hand-offs, election changes."""
        self.event_count = 0
        """Events recorded since start (``events`` keeps the last 500)."""
        self.placements = 0
        self.handoffs = 0
        self.handoff_seconds = 0.0
        """Total seconds the completed hand-offs took (worldstate.metrics)."""
        self.failures = 0
        self._lease: CoordinatorLease | None = None
        self._holder: CoordinatorLease | None = None
        self._rows: dict[str, MemberRow] = {}
        self._leases: dict[int, Lease] = {}
        self._regions: list[int] = []
        self._desired: dict[int, str | None] = {}
        self._cycles = 0
        self._started_at = 0.0
        self._last_rebalance = 0.0
        self._moved_at: dict[int, float] = {}
        self._busy: dict[int, asyncio.Task[None] | None] = {}
        """Regions with a command in flight (placement task, or None for a hand-off)."""
        self._placing: dict[int, str] = {}
        """Target server of each placement in flight."""
        self._region_locks: dict[int, asyncio.Lock] = {}
        self._slots = asyncio.Semaphore(max_parallel_commands)
        self._wake = asyncio.Event()
        self._acting_changed = asyncio.Event()
        self._wake_elect = asyncio.Event()
        self.tasks = Supervisor(self.coordinator_id)
        self.tasks.on_failure(self._on_crash)
        self._closing: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Self:
        if self._started:
            raise RuntimeError("MeshCoordinator.start() called twice")
        self._started = True
        try:
            await self.store.open()
            await self.bus.start()
            subs = self.tracker.subscribe(self.bus)
            subs.append(
                self.bus.subscribe(
                    topics.of(topics.COMMAND_REPLIES, self.coordinator_id), self.rpc.on_reply
                )
            )
            for sub in subs:
                with contextlib.suppress(WorldStateError):
                    await sub.wait_active(timeout=5.0)
        except BaseException:
            await self._shutdown(release=False)
            raise
        self._started_at = self._last_rebalance = self.clock()
        cid = self.coordinator_id
        self.tasks.spawn(self._elect_loop(), f"ws-coordinator-elect-{cid}")
        self.tasks.spawn(self._work_loop(), f"ws-coordinator-{cid}")
        return self

    async def close(self, *, release: bool = True) -> None:
        """Stop. ``release`` (default) gives the coordinator lease up at once so a standby
        takes over without waiting; False leaves it to expire (what a crash does)."""
        if self._closing is None:
            self._closed = True
            # owned: the close itself, awaited here and by every later close()
            self._closing = asyncio.get_running_loop().create_task(  # owned
                self._shutdown(release=release), name=f"ws-close-{self.coordinator_id}"
            )
        await asyncio.shield(self._closing)

    def _on_crash(self, cause: BaseException) -> None:
        """A supervised loop crashed: stop acting at once and close (the lease is released
        so a standby coordinator takes over); `failure` keeps the cause."""
        if self._closing is None:
            self._closed = True
            # owned: awaited by close(), which the coordinator's owner still calls
            self._closing = asyncio.get_running_loop().create_task(  # owned
                self._shutdown(release=True), name=f"ws-close-{self.coordinator_id}"
            )

    @property
    def failure(self) -> BaseException | None:
        """The crash that stopped this coordinator, if one did."""
        return self.tasks.failure

    async def _shutdown(self, *, release: bool) -> None:
        await self.tasks.close()
        self.rpc.fail_all("the coordinator closed")
        if release and self._lease is not None:
            lease = self._lease
            with contextlib.suppress(Exception):
                await self.store.run(
                    lambda c: mesh_state.release_coordinator(c, self.coordinator_id, lease.epoch),
                    "release the coordinator lease",
                )
        self._lease = None
        with contextlib.suppress(Exception):
            await self.bus.close()
        await self.store.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- observation -----------------------------------------------------------------------

    @property
    def acting(self) -> bool:
        """True while this coordinator holds the live coordinator lease, trusted (like a
        region lease, `World.holds`) only until ``clock_skew_margin`` before it expires: a
        successor whose clock runs ahead may take the lease over at its expiry."""
        return self._lease is not None and self._lease.live(
            self.clock() + self.config.clock_skew_margin
        )

    @property
    def epoch(self) -> int:
        """The election epoch of the lease held (0 when standing by)."""
        return self._lease.epoch if self._lease is not None else 0

    async def wait_acting(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for this coordinator to act; True if it does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.acting:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._acting_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, self.period)):
                    await self._acting_changed.wait()
        return True

    def membership(self) -> dict[str, Any]:
        """The agreed membership and what this coordinator knows of each server:
        ``{"generation", "members", "live", "coordinator", "acting", "servers": {id: {...}}}``
        (as of its last cycle)."""
        now = self.clock()
        live = self.tracker.heard(now) - {self.coordinator_id}
        owned: dict[str, int] = {}
        for lease in self._leases.values():
            if lease.live(now):
                owned[lease.owner] = owned.get(lease.owner, 0) + 1
        servers: dict[str, dict[str, Any]] = {}
        for sid in sorted(set(self._rows) | set(self.tracker.peers)):
            p = self.tracker.peers.get(sid)
            row = self._rows.get(sid)
            servers[sid] = {
                "live": sid in live,
                "member": sid in self.tracker.agreed.members,
                "authoritative": p.authoritative if p else (row.authoritative if row else None),
                "last_heard": self.tracker.view.last_heard(sid),
                "store_heartbeat_at": row.heartbeat_at if row else None,
                "state": row.state if row else None,
                "regions": owned.get(sid, 0),
                "load": round(self._server_load(sid, now), 3),
            }
        holder = self._holder
        return {
            "generation": self.tracker.agreed.generation,
            "members": sorted(self.tracker.agreed.members),
            "live": sorted(live),
            "coordinator": holder.owner if holder is not None and holder.live(now) else None,
            "coordinator_epoch": holder.epoch if holder is not None else 0,
            "acting": self.acting,
            "servers": servers,
        }

    def partition_status(self) -> dict[str, Any]:
        """This coordinator's standing: ``{"view", "membership", "majority", "since",
        "reason", "acting", "epoch"}``. It acts only while ``majority``."""
        doc = self.state.as_dict()
        doc["view"] = sorted(self.tracker.heard() - {self.coordinator_id})
        doc["acting"] = self.acting
        doc["epoch"] = self.epoch
        doc["generation"] = self.tracker.agreed.generation
        return doc

    def owners(self) -> dict[RegionKey, Lease]:
        """Live leases as of the last cycle, by region."""
        now = self.clock()
        return {RegionKey.from_morton(m): le for m, le in self._leases.items() if le.live(now)}

    def _event(self, text: str) -> None:
        self.events.append((self.clock(), text))
        self.event_count += 1
        log.info("%s: %s", self.coordinator_id, text)

    # -- the loop --------------------------------------------------------------------------

    def _poke(self) -> None:
        self._wake.set()
        self._wake_elect.set()

    async def _elect_loop(self) -> None:
        """Standing and election, every ``lease_renew_interval`` (and on any change heard):
        apart from the work loop, so a slow cycle never lets the lease lapse."""
        await self._repeat(self._observe_and_elect, self._wake_elect)

    async def _work_loop(self) -> None:
        await self._repeat(self._work, self._wake)

    async def _repeat(self, body: Callable[[], Any], wake: asyncio.Event) -> None:
        while True:
            try:
                await body()
            except asyncio.CancelledError:
                raise
            except WorldStateError as e:  # the store or the bus is down: next cycle
                log.warning("%s: cycle failed: %s", self.coordinator_id, e)
            wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.period):
                    await wake.wait()
            await asyncio.sleep(0.01)  # coalesce a burst of changes into one cycle

    async def step(self) -> None:
        """One cycle: standing and election, then (acting) membership, placement and
        rebalancing when due. Background tasks run these; tests may call it to hurry."""
        await self._observe_and_elect()
        await self._work()

    async def _observe_and_elect(self) -> None:
        store = self.store

        async def read(c: Any) -> tuple[AgreedMembership, list[MemberRow]]:
            return await mesh_state.read_membership(c), await mesh_state.member_rows(c)

        agreed, rows = await store.run(read, "read membership", read=True)
        self.tracker.learn(agreed)
        self._rows = {r.server_id: r for r in rows}
        self.tracker.note_rows(rows)
        now = self.clock()
        await self._drop_gone(now)
        heard = self.tracker.heard(now) - {self.coordinator_id}
        self.state.update(self.tracker.members(), heard, now)
        await self._elect(now)

    def _keeps_authority(self, heard: frozenset[str]) -> bool:
        """Whether what this coordinator hears *now* holds a majority of the membership
        (the elect loop's verdict may be a moment old)."""
        members = self.tracker.members()
        if not members:
            return True
        return conflicts.decide_partition(members, heard).keeps_authority

    async def _work(self) -> None:
        if not self.acting:
            return
        self._cycles += 1
        now = self.clock()
        heard = self.tracker.heard(now) - {self.coordinator_id}
        if not self._keeps_authority(heard):
            self._wake_elect.set()  # stand down at once
            return
        await self._record_membership(now, heard)
        await self._place(now)
        if (
            self.rebalance_interval is not None
            and now - self._last_rebalance >= self.rebalance_interval
        ):
            self._last_rebalance = now
            try:
                await self.rebalance()
            except WorldStateError as e:
                log.warning("%s: rebalance failed: %s", self.coordinator_id, e)

    async def _elect(self, now: float) -> None:
        was = self.acting
        if self.state.majority:
            lease = await self.store.run(
                lambda c: mesh_state.claim_coordinator(
                    c, self.coordinator_id, self.config.lease_ttl, now
                ),
                "claim the coordinator lease",
            )
            self._holder = lease
            self._lease = lease if lease.owner == self.coordinator_id else None
            # the epoch goes into every envelope this coordinator signs
            if self.signed_bus is not None:
                self.signed_bus.epoch = self._lease.epoch if self._lease is not None else -1
        elif self._lease is not None:
            lease, self._lease = self._lease, None
            await self.store.run(
                lambda c: mesh_state.release_coordinator(c, self.coordinator_id, lease.epoch),
                "release the coordinator lease",
            )
            self._event(f"stands down: {self.state.reason}")
        else:
            self._holder = await self.store.run(
                mesh_state.read_coordinator, "read the coordinator lease", read=True
            )
        if self.acting != was:
            self._acting_changed.set()
            if self.acting:
                self._event(f"acts as coordinator (epoch {self.epoch})")
                self._regions = []  # re-read everything
                with contextlib.suppress(WorldStateError):
                    await self._publish_membership(self.tracker.agreed)

    # -- membership ------------------------------------------------------------------------

    def _unheard_for(self, sid: str, now: float) -> float:
        """Seconds since ``sid`` was last heard (a cleared presence counts as the last time:
        a broker blip that publishes a will must not change the membership at once)."""
        last = self.tracker.view.last_heard(sid)
        if last is None:
            last = self.tracker.departed.get(sid)
        return float("inf") if last is None else now - last

    def _gone(self, sid: str, now: float) -> bool:
        """Left cleanly, or silent on the bus and in the store for ``gone_after``."""
        if sid in self.tracker.left:
            return True
        row = self._rows.get(sid)
        if row is not None and row.state == "left":
            return True
        quiet = min(self._unheard_for(sid, now), now - (row.heartbeat_at if row else 0.0))
        return quiet > self.gone_after

    async def _drop_gone(self, now: float) -> None:
        """Any coordinator: drop members that are dead (no bus, no store heartbeat) or left."""
        agreed = self.tracker.agreed
        if not agreed.members:
            return
        gone = {m for m in agreed.members if self._gone(m, now)}
        if gone:
            await self._write_membership(agreed, agreed.members - gone, f"gone: {sorted(gone)}")

    async def _record_membership(self, now: float, heard: frozenset[str]) -> None:
        """The acting coordinator: servers it hears join; servers that left go; servers
        unheard for twice the partition timeout (they have demoted themselves by then) go,
        but never in its first such period (it may not have heard everyone yet)."""
        agreed = self.tracker.agreed
        left = set(self.tracker.left)
        members = (set(agreed.members) | heard) - left
        drop_after = 2 * self.config.partition_timeout
        if now - self._started_at >= drop_after:
            members = {s for s in members if self._unheard_for(s, now) <= drop_after}
        new = frozenset(members)
        if new != agreed.members and self._keeps_authority(
            self.tracker.heard() - {self.coordinator_id}
        ):
            added, removed = sorted(new - agreed.members), sorted(agreed.members - new)
            await self._write_membership(agreed, new, f"joined {added}, dropped {removed}")

    async def _write_membership(
        self, old: AgreedMembership, members: frozenset[str], why: str
    ) -> None:
        now = self.clock()
        try:
            new = await self.store.run(
                lambda c: mesh_state.write_membership(
                    c, old.generation, members, now, self.coordinator_id
                ),
                "record membership",
            )
        except mesh_state.MembershipChanged:
            return  # a rival wrote first; re-read next cycle
        self.tracker.learn(new)
        self._event(f"membership generation {new.generation}: {sorted(members)} ({why})")
        self.state.update(
            self.tracker.members(), self.tracker.heard(now) - {self.coordinator_id}, now
        )
        with contextlib.suppress(WorldStateError):
            await self._publish_membership(new)

    async def _publish_membership(self, m: AgreedMembership) -> None:
        if m.generation:
            await self.bus.publish(MEMBERSHIP_TOPIC, encode_membership(m), qos=1, retain=True)

    # -- placement -------------------------------------------------------------------------

    def eligible(self, now: float | None = None) -> list[str]:
        """Servers that may be given regions: heard lately, reporting authority, not left."""
        t = self.clock() if now is None else now
        heard = self.tracker.heard(t)
        out = []
        for sid, p in self.tracker.peers.items():
            row = self._rows.get(sid)
            if sid in heard and p.authoritative and (row is None or row.state != "left"):
                out.append(sid)
        return sorted(out)

    def _region_load(self, morton: int, owner: str) -> float:
        p = self.tracker.peers.get(owner)
        rl = p.load.get(morton) if p is not None else None
        if rl is None:
            return region_weight(None, None)
        return region_weight(rl.entities, rl.ops_per_s)

    def _server_load(self, sid: str, now: float) -> float:
        return sum(
            self._region_load(m, sid)
            for m, le in self._leases.items()
            if le.owner == sid and le.live(now)
        )

    async def _refresh(self) -> None:
        leases = await self.store.leases()
        self._leases = {le.key.morton: le for le in leases}
        if not self._regions or self._cycles % REGIONS_REFRESH == 0:
            self._regions = await self.store.run(
                mesh_state.known_regions, "list known regions", read=True
            )
            self._desired = await self.store.run(
                mesh_state.assignments, "read assignments", read=True
            )

    async def _place(self, now: float) -> None:
        await self._refresh()
        eligible = self.eligible(now)
        plan = plan_placements(
            regions=self._regions,
            leases={m: LeaseView(le.owner, le.expires_at) for m, le in self._leases.items()},
            eligible=eligible,
            loads={s: self._server_load(s, now) for s in eligible},
            desired=self._desired,
            busy=self._busy,
            in_flight=self._placing.values(),
            now=now,
            grace=self.config.lease_ttl,
        )
        for p in plan:
            task = self.tasks.spawn(
                self._place_one(p.morton, p.server), f"ws-place-{p.morton}-{p.server}", job=True
            )
            self._busy[p.morton] = task
            self._placing[p.morton] = p.server

    async def _place_one(self, morton: int, server: str) -> None:
        key = RegionKey.from_morton(morton)
        try:
            async with self._slots:
                lease = await self._acquire_on(server, key)
            self.placements += 1
            self._leases[morton] = lease
            self._desired[morton] = server
            await self.store.run(
                lambda c: mesh_state.put_assignment(c, morton, server, self.clock()),
                "record assignment",
            )
            self._event(f"placed {key} on {server} (epoch {lease.epoch})")
        except WorldStateError as e:
            self.failures += 1
            log.info("%s: placing %s on %s failed: %s", self.coordinator_id, key, server, e)
        finally:
            if self._busy.get(morton) is asyncio.current_task():
                del self._busy[morton]
                self._placing.pop(morton, None)

    # -- commands --------------------------------------------------------------------------

    def _require_acting(self) -> CoordinatorLease:
        lease = self._lease
        if lease is None or not self.acting:
            raise NotAuthoritative(
                f"coordinator {self.coordinator_id} is standing by (another coordinator acts, "
                "or it does not hear a majority of the mesh); ask the acting one"
            )
        return lease

    async def _command(self, server: str, name: str, key: RegionKey) -> dict[str, Any]:
        lease = self._require_acting()
        request = Command("", self.coordinator_id, lease.epoch, name, key).fields()
        try:
            reply = await self.rpc.call(
                topics.of(topics.COMMANDS, server), request, self.command_timeout
            )
        except TimeoutError:
            raise HandoffFailed(
                key, server, name, f"no answer within {self.command_timeout} s"
            ) from None
        except BusUnavailable as e:
            raise HandoffFailed(key, server, name, str(e)) from None
        if not reply.get("ok"):
            raise HandoffFailed(key, server, name, str(reply.get("error") or reply.get("code")))
        return reply

    async def _acquire_on(self, server: str, key: RegionKey) -> Lease:
        reply = await self._command(server, "acquire", key)
        epoch, expires = reply.get("epoch"), reply.get("expires_at")
        if not isinstance(epoch, int) or not isinstance(expires, int | float):
            raise HandoffFailed(key, server, "acquire", f"malformed answer {reply!r}")
        return Lease(key, server, epoch, float(expires))

    def _key(self, key: object) -> RegionKey:
        try:
            k: RegionKey = as_region_key(key)
        except ValueError as e:
            raise ValidationError(str(e)) from None
        return k

    async def register_region(self, key: RegionKey | tuple[int, int, int] | int) -> None:
        """Make a region known (placed on some server at the next cycle) without choosing
        its owner. Regions already stored or leased are known anyway."""
        await self.register_regions([key])

    async def register_regions(
        self, keys: Iterable[RegionKey | tuple[int, int, int] | int]
    ) -> None:
        """`register_region` for many regions, in one transaction."""
        codes = sorted({self._key(k).morton for k in keys})
        now = self.clock()

        async def body(c: Any) -> None:
            for m in codes:
                await mesh_state.put_assignment(c, m, self._desired.get(m), now)

        await self.store.run(body, f"register {len(codes)} regions")
        self._regions = sorted({*self._regions, *codes})
        self._poke()

    async def assign(self, key: RegionKey | tuple[int, int, int] | int, server_id: str) -> Lease:
        """Place ``key`` on ``server_id``: it acquires the region if nobody holds it, else
        the region is handed off to it. Remembered: the coordinator puts the region back on
        ``server_id`` whenever it is unowned and that server is eligible."""
        k = self._key(key)
        sid = check_id(server_id, "server_id", self.config.max_id_length)
        self._require_acting()
        m = k.morton
        now = self.clock()
        await self.store.run(
            lambda c: mesh_state.put_assignment(c, m, sid, now), "record assignment"
        )
        self._desired[m] = sid
        if m not in self._regions:
            self._regions = sorted({*self._regions, m})
        return await self.handoff(k, sid)

    async def handoff(self, key: RegionKey | tuple[int, int, int] | int, to_server: str) -> Lease:
        """Move ``key`` to ``to_server`` cleanly: the current owner (if any live one)
        drains its strong pipeline, flushes eventual state and releases; then ``to_server``
        acquires (epoch + 1) and loads the region. Returns the new lease. Raises
        `HandoffFailed` if ``to_server`` is not live and authoritative (checked before the
        owner is asked to let go), refuses or does not answer; `NotAuthoritative` if this
        coordinator is not the acting one."""
        k = self._key(key)
        sid = check_id(to_server, "to_server", self.config.max_id_length)
        self._require_acting()
        if sid not in self.eligible():
            raise HandoffFailed(
                k,
                sid,
                "hand-off",
                "not a live, authoritative server of the mesh (no recent "
                "heartbeat saying it keeps authority)",
            )
        m = k.morton
        started = time.monotonic()
        async with self._region_locks.setdefault(m, asyncio.Lock()):
            # a placement under way finishes first (hand-offs queue on the lock)
            while (placing := self._busy.get(m)) is not None:
                with contextlib.suppress(Exception):
                    await placing
            self._busy[m] = None
            try:
                lease = await self.store.lease(k)
                now = self.clock()
                if lease is not None and lease.live(now):
                    if lease.owner == sid:
                        return lease
                    await self._command(lease.owner, "release", k)
                new = await self._acquire_on(sid, k)
            finally:
                self._busy.pop(m, None)
        self.handoffs += 1
        self.handoff_seconds += time.monotonic() - started
        self._leases[m] = new
        self._desired[m] = sid
        moved = lease is not None and lease.live(now) and lease.owner != sid
        if moved:
            self._moved_at[m] = self.clock()  # the rebalancing cooldown starts
        await self.store.run(
            lambda c: mesh_state.put_assignment(c, m, sid, self.clock()), "record assignment"
        )
        self._event(
            f"handed {k} off to {sid} (epoch {new.epoch}"
            + (f", from {lease.owner})" if moved and lease is not None else ")")
        )
        return new

    async def rebalance(self, *, max_moves: int = 8) -> list[Move]:
        """Move regions from the busiest servers to the idlest (see the module docs for the
        load measure and the hysteresis). Returns the moves made."""
        self._require_acting()
        # placements under way finish first: a plan made without the regions they are placing
        # would balance the rest and leave the mesh uneven once they land (each placement has
        # its own deadlines; the wait is bounded by a lease TTL all the same)
        placing = [t for t in self._busy.values() if t is not None]
        if placing:
            await asyncio.wait(placing, timeout=self.config.lease_ttl)
        await self._refresh()
        now = self.clock()
        servers = self.eligible(now)
        if len(servers) < 2:
            return []
        held: dict[str, dict[int, float]] = {s: {} for s in servers}
        for m, le in self._leases.items():
            if le.live(now) and le.owner in held and m not in self._busy:
                held[le.owner][m] = self._region_load(m, le.owner)
        plan = plan_rebalance(
            held=held,
            moved_at=self._moved_at,
            now=now,
            hysteresis=self.hysteresis,
            cooldown=self.cooldown,
            max_moves=max_moves,
        )
        moves: list[Move] = []
        for step in plan:
            key = RegionKey.from_morton(step.morton)
            try:
                new = await self.handoff(key, step.target)
            except HandoffFailed as e:
                self.failures += 1
                log.warning("%s: rebalance move failed: %s", self.coordinator_id, e)
                break
            moves.append(Move(key, step.source, step.target, new.epoch))
        return moves

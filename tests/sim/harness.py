"""Deterministic simulation of a mesh of REAL `worldstate.World` servers and REAL
`worldstate.MeshCoordinator`s (see docs/simulation.md).

Everything runs in one process on a virtual-time event loop (`tests.sim.vloop`): the
servers' and coordinators' own tasks (renewals, heartbeats, membership verdicts, placement,
rebalancing, hand-offs, strong group commits, eventual ticks and snapshots), the in-process
bus whose hub drives the sans-I/O fault network (`worldstate.bus.netsim`), and the real
`Store` on one in-memory SQLite database through a thread-free driver with the store's own
fault network (`tests.sim.store_sim`). One seed drives every random choice — the workload,
the faults, the fault network's draws, the store's latencies, the retry jitter — so a
failing seed replays exactly: ``python -m tests.sim.harness --seed N --trace``.

The invariants (`INVARIANTS`) are checked while the run goes (after every committed store
transaction, and every `CHECK_EVERY` seconds of virtual time) and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import random
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from regions import RegionKey
from tests.sim.store_sim import URL, Network, SimDatabase, SimStore, StoreFaults
from tests.sim.vloop import VirtualTimeLoop, run_virtual
from worldstate import Config, MeshCoordinator, World
from worldstate.bus import Hub, get_hub
from worldstate.errors import WorldStateError
from worldstate.node._authority import Authority
from worldstate.operations import EmitEvent, MoveCreature, PlaceStructure
from worldstate.results import Accepted, Committed, Rejected

EPOCH0 = 1_800_000_000.0
"""Virtual time 0 on the servers' wall clocks (seconds since the Unix epoch)."""
CHECK_EVERY = 0.05
"""Seconds of virtual time between two polls of the servers' beliefs."""
STORE = "store"
"""The store's name in partition groups."""

INVARIANTS = {
    "lease-exclusive": "at no instant do two servers both believe they hold a region (World.holds)",
    "coordinator-exclusive": "at no instant do two coordinators both act (hold the live "
    "coordinator lease by their clocks)",
    "one-owner-per-epoch": "the store never grants one region's epoch to two servers, and "
    "epochs never go back",
    "fencing": "the store accepts no region write from a server while another server "
    "believes it holds the region (World.holds) or holds its live lease",
    "demoted-commit": "the store accepts no strong commit that its sender sent while demoted",
    "timely-demotion": "a server cut off from a majority demotes itself within the bound",
    "acked-durable": "every acknowledged strong op is committed in the store at the end",
    "same-outcome": "resubmitting an acknowledged op_id returns the same Committed version",
    "clean-errors": "submit raises only worldstate errors (or the caller's timeout)",
    "convergence": "after the final heal and quiet phase, every server's eventual creature "
    "table is the same",
    "causal-durable": "every acknowledged (Accepted) causal event is in the durable event log",
    "causal-delivered": "after the final heal and quiet phase, every server has delivered "
    "every logged causal event",
    "recovery": "after the final heal, every region has exactly one authoritative holder",
}


class InvariantViolation(AssertionError):
    """An invariant failed; carries what is needed to replay it."""

    def __init__(
        self, seed: int, invariant: str, at: float, detail: str, trace: Sequence[str], argv: str
    ) -> None:
        self.seed, self.invariant, self.at, self.detail = seed, invariant, at, detail
        self.trace = list(trace)
        tail = "\n".join(f"    {line}" for line in self.trace[-40:])
        super().__init__(
            f"seed {seed}: invariant {invariant!r} violated at t={at:.3f}: {detail}\n"
            f"  ({INVARIANTS.get(invariant, '')})\n  last events:\n{tail}\n"
            f"  replay: python -m tests.sim.harness --seed {seed} --trace{argv}\n"
            f"  or:     pytest tests/sim -k {seed_id(seed)}"
        )


def seed_id(seed: int) -> str:
    return f"seed{seed:05d}"


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One simulated world's shape and timing (the defaults are what CI runs)."""

    min_servers: int = 3
    max_servers: int = 5
    coordinators: int = 2
    regions: int = 6
    fault_phase: float = 20.0
    quiet_phase: float = 12.0
    lease_ttl: float = 3.0
    lease_renew_interval: float = 0.75
    heartbeat_interval: float = 0.5
    partition_timeout: float = 2.0
    clock_skew_margin: float = 0.8
    max_skew: float = 0.2
    strong_every: float = 0.15
    move_every: float = 0.25
    causal_every: float = 0.4
    submit_timeout: float = 4.0
    max_message_delay: float = 0.3

    def __post_init__(self) -> None:
        if 2 * self.max_skew > self.clock_skew_margin:
            raise ValueError(
                "2 * max_skew must be <= clock_skew_margin: two servers' clocks differ by up "
                "to 2 * max_skew, and only the margin keeps their beliefs in a lease apart"
            )


@dataclass(slots=True)
class RunResult:
    seed: int
    trace_hash: str
    events: int
    stats: dict[str, int]
    trace: list[str] = field(default_factory=list, repr=False)
    classes: dict[str, str] = field(default_factory=dict)
    """Evidence of what ran: role → fully qualified class name."""
    evidence: dict[str, int] = field(default_factory=dict)
    """Counters kept inside worldstate's own code, summed over the servers/coordinators."""
    servers: list[World] = field(default_factory=list, repr=False)
    """The (closed) server objects the run drove."""
    coordinators: list[MeshCoordinator] = field(default_factory=list, repr=False)


# -- deliberately broken variants (the harness must catch each) ------------------------------


@contextlib.contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _no_fencing() -> contextlib.AbstractContextManager[None]:
    from worldstate.store import _lease_rules

    def check_fence(key: Any, row: Any, epoch: Any, writer: str, now: float) -> int:
        return row.epoch if row is not None else 0

    return _patched(_lease_rules, "check_fence", check_fence)


def _never_demote() -> contextlib.AbstractContextManager[None]:
    from worldstate.mesh import _agent

    return _patched(_agent.MembershipAgent, "decide", lambda self: False)


def _ignore_expiry() -> contextlib.AbstractContextManager[None]:
    """Trust a held lease whatever its expiry says (until the store refuses a renewal)."""

    def holds(self: Authority, key: RegionKey) -> bool:
        return key in self._leases and self.authoritative

    return _patched(Authority, "holds", holds)


BROKEN_VARIANTS: dict[
    str, tuple[Callable[[], contextlib.AbstractContextManager[None]], frozenset[str]]
] = {
    "no-fencing": (_no_fencing, frozenset({"fencing"})),
    "never-demote": (_never_demote, frozenset({"timely-demotion"})),
    # a server trusting an expired lease: two believers, or a write under a believer
    "ignore-expiry": (_ignore_expiry, frozenset({"lease-exclusive", "fencing"})),
}
"""name → (patch of the real code, the invariants expected to catch it)."""


# -- the simulation --------------------------------------------------------------------------


class Simulation:
    """One seeded run (see the module docs)."""

    def __init__(
        self,
        seed: int,
        config: SimConfig | None = None,
        *,
        broken: str | None = None,
        keep_trace: bool = False,
    ) -> None:
        if broken is not None and broken not in BROKEN_VARIANTS:
            raise ValueError(f"unknown broken variant {broken!r}; one of {sorted(BROKEN_VARIANTS)}")
        self.seed = seed
        self.cfg = config or SimConfig()
        self.broken = broken
        self.keep_trace = keep_trace
        self.rng = random.Random(seed)
        self.trace: deque[str] = deque(maxlen=None if keep_trace else 200)
        self._hash = hashlib.sha256()
        self.events = 0
        self.counts: Counter[str] = Counter()
        self.violation: InvariantViolation | None = None
        self._violated = asyncio.Event()
        self.loop: VirtualTimeLoop | None = None
        self.worlds: dict[str, World] = {}
        self.coordinators: dict[str, MeshCoordinator] = {}
        self.skew: dict[str, float] = {}
        self.keys: list[RegionKey] = []
        self.acked: dict[uuid.UUID, tuple[int, str]] = {}
        self.causal_acked: dict[uuid.UUID, str] = {}
        self.uncertain: list[tuple[PlaceStructure, str]] = []
        self.ops = itertools.count()
        # checker state
        self.owner_of: dict[tuple[int, int], str] = {}
        self.epoch_of: dict[int, int] = {}
        self.versions: dict[int, int] = {}
        self.outcomes = 0
        self.partition: list[set[str]] | None = None
        self.partition_since = 0.0
        self.one_way = False
        self.membership: tuple[int, frozenset[str]] = (0, frozenset())
        """The agreed membership in the store (generation, members)."""
        self.partition_membership = self.membership
        self.standing: dict[str, bool] = {}
        self.acting: set[str] = set()
        self.crashed: set[str] = set()
        self._crash: asyncio.Task[None] | None = None
        self._restarting: World | None = None
        self._store_group: set[str] = set()

    # -- time, trace, failure ---------------------------------------------------------------

    @property
    def now(self) -> float:
        assert self.loop is not None
        return self.loop.time()

    def clock_of(self, name: str) -> Callable[[], float]:
        offset = self.skew[name]
        loop = self.loop
        assert loop is not None
        return lambda: EPOCH0 + loop.time() + offset

    def record(self, text: str) -> None:
        line = f"{self.now:9.3f} {text}"
        self.events += 1
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        self.trace.append(line)

    def note(self, text: str) -> None:
        """Add a line to the trace without hashing it (the product's log lines)."""
        if self.loop is not None:
            self.trace.append(f"{self.now:9.3f}   | {text}")

    def fail(self, invariant: str, detail: str) -> None:
        if self.violation is None:
            argv = f" --broken {self.broken}" if self.broken else ""
            self.violation = InvariantViolation(
                self.seed, invariant, self.now, detail, list(self.trace), argv
            )
            self.record(f"VIOLATION {invariant}: {detail}")
            self._violated.set()

    # -- building the mesh ------------------------------------------------------------------

    def _server_config(self, sid: str) -> Config:
        c = self.cfg
        return Config(
            store_url=URL,
            bus_url=f"memory://{self.hub_name}",
            cache_url="memory://",
            server_id=sid,
            namespace="sim",
            extra_object_kinds=("wall",),
            lease_ttl=c.lease_ttl,
            lease_renew_interval=c.lease_renew_interval,
            heartbeat_interval=c.heartbeat_interval,
            partition_timeout=c.partition_timeout,
            clock_skew_margin=c.clock_skew_margin,
            snapshot_interval=2.0,
            tick_rate=10.0,
            forward_timeout=1.0,
        )

    def _store(self, name: str, standing: Callable[[], bool]) -> SimStore:
        return SimStore(
            self.db,
            client=name,
            clock=self.clock_of(name),
            network=self.net,
            observer=self.on_write,
            standing=standing,
        )

    def _new_world(self, sid: str) -> World:
        holder: list[World] = []
        store = self._store(sid, lambda: bool(holder and holder[0].authoritative))
        world = World(
            self._server_config(sid),
            clock=self.clock_of(sid),
            store=store,
            rng=random.Random(self.rng.getrandbits(64)),
        )
        holder.append(world)
        return world

    def _new_coordinator(self, cid: str, any_server: str) -> MeshCoordinator:
        return MeshCoordinator(
            self._server_config(any_server),
            coordinator_id=cid,
            clock=self.clock_of(cid),
            rebalance_interval=4.0,
            cooldown=6.0,
            command_timeout=2.0,
            store=self._store(cid, lambda: True),
        )

    async def _start(self) -> None:
        rng = self.rng
        n = rng.randint(self.cfg.min_servers, self.cfg.max_servers)
        self.server_ids = [f"s{i}" for i in range(n)]
        self.coordinator_ids = [f"coord-{chr(97 + i)}" for i in range(self.cfg.coordinators)]
        for name in [*self.server_ids, *self.coordinator_ids]:
            self.skew[name] = rng.uniform(-self.cfg.max_skew, self.cfg.max_skew)
        self.keys = [RegionKey(i, 0, 0) for i in range(self.cfg.regions)]
        self.record(f"start: {n} servers, skews {[round(self.skew[s], 3) for s in self.skew]}")
        for sid in self.server_ids:
            world = self._new_world(sid)
            await world.open()
            self.worlds[sid] = world
            self.standing[sid] = world.authoritative
        for cid in self.coordinator_ids:
            coordinator = self._new_coordinator(cid, self.server_ids[0])
            await coordinator.start()
            self.coordinators[cid] = coordinator
        first = self.coordinators[self.coordinator_ids[0]]
        await first.register_regions(self.keys)

    async def _stop(self) -> None:
        if self._restarting is not None:  # a restart cut short by the end of the run
            with contextlib.suppress(Exception):
                await self._restarting.close()
        for coordinator in self.coordinators.values():
            with contextlib.suppress(Exception):
                await coordinator.close()
        for world in list(self.worlds.values()):
            with contextlib.suppress(Exception):
                await world.close()

    # -- the checker ------------------------------------------------------------------------

    def on_write(self, client: str, what: str, sent_authoritative: bool, sent_at: float) -> None:
        """After every committed write transaction (see `SimStore.run`)."""
        for rk, owner, epoch in self.db.query(
            "SELECT region_key, owner, epoch FROM ws_leases ORDER BY region_key"
        ):
            last = self.epoch_of.get(rk)
            if last is not None and epoch < last:
                self.fail("one-owner-per-epoch", f"region {rk}: epoch went from {last} to {epoch}")
            known = self.owner_of.get((rk, epoch))
            if known is None:
                self.owner_of[(rk, epoch)] = owner
                if last != epoch:
                    self.record(f"lease {self._region(rk)} -> {owner} epoch {epoch} ({client})")
            elif known != owner:
                self.fail(
                    "one-owner-per-epoch",
                    f"region {rk} epoch {epoch} granted to {known} and then to {owner}",
                )
            self.epoch_of[rk] = epoch
        leases = {
            rk: (owner, epoch, expires)
            for rk, owner, epoch, expires in self.db.query(
                "SELECT region_key, owner, epoch, expires_at FROM ws_leases"
            )
        }
        writer_now = self.clock_of(client)()
        for rk, version, stored_by in self.db.query(
            "SELECT region_key, version, stored_by FROM ws_regions"
        ):
            if version <= self.versions.get(rk, 0):
                continue
            self.versions[rk] = version
            key = RegionKey.from_morton(rk)
            believers = [s for s, w in self.worlds.items() if s != client and w.holds(key)]
            owner, epoch, expires = leases.get(rk, (None, 0, 0.0))
            live_other = owner is not None and owner != client and expires > writer_now
            if stored_by != client or believers or live_other:
                self.fail(
                    "fencing",
                    f"region {self._region(rk)} v{version} written by {client} ({what!r}, "
                    f"stored_by {stored_by}) while {believers or owner} held it (lease epoch "
                    f"{epoch} of {owner}, expires {expires - EPOCH0:.3f}, writer's clock "
                    f"{writer_now - EPOCH0:.3f})",
                )
        for generation, members in self.db.query("SELECT generation, members FROM ws_membership"):
            if generation != self.membership[0]:
                self.membership = (int(generation), frozenset(json.loads(members)))
                self.record(f"membership g{generation}: {sorted(self.membership[1])}")
        (outcomes,) = self.db.query("SELECT COUNT(*) FROM ws_outcomes")[0]
        if outcomes > self.outcomes:
            self.outcomes = outcomes
            # strong commits only: causal appends record outcomes too, and need no authority
            if client in self.worlds and not sent_authoritative and what.startswith("commit "):
                self.fail(
                    "demoted-commit",
                    f"{client} sent {what!r} at {sent_at - EPOCH0:.3f} while demoted, and the "
                    "store accepted it",
                )

    def _region(self, morton: int) -> str:
        k = RegionKey.from_morton(morton)
        return f"r{k.ix}"

    def _majority_side(self, group: set[str], members: set[str]) -> bool:
        if not members:
            return True  # no membership recorded yet: nothing to split from
        inside = group & members
        if 2 * len(inside) > len(members):
            return True
        return 2 * len(inside) == len(members) and min(members) in inside

    async def _watch(self) -> None:
        cfg = self.cfg
        # silence for the timeout, measured from a presence stamped by a clock up to
        # 2 * max_skew ahead and delivered up to max_message_delay late, and the next verdict
        # comes with the next heartbeat (plus one more for the one in flight)
        bound = (
            cfg.partition_timeout
            + 2 * cfg.heartbeat_interval
            + cfg.max_message_delay
            + 2 * cfg.max_skew
            + 0.25
        )
        while True:
            await asyncio.sleep(CHECK_EVERY)
            now = self.now
            for key in self.keys:
                holders = [s for s, w in self.worlds.items() if w.holds(key)]
                if len(holders) > 1:
                    self.fail("lease-exclusive", f"{key} is held by {holders} at once")
            acting = {c for c, co in self.coordinators.items() if co.acting}
            if len(acting) > 1:
                self.fail("coordinator-exclusive", f"{sorted(acting)} act at once")
            if acting != self.acting:
                self.acting = acting
                self.record(f"acting coordinator: {sorted(acting)}")
            for sid, world in self.worlds.items():
                if world.authoritative != self.standing[sid]:
                    self.standing[sid] = world.authoritative
                    self.record(f"{sid} {'promoted' if world.authoritative else 'demoted'}")
            if (
                self.partition is not None
                and not self.one_way
                and now - self.partition_since > bound
                and self.membership == self.partition_membership  # no change meanwhile
            ):
                members = set(self.membership[1])
                for group in self.partition:
                    if self._majority_side(group, members):
                        continue
                    for sid in sorted(group & set(self.worlds)):
                        if self.worlds[sid].authoritative:
                            self.fail(
                                "timely-demotion",
                                f"{sid} (group {sorted(group)}) is still authoritative "
                                f"{now - self.partition_since:.2f}s into the partition "
                                f"(bound {bound:.2f}s)",
                            )

    # -- the workload -----------------------------------------------------------------------

    def _op_id(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    async def _submit_strong(self, sid: str, op: PlaceStructure, label: str) -> None:
        world = self.worlds.get(sid)
        if world is None:  # crashed meanwhile: the op waits for a later retry
            self.uncertain.append((op, label))
            return
        try:
            async with asyncio.timeout(self.cfg.submit_timeout):
                result = await world.submit(op)
        except TimeoutError:
            self.counts["strong-timeout"] += 1
            self.uncertain.append((op, label))
            self.record(f"{label} via {sid}: timed out")
            return
        except WorldStateError as e:
            kind = type(e).__name__
            self.counts[f"strong-{kind}"] += 1
            if kind in ("StoreUnavailable", "BusUnavailable", "Overloaded"):
                self.uncertain.append((op, label))
            self.record(f"{label} via {sid}: {kind}")
            return
        except Exception as e:  # a bug in the node core: not a worldstate error
            self.fail("clean-errors", f"{label} via {sid} raised {type(e).__name__}: {e}")
            return
        if isinstance(result, Committed):
            first = self.acked.get(op.op_id)
            if first is not None and first[0] != result.version:
                self.fail(
                    "same-outcome",
                    f"{label} committed as v{first[0]} then v{result.version} on resubmission",
                )
            self.acked.setdefault(op.op_id, (result.version, label))
            self.counts["strong-committed"] += 1
            self.record(f"{label} via {sid}: committed v{result.version}")
        elif isinstance(result, Rejected):
            if op.op_id in self.acked:
                self.fail("same-outcome", f"{label} was committed, then rejected on resubmission")
            self.counts["strong-rejected"] += 1
            self.record(f"{label} via {sid}: rejected")
        else:
            self.fail("clean-errors", f"{label} via {sid}: unexpected result {result!r}")

    def _strong_op(self) -> tuple[PlaceStructure, str]:
        rng = self.rng
        n = next(self.ops)
        key = rng.choice(self.keys)
        lo = key.bounds[0]
        x, y, z = (lo[0] + rng.uniform(50, 1900), lo[1] + rng.uniform(50, 1900), lo[2] + 10.0)
        op = PlaceStructure(
            op_id=self._op_id(),
            structure_id=f"st-{n}",
            kind="wall",
            lo=(x, y, z),
            hi=(x + rng.uniform(1, 60), y + rng.uniform(1, 60), z + 3.0),
        )
        return op, f"op{n}@r{key.ix}"

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._work.add(task)
        task.add_done_callback(self._work.discard)

    async def _strong_load(self, until: float) -> None:
        rng = self.rng
        while self.now < until:
            await asyncio.sleep(rng.expovariate(1 / self.cfg.strong_every))
            sid = rng.choice(sorted(self.worlds))
            if self.uncertain and rng.random() < 0.3:  # retry an ambiguous one, same op_id
                op, label = self.uncertain.pop(rng.randrange(len(self.uncertain)))
                self._spawn(self._submit_strong(sid, op, label + "(retry)"))
            elif self.acked and rng.random() < 0.05:  # resubmit an acknowledged one
                op_id = rng.choice(sorted(self.acked, key=str))
                self.counts["resubmit-acked"] += 1
                self._spawn(self._resubmit(sid, op_id))
            else:
                op, label = self._strong_op()
                self._sent[op.op_id] = op
                self._spawn(self._submit_strong(sid, op, label))

    async def _resubmit(self, sid: str, op_id: uuid.UUID) -> None:
        op = self._sent[op_id]
        await self._submit_strong(sid, op, self.acked[op_id][1] + "(again)")

    def _creatures(self, sid: str) -> list[int]:
        i = self.server_ids.index(sid)
        return [100 * (i + 1) + k for k in range(4)] + [1, 2]  # 1 and 2: written by all

    async def _move(self, sid: str, creature: int) -> None:
        rng = self.rng
        key = rng.choice(self.keys)
        lo = key.bounds[0]
        pos = (lo[0] + rng.uniform(0, 1999), lo[1] + rng.uniform(0, 1999), lo[2] + 1.0)
        op = MoveCreature(op_id=self._op_id(), creature_id=creature, position=pos)
        world = self.worlds.get(sid)
        if world is None:
            return
        try:
            await world.submit(op)
        except WorldStateError as e:
            self.counts[f"move-{type(e).__name__}"] += 1
            self.record(f"move of {creature} by {sid}: {type(e).__name__}: {e}")
        except Exception as e:
            self.fail("clean-errors", f"move via {sid} raised {type(e).__name__}: {e}")

    async def _eventual_load(self, until: float) -> None:
        rng = self.rng
        while self.now < until:
            await asyncio.sleep(rng.expovariate(1 / self.cfg.move_every))
            sid = rng.choice(sorted(self.worlds))
            await self._move(sid, rng.choice(self._creatures(sid)))
            self.counts["moves"] += 1

    async def _emit(self, sid: str) -> None:
        rng = self.rng
        n = next(self.ops)
        key = rng.choice(self.keys)
        lo = key.bounds[0]
        op = EmitEvent(
            op_id=self._op_id(),
            position=(lo[0] + rng.uniform(0, 1999), lo[1] + rng.uniform(0, 1999), lo[2] + 1.0),
            stream="quest",
            payload={"step": n},
        )
        label = f"ev{n}@r{key.ix}"
        world = self.worlds.get(sid)
        if world is None:
            return  # crashed meanwhile
        try:
            async with asyncio.timeout(self.cfg.submit_timeout):
                result = await world.submit(op)
        except (WorldStateError, TimeoutError) as e:
            self.counts[f"causal-{type(e).__name__}"] += 1
            self.record(f"{label} via {sid}: {type(e).__name__}")
            return
        except Exception as e:
            self.fail("clean-errors", f"{label} via {sid} raised {type(e).__name__}: {e}")
            return
        if isinstance(result, Accepted):
            self.causal_acked[op.op_id] = label
            self.counts["causal-accepted"] += 1
            self.record(f"{label} via {sid}: accepted")
        else:
            self.fail("clean-errors", f"{label} via {sid}: unexpected result {result!r}")

    async def _causal_load(self, until: float) -> None:
        rng = self.rng
        while self.now < until:
            await asyncio.sleep(rng.expovariate(1 / self.cfg.causal_every))
            self._spawn(self._emit(rng.choice(sorted(self.worlds))))

    async def _handoffs(self, until: float) -> None:
        rng = self.rng
        while self.now < until:
            await asyncio.sleep(rng.uniform(2.0, 5.0))
            acting = [self.coordinators[c] for c in sorted(self.acting)]
            if not acting:
                continue
            key, to = rng.choice(self.keys), rng.choice(sorted(self.worlds))
            self._spawn(self._handoff(acting[0], key, to))

    async def _handoff(self, coordinator: MeshCoordinator, key: RegionKey, to: str) -> None:
        try:
            async with asyncio.timeout(6.0):
                lease = await coordinator.handoff(key, to)
            self.counts["handoff-ok"] += 1
            self.record(f"handoff r{key.ix} -> {to}: epoch {lease.epoch}")
        except (WorldStateError, TimeoutError) as e:
            self.counts[f"handoff-{type(e).__name__}"] += 1
            self.record(f"handoff r{key.ix} -> {to}: {type(e).__name__}")

    # -- the faults -------------------------------------------------------------------------

    def _heal_network(self) -> None:
        self.hub.heal()
        self.net.cut_off = set(self.crashed)  # a crashed server stays down
        self._store_group = set()
        self.partition = None
        self.one_way = False

    def _draw_partition(self) -> None:
        rng = self.rng
        names = list(self.server_ids)
        rng.shuffle(names)
        k = rng.choice([2, 2, 3]) if len(names) >= 3 else 2
        cuts = sorted(rng.sample(range(1, len(names)), k - 1))
        groups = [set(names[a:b]) for a, b in zip([0, *cuts], [*cuts, len(names)], strict=True)]
        for cid in self.coordinator_ids:
            rng.choice(groups).add(cid)
        store_everywhere = rng.random() < 0.3
        self._store_group = set()
        if not store_everywhere:
            store_group = rng.choice(groups)
            store_group.add(STORE)
            self._store_group = store_group
            everyone = {*self.server_ids, *self.coordinator_ids}
            self.net.cut_off = everyone - store_group
        self.hub.partition([g - {STORE} for g in groups])
        self.partition = [g - {STORE} for g in groups]
        self.partition_since = self.now
        self.partition_membership = self.membership
        where = "everywhere" if store_everywhere else "with its group"
        self.record(f"partition {[sorted(g) for g in groups]} (store {where})")

    def _draw_one_way(self) -> None:
        rng = self.rng
        sid = rng.choice(self.server_ids)
        others = [n for n in [*self.server_ids, *self.coordinator_ids] if n != sid]
        deaf = rng.random() < 0.5
        for other in others:
            if deaf:
                self.hub.block(other, sid)
            else:
                self.hub.block(sid, other)
        self.one_way = True
        self.partition = [{sid}, set(others)]
        self.partition_since = self.now
        self.partition_membership = self.membership
        self.record(f"one-way: {sid} {'hears nobody' if deaf else 'is heard by nobody'}")

    async def _crash_and_restart(self, sid: str, down_for: float) -> None:
        """A crash: the server's bus dies (its last will goes out), it can no longer reach
        the store (so nothing is released: its leases run out), its tasks stop. After
        ``down_for`` seconds a new `World` with the same id (a newer incarnation) starts."""
        world = self.worlds.pop(sid)
        self.crashed.add(sid)
        self.standing.pop(sid, None)
        self.record(f"crash {sid} (restart in {down_for:.2f}s)")
        self.counts["crashes"] += 1
        self.net.cut_off.add(sid)
        with contextlib.suppress(WorldStateError):
            self.hub.kill(sid)
        with contextlib.suppress(Exception):
            await world.close()
        await asyncio.sleep(down_for)
        self.net.cut_off.discard(sid)
        group = self._store_group
        if self.partition is not None and STORE in group and sid not in group:
            self.net.cut_off.add(sid)  # the partition it comes back into
        fresh = self._new_world(sid)
        self._restarting = fresh
        try:
            await fresh.open()
        except WorldStateError as e:  # e.g. the store is on the other side of a partition
            self.record(f"restart {sid} failed: {type(e).__name__}; again in 1 s")
            with contextlib.suppress(Exception):
                await fresh.close()
            await asyncio.sleep(1.0)
            self.net.cut_off.discard(sid)
            fresh = self._restarting = self._new_world(sid)
            await fresh.open()
        self._restarting = None
        self.worlds[sid] = fresh
        self.standing[sid] = fresh.authoritative
        self.crashed.discard(sid)
        self.record(f"restart {sid}")

    async def _faults(self, until: float) -> None:
        rng = self.rng
        net_until = msg_until = store_until = 0.0
        while self.now < until:
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            now = self.now
            if self.partition is not None and now >= net_until:
                self._heal_network()
                self.record("heal")
            if self.hub.faults.any and now >= msg_until:
                self.hub.set_faults()
                self.record("message faults off")
            if self.net.faults.stall and now >= store_until:
                self.net.faults = StoreFaults()
                self.record("store faults off")
            roll = rng.random()
            if roll < 0.35 and self.partition is None:
                if rng.random() < 0.75:
                    self._draw_partition()
                else:
                    self._draw_one_way()
                net_until = now + rng.uniform(1.5, 8.0)
            elif roll < 0.6 and not self.hub.faults.any:
                delay = (0.0, rng.uniform(0.01, self.cfg.max_message_delay))
                self.hub.set_faults(
                    drop=rng.uniform(0, 0.1),
                    duplicate=rng.uniform(0, 0.1),
                    reorder=rng.uniform(0, 0.1),
                    delay=delay,
                    rng=random.Random(rng.getrandbits(64)),
                )
                msg_until = now + rng.uniform(1.0, 5.0)
                self.record(f"message faults {self.hub.faults}")
            elif roll < 0.68 and not self.crashed and len(self.worlds) > 2:
                sid = rng.choice(sorted(self.worlds))
                self._crash = asyncio.get_running_loop().create_task(
                    self._crash_and_restart(sid, rng.uniform(1.0, 5.0))
                )
            elif roll < 0.8 and not self.net.faults.stall:
                self.net.faults = StoreFaults(
                    stall=rng.uniform(0.02, 0.15),
                    stall_for=(0.5, rng.uniform(1.0, 5.0)),
                    lost_reply=rng.uniform(0.0, 0.1),
                )
                store_until = now + rng.uniform(1.0, 5.0)
                self.record(f"store faults {self.net.faults}")

    # -- the run ----------------------------------------------------------------------------

    async def main(self) -> None:
        """Build the mesh, run the scenario, check, tear down. A violation stops the run at
        once (the rest of a broken run would only add noise)."""
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        self.loop = loop
        random.seed(self.rng.getrandbits(64))  # retry jitter and anything else on `random`
        self.hub_name = f"sim-{self.seed}-{id(self)}"
        self.hub: Hub = get_hub(self.hub_name)
        self.db = SimDatabase()
        self.net = Network(random.Random(self.rng.getrandbits(64)))
        self._work: set[asyncio.Task[None]] = set()
        self._sent: dict[uuid.UUID, PlaceStructure] = {}
        scenario = loop.create_task(self._scenario())
        stop = loop.create_task(self._violated.wait())
        try:
            await asyncio.wait({scenario, stop}, return_when=asyncio.FIRST_COMPLETED)
            if scenario.done():
                scenario.result()  # a crash of the harness itself surfaces here
        finally:
            extra = [self._crash] if self._crash is not None else []
            for task in (scenario, stop, *self._work, *extra):
                task.cancel()
            await asyncio.gather(scenario, stop, *self._work, *extra, return_exceptions=True)
            await self._stop()
            self.db.close()

    async def _scenario(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        await self._start()
        tasks = [loop.create_task(self._watch())]
        try:
            await asyncio.sleep(3.0)  # the mesh forms: membership, placement
            end_faults = self.now + cfg.fault_phase
            drivers = [
                loop.create_task(self._faults(end_faults)),
                loop.create_task(self._strong_load(end_faults)),
                loop.create_task(self._eventual_load(end_faults)),
                loop.create_task(self._handoffs(end_faults)),
                loop.create_task(self._causal_load(end_faults)),
            ]
            tasks += drivers
            await asyncio.gather(*drivers)
            if self._crash is not None:  # let a crashed server come back first
                await self._crash
            self._heal_network()
            self.hub.set_faults()
            self.net.faults = StoreFaults()
            self.net.quiet = True
            self.record("final heal: quiet phase")
            await asyncio.sleep(cfg.quiet_phase / 2)
            for op, label in list(self.uncertain):  # settle the ambiguous ones
                self._spawn(self._submit_strong(self.server_ids[0], op, label + "(final)"))
            for sid in self.server_ids:  # one last write of each creature, published
                for creature in self._creatures(sid):
                    await self._move(sid, creature)
            await asyncio.sleep(cfg.quiet_phase / 2)
            if self._work:
                await asyncio.wait(list(self._work), timeout=cfg.submit_timeout)
            self._final_checks()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _final_checks(self) -> None:
        for op_id, (version, label) in sorted(self.acked.items(), key=lambda kv: str(kv[0])):
            rows = self.db.query(
                "SELECT status, version FROM ws_outcomes WHERE op_id = ?", (str(op_id),)
            )
            placed = self.db.query("SELECT COUNT(*) FROM ws_objects WHERE op_id = ?", (str(op_id),))
            if not rows or rows[0][0] != "committed" or placed[0][0] != 1:
                self.fail("acked-durable", f"{label} was acknowledged (v{version}) but {rows}")
        for key in self.keys:
            holders = [s for s, w in self.worlds.items() if w.holds(key)]
            if len(holders) != 1:
                self.fail("recovery", f"{key} has holders {holders} after the quiet phase")
        for op_id, label in sorted(self.causal_acked.items(), key=lambda kv: str(kv[0])):
            logged = self.db.query("SELECT COUNT(*) FROM ws_events WHERE op_id = ?", (str(op_id),))
            if logged[0][0] != 1:
                self.fail("causal-durable", f"{label} was accepted but is not in the event log")
        heads = dict(self.db.query("SELECT origin, MAX(seq) FROM ws_events GROUP BY origin"))
        for sid, world in self.worlds.items():
            delivered = world.causal.buffer.delivered
            behind = {o: (delivered.get(o), h) for o, h in heads.items() if delivered.get(o) < h}
            if behind:
                self.fail(
                    "causal-delivered",
                    f"{sid} has not delivered logged events (delivered, head): {behind}",
                )
        tables = {sid: w.eventual.positions for sid, w in self.worlds.items()}
        first_sid = self.server_ids[0]
        for sid, table in tables.items():
            if table != tables[first_sid]:
                ids = np.union1d(table.ids, tables[first_sid].ids)
                self.fail(
                    "convergence",
                    f"{sid}'s creature table differs from {first_sid}'s ({len(ids)} ids)",
                )
        self.record(f"end: {dict(sorted(self.counts.items()))}")

    def evidence(self) -> dict[str, int]:
        """What worldstate's own counters say ran (read at the end of the run)."""

        def total(objs: Any, *path: str) -> int:
            n = 0
            for obj in objs:
                for name in path:
                    obj = getattr(obj, name, None)
                n += int(obj or 0)
            return n

        worlds, coords = list(self.worlds.values()), list(self.coordinators.values())
        return {
            "strong-group-commits": total(worlds, "strong", "group_commits"),
            "strong-direct-commits": total(worlds, "strong", "direct_commits"),
            "demotions": total(worlds, "membership", "demotions"),
            "promotions": total(worlds, "membership", "promotions"),
            "placements": total(coords, "placements"),
            "handoffs": total(coords, "handoffs"),
            "coordinator-events": total(coords, "event_count"),
        }

    def stats(self) -> dict[str, int]:
        out = dict(self.counts)
        hub = self.hub.stats
        out.update(
            {
                "events": self.events,
                "acked": len(self.acked),
                "bus-published": hub.published,
                "bus-dropped": hub.dropped,
                "bus-partitioned": hub.partitioned,
                "store-writes": self.db.write_transactions,
                "epochs": len(self.owner_of),
            }
        )
        return out


class _TraceLog(logging.Handler):
    """Puts worldstate's log lines (INFO and up) into the run's trace, unhashed."""

    def __init__(self, sim: Simulation) -> None:
        super().__init__(logging.INFO)
        self.sim = sim

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.sim.note(f"{record.name} {record.levelname}: {record.getMessage()}")


def run_seed(
    seed: int,
    config: SimConfig | None = None,
    *,
    broken: str | None = None,
    keep_trace: bool = False,
) -> RunResult:
    """Run one seed; raises `InvariantViolation` (with a replayable trace) on a violation."""
    sim = Simulation(seed, config, broken=broken, keep_trace=keep_trace)
    patch = BROKEN_VARIANTS[broken][0]() if broken else contextlib.nullcontext()
    handler = _TraceLog(sim)
    logger = logging.getLogger("worldstate")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # into the trace, not onto the terminal
    try:
        with patch:
            run_virtual(sim.main())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    if sim.violation is not None:
        raise sim.violation
    worlds = list(sim.worlds.values())
    coords = list(sim.coordinators.values())
    return RunResult(
        seed,
        sim._hash.hexdigest(),
        sim.events,
        sim.stats(),
        list(sim.trace),
        {
            "server": f"{type(worlds[0]).__module__}.{type(worlds[0]).__qualname__}",
            "coordinator": f"{type(coords[0]).__module__}.{type(coords[0]).__qualname__}",
            "store": f"{type(worlds[0].store).__mro__[1].__module__}.Store",
        },
        sim.evidence(),
        worlds,
        coords,
    )


def first_violation(
    seeds: Sequence[int], config: SimConfig | None = None, *, broken: str | None = None
) -> InvariantViolation | None:
    """The first violation among ``seeds`` (None if they all pass)."""
    for seed in seeds:
        try:
            run_seed(seed, config, broken=broken)
        except InvariantViolation as e:
            return e
    return None


def _seed_range(text: str) -> range:
    lo, sep, hi = text.partition(":")
    return range(int(lo), int(hi)) if sep else range(int(lo))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.sim.harness", description=__doc__)
    p.add_argument("--seed", type=int, help="run one seed")
    p.add_argument("--seeds", help="a count N (seeds 0..N-1) or a range LO:HI")
    p.add_argument("--trace", action="store_true", help="print every event of the run")
    p.add_argument("--broken", choices=sorted(BROKEN_VARIANTS), help="a broken variant")
    p.add_argument("--log", default="ERROR", help="worldstate log level (default ERROR)")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log.upper(), format="%(levelname)s %(name)s %(message)s")
    seeds = [args.seed] if args.seed is not None else list(_seed_range(args.seeds or "20"))
    started = time.perf_counter()
    for seed in seeds:
        try:
            result = run_seed(seed, broken=args.broken, keep_trace=args.trace)
        except InvariantViolation as e:
            if args.trace:
                print("\n".join(e.trace))
            print(e, file=sys.stderr)
            return 1
        if args.trace:
            print("\n".join(result.trace))
        print(f"{seed_id(seed)} ok: {result.trace_hash[:16]} {result.stats}")
    print(f"{len(seeds)} seeds in {time.perf_counter() - started:.1f}s")
    return 0


__all__ = [
    "BROKEN_VARIANTS",
    "INVARIANTS",
    "InvariantViolation",
    "RunResult",
    "SimConfig",
    "Simulation",
    "first_violation",
    "main",
    "run_seed",
    "seed_id",
]

if __name__ == "__main__":
    raise SystemExit(main())

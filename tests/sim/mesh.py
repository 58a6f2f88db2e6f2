"""The simulated mesh's state: its shape (`SimConfig`), clocks, trace, and how its real
servers (`worldstate.World`) and coordinators (`worldstate.MeshCoordinator`) are built on
the simulated store and bus. `tests.sim.workload`, `tests.sim.faults` and
`tests.sim.invariants` add behaviour to it; `tests.sim.harness.Simulation` puts them
together."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import random
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from regions import RegionKey
from tests.sim.store_sim import URL, Network, SimDatabase, SimStore
from tests.sim.violation import InvariantViolation
from tests.sim.vloop import VirtualTimeLoop
from worldstate import Config, MeshCoordinator, World
from worldstate.bus import Hub
from worldstate.operations import PlaceStructure

EPOCH0 = 1_800_000_000.0
"""Virtual time 0 on the servers' wall clocks (seconds since the Unix epoch)."""


STORE = "store"
"""The store's name in partition groups."""


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


FANOUT = "interest"
"""The sim's fan-out mode: the default, interest (each server hears what it owns, borders or
watches; the convergence invariant checks each server on the regions it hears); "world" to
compare."""


class SimMesh:
    """The state of one seeded run and the mesh it drives."""

    def __init__(
        self,
        seed: int,
        config: SimConfig | None = None,
        *,
        broken: str | None = None,
        keep_trace: bool = False,
    ) -> None:
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
        """Servers crashed and not yet back (down, or restarting)."""
        self.down: set[str] = set()
        """Crashed servers before their restart begins (cut off from the store)."""
        self._crash: asyncio.Task[None] | None = None
        self._restarting: World | None = None
        self._store_group: set[str] = set()
        # set up by `Simulation.main` on the running loop
        self.hub_name = ""
        self.hub: Hub
        self.db: SimDatabase
        self.net: Network
        self.server_ids: list[str] = []
        self.coordinator_ids: list[str] = []
        self._work: set[asyncio.Task[None]] = set()
        self._sent: dict[uuid.UUID, PlaceStructure] = {}

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

    def on_write(self, client: str, what: str, sent_authoritative: bool, sent_at: float) -> None:
        """Called by every `SimStore` after each committed write transaction; the invariant
        checks (`tests.sim.invariants.Invariants.on_write`) override it."""

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
            fanout=FANOUT,
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

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._work.add(task)
        task.add_done_callback(self._work.discard)


__all__ = ["EPOCH0", "STORE", "SimConfig", "SimMesh"]

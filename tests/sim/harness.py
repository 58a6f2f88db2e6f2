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
import logging
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.sim.faults import FaultSchedule
from tests.sim.invariants import Invariants
from tests.sim.mesh import SimConfig
from tests.sim.store_sim import Network, SimDatabase, StoreFaults
from tests.sim.variants import BROKEN_VARIANTS
from tests.sim.violation import INVARIANTS, InvariantViolation, seed_id
from tests.sim.vloop import VirtualTimeLoop, run_virtual
from tests.sim.workload import Workload
from worldstate import MeshCoordinator, World
from worldstate.bus import get_hub


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


class Simulation(Invariants, Workload, FaultSchedule):
    """One seeded run: the mesh, its workload, its faults and its checks."""

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
        super().__init__(seed, config, broken=broken, keep_trace=keep_trace)

    async def main(self) -> None:
        """Build the mesh, run the scenario, check, tear down. A violation stops the run at
        once (the rest of a broken run would only add noise)."""
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        self.loop = loop
        random.seed(self.rng.getrandbits(64))  # retry jitter and anything else on `random`
        self.hub_name = f"sim-{self.seed}-{id(self)}"
        self.hub = get_hub(self.hub_name)
        self.db = SimDatabase()
        self.net = Network(random.Random(self.rng.getrandbits(64)))
        self._work = set()
        self._sent = {}
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
            self._heal_network()
            self.hub.set_faults()
            self.net.faults = StoreFaults()
            self.net.quiet = True
            self.record("final heal: quiet phase")
            if self._crash is not None:  # a crashed server comes back first
                await self._crash
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

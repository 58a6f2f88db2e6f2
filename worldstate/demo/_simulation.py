"""An in-process demo mesh: several servers on one store populate and query a world.

`worldstate simulate` runs it and prints the summary; tests run it small.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regions import RegionKey, Sphere
from worldstate.bus import get_hub
from worldstate.config import Config
from worldstate.errors import (
    Fenced,
    NotAuthoritative,
    RegionOwned,
    VersionConflict,
    WorldStateError,
)
from worldstate.mesh._coordinator import MeshCoordinator
from worldstate.objects import WorldObject
from worldstate.operations import PlaceStructure
from worldstate.results import Committed
from worldstate.world import World, connect


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationSettings:
    servers: int = 3
    regions_per_server: int = 4
    objects_per_region: int = 200
    queries: int = 300
    seed: int = 1
    store_url: str | None = None
    """Default: a fresh SQLite file in a temporary directory."""
    cache_url: str = "memory://"
    partition: bool = False
    """Also run the split-brain scenario (`run_partition_scenario`)."""
    op_rate: float = 50.0
    """Strong ops and trades arrive at this many per second (players act over time; each
    op's latency is what a player waits). The embedded store is one SQLite file shared by
    every in-process server, whose single write lock bounds the rate it sustains."""


@dataclass
class SimulationReport:
    settings: dict[str, Any]
    store: str
    servers: list[str]
    regions: int = 0
    objects_stored: int = 0
    region_writes: int = 0
    version_conflicts: int = 0
    fenced_writes_refused: int = 0
    ownership_refusals: int = 0
    queries: int = 0
    query_hits: int = 0
    query_ms_p50: float = 0.0
    query_ms_p99: float = 0.0
    cache_hit_rate: float | None = None
    """None when no read went through the cache (nothing to measure)."""
    store_transactions: int = 0
    store_retries: int = 0
    handoffs: int = 0
    elapsed_s: float = 0.0
    partition: dict[str, Any] | None = None
    """The split-brain scenario's figures (``--partition``)."""
    classes: dict[str, Any] = field(default_factory=dict)
    """Per consistency class: throughput, latency and conflict counts of the workload."""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def lines(self) -> list[str]:
        return [
            f"store            {self.store}",
            f"servers          {len(self.servers)} ({', '.join(self.servers)})"
            + (" in the main phase" if self.partition is not None else ""),
            f"regions          {self.regions} owned and populated",
            f"objects          {self.objects_stored} stored in {self.region_writes} region writes",
            f"queries          {self.queries} box/sphere queries, {self.query_hits} objects found,"
            f" p50 {self.query_ms_p50:.2f} ms, p99 {self.query_ms_p99:.2f} ms",
            "cache            "
            + (
                f"hit rate {self.cache_hit_rate:.1%} (per-server caches)"
                if self.cache_hit_rate is not None
                else "no lookups went through the cache (not measured)"
            ),
            f"authority        {self.handoffs} hand-offs; {self.fenced_writes_refused} stale-epoch"
            f" writes fenced; {self.ownership_refusals} writes to others' regions refused;"
            f" {self.version_conflicts} version conflicts",
            f"store            {self.store_transactions} transactions,"
            f" {self.store_retries} retries",
            *self._class_lines(),
            *self._partition_lines(),
            f"elapsed          {self.elapsed_s:.2f} s",
            *self.notes,
        ]

    def _class_lines(self) -> list[str]:
        out = []
        for name, c in self.classes.items():
            extra = ""
            if name == "trades":
                extra = f"; gold total {c['gold_total']} (expected {c['gold_expected']})"
            if name == "eventual":
                extra = f"; {c['rows_applied_at_receivers']} rows applied at receivers"
            if name == "causal":
                extra = f"; delivered per server {c['delivered_per_server']}"
            lat = (
                f", p50 {c['p50_ms']:.1f} ms, p99 {c['p99_ms']:.1f} ms"
                if c.get("p50_ms") is not None
                else ""  # not measured per op (the vectorised eventual path)
            )
            outcomes = f"{c['rejected']} rejected (conflicts)"
            if c.get("underflows"):
                outcomes += f", {c['underflows']} refused (inventory would go below zero)"
            out.append(
                f"{name:<16} {c['ops']} ops, {c['per_s']:.0f}/s{lat}, {outcomes},"
                f" {c['errors']} errors"
                + (f" {c['error_kinds']}" if c.get("error_kinds") else "")
                + extra
            )
        return out

    def _partition_lines(self) -> list[str]:
        p = self.partition
        if p is None:
            return []
        return [
            f"partition        servers {', '.join(p['server_ids'])} (a second mesh) with a"
            f" coordinator; minority {', '.join(p['minority'])}",
            f"                 {p['split']} split of the bus: the minority demoted in"
            f" {p['demote_s']:.2f} s; its {p['minority_regions']} regions reassigned"
            f" (epoch + 1) in {p['reassign_s']:.2f} s; {p['refused_on_minority']} strong ops"
            f" refused on the minority, {p['committed_on_majority']} committed on the majority",
            f"heal             all {p['servers']} servers authoritative again in"
            f" {p['heal_s']:.2f} s; rebalance moved {p['rebalanced']} regions;"
            f" {p['acknowledged']} acknowledged strong writes, {p['lost']} lost",
        ]


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def run_simulation(settings: SimulationSettings) -> SimulationReport:
    rng = random.Random(settings.seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="worldstate-sim-") as tmp:
        url = settings.store_url or f"sqlite+aiosqlite:///{Path(tmp) / 'world.db'}"
        ids = [f"gs-{i + 1}" for i in range(settings.servers)]
        report = SimulationReport(
            settings=dataclasses.asdict(settings), store=url.split("://")[0], servers=ids
        )
        bus = f"memory://sim-{uuid.uuid4().hex[:8]}"
        async with AsyncExitStack() as stack:
            worlds: list[World] = []
            for sid in ids:
                cfg = Config(
                    store_url=url,
                    cache_url=settings.cache_url,
                    bus_url=bus,
                    server_id=sid,
                    namespace=f"sim{uuid.uuid4().hex[:8]}"
                    if settings.cache_url != "memory://"
                    else "ws",
                )
                worlds.append(await stack.enter_async_context(connect(config=cfg)))
            # 1. each server takes a block of regions and populates them
            owned: dict[RegionKey, World] = {}
            for i, w in enumerate(worlds):
                for j in range(settings.regions_per_server):
                    key = RegionKey(i * 4 + j % 4, j // 4, 0)
                    await w.acquire_region(key)
                    owned[key] = w
            for key, w in owned.items():
                snap = await w.load_region(key)
                objs = _populate(key, settings.objects_per_region, rng)
                await w.store_region(snap.with_objects(objs), expected_version=snap.version)
                report.objects_stored += len(objs)
                report.region_writes += 1
            report.regions = len(owned)
            # 2. every server queries the whole world (cross-server reads via the cache)
            lat: list[float] = []
            xmax = settings.servers * 4 * 2000.0
            for _ in range(settings.queries):
                w = rng.choice(worlds)
                c = (rng.uniform(0, xmax), rng.uniform(0, 2000.0), rng.uniform(0, 60.0))
                q0 = time.perf_counter()
                if rng.random() < 0.5:
                    found = await w.query(Sphere(c, rng.uniform(20, 300)))
                else:
                    r = rng.uniform(20, 300)
                    found = await w.query(((c[0] - r, c[1] - r, 0.0), (c[0] + r, c[1] + r, 100.0)))
                lat.append((time.perf_counter() - q0) * 1000)
                report.queries += 1
                report.query_hits += len(found)
            report.query_ms_p50, report.query_ms_p99 = _pct(lat, 50), _pct(lat, 99)
            # players move, build, claim, trade and emit quest events (every class)
            from worldstate.demo._load import run_load

            report.classes = await run_load(worlds, owned, rng, rate=settings.op_rate)
            # 3. authority: a hand-off, then the old owner's stale write is fenced
            key, old = next(iter(owned.items()))
            new = worlds[(worlds.index(old) + 1) % len(worlds)]
            stale = await old.load_region(key)
            try:
                await new.store_region(stale, expected_version=stale.version)
            except RegionOwned:
                report.ownership_refusals += 1
            if len(worlds) > 1:
                await old.release_region(key)
                await new.acquire_region(key)
                report.handoffs += 1
                try:
                    await old.store_region(stale, expected_version=stale.version)
                except Fenced:
                    report.fenced_writes_refused += 1
                fresh = await new.load_region(key)
                try:
                    await new.store_region(fresh, expected_version=fresh.version - 1)
                except VersionConflict:
                    report.version_conflicts += 1
            hits = sum(w.cache.stats.hits for w in worlds)
            misses = sum(w.cache.stats.misses for w in worlds)
            report.cache_hit_rate = hits / (hits + misses) if hits + misses else None
            report.store_transactions = sum(w.store.stats.transactions for w in worlds)
            report.store_retries = sum(w.store.stats.retries for w in worlds)
        if settings.partition:
            report.partition = await run_partition_scenario(url, settings)
    report.elapsed_s = time.perf_counter() - t0
    return report


async def _until(cond: Any, timeout: float, what: str) -> float:
    """Wait (polling) until ``cond()`` holds; seconds waited. `TimeoutError` saying what."""
    t0 = time.perf_counter()
    while not cond():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"simulation: {what} did not happen within {timeout} s")
        await asyncio.sleep(0.01)
    return time.perf_counter() - t0


async def run_partition_scenario(store_url: str, settings: SimulationSettings) -> dict[str, Any]:
    """Split brain on the in-process bus: ``servers`` (at least 3) servers and a mesh
    coordinator with short timeouts (heartbeat 0.1 s, partition timeout 0.6 s, lease TTL
    1.5 s); the bus is split into a majority (with the coordinator) and a minority; strong
    ops keep flowing on both sides; then the bus heals and the coordinator rebalances.
    Returns the figures; every acknowledged strong write is checked in the store."""
    n = max(3, settings.servers)
    ids = [f"ps-{i + 1}" for i in range(n)]
    minority = ids[n - (n - 1) // 2 :]
    bus = f"memory://sim-partition-{uuid.uuid4().hex[:8]}"
    timing: dict[str, Any] = {
        "heartbeat_interval": 0.1,
        "partition_timeout": 0.6,
        "lease_ttl": 1.5,
        "lease_renew_interval": 0.4,
    }
    namespace = f"simp{uuid.uuid4().hex[:8]}"
    base = Config(
        store_url=store_url,
        cache_url=settings.cache_url,
        bus_url=bus,
        namespace=namespace,
        **timing,
    )
    # regions far from those of the first phase (iy = 100...)
    keys = [RegionKey(i % 8, 100 + i // 8, 0) for i in range(n * settings.regions_per_server)]
    acked: dict[str, RegionKey] = {}
    counter = iter(range(10**9))
    out: dict[str, Any] = {
        "servers": n,
        "server_ids": ids,
        "minority": minority,
        "split": f"{n - len(minority)}|{len(minority)}",
    }

    async def write(w: World, key: RegionKey) -> str:
        i = next(counter)
        lo, _ = key.bounds
        x = lo[0] + 10 + (i % 90) * 20
        y = lo[1] + 10 + (i // 90 % 90) * 20
        sid = f"sim-{i}"
        op = PlaceStructure(structure_id=sid, lo=(x, y, 10.0), hi=(x + 5, y + 5, 15.0))
        try:
            r = await w.submit(op)
        except NotAuthoritative:
            return "refused"
        except WorldStateError:
            return "error"
        if isinstance(r, Committed):
            acked[sid] = key
            return "committed"
        return "rejected"

    async with AsyncExitStack() as stack:
        worlds = [
            await stack.enter_async_context(connect(config=base.replace(server_id=sid)))
            for sid in ids
        ]
        by_id = {w.server_id: w for w in worlds}
        coord = await stack.enter_async_context(
            MeshCoordinator(base, coordinator_id=f"coord-{namespace}")
        )
        await coord.register_regions(keys)
        await _until(
            lambda: len(coord.membership()["members"]) == n and len(coord.owners()) == len(keys),
            30,
            "initial placement",
        )
        for key, lease in coord.owners().items():
            await write(by_id[lease.owner], key)
        before = coord.owners()
        minority_keys = [k for k, le in before.items() if le.owner in minority]
        hub = get_hub(bus.split("://", 1)[1])
        hub.partition([set(minority)])
        out["demote_s"] = await _until(
            lambda: not any(by_id[s].authoritative for s in minority), 30, "demotion"
        )
        out["reassign_s"] = out["demote_s"] + await _until(
            lambda: all(
                (le := coord.owners().get(k)) is not None
                and le.owner not in minority
                and le.epoch > before[k].epoch
                for k in minority_keys
            ),
            30,
            "reassignment",
        )
        out["minority_regions"] = len(minority_keys)
        results = []
        for key in keys:
            for w in worlds:
                results.append(await write(w, key))
        out["refused_on_minority"] = results.count("refused")
        out["committed_on_majority"] = results.count("committed")
        hub.heal()
        out["heal_s"] = await _until(
            lambda: (
                all(w.authoritative for w in worlds) and len(coord.membership()["members"]) == n
            ),
            30,
            "heal",
        )
        await _until(lambda: set(coord.eligible()) == set(ids), 30, "all eligible")
        out["rebalanced"] = len(await coord.rebalance())
        out["regions_per_server"] = {
            sid: sum(1 for le in coord.owners().values() if le.owner == sid) for sid in ids
        }
        stored: set[str] = set()
        for key in set(acked.values()):
            snap = await worlds[0].load_region(key)
            stored.update(o.id for o in snap.objects)
        out["acknowledged"] = len(acked)
        out["lost"] = len(set(acked) - stored)
        out["timing"] = timing
    return out


KINDS = ("structure", "structure", "structure", "resource", "item")


def _populate(key: RegionKey, n: int, rng: random.Random) -> list[WorldObject]:
    lo, _ = key.bounds
    out = []
    for i in range(n):
        kind = rng.choice(KINDS)
        size = rng.uniform(2, 20) if kind == "structure" else rng.uniform(0.5, 2)
        x = lo[0] + rng.uniform(0, 2000 - size)
        y = lo[1] + rng.uniform(0, 2000 - size)
        z = lo[2] + rng.uniform(0, 50)
        data: dict[str, Any] = {"hp": rng.randint(1, 100)} if kind == "structure" else {}
        if kind == "resource":
            data = {"amount": rng.randint(10, 500)}
        out.append(
            WorldObject(
                f"{kind}-{key.morton}-{i}", kind, (x, y, z), (x + size, y + size, z + size), data
            )
        )
    return out

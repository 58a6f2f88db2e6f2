"""The bench server: one game-server process of a load run.

    python -m bench.load._server --id gs-1 --index 0 --servers gs-1,gs-2 --store URL \\
        --cache URL --bus URL --namespace NS --run DIR --out DIR/servers/gs-1 \\
        --players 10000 --seed 1 --mix default --duration 60 [--engine worldstate|baseline]

It opens a `World` (or, with ``--engine baseline``, the naive store of `_baseline`), says
it is ready in ``status/<id>.json``, waits for ``go.json``, then ticks at 20 Hz until the
run's end: it moves the players standing in the regions it holds (one `move_entities` per
tick), hands players that walk into another server's region over (``TransferCreature``),
and fires the builds, claims, trades and chat lines the `Mix` draws for its players, plus
its steps of the quest chains. Everything it sees is recorded (`_history`). Settings beyond
the arguments come from ``WORLDSTATE_*`` variables (timeouts).

The orchestrator starts servers through `server_command`, so another server entry point
(``worldstate serve`` with a player driver) can replace this one without touching the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

import worldstate
from bench.common import settle_gc
from bench.load._history import LEASE_SAMPLE, STATUS_FRESH, STATUS_INTERVAL, read_status
from bench.load._history import write_json as _write_json
from bench.load._players import (
    MAX_STRUCTURE_SIZE,
    MIXES,
    Mix,
    PlayerModel,
    WorldLayout,
    build_box,
    sample_actions,
)
from worldstate import (
    CausalDelivery,
    ClaimResource,
    Committed,
    Config,
    EmitEvent,
    Operation,
    PlaceStructure,
    Rejected,
    Result,
    TransferCreature,
    TransferItems,
    WorldClosed,
    WorldStateError,
)

log = logging.getLogger("bench.load.server")

TICK_RATE = 20.0
MAX_INFLIGHT = 2000
"""Operations in flight per server; beyond it new ones are shed (counted, not sent)."""
OP_TIMEOUT = 30.0
INVENTORIES = 2000
"""Player ``p`` trades from inventory ``inv-{p % INVENTORIES}``."""
GOLD = 100
SETTLE_MAX = 90.0
QUEST_THINK = 0.2
"""Seconds between seeing a quest step and emitting the next one."""
STRONG_KINDS = ("build", "mine", "trade")
CAUSAL_KINDS = ("chat", "quest", "handover")


def inventory_of(player: int) -> str:
    return f"inv-{player % INVENTORIES}"


def server_command(args: dict[str, Any]) -> list[str]:
    """The command line that starts one bench server (see the module docs)."""
    cmd = [sys.executable, "-m", "bench.load._server"]
    for name, value in args.items():
        cmd += [f"--{name.replace('_', '-')}", str(value)]
    return cmd


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.load._server")
    p.add_argument("--id", required=True)
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--servers", required=True, help="every server id, comma-separated")
    p.add_argument("--store", required=True)
    p.add_argument("--cache", default="memory://")
    p.add_argument("--bus", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--players", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--mix", default="default", choices=sorted(MIXES))
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--engine", default="worldstate", choices=("worldstate", "baseline"))
    p.add_argument(
        "--checkpoint",
        type=float,
        default=0.0,
        help="seconds between checkpoints of the counters and arrays (0: only at the end)",
    )
    return p.parse_args(argv)


class Recorder:
    """Counters, latencies and the logs of `_history` for one server incarnation."""

    def __init__(self, out: Path, t0_ref: Callable[[], float]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self._t0 = t0_ref
        self.acks: IO[str] = (out / "acks.log").open("a", encoding="utf-8")
        self.accepted: IO[str] = (out / "accepted.log").open("a", encoding="utf-8")
        self.deliveries: IO[str] = (out / "deliveries.jsonl").open("a", encoding="utf-8")
        self.leases: IO[str] = (out / "leases.jsonl").open("a", encoding="utf-8")
        self.latency: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
        self.ok: collections.Counter[str] = collections.Counter()
        self.rejected: collections.Counter[str] = collections.Counter()
        self.errors: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.shed: collections.Counter[str] = collections.Counter()
        self.moves = 0
        self.ticks: list[tuple[float, float, float, float]] = []
        self.skipped_ticks = 0

    def rel(self) -> float:
        return time.time() - self._t0()

    def lat(self, kind: str, ms: float) -> None:
        self.latency[kind].append((self.rel(), ms))

    def error(self, kind: str, err: BaseException) -> None:
        self.errors[kind][type(err).__name__] += 1

    def recent_p99(self, kind: str, window: float = 5.0) -> float | None:
        rows = self.latency.get(kind)
        if not rows:
            return None
        cut = self.rel() - window
        recent = [ms for t, ms in rows[-2000:] if t >= cut]
        return float(np.percentile(recent, 99)) if recent else None

    def flush(self) -> None:
        for f in (self.acks, self.accepted, self.deliveries, self.leases):
            with contextlib.suppress(ValueError, OSError):
                f.flush()

    def close(self) -> None:
        for f in (self.acks, self.accepted, self.deliveries, self.leases):
            with contextlib.suppress(ValueError, OSError):
                f.close()

    def save_arrays(self) -> None:
        """``latency.npz`` and ``ticks.npy``, each replaced atomically (a server killed
        while writing leaves the previous checkpoint, never a truncated file)."""
        savez: Any = np.savez  # numpy's stubs take no **arrays
        lat = self.out / "latency.npz.tmp"
        with lat.open("wb") as f:
            savez(
                f,
                **{
                    k: np.asarray(v, dtype=np.float64).reshape(-1, 2)
                    for k, v in self.latency.items()
                },
            )
        lat.replace(self.out / "latency.npz")
        ticks = self.out / "ticks.npy.tmp"
        with ticks.open("wb") as f:
            np.save(f, np.asarray(self.ticks, dtype=np.float64).reshape(-1, 4))
        ticks.replace(self.out / "ticks.npy")

    def checkpoint(self) -> None:
        """What a server killed by a fault leaves for the report: its counters
        (``partial.json``) and arrays so far, every ``--checkpoint`` seconds."""
        self.save_arrays()
        _write_json(self.out / "partial.json", self.summary())

    def summary(self) -> dict[str, Any]:
        return {
            "ok": dict(self.ok),
            "rejected": dict(self.rejected),
            "errors": {k: dict(v) for k, v in self.errors.items()},
            "shed": dict(self.shed),
            "moves": self.moves,
            "ticks": len(self.ticks),
            "skipped_ticks": self.skipped_ticks,
        }


class Engine(Protocol):
    """What the tick loop drives: the world (or the baseline store) of this server."""

    me: str

    def held_cells(self) -> np.ndarray[Any, np.dtype[np.bool_]]: ...

    def owners(self) -> list[str | None]: ...

    def move(self, ids: np.ndarray[Any, Any], positions: np.ndarray[Any, Any]) -> int: ...

    async def submit(self, kind: str, op: Operation) -> Result: ...


class WorldEngine:
    def __init__(self, world: worldstate.World, layout: WorldLayout, run: Path) -> None:
        self.world = world
        self.me = world.server_id
        self.layout = layout
        self.keys = layout.keys
        self.run = run
        self._owners: list[str | None] = [None] * len(self.keys)
        self._owners_at = 0.0

    def held_cells(self) -> np.ndarray[Any, np.dtype[np.bool_]]:
        return np.fromiter((self.world.holds(k) for k in self.keys), bool, len(self.keys))

    def owners(self) -> list[str | None]:
        now = time.monotonic()
        if now - self._owners_at > 1.0:
            self._owners_at = now
            owners: list[str | None] = [None] * len(self.keys)
            for doc in read_status(self.run).values():
                if doc["age"] < STATUS_FRESH and doc.get("authoritative"):
                    for c in doc.get("cells", []):
                        if 0 <= c < len(owners):
                            owners[c] = str(doc["server_id"])
            held = self.held_cells()
            for c in np.flatnonzero(held):
                owners[int(c)] = self.me
            self._owners = owners
        return self._owners

    def move(self, ids: np.ndarray[Any, Any], positions: np.ndarray[Any, Any]) -> int:
        return self.world.move_entities(ids, positions)

    async def submit(self, kind: str, op: Operation) -> Result:
        return await self.world.submit(op)


class Driver:
    """The 20 Hz player tick of one server, and the quest chains."""

    def __init__(
        self,
        engine: Engine,
        rec: Recorder,
        model: PlayerModel,
        mix: Mix,
        *,
        index: int,
        servers: list[str],
        seed: int,
    ) -> None:
        self.engine = engine
        self.rec = rec
        self.model = model
        self.mix = mix
        self.index = index
        self.servers = servers
        self.rng = np.random.default_rng([seed, index, os.getpid()])
        self.nodes = model.resource_nodes()
        self.inflight: set[asyncio.Task[None]] = set()
        self.built = 0
        self.t0 = 0.0
        self.t_end = 0.0
        self.stopping = False
        self.local = 0
        """Players this server moved in its last tick."""
        self.local_chains = len(servers) == 1
        """Continue quest chains on acceptance (no other server to pass them to)."""

    # -- operations ----------------------------------------------------------------------

    def spawn(self, kind: str, op: Operation) -> None:
        if self.stopping:
            return
        if len(self.inflight) >= MAX_INFLIGHT:
            self.rec.shed[kind] += 1
            return
        task = asyncio.create_task(self._run(kind, op))
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)

    async def _run(self, kind: str, op: Operation) -> None:
        rec = self.rec
        t = time.perf_counter()
        try:
            async with asyncio.timeout(OP_TIMEOUT):
                res = await self.engine.submit(kind, op)
        except Exception as e:  # every failure is counted by kind, none stops the load
            rec.error(kind, e)
            return
        rec.lat(kind, (time.perf_counter() - t) * 1000.0)
        if isinstance(res, Rejected):
            rec.rejected[kind] += 1
            return
        rec.ok[kind] += 1
        if isinstance(res, Committed):
            if isinstance(op, PlaceStructure):
                rec.acks.write(f"b {op.structure_id}\n")
            elif isinstance(op, ClaimResource):
                rec.acks.write(f"m {op.resource_id} {op.amount!r}\n")
            elif isinstance(op, TransferItems):
                rec.acks.write(f"t {op.quantity}\n")
            rec.acks.flush()
        elif kind in CAUSAL_KINDS:
            rec.accepted.write(f"{op.op_id}\n")
            if kind == "quest" and self.local_chains and isinstance(op, EmitEvent):
                self._quest_step(int(op.payload["q"]), int(op.payload["k"]) + 1)

    def _quest_step(self, q: int, k: int) -> None:
        """Emit step ``k`` of quest ``q`` after the player's think time."""
        if not self.stopping:
            asyncio.get_running_loop().call_later(QUEST_THINK, self._emit_quest, q, k)

    def _emit_quest(self, q: int, k: int) -> None:
        if self.stopping or time.time() >= self.t_end:
            return
        x, y = self.model.hotspots[q % len(self.model.hotspots)]
        self.spawn(
            "quest",
            EmitEvent(
                position=(float(x), float(y), 10.0),
                stream=f"quest-{q}",
                payload={"q": q, "k": k, "t": time.time()},
            ),
        )

    def on_delivery(self, d: CausalDelivery) -> None:
        """A causal event from another server: record it; continue a quest chain."""
        now = time.time()
        self.rec.deliveries.write(json.dumps([d.origin, d.seq, dict(d.vclock), d.op_id]) + "\n")
        payload = d.fields.get("payload")
        if isinstance(payload, Mapping):
            sent = payload.get("t")
            if isinstance(sent, float):
                self.rec.lat("delivery", (now - sent) * 1000.0)
            q, k = payload.get("q"), payload.get("k")
            n = len(self.servers)
            if isinstance(q, int) and isinstance(k, int) and (q + k + 1) % n == self.index:
                self._quest_step(q, k + 1)

    def start_quests(self) -> None:
        n = len(self.servers)
        for q in range(self.mix.quests_per_server * n):
            if q % n == self.index:
                self._quest_step(q, 0)

    # -- the tick ------------------------------------------------------------------------

    async def run(self, t0: float, duration: float) -> None:
        self.t0, self.t_end = t0, t0 + duration
        model, engine, rec, mix = self.model, self.engine, self.rec, self.mix
        layout = model.layout
        period = 1.0 / TICK_RATE
        pos_all = model.positions(0.0)
        """Last computed position of every player (only candidates are recomputed)."""
        cell_all = model.home_cell.copy()
        prev_held: np.ndarray[Any, Any] | None = None
        self.start_quests()
        k = max(0, math.ceil((time.time() - t0) / period))  # a restarted server joins late
        while True:
            sched = t0 + k * period
            now = time.time()
            if sched >= self.t_end:
                break
            if now < sched:
                await asyncio.sleep(sched - now)
            start = time.time()
            held = engine.held_cells()
            cand = model.candidates(held)
            pos_c = model.positions(start - t0, cand)
            cell_c = layout.cell_of(pos_c)
            crossed = (
                cand[(cell_c != cell_all[cand]) & prev_held[cell_all[cand]]]
                if prev_held is not None
                else cand[:0]
            )
            pos_all[cand] = pos_c
            cell_all[cand] = cell_c
            local = held[cell_c]
            idx = cand[local]
            if idx.size:
                try:
                    rec.moves += engine.move(model.ids[idx], pos_c[local])
                except Exception as e:
                    rec.error("move", e)
            owners = engine.owners()
            for i in crossed:
                to = owners[int(cell_all[i])]
                if to is not None and to != engine.me:
                    self.spawn(
                        "handover",
                        TransferCreature(
                            creature_id=int(i), to_server=to, position=tuple(pos_all[i])
                        ),
                    )
            prev_held = held
            self.local = int(idx.size)
            self._act(sample_actions(self.rng, idx, mix, period), pos_all, cell_all, owners)
            end = time.time()
            rec.ticks.append((sched - t0, end - start, end - sched, float(idx.size)))
            k += 1
            behind = int((end - (t0 + k * period)) / period)
            if behind > 0:  # a tick ran over by whole periods: those ticks never happen
                rec.skipped_ticks += behind
                k += behind
        self.stopping = True

    def _act(
        self,
        acts: Any,
        pos: np.ndarray[Any, Any],
        cell: np.ndarray[Any, Any],
        owners: list[str | None],
    ) -> None:
        me = self.engine.me
        for i in acts.build:
            lo, hi = build_box(pos[i])
            self.built += 1
            self.spawn(
                "build",
                PlaceStructure(
                    structure_id=f"{me}-b{self.built}", lo=lo, hi=hi, owner=f"p{int(i)}"
                ),
            )
        for i in acts.mine:
            rid, where = self.nodes[(int(self.model.nearest_hotspot[i]) * 2 + int(i) % 2)]
            self.spawn(
                "mine",
                ClaimResource(resource_id=rid, claimant=f"p{int(i)}", position=where, amount=1.0),
            )
        if acts.trade.size:
            other = np.array([o not in (None, me) for o in owners])
            cand = self.rng.integers(0, self.model.n, acts.trade.size * 8)
            if other.any():
                cand = cand[other[cell[cand]]]
            for j, i in enumerate(acts.trade):
                to = int(cand[j]) if j < cand.size else int(self.rng.integers(0, self.model.n))
                if inventory_of(to) == inventory_of(int(i)):
                    continue
                self.spawn(
                    "trade",
                    TransferItems(
                        from_inventory=inventory_of(int(i)),
                        to_inventory=inventory_of(to),
                        item="gold",
                        quantity=int(self.rng.integers(1, 6)),
                    ),
                )
        for i in acts.chat:
            self.spawn(
                "chat",
                EmitEvent(
                    position=tuple(pos[i]),
                    stream=f"chat-{int(cell[i])}",
                    payload={"p": int(i), "t": time.time()},
                ),
            )

    async def drain(self, timeout: float) -> None:
        if self.inflight:
            await asyncio.wait(list(self.inflight), timeout=timeout)


def drain_counts(world: worldstate.World) -> dict[str, Any]:
    """What this server sent and heard, for the orchestrator to tell when every server
    has heard everything the others sent (`bench.load.__main__.settle`)."""
    ev = world.eventual.stats()
    ca = world.causal.stats()
    return {
        "batches_sent": int(ev["batches_sent"]),
        "batches_heard": int(ev["messages_received"]) - int(ev["echoes"]),
        "delivered_clock": dict(ca["delivered_clock"]),
    }


async def settle(run: Path, most: float) -> float:
    """After the last tick: keep receiving until the orchestrator writes ``stop.json``
    (every server heard what the others sent) or ``most`` seconds pass."""
    t = time.monotonic()
    stop = run / "stop.json"
    while not stop.exists() and time.monotonic() - t < most:  # noqa: ASYNC110 - another process
        await asyncio.sleep(0.1)
    return time.monotonic() - t


async def _every(period: float, body: Callable[[], Any]) -> None:
    while True:
        body()
        await asyncio.sleep(period)


async def serve(args: argparse.Namespace) -> int:
    servers = args.servers.split(",")
    layout = WorldLayout.for_servers(len(servers))
    model = PlayerModel(args.players, layout, seed=args.seed)
    mix = MIXES[args.mix]
    t0_box = [time.time()]
    rec = Recorder(args.out, lambda: t0_box[0])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    status_path = args.run / "status" / f"{args.id}.json"
    status_path.parent.mkdir(parents=True, exist_ok=True)
    if args.engine == "baseline":
        from bench.load._baseline import serve_baseline

        return await serve_baseline(args, layout, model, mix, rec, status_path, stop)
    diag = os.environ.get("WORLDSTATE_BENCH_DIAG") == "1"
    if diag:
        from bench.load import _diag

        _diag.install(rec.lat)
    config = Config.from_env(
        store_url=args.store,
        cache_url=args.cache,
        bus_url=args.bus,
        namespace=args.namespace,
        server_id=args.id,
        max_structure_size=MAX_STRUCTURE_SIZE,
    )
    async with worldstate.connect(config=config) as world:
        engine = WorldEngine(world, layout, args.run)
        driver = Driver(engine, rec, model, mix, index=args.index, servers=servers, seed=args.seed)
        stream = world.updates(None, capacity=1_000_000)
        floor = dict(world.causal.stats()["delivered_clock"])
        rec.deliveries.write(json.dumps({"floor": floor}) + "\n")
        ready = [False]
        draining = [False]

        async def consume() -> None:
            nonlocal stream
            while True:
                try:
                    async for u in stream:
                        if isinstance(u, CausalDelivery):
                            driver.on_delivery(u)
                except WorldStateError:
                    pass  # the bus was lost (broker restart) or we fell behind: reopen
                await asyncio.sleep(0.2)
                try:
                    stream = world.updates(None, capacity=1_000_000)
                except WorldClosed:
                    return
                again = dict(world.causal.stats()["delivered_clock"])
                rec.deliveries.write(json.dumps({"floor": again}) + "\n")

        def status() -> None:
            held = engine.held_cells()
            _write_json(
                status_path,
                {
                    "server_id": args.id,
                    "pid": os.getpid(),
                    "t": time.time(),
                    "ready": ready[0],
                    "authoritative": world.authoritative,
                    "bus_connected": world.bus.connected,
                    "cells": [int(c) for c in np.flatnonzero(held)],
                    "players": driver.local,
                    "ok": dict(rec.ok),
                    "rejected": dict(rec.rejected),
                    "errors": sum(sum(c.values()) for c in rec.errors.values()),
                    "shed": sum(rec.shed.values()),
                    "moves": rec.moves,
                    "ticks": len(rec.ticks),
                    "overruns": sum(1 for t in rec.ticks[-200:] if t[2] > 1 / TICK_RATE),
                    "p99": {
                        k: rec.recent_p99(k)
                        for k in (*STRONG_KINDS, "chat", "delivery", "eventual")
                    },
                    "lag": world.eventual.stats()["lag_ms"],
                    "draining": draining[0],
                    "drain": drain_counts(world),
                },
            )

        def lease_sample() -> None:
            held = {k.morton: le.epoch for k, le in world.leases().items() if world.holds(k)}
            rec.leases.write(json.dumps([time.time(), held]) + "\n")

        def lags() -> None:
            samples = world.eventual.lag_samples
            now = rec.rel()
            for s in samples:
                rec.latency["eventual"].append((now, s * 1000.0))
            samples.clear()  # the bench's own world: read each lag once
            rec.flush()

        tasks = [
            asyncio.create_task(consume(), name="bench-consume"),
            asyncio.create_task(_every(STATUS_INTERVAL, status), name="bench-status"),
            asyncio.create_task(_every(LEASE_SAMPLE, lease_sample), name="bench-leases"),
            asyncio.create_task(_every(1.0, lags), name="bench-lags"),
        ]
        if diag:
            tasks.append(asyncio.create_task(_diag.loop_lag(rec.lat), name="bench-lag"))
        if args.checkpoint > 0:  # fault runs: a killed server's work still counts
            tasks.append(
                asyncio.create_task(_every(args.checkpoint, rec.checkpoint), name="bench-ckpt")
            )  # owned: cancelled and awaited with the others below
        settle_gc()  # what `worldstate serve` does once it is in the mesh
        ready[0] = True
        status()
        go = args.run / "go.json"
        while not go.exists() and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)
        t0 = float(json.loads(go.read_text())["t0"]) if go.exists() else time.time()
        t0_box[0] = t0
        with contextlib.suppress(asyncio.CancelledError):
            if time.time() < t0:
                await asyncio.sleep(t0 - time.time())
            runner = asyncio.create_task(driver.run(t0, args.duration))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait((runner, stopper), return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not runner.done():
                runner.cancel()
            driver.stopping = True
        await driver.drain(OP_TIMEOUT)
        draining[0] = True
        status()
        settled = await settle(args.run, SETTLE_MAX)
        lags()
        ids = world.eventual.positions.ids
        np.savez(
            args.out / "positions.npz",
            ids=ids,
            positions=world.eventual.positions.positions_of(ids),
        )
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        rec.save_arrays()
        crossers = np.flatnonzero(model.crosser)
        owners = world.causal.creature_owners
        _write_json(
            args.out / "final.json",
            {
                "server_id": args.id,
                "engine": "worldstate",
                **rec.summary(),
                "floor": floor,
                "settled_s": settled,
                "creature_owners": {str(int(c)): owners.get(int(c)) for c in crossers},
                "stats": world.stats(),
                "bus": {
                    "bytes_sent": world.bus.stats.bytes_offered,
                    "bytes_received": world.bus.stats.bytes_received,
                    "messages_sent": world.bus.stats.published,
                    "messages_received": world.bus.stats.received,
                },
            },
        )
        status()
    rec.close()
    return 0


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse(argv)
    coro: Coroutine[Any, Any, int] = serve(args)
    sys.exit(asyncio.run(coro))


if __name__ == "__main__":
    main()

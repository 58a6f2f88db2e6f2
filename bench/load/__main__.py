"""Whole-mesh load run: server processes, simulated players, a report with plots.

    python -m bench.load --servers 4 --players 10000 --duration 60 \\
        [--store URL --cache URL --bus URL] [--mix default|builders|miners|traders|chatty|
        movement] [--faults none|kill|partition|broker|db|mixed] [--baseline] --out DIR

Defaults: a fresh SQLite file in DIR, the in-process cache, the MQTT broker at
127.0.0.1:1883 (``WORLDSTATE_TEST_MQTT`` overrides it) with a topic namespace of the run's
own. The run: seed resource nodes and inventories, start a mesh coordinator (here) and the
server processes (`_server.server_command`), wait until every region is placed, then
``go``: the servers tick their players for ``--duration`` seconds while this process shows
live progress, samples CPU/memory per process and (``--faults``) injects faults; then
the servers settle and write their histories, and this process checks the invariants
(`_verify`) and writes ``DIR/report.json`` and ``DIR/report.html`` with the plots.
``--baseline`` then runs the same players against the naive store (`_baseline`) and the
report gives worldstate/baseline ratios per class.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.common import machine_info
from bench.load import _nemesis as nemesis
from bench.load._baseline import NaiveStore, initial_docs
from bench.load._history import read_status, write_json
from bench.load._players import MIXES, PlayerModel, WorldLayout
from bench.load._report import CLASSES, summarise_run, write_report
from bench.load._server import GOLD, INVENTORIES, server_command
from bench.load._verify import full_run_receivers, verify
from regions import RegionKey
from worldstate import Config, MeshCoordinator, connect
from worldstate.store import schema

ROOT = Path(__file__).resolve().parents[2]
PRIVATE_BUS = "private"
DEFAULT_BUS = os.environ.get("WORLDSTATE_TEST_MQTT", "mqtt://127.0.0.1:1883")
FAULT_TIMING: dict[str, Any] = {
    "heartbeat_interval": 0.2,
    "partition_timeout": 1.5,
    "lease_ttl": 2.0,
    "lease_renew_interval": 0.5,
}
"""Short mesh timeouts for fault runs, so that a fault is noticed in seconds."""
READY_TIMEOUT = 120.0
CHECKPOINT_INTERVAL = 2.0
"""Seconds between a fault run's server checkpoints (``_server --checkpoint``)."""
PACKAGES = ("numpy", "sqlalchemy", "psycopg", "aiomqtt", "redis", "matplotlib", "psutil")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n")[0])
    p.add_argument("--servers", type=int, default=4)
    p.add_argument("--players", type=int, default=10_000)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--store", help="store URL (default: a fresh SQLite file in --out)")
    p.add_argument("--cache", default="memory://")
    p.add_argument(
        "--bus",
        default=None,
        help=f"MQTT URL (default {DEFAULT_BUS}), or 'private': a Mosquitto of the run's own "
        "with deploy/mosquitto/mosquitto.conf's latency settings (set_tcp_nodelay true)",
    )
    p.add_argument("--mix", default="default", choices=sorted(MIXES))
    p.add_argument("--faults", default="none", choices=("none", *nemesis.FAULT_KINDS, "mixed"))
    p.add_argument("--baseline", action="store_true", help="also run the naive store")
    p.add_argument("--baseline-duration", type=float, default=None)
    p.add_argument(
        "--settle", type=float, default=2.0, help="least seconds to wait after the last tick"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quiet", action="store_true", help="no live display")
    p.add_argument(
        "--profile",
        metavar="SERVER",
        help="py-spy one server (e.g. gs-2) over the middle third of the run",
    )
    a = p.parse_args(argv)
    if a.servers < 1 or a.players < 1 or a.duration <= 0:
        p.error("--servers and --players must be >= 1 and --duration > 0")
    return a


class Run:
    """One phase (worldstate or baseline): its processes, directories and monitor."""

    def __init__(
        self,
        opts: argparse.Namespace,
        root: Path,
        engine: str,
        store: str,
        bus: str,
        namespace: str,
        duration: float,
    ) -> None:
        self.opts = opts
        self.root = root
        self.engine = engine
        self.store = store
        self.bus = bus
        self.namespace = namespace
        self.duration = duration
        self.ids = [f"gs-{i + 1}" for i in range(opts.servers)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.incarnation: dict[str, int] = {}
        self.bus_of: dict[str, str] = dict.fromkeys(self.ids, bus)
        self.t0 = 0.0
        self.env = dict(os.environ)
        if opts.faults != "none" and engine == "worldstate":
            self.env.update({f"WORLDSTATE_{k.upper()}": str(v) for k, v in FAULT_TIMING.items()})
        self.cpu: dict[str, dict[str, list[float]]] = {}
        self._ps: dict[str, psutil.Process] = {}
        self._me = psutil.Process()
        self.events: list[tuple[float, str]] = []
        (root / "run" / "status").mkdir(parents=True, exist_ok=True)
        (root / "servers").mkdir(parents=True, exist_ok=True)

    def start(self, sid: str) -> None:
        n = self.incarnation.get(sid, -1) + 1
        self.incarnation[sid] = n
        out = self.root / "servers" / (sid if n == 0 else f"{sid}.{n}")
        out.mkdir(parents=True, exist_ok=True)
        cmd = server_command(
            {
                "id": sid,
                "index": self.ids.index(sid),
                "servers": ",".join(self.ids),
                "store": self.store,
                "cache": self.opts.cache,
                "bus": self.bus_of[sid],
                "namespace": self.namespace,
                "run": self.root / "run",
                "out": out,
                "players": self.opts.players,
                "seed": self.opts.seed,
                "mix": self.opts.mix,
                "duration": self.duration,
                "engine": self.engine,
                # a server a fault kills leaves its work so far (`Recorder.checkpoint`)
                "checkpoint": CHECKPOINT_INTERVAL if self.opts.faults != "none" else 0.0,
            }
        )
        with (out / "server.log").open("ab") as log:
            self.procs[sid] = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self._ps[sid if n == 0 else f"{sid}.{n}"] = psutil.Process(self.procs[sid].pid)

    def status(self) -> dict[str, dict[str, Any]]:
        st = read_status(self.root / "run")
        return {s: d for s, d in st.items() if s in self.procs and self.procs[s].poll() is None}

    def sample(self) -> None:
        t = time.time() - self.t0 if self.t0 else 0.0
        procs = dict(self._ps)
        procs["orchestrator+coordinator"] = self._me
        for name, p in procs.items():
            try:
                cpu = p.cpu_percent(None)
                rss = p.memory_info().rss / 1e6
            except psutil.Error:
                continue
            s = self.cpu.setdefault(name, {"t": [], "cpu_pct": [], "rss_mb": []})
            s["t"].append(round(t, 2))
            s["cpu_pct"].append(cpu)
            s["rss_mb"].append(round(rss, 1))

    def processes(self) -> dict[str, Any]:
        out = {}
        for name, s in self.cpu.items():
            cpu = [c for t, c in zip(s["t"], s["cpu_pct"], strict=True) if t > 1.0]
            out[name] = {
                "cpu_pct_mean": float(np.mean(cpu)) if cpu else None,
                "cpu_pct_max": float(np.max(cpu)) if cpu else None,
                "rss_mb_max": max(s["rss_mb"]) if s["rss_mb"] else None,
                "series": s,
            }
        return out

    async def wait_exit(self, timeout: float) -> None:
        deadline = time.time() + timeout
        for p in self.procs.values():
            while p.poll() is None and time.time() < deadline:  # noqa: ASYNC110 - a child process
                await asyncio.sleep(0.1)
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()


class Display:
    """Live progress (rich): elapsed, ops/s and p99 per class, errors."""

    def __init__(self, run: Run, quiet: bool) -> None:
        self.run = run
        self.quiet = quiet
        self.prev: dict[str, float] = {}
        self.prev_t = time.time()
        self.live: Any = None
        self.rate: dict[str, float] = {}

    def __enter__(self) -> Display:
        if not self.quiet:
            from rich.live import Live

            self.live = Live(self._render(), refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def _totals(self, st: dict[str, dict[str, Any]]) -> dict[str, float]:
        tot: dict[str, float] = {"eventual": 0.0}
        for d in st.values():
            tot["eventual"] += d.get("moves", 0)
            for cls, kinds in CLASSES.items():
                if cls == "eventual":
                    continue
                tot[cls] = tot.get(cls, 0.0) + sum(
                    d.get("ok", {}).get(k, 0) + d.get("rejected", {}).get(k, 0) for k in kinds
                )
        return tot

    def update(self, note: str = "") -> None:
        st = self.run.status()
        now = time.time()
        tot = self._totals(st)
        dt = max(1e-3, now - self.prev_t)
        self.rate = {k: max(0.0, (v - self.prev.get(k, 0.0)) / dt) for k, v in tot.items()}
        self.prev, self.prev_t = tot, now
        if self.live is not None:
            self.live.update(self._render(st, note))

    def _render(self, st: dict[str, dict[str, Any]] | None = None, note: str = "") -> Any:
        from rich.table import Table

        st = st or {}
        elapsed = time.time() - self.run.t0 if self.run.t0 else 0.0
        t = Table(
            title=f"{self.run.engine}  elapsed {elapsed:5.1f}/{self.run.duration:.0f} s"
            f"  servers {len(st)}  {note}"
        )
        for col in ("class", "ops/s", "p99 ms (worst server, 5 s)", "errors", "shed"):
            t.add_column(col)
        errs = sum(int(d.get("errors", 0)) for d in st.values())
        shed = sum(int(d.get("shed", 0)) for d in st.values())
        for cls, kinds in CLASSES.items():
            p99s = [
                d.get("p99", {}).get(k)
                for d in st.values()
                for k in (kinds if cls != "causal" else ("chat", "delivery"))
            ]
            vals = [v for v in p99s if isinstance(v, (int, float))]
            t.add_row(
                cls,
                f"{self.rate.get(cls, 0.0):,.0f}",
                f"{max(vals):.1f}" if vals else "-",
                str(errs) if cls == "strong" else "",
                str(shed) if cls == "strong" else "",
            )
        return t


class MeshControl:
    """`_nemesis.Mesh` over a `Run`, its coordinator, proxies and private broker."""

    def __init__(
        self,
        run: Run,
        coord: MeshCoordinator,
        proxies: dict[str, Any],
        broker: nemesis.PrivateBroker | None,
        regions: int,
    ) -> None:
        self.run = run
        self.coord = coord
        self.proxies = proxies
        self.broker = broker
        self.regions = regions

    @property
    def t0(self) -> float:
        return self.run.t0

    def kill(self, server: str) -> None:
        nemesis.kill_process(self.run.procs[server].pid)

    async def restart(self, server: str) -> None:
        self.run.start(server)
        await nemesis.until(lambda: server in self.coord.eligible(), 30)

    async def cut(self, server: str) -> None:
        await self.proxies[server].cut()

    async def heal(self, server: str) -> None:
        await self.proxies[server].restore()

    async def restart_broker(self) -> bool:
        if self.broker is None:
            return False
        await self.broker.restart()
        return True

    async def kill_db_connections(self) -> int | None:
        return await nemesis.terminate_pg_connections(self.run.store)

    def owners(self) -> dict[int, str]:
        now = time.time()
        return {k.morton: le.owner for k, le in self.coord.owners().items() if le.live(now)}

    def eligible(self) -> list[str]:
        return self.coord.eligible()

    def all_regions(self) -> int:
        return self.regions

    def status(self) -> dict[str, dict[str, Any]]:
        return self.run.status()

    async def rebalance(self) -> int:
        return len(await self.coord.rebalance())


async def seed(store: str, namespace: str, model: PlayerModel, capacity: dict[str, float]) -> None:
    """Resource nodes and inventories (one transaction), through a world on a private bus."""
    cfg = Config.from_env(
        store_url=store,
        cache_url="memory://",
        bus_url=f"memory://seed-{namespace}",
        namespace=namespace,
        server_id="load-seed",
    )
    async with connect(config=cfg) as world:
        for rid, where in model.resource_nodes():
            await world.put_resource(rid, where, capacity[rid])
        rows = [
            {"inventory_id": f"inv-{i}", "item": "gold", "count": GOLD} for i in range(INVENTORIES)
        ]

        async def body(c: Any) -> None:
            await c.execute(schema.insert_for(c.dialect.name, schema.inventories).values(rows))

        await world.store.run(body, "seed inventories")


def capacities(model: PlayerModel, opts: argparse.Namespace) -> dict[str, float]:
    nodes = model.resource_nodes()
    expected = MIXES[opts.mix].mine * opts.players * opts.duration / max(1, len(nodes))
    return {rid: float(max(10, round(0.8 * expected))) for rid, _ in nodes}


async def phase_worldstate(
    opts: argparse.Namespace,
    out: Path,
    store: str,
    model: PlayerModel,
    layout: WorldLayout,
    gold: int,
) -> dict[str, Any]:
    namespace = f"load{uuid.uuid4().hex[:10]}"
    broker: nemesis.PrivateBroker | None = None
    bus = opts.bus or DEFAULT_BUS
    faults = nemesis.plan(opts.faults, opts.duration, [f"gs-{i + 1}" for i in range(opts.servers)])
    if opts.bus == PRIVATE_BUS or any(f.kind == "broker" for f in faults):
        broker = nemesis.PrivateBroker()
        if broker.available:
            await broker.start()
            bus = broker.url
        elif opts.bus == PRIVATE_BUS:
            raise SystemExit("--bus private needs the mosquitto binary on PATH")
        else:
            broker = None
    await seed(store, namespace, model, capacities(model, opts))
    run = Run(opts, out, "worldstate", store, bus, namespace, opts.duration)
    proxies: dict[str, Any] = {}
    if any(f.kind == "partition" for f in faults):
        from urllib.parse import urlsplit

        from tests.fix_mqtt_proxy import MqttProxy

        u = urlsplit(bus)
        for sid in run.ids:
            proxies[sid] = MqttProxy(u.hostname or "127.0.0.1", u.port or 1883)
            await proxies[sid].start()
            run.bus_of[sid] = proxies[sid].url
    cfg = Config.from_env(
        store_url=store,
        cache_url=opts.cache,
        bus_url=bus,
        namespace=namespace,
        server_id="load-coordinator",
        **(FAULT_TIMING if opts.faults != "none" else {}),
    )
    keys = layout.keys
    report: dict[str, Any] = {}
    try:
        async with MeshCoordinator(
            cfg, coordinator_id=f"coord-{namespace}", rebalance_interval=None
        ) as coord:
            for sid in run.ids:
                run.start(sid)
            # place the regions once every server is a member, so placement spreads them
            if (
                await nemesis.until(lambda: set(run.ids) <= set(coord.eligible()), READY_TIMEOUT)
                is None
            ):
                raise RuntimeError(
                    f"not every server joined within {READY_TIMEOUT} s; see {out}/servers/*/"
                    "server.log"
                )
            await coord.register_regions(keys)
            mesh = MeshControl(run, coord, proxies, broker, len(keys))
            ready = await nemesis.until(
                lambda: (
                    len(run.status()) == len(run.ids)
                    and all(d.get("ready") for d in run.status().values())
                    and len(mesh.owners()) == len(keys)
                    and sum(len(d.get("cells", [])) for d in run.status().values()) == len(keys)
                ),
                READY_TIMEOUT,
            )
            if ready is None:
                raise RuntimeError(
                    f"the mesh was not ready within {READY_TIMEOUT} s; see {out}/servers/*/"
                    "server.log"
                )
            placement = {str(k): le.owner for k, le in coord.owners().items()}
            run.t0 = time.time() + 0.5
            write_json(out / "run" / "go.json", {"t0": run.t0})
            load_start = os.getloadavg()
            faults_task = asyncio.create_task(
                nemesis.run(mesh, faults, lambda e: run.events.append((time.time() - run.t0, e)))
            )
            profile_task = (
                asyncio.create_task(profile(run, opts.profile, out))
                if opts.profile in run.procs
                else None
            )
            with Display(run, opts.quiet) as display:
                end = run.t0 + opts.duration
                while time.time() < end:
                    run.sample()
                    display.update(run.events[-1][1] if run.events else "")
                    await asyncio.sleep(1.0)
                load_end = os.getloadavg()
                display.update("settling")
                report["settle"] = await settle(run, opts.settle)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(faults_task, timeout=nemesis.RECOVERY_TIMEOUT + 30)
            if profile_task is not None:
                report["profile"] = await profile_task
            await run.wait_exit(opts.settle + 60 + 60)  # SETTLE_MAX + drain
            report["placement"] = placement
            report["coordinator"] = {
                "placements": coord.placements,
                "handoffs": coord.handoffs,
                "failures": coord.failures,
            }
    finally:
        run.stop_all()
        for p in proxies.values():
            await p.stop()
        if broker is not None:
            await broker.close()
    report["run"] = summarise_run(out, opts.duration)
    report["invariants"] = await verify(
        out, store, gold_expected=gold, full_receivers=full_run_receivers(out)
    )
    report["processes"] = run.processes()
    report["faults"] = [f.as_dict() for f in faults]
    report["events"] = run.events
    report["loadavg"] = {"start": load_start, "end": load_end}
    report["namespace"] = namespace
    report["bus_url"] = bus
    return report


async def phase_baseline(
    opts: argparse.Namespace, out: Path, store: str, model: PlayerModel, duration: float
) -> dict[str, Any]:
    naive = NaiveStore(store)
    try:
        gold = {f"inv-{i}": GOLD for i in range(INVENTORIES)}
        await naive.create(initial_docs(model, capacities(model, opts), gold))
    finally:
        await naive.close()
    run = Run(opts, out, "baseline", store, "none://", "baseline", duration)
    try:
        for sid in run.ids:
            run.start(sid)
        ready = await nemesis.until(
            lambda: (
                len(run.status()) == len(run.ids)
                and all(d.get("ready") for d in run.status().values())
            ),
            READY_TIMEOUT,
        )
        if ready is None:
            raise RuntimeError(f"baseline servers not ready; see {out}/servers/*/server.log")
        run.t0 = time.time() + 0.5
        write_json(out / "run" / "go.json", {"t0": run.t0})
        with Display(run, opts.quiet) as display:
            while time.time() < run.t0 + duration:
                run.sample()
                display.update()
                await asyncio.sleep(1.0)
        write_json(out / "run" / "stop.json", {"t": time.time()})
        await run.wait_exit(60)
    finally:
        run.stop_all()
    rep = summarise_run(out, duration)
    rep["processes"] = run.processes()
    return rep


async def profile(run: Run, server: str, out: Path) -> dict[str, Any]:
    """py-spy ``server`` over the middle third of the run (`_profile`)."""
    from bench.load import _profile

    seconds = max(3.0, run.duration / 3)
    await asyncio.sleep(max(0.0, run.t0 + run.duration / 3 - time.time()))
    raw = out / f"profile-{server}.txt"
    why = await _profile.record(run.procs[server].pid, seconds, raw)
    if why is not None:
        return {"server": server, "note": why}
    return {"server": server, "seconds": seconds, "raw": raw.name} | _profile.summarise(
        raw, seconds
    )


def heard_everything(st: dict[str, dict[str, Any]]) -> bool:
    """Every server is draining and has heard every eventual batch and causal event the
    others sent (QoS 0 batches may be lost: see `settle`)."""
    if not st or not all(d.get("draining") for d in st.values()):
        return False
    sent = {s: d["drain"]["batches_sent"] for s, d in st.items()}
    emitted = {s: d["drain"]["delivered_clock"].get(s, 0) for s, d in st.items()}
    for s, d in st.items():
        dr = d["drain"]
        if dr["batches_heard"] < sum(n for o, n in sent.items() if o != s):
            return False
        if any(dr["delivered_clock"].get(o, 0) < n for o, n in emitted.items() if o != s):
            return False
    return True


def heard_total(st: dict[str, dict[str, Any]]) -> int:
    return sum(
        d["drain"]["batches_heard"] + sum(d["drain"]["delivered_clock"].values())
        for d in st.values()
        if "drain" in d
    )


async def settle(run: Run, least: float, most: float = 75.0, quiet: float = 5.0) -> dict[str, Any]:
    """After the last tick: wait ``least`` s, then until every live server has heard
    everything the others sent — or, when messages were lost (QoS 0 batches in a fault),
    until nothing more was heard for ``quiet`` s; at most ``most`` s. Then tell the servers
    to stop (``stop.json``)."""
    t = time.time()
    await asyncio.sleep(least)
    heard, since = -1, time.time()
    everything = False
    while time.time() - t < most:
        st = run.status()
        if heard_everything(st):
            everything = True
            break
        now = heard_total(st)
        if now != heard:
            heard, since = now, time.time()
        elif time.time() - since >= quiet:
            break
        await asyncio.sleep(0.2)
    write_json(run.root / "run" / "stop.json", {"t": time.time()})
    return {"seconds": time.time() - t, "heard_everything": everything}


def targets(report: dict[str, Any]) -> dict[str, Any]:
    c = report["run"]["classes"]

    def lat(cls: str) -> float | None:
        p99: float | None = (c[cls].get("latency_ms") or {}).get("p99")
        return p99

    out: dict[str, Any] = {
        "tick_overrun_pct": {"wanted": "< 1", "got": report["run"]["ticks"]["overrun_pct"]},
        "eventual_p99_ms": {"wanted": "<= 100", "got": lat("eventual")},
        "strong_p99_ms": {"wanted": "<= 50", "got": lat("strong")},
        "invariant_violations": {
            "wanted": 0,
            "got": sum(0 if v["ok"] else 1 for v in report["invariants"].values()),
        },
    }
    out["tick_overrun_pct"]["met"] = out["tick_overrun_pct"]["got"] < 1.0
    for k, limit in (("eventual_p99_ms", 100.0), ("strong_p99_ms", 50.0)):
        got = out[k]["got"]
        out[k]["met"] = got is not None and got <= limit
    out["invariant_violations"]["met"] = out["invariant_violations"]["got"] == 0
    if report.get("ratios"):
        for cls, want in (("eventual", 20.0), ("strong", 10.0)):
            got = report["ratios"].get(cls)
            out[f"{cls}_vs_baseline"] = {
                "wanted": f">= {want}x",
                "got": got,
                "met": got is not None and got >= want,
            }
    return out


def fresh_sqlite(out: Path, name: str) -> str:
    path = out / name
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(str(path) + suffix).unlink()
    return f"sqlite+aiosqlite:///{path}"


def prepare_out(out: Path) -> Path:
    """The output directory, emptied of a previous run's histories."""
    out = out.resolve()
    for sub in ("run", "servers", "baseline"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


async def main_async(opts: argparse.Namespace) -> dict[str, Any]:
    out = prepare_out(opts.out)
    layout = WorldLayout.for_servers(opts.servers)
    model = PlayerModel(opts.players, layout, seed=opts.seed)
    store = opts.store or fresh_sqlite(out, "world.db")
    t_start = time.time()
    report: dict[str, Any] = {
        "config": {
            "servers": opts.servers,
            "players": opts.players,
            "duration_s": opts.duration,
            "store": store.split("://", 1)[0],
            "cache": opts.cache.split("://", 1)[0],
            "bus": (opts.bus or DEFAULT_BUS).split("://", 1)[0],
            "mix": opts.mix,
            "mix_rates": MIXES[opts.mix].as_dict(),
            "faults": opts.faults,
            "baseline": opts.baseline,
            "seed": opts.seed,
            "tick_hz": 20,
            "regions": [RegionKey(k.ix, k.iy, k.iz).morton for k in layout.keys],
            "world_regions": f"{layout.cols}x{layout.rows}",
            "crossers": int(model.crosser.sum()),
            "hotspots": len(model.hotspots),
        },
        "machine": machine_info(PACKAGES),
    }
    report |= await phase_worldstate(opts, out, store, model, layout, INVENTORIES * GOLD)
    if opts.baseline:
        bdur = opts.baseline_duration or opts.duration
        bstore = fresh_sqlite(out, "baseline.db") if opts.store is None else store
        base = await phase_baseline(opts, out / "baseline", bstore, model, bdur)
        report["baseline"] = base
        ratios = {}
        for cls in CLASSES:
            ws, bl = report["run"]["classes"][cls]["per_s"], base["classes"][cls]["per_s"]
            ratios[cls] = ws / bl if bl > 0 else None
        report["ratios"] = ratios
    report["targets"] = targets(report)
    report["elapsed_s"] = time.time() - t_start
    write_report(report, out)
    return report


def headline(report: dict[str, Any]) -> str:
    lines = []
    for cls, c in report["run"]["classes"].items():
        lat = c.get("latency_ms") or {}
        lines.append(
            f"{cls:<9} {c['per_s']:>12,.1f} ops/s  p50 {lat.get('p50', float('nan')):8.1f} ms"
            f"  p99 {lat.get('p99', float('nan')):8.1f} ms"
        )
    t = report["run"]["ticks"]
    lines.append(f"ticks     {t['count']} (overrun {t['overrun_pct']:.2f} %)")
    bad = [k for k, v in report["invariants"].items() if not v["ok"]]
    lines.append("invariants " + ("all pass" if not bad else "FAILED: " + ", ".join(bad)))
    if report.get("ratios"):
        lines.append(
            "vs baseline "
            + ", ".join(f"{k} {v:.1f}x" if v else f"{k} n/a" for k, v in report["ratios"].items())
        )
    for f in report.get("faults", []):
        lines.append(
            f"fault {f['kind']}: recovered in {f.get('recovered_s')} s {f.get('note') or ''}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    opts = parse(argv)
    report = asyncio.run(main_async(opts))
    print(headline(report))
    print(f"report: {opts.out / 'report.json'}  {opts.out / 'report.html'}")
    sys.exit(0 if all(v["ok"] for v in report["invariants"].values()) else 1)


if __name__ == "__main__":
    main()

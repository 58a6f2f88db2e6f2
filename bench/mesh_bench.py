"""Mesh benchmark on real PostgreSQL and Mosquitto: how fast the mesh reacts.

- **demote after a partition**: 5 in-process servers, each with its own MQTT connection,
  3 through one TCP proxy and 2 through another (tests/fix_mqtt_proxy.py); cutting the
  second proxy isolates the 2. Time from the cut until both have demoted themselves; then
  until the coordinator has given their regions to the 3 (leases expired, epoch + 1).
- **convergence after heal**: time from restoring the proxy until all 5 are authoritative
  again, and until the coordinator's membership holds all 5 (MQTT reconnection backoff
  included).
- **reassign after kill -9**: 3 game-server processes (`tests.integration.mesh_server`);
  kill the owner of some regions; time until the coordinator has placed all of them
  elsewhere.
- **hand-off latency**: a region of 1,000 objects handed back and forth between two
  servers by `MeshCoordinator.handoff` (release: drain + flush + release; acquire: epoch + 1
  + load from the store), p50/p99.

Timeouts are short so the run takes a few minutes: heartbeat 0.2 s, partition timeout
1.5 s, lease TTL 2 s, lease renewal 0.5 s (the defaults are 1 / 10 / 10 / 3 s; every
figure but the hand-off scales with them).

    python -m bench.mesh_bench [--handoffs 30] [--trials 3]

Writes bench/results/mesh.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

import worldstate
from bench.common import format_table, percentiles, write_result
from regions import RegionKey
from tests.fix_mqtt_proxy import MqttProxy
from worldstate import Config, MeshCoordinator, WorldObject
from worldstate.bus import open_bus
from worldstate.store import Store

PG = os.environ.get("WORLDSTATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
MQTT = os.environ.get("WORLDSTATE_TEST_MQTT", "mqtt://127.0.0.1:1883")
ROOT = Path(__file__).resolve().parents[1]
TIMING: dict[str, Any] = {
    "heartbeat_interval": 0.2,
    "partition_timeout": 1.5,
    "lease_ttl": 2.0,
    "lease_renew_interval": 0.5,
}


async def until(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> float:
    t0 = time.perf_counter()
    while not cond():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(0.005)
    return time.perf_counter() - t0


@asynccontextmanager
async def database() -> AsyncIterator[str]:
    db = f"ws_bench_mesh_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{db}"')
    try:
        url = f"postgresql+psycopg://{urlsplit(PG).netloc}/{db}"
        store = Store(url)
        await store.open()
        await store.close()
        yield url
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def config(store_url: str, namespace: str, **changes: Any) -> Config:
    values: dict[str, Any] = {"bus_url": MQTT, **TIMING, **changes}
    return Config(store_url=store_url, namespace=namespace, **values)


async def clear_retained(namespace: str) -> None:
    async with open_bus(MQTT, client_id=f"bench-clean-{namespace}", prefix=namespace) as bus:
        await bus.publish("mesh/membership", b"", qos=1, retain=True)


def stats(xs: list[float]) -> dict[str, Any]:
    return {
        "samples_s": [round(x, 3) for x in xs],
        "mean_s": round(sum(xs) / len(xs), 3),
        "max_s": round(max(xs), 3),
        **{k: round(v, 3) for k, v in percentiles(xs, (50,)).items()},
    }


# -- partition and heal ----------------------------------------------------------------------


async def bench_partition(store_url: str, trials: int) -> dict[str, Any]:
    ns = f"bm{uuid.uuid4().hex[:8]}"
    majority, minority = ["bm-1", "bm-2", "bm-3"], ["bm-4", "bm-5"]
    demote, reassign, heal, rejoin = [], [], [], []
    async with AsyncExitStack() as stack:
        a, b = MqttProxy(*_broker()), MqttProxy(*_broker())
        for p in (a, b):
            await p.start()
            stack.push_async_callback(p.stop)
        worlds = {}
        for sid in majority + minority:
            proxy = a if sid in majority else b
            cfg = config(store_url, ns, server_id=sid, bus_url=proxy.url)
            worlds[sid] = await stack.enter_async_context(worldstate.connect(config=cfg))
        coord = MeshCoordinator(config(store_url, ns), coordinator_id=f"coord-{ns}")
        await coord.start()
        stack.push_async_callback(clear_retained, ns)
        stack.push_async_callback(coord.close)
        await until(lambda: coord.acting and len(coord.eligible()) == 5, "mesh up")
        keys = [RegionKey(i, 0, 0) for i in range(10)]
        await coord.register_regions(keys)
        await until(lambda: len(coord.owners()) == 10, "regions placed")
        for _ in range(trials):
            await until(lambda: len(coord.membership()["members"]) == 5, "membership of 5")
            owners = coord.owners()
            lost = {k: le.epoch for k, le in owners.items() if le.owner in minority}
            t0 = time.perf_counter()
            await b.cut()
            await until(lambda: not any(worlds[s].authoritative for s in minority), "demotion")
            demote.append(time.perf_counter() - t0)
            assert all(worlds[s].authoritative for s in majority)

            def taken(lost: dict[RegionKey, int] = lost) -> bool:
                now = coord.owners()
                return all(
                    k in now and now[k].owner in majority and now[k].epoch > e
                    for k, e in lost.items()
                )

            await until(taken, "reassignment")
            reassign.append(time.perf_counter() - t0)
            t1 = time.perf_counter()
            await b.restore()
            await until(lambda: all(w.authoritative for w in worlds.values()), "heal")
            heal.append(time.perf_counter() - t1)
            await until(
                lambda: len(coord.membership()["members"]) == 5 and len(coord.eligible()) == 5,
                "rejoin",
            )
            rejoin.append(time.perf_counter() - t1)
            await coord.rebalance()
    return {
        "servers": "5 in-process worlds, own MQTT connection each, 3|2 via two TCP proxies",
        "demote_after_cut": stats(demote),
        "regions_reassigned_after_cut": stats(reassign),
        "authoritative_again_after_heal": stats(heal),
        "membership_restored_after_heal": stats(rejoin),
    }


def _broker() -> tuple[str, int]:
    parts = urlsplit(MQTT)
    return parts.hostname or "127.0.0.1", parts.port or 1883


# -- kill -9 ---------------------------------------------------------------------------------


def _spawn(sid: str, index: int, store_url: str, ns: str, tmp: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **{f"WORLDSTATE_{k.upper()}": str(v) for k, v in TIMING.items()}}
    log = (tmp / f"{sid}.log").open("ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.mesh_server",
            "--server-id",
            sid,
            "--index",
            str(index),
            "--store",
            store_url,
            "--bus",
            MQTT,
            "--namespace",
            ns,
            "--acks",
            str(tmp / f"{sid}.acks"),
            "--status",
            str(tmp / f"{sid}.status"),
            "--rate",
            "10",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def bench_kill(store_url: str, trials: int) -> dict[str, Any]:
    ns = f"bk{uuid.uuid4().hex[:8]}"
    ids = ["bk-1", "bk-2", "bk-3"]
    samples: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as d:
        tmp = Path(d)
        procs = {sid: _spawn(sid, i, store_url, ns, tmp) for i, sid in enumerate(ids)}
        coord = MeshCoordinator(config(store_url, ns), coordinator_id=f"coord-{ns}")
        await coord.start()
        try:
            await until(lambda: coord.acting and len(coord.eligible()) == 3, "mesh up", 120)
            keys = [RegionKey(i, 0, 0) for i in range(6)]
            await coord.register_regions(keys)
            await until(lambda: len(coord.owners()) == 6, "regions placed")
            for _ in range(trials):
                await until(lambda: len(coord.eligible()) == 3, "all eligible", 120)
                await coord.rebalance()
                owners = coord.owners()
                victim = owners[keys[0]].owner
                lost = {k: le.epoch for k, le in owners.items() if le.owner == victim}
                t0 = time.perf_counter()
                procs[victim].send_signal(signal.SIGKILL)
                await asyncio.to_thread(procs[victim].wait)

                def taken(lost: dict[RegionKey, int] = lost, victim: str = victim) -> bool:
                    now = coord.owners()
                    return all(
                        k in now and now[k].owner != victim and now[k].epoch > e
                        for k, e in lost.items()
                    )

                await until(taken, "reassignment after kill")
                samples.append(time.perf_counter() - t0)
                procs[victim] = _spawn(victim, ids.index(victim), store_url, ns, tmp)
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs.values():
                try:
                    await asyncio.to_thread(p.wait, 30)
                except subprocess.TimeoutExpired:
                    p.kill()
            await coord.close()
            await clear_retained(ns)
    return {
        "servers": "3 game-server processes (tests.integration.mesh_server), coordinator in "
        "the bench process",
        "regions_reassigned_after_kill": stats(samples),
    }


# -- hand-off --------------------------------------------------------------------------------


def region_objects(key: RegionKey, n: int) -> list[WorldObject]:
    lo, _ = key.bounds
    out = []
    for i in range(n):
        x, y = lo[0] + 10 + (i % 40) * 45, lo[1] + 10 + (i // 40) * 45
        out.append(
            WorldObject(f"s-{i}", "structure", (x, y, 5.0), (x + 20, y + 20, 25.0), {"hp": i})
        )
    return out


async def bench_handoff(store_url: str, handoffs: int, objects: int) -> dict[str, Any]:
    ns = f"bh{uuid.uuid4().hex[:8]}"
    lat: list[float] = []
    async with AsyncExitStack() as stack:
        worlds = {}
        for sid in ("bh-1", "bh-2"):
            cfg = config(store_url, ns, server_id=sid)
            worlds[sid] = await stack.enter_async_context(worldstate.connect(config=cfg))
        coord = MeshCoordinator(config(store_url, ns), coordinator_id=f"coord-{ns}")
        await coord.start()
        stack.push_async_callback(clear_retained, ns)
        stack.push_async_callback(coord.close)
        await until(lambda: coord.acting and len(coord.eligible()) == 2, "mesh up")
        key = RegionKey(0, 0, 0)
        await coord.assign(key, "bh-1")
        snap = await worlds["bh-1"].load_region(key)
        await worlds["bh-1"].store_region(
            snap.with_objects(region_objects(key, objects)), expected_version=snap.version
        )
        owner = "bh-1"
        epochs = []
        for i in range(handoffs + 2):
            target = "bh-2" if owner == "bh-1" else "bh-1"
            t0 = time.perf_counter()
            lease = await coord.handoff(key, target)
            if i >= 2:  # two warm-up hand-offs
                lat.append(time.perf_counter() - t0)
            epochs.append(lease.epoch)
            owner = target
        seen = await worlds[owner].load_region(key)
        assert len(seen.objects) == objects, len(seen.objects)
        assert epochs == list(range(epochs[0], epochs[0] + len(epochs)))
    ms = [x * 1000 for x in lat]
    return {
        "objects": objects,
        "handoffs": len(ms),
        **{f"{k}_ms": round(v, 2) for k, v in percentiles(ms, (50, 99)).items()},
        "max_ms": round(max(ms), 2),
        "mean_ms": round(sum(ms) / len(ms), 2),
        "epoch_bumps": "every hand-off: epoch + 1",
    }


async def main(args: argparse.Namespace) -> None:
    results: dict[str, Any] = {
        "backends": "PostgreSQL 15 (SERIALIZABLE) + Mosquitto (MQTT 5), real services",
        "timing": TIMING,
    }
    async with database() as url:
        results["handoff"] = await bench_handoff(url, args.handoffs, args.objects)
    async with database() as url:
        results["partition"] = await bench_partition(url, args.trials)
    async with database() as url:
        results["kill"] = await bench_kill(url, args.trials)
    path = write_result("mesh", results)
    h, p, k = results["handoff"], results["partition"], results["kill"]
    rows = [
        ("hand-off, 1,000-object region", f"{h['p50_ms']:.1f} ms", f"{h['p99_ms']:.1f} ms", ""),
        *(
            (name, f"{d['p50']:.2f} s", f"{d['max_s']:.2f} s", f"{len(d['samples_s'])} trials")
            for name, d in (
                ("demote after partition", p["demote_after_cut"]),
                ("reassign after partition", p["regions_reassigned_after_cut"]),
                ("authoritative after heal", p["authoritative_again_after_heal"]),
                ("membership after heal", p["membership_restored_after_heal"]),
                ("reassign after kill -9", k["regions_reassigned_after_kill"]),
            )
        ),
    ]
    print(format_table(["measure", "p50", "p99 / max", "n"], rows))
    print(f"wrote {path}")


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--handoffs", type=int, default=30)
    p.add_argument("--objects", type=int, default=1000)
    p.add_argument("--trials", type=int, default=3)
    asyncio.run(main(p.parse_args()))


if __name__ == "__main__":
    cli()

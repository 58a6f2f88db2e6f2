"""Fan-out follows interest: each server's receive cost, 4 vs 16 servers, over real Mosquitto.

Weak scaling: every server owns one ``--block`` x ``--block`` square of regions (flat world,
``iz = 0``), so 4 servers make a 4x4-region world and 16 servers an 8x8 one, and the load
per server is the same. Every tick each server moves ``--per-region`` creatures in each of
its regions (uniform eventual load over the whole world) and publishes the tick
(`EventualPath.tick`, driven from the game loop; the tick task is slowed out of the way).
All servers run in this one process, each a real `World` with its own MQTT connection
(signed bus, as in production) to the broker at ``WORLDSTATE_TEST_MQTT`` (default
mqtt://127.0.0.1:1883), under a unique namespace; one SQLite store holds the leases and
bus keys.

Measured per server over ``--seconds`` (after a warm-up): the payload bytes per second its
MQTT client received (everything: eventual batches, its own echoes, heartbeats, notices),
and the eventual batches its eventual path handled. Three runs in the same invocation:

- ``interest-4``: 4 servers, ``Config.fanout = "interest"`` (the default),
- ``interest-16``: 16 servers, interest — the claim: within 2x of ``interest-4``,
- ``world-16``: 16 servers, ``fanout = "world"`` (everything heard; the old layout) — the
  baseline, measured in the same run.

Figures are ratios between runs of this invocation; the load average goes with them.

    python -m bench.fanout_bench [--seconds 8] [--hz 2] [--per-region 20] [--block 2]

The defaults keep the world-wide baseline (16 servers each decoding every other server's
batches, all in one Python process) below saturation on a 2-core machine:
``expected_foreign_batches_per_s`` against ``eventual_batches_per_s_mean`` shows whether the
receivers kept up (if not, the world-wide figure is an underestimate).

Writes bench/results/fanout.json.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

import numpy as np

from bench.common import format_table, machine_info, write_result
from regions import RegionKey
from worldstate import Config, World
from worldstate.bus import Bus, SignedBus

MQTT = os.environ.get("WORLDSTATE_TEST_MQTT", "mqtt://127.0.0.1:1883")


def _layout(servers: int, block: int) -> list[list[RegionKey]]:
    """Each server's square block of regions (servers must be a square number)."""
    side = math.isqrt(servers)
    if side * side != servers:
        raise SystemExit(f"--servers must be square numbers, got {servers}")
    out = []
    for bx in range(side):
        for by in range(side):
            out.append(
                [
                    RegionKey(bx * block + dx, by * block + dy, 0)
                    for dx in range(block)
                    for dy in range(block)
                ]
            )
    return out


def _expected(blocks: list[list[RegionKey]], mode: str, hz: float) -> float:
    """Batches per second a server should hear from others, on average (a lower measured
    figure means the receivers or the broker fell behind: the machine is saturated)."""
    world = {k for b in blocks for k in b}
    heard = []
    for own in blocks:
        if mode == "world":
            heard.append(len(world) - len(own))
        else:
            near = {n for k in own for n in k.neighbours()} | set(own)
            heard.append(len((near & world) - set(own)))
    return statistics.fmean(heard) * hz


def _inner(w: World) -> Bus:
    bus = w.bus
    return bus.inner if isinstance(bus, SignedBus) else bus


def _eventual_bytes(w: World) -> tuple[int, int]:
    """(batches, payload bytes) of other servers' eventual batches handed to the path."""
    got = w.interest.received["eventual"]
    return got[0], got[1]


def _transport(w: World) -> tuple[int, int]:
    st = _inner(w).stats
    return st.received, st.bytes_received


async def _run(
    servers: int, mode: str, *, seconds: float, hz: float, per_region: int, block: int
) -> dict[str, Any]:
    namespace = f"bench-fanout-{uuid.uuid4().hex[:10]}"
    blocks = _layout(servers, block)
    rng = np.random.default_rng(servers)
    with tempfile.TemporaryDirectory(prefix="ws-fanout-") as tmp:
        base = Config(
            store_url=f"sqlite+aiosqlite:///{tmp}/world.db",
            bus_url=MQTT,
            namespace=namespace,
            fanout=mode,
            tick_rate=0.2,  # ticks are driven below
            snapshot_interval=3600.0,
            pool_size=2,
        )
        worlds: list[World] = []
        try:
            for i in range(servers):
                w = World(base.replace(server_id=f"gs-{i:02d}"))
                await w.open()
                worlds.append(w)
            for w, keys in zip(worlds, blocks, strict=True):
                for k in keys:
                    await w.acquire_region(k)
            for w in worlds:
                if not await w.wait_subscribed(30.0):
                    raise RuntimeError(f"{w.server_id}: subscriptions not acknowledged")
            n_ids = per_region * block * block
            ids = [np.arange(n_ids, dtype=np.int64) + 1_000_000 * i for i in range(servers)]
            lows = [
                np.repeat(np.array([k.bounds[0] for k in keys]), per_region, 0) for keys in blocks
            ]
            period = 1.0 / hz
            warmup = max(1.0, 3 * period)
            loop = asyncio.get_running_loop()

            async def tick() -> None:
                for w, i, lo in zip(worlds, ids, lows, strict=True):
                    w.move_entities(i, lo + rng.uniform(1.0, 1999.0, (i.size, 3)) * [1, 1, 0.5])
                for w in worlds:
                    await w.eventual.tick()

            async def ticks(duration: float) -> int:
                n = 0
                end = loop.time() + duration
                nxt = loop.time()
                while loop.time() < end:
                    await tick()
                    n += 1
                    nxt += period
                    await asyncio.sleep(max(0.0, nxt - loop.time()))
                return n

            await ticks(warmup)
            t0 = time.perf_counter()
            before = [(_transport(w), _eventual_bytes(w)) for w in worlds]
            cpu0 = time.process_time()
            n_ticks = await ticks(seconds)
            elapsed = time.perf_counter() - t0  # the load's duration
            cpu = time.process_time() - cpu0
            await asyncio.sleep(0.5)  # the last ticks' deliveries are counted too
            per: list[dict[str, Any]] = []
            for w, ((m0, b0), (e0, eb0)) in zip(worlds, before, strict=True):
                (m1, b1), (e1, eb1) = _transport(w), _eventual_bytes(w)
                st = w.interest.stats()
                per.append(
                    {
                        "server": w.server_id,
                        "bytes_per_s": (b1 - b0) / elapsed,
                        "messages_per_s": (m1 - m0) / elapsed,
                        "eventual_batches_per_s": (e1 - e0) / elapsed,
                        "eventual_bytes_per_s": (eb1 - eb0) / elapsed,
                        "regions_heard": st["regions"] if not st["world_wide"] else "all",
                        "filters": st["filters"],
                        "eventual_dropped": w.eventual.stats()["dropped_total"],
                        "bus_rejected": dict(w.bus.stats.rejected),
                        "transport_dropped": _inner(w).stats.dropped_incoming,
                    }
                )
            sent = sum(w.eventual.stats()["bytes_sent"] for w in worlds)
        finally:
            for w in reversed(worlds):
                await w.close()
    bps = [p["bytes_per_s"] for p in per]
    return {
        "servers": servers,
        "mode": mode,
        "regions": servers * block * block,
        "ticks": n_ticks,
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "behind": n_ticks < 0.8 * seconds * hz,
        "cpu_share": cpu / elapsed,
        "expected_foreign_batches_per_s": _expected(blocks, mode, hz),
        "bytes_per_s_mean": statistics.fmean(bps),
        "bytes_per_s_min": min(bps),
        "bytes_per_s_max": max(bps),
        "eventual_batches_per_s_mean": statistics.fmean(p["eventual_batches_per_s"] for p in per),
        "eventual_bytes_per_s_mean": statistics.fmean(p["eventual_bytes_per_s"] for p in per),
        "eventual_bytes_per_s_max": max(p["eventual_bytes_per_s"] for p in per),
        "eventual_bytes_sent_total": sent,
        "per_server": per,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--hz", type=float, default=2.0)
    ap.add_argument("--per-region", type=int, default=20)
    ap.add_argument("--block", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    load_before = [round(x, 2) for x in os.getloadavg()]
    kw = {
        "seconds": args.seconds,
        "hz": args.hz,
        "per_region": args.per_region,
        "block": args.block,
    }
    runs = {}
    for name, n, mode in (
        ("interest-4", 4, "interest"),
        ("interest-16", 16, "interest"),
        ("world-16", 16, "world"),
    ):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        runs[name] = asyncio.run(_run(n, mode, **kw))
    load_after = [round(x, 2) for x in os.getloadavg()]
    i4 = runs["interest-4"]["bytes_per_s_mean"]
    i16 = runs["interest-16"]["bytes_per_s_mean"]
    w16 = runs["world-16"]["bytes_per_s_mean"]
    ratios = {
        "interest16_over_interest4": i16 / i4,
        "interest16_max_over_interest4_mean": runs["interest-16"]["bytes_per_s_max"] / i4,
        "world16_over_interest16": w16 / i16,
        "world16_over_interest4": w16 / i4,
        "eventual_only_interest16_over_interest4": runs["interest-16"]["eventual_bytes_per_s_mean"]
        / runs["interest-4"]["eventual_bytes_per_s_mean"],
        "eventual_only_world16_over_interest16": runs["world-16"]["eventual_bytes_per_s_mean"]
        / runs["interest-16"]["eventual_bytes_per_s_mean"],
    }
    ok = ratios["interest16_max_over_interest4_mean"] <= 2.0
    rows = [
        (
            name,
            r["servers"],
            r["regions"],
            round(r["bytes_per_s_mean"]),
            round(r["bytes_per_s_min"]),
            round(r["bytes_per_s_max"]),
            round(r["eventual_bytes_per_s_mean"]),
            round(r["eventual_batches_per_s_mean"], 1),
            round(r["expected_foreign_batches_per_s"], 1),
            r["ticks"],
        )
        for name, r in runs.items()
    ]
    print(
        format_table(
            [
                "run",
                "servers",
                "regions",
                "rx B/s mean",
                "min",
                "max",
                "eventual B/s",
                "batches/s",
                "expected",
                "ticks",
            ],
            rows,
        )
    )
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}")
    print(f"every 16-server figure within 2x of the 4-server mean: {ok}")
    print(f"load average before {load_before}, after {load_after}")
    if not args.no_write:
        path = write_result(
            "fanout",
            {
                "params": {**kw, "broker": MQTT},
                "loadavg_before": load_before,
                "loadavg_after": load_after,
                "runs": runs,
                "ratios": ratios,
                "within_2x": ok,
            },
            machine=machine_info(),
        )
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

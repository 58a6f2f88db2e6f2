"""Strong path throughput on PostgreSQL: group commit vs one transaction per op.

Both modes run the same work with the same client concurrency: C client tasks submit
PlaceStructure ops (conflict-checked against committed structures; a few percent overlap)
into R regions owned by one server. "group" is `World.submit` (the owned region's
pipeline batches what arrives while the previous batch commits); "per-op" commits every
op in its own fenced transaction (the same SQL, batch of one), concurrently.

    python -m bench.strong_bench [--ops 12000] [--clients 64] [--regions 8]

Writes bench/results/strong.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import psycopg

import worldstate
from bench.common import format_table, percentiles, write_result
from regions import RegionKey
from worldstate import Config, PlaceStructure, StoreUnavailable
from worldstate.results import Committed, Rejected, Result
from worldstate.store.strong_commit import commit_region_batch
from worldstate.strong._path import to_result

PG = os.environ.get("WORLDSTATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


def make_ops(n: int, regions: list[RegionKey], seed: int) -> list[PlaceStructure]:
    rng = random.Random(seed)
    ops = []
    for i in range(n):
        key = regions[i % len(regions)]
        lo, _ = key.bounds
        # a 40 x 40 grid of 40 m cells per region, 25 m structures jittered: ~5 % overlap
        cx, cy = rng.randrange(40), rng.randrange(40)
        x = lo[0] + cx * 45 + rng.uniform(0, 12)
        y = lo[1] + cy * 45 + rng.uniform(0, 12)
        z = lo[2] + rng.choice((0.0, 30.0, 60.0, 90.0, 120.0)) + rng.uniform(0, 4)
        ops.append(
            PlaceStructure(structure_id=f"b{seed}-{i}", lo=(x, y, z), hi=(x + 25, y + 25, z + 25))
        )
    return ops


async def run_mode(
    mode: str, n_ops: int, clients: int, n_regions: int, max_seconds: float = 60.0
) -> dict[str, Any]:
    db = f"ws_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{db}"')
    try:
        cfg = Config(
            store_url=f"postgresql+psycopg://{urlsplit(PG).netloc}/{db}",
            server_id="bench-1",
            pool_size=clients if mode == "per-op" else 16,
            namespace=f"b{uuid.uuid4().hex[:8]}",
            bus_url=f"memory://{uuid.uuid4().hex}",
            lease_ttl=120.0,
            lease_renew_interval=30.0,
            txn_max_attempts=200 if mode == "per-op" else 12,
        )
        async with worldstate.connect(config=cfg) as w:
            regions = [RegionKey(i, 0, 0) for i in range(n_regions)]
            for k in regions:
                await w.acquire_region(k)
            ops = make_ops(n_ops, regions, seed=1)
            warm = make_ops(400, regions, seed=2)
            lat: list[float] = []
            results: list[Result] = []

            async def one(op: PlaceStructure) -> Result:
                stamped, _, key = w.router.prepare(op)
                if mode == "group":
                    return await w.submit(op)
                assert key is not None
                lease = w.lease_of(key)
                outs = await w.store.run(
                    lambda c: commit_region_batch(
                        c,
                        key,
                        [stamped],
                        epoch=lease.epoch,
                        writer=w.server_id,
                        policy=w.policy,
                        now=w.clock(),
                    ),
                    "per-op commit",
                )
                return to_result(outs[0])

            failed: list[str] = []

            deadline = [float("inf")]

            async def client(mine: list[PlaceStructure], record: bool) -> None:
                for op in mine:
                    if record and time.perf_counter() > deadline[0]:
                        break  # time budget spent: throughput is measured over what ran
                    t0 = time.perf_counter()
                    try:
                        r = await one(op)
                    except StoreUnavailable:
                        failed.append(str(op.op_id))
                        continue
                    if record:
                        lat.append((time.perf_counter() - t0) * 1000)
                        results.append(r)

            await asyncio.gather(*(client(warm[i::clients], False) for i in range(clients)))
            retries0 = w.store.stats.retries
            t0 = time.perf_counter()
            deadline[0] = t0 + max_seconds
            await asyncio.gather(*(client(ops[i::clients], True) for i in range(clients)))
            elapsed = time.perf_counter() - t0
            committed = sum(isinstance(r, Committed) for r in results)
            rejected = sum(isinstance(r, Rejected) for r in results)
            batches = sum(p.batches for p in w.strong.pipelines.values())
            pct = percentiles(lat, (50, 99))
            return {
                "mode": mode,
                "ops": n_ops,
                "ops_run": len(results) + len(failed),
                "time_budget_s": max_seconds,
                "clients": clients,
                "regions": n_regions,
                "committed": committed,
                "rejected": rejected,
                "elapsed_s": elapsed,
                "committed_per_s": committed / elapsed,
                "ops_per_s": (len(results) + len(failed)) / elapsed,
                "latency_ms": pct,
                "retries": w.store.stats.retries - retries0,
                "failed_retries_exhausted": len(failed),
                "batches": batches,
            }
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    group = await run_mode("group", args.ops, args.clients, args.regions, args.max_seconds)
    if args.group_only:
        return {"group": group, "targets": {"committed_per_s": 5000, "ratio": 3.0}}
    per_op = await run_mode("per-op", args.ops, args.clients, args.regions, args.max_seconds)
    return {
        "group": group,
        "per_op": per_op,
        "ratio_committed_per_s": group["committed_per_s"] / per_op["committed_per_s"],
        "targets": {"committed_per_s": 5000, "ratio": 3.0},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ops", type=int, default=12000)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--regions", type=int, default=8)
    ap.add_argument("--group-only", action="store_true", help="skip the per-op baseline")
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        help="time budget per mode; throughput is measured over the ops that ran",
    )
    args = ap.parse_args()
    res = asyncio.run(main_async(args))
    if args.group_only:
        g = res["group"]
        print(
            f"group: {g['committed_per_s']:.0f} committed/s, p50 {g['latency_ms']['p50']:.1f}"
            f" ms, p99 {g['latency_ms']['p99']:.1f} ms, batches {g['batches']}"
        )
        return
    path = write_result("strong", res)
    rows = [
        [
            m["mode"],
            f"{m['committed_per_s']:.0f}",
            m["committed"],
            m["rejected"],
            f"{m['latency_ms']['p50']:.1f}",
            f"{m['latency_ms']['p99']:.1f}",
            m["retries"],
        ]
        for m in (res["group"], res["per_op"])
    ]
    print(
        format_table(
            ["mode", "committed/s", "committed", "rejected", "p50 ms", "p99 ms", "retries"], rows
        )
    )
    print(
        f"group commit is {res['ratio_committed_per_s']:.1f}x one-transaction-per-op "
        f"(targets: >= 5000/s and >= 3x); wrote {path}"
    )


if __name__ == "__main__":
    main()

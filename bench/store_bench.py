"""load_region of a 1,000-object region: served from Redis (consistent=False) vs read from
PostgreSQL (consistent=True), same world, same machine, one run.

    python -m bench.store_bench [--objects 1000] [--samples 500]

Needs PostgreSQL and Redis (WORLDSTATE_TEST_PG / WORLDSTATE_TEST_REDIS as for the tests).
Creates and drops its own database and Redis namespace. Writes bench/results/store.json.
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
from worldstate import Config, WorldObject

PG = os.environ.get("WORLDSTATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS = os.environ.get("WORLDSTATE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def objects(key: RegionKey, n: int, rng: random.Random) -> list[WorldObject]:
    lo, _ = key.bounds
    out = []
    for i in range(n):
        x, y, z = (lo[j] + rng.uniform(0, 1990) for j in range(3))
        out.append(
            WorldObject(
                f"structure-{i}",
                "structure",
                (x, y, z),
                (x + 4, y + 4, z + 4),
                {"hp": rng.randint(1, 100), "owner": f"player-{rng.randint(1, 500)}"},
            )
        )
    return out


async def measure(n_objects: int, samples: int) -> dict[str, Any]:
    db = f"ws_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{db}"')
    ns = f"wsbench{uuid.uuid4().hex[:8]}"
    try:
        cfg = Config(
            store_url=f"postgresql+psycopg://{urlsplit(PG).netloc}/{db}",
            cache_url=REDIS,
            namespace=ns,
            server_id="bench-1",
        )
        async with worldstate.connect(config=cfg) as w:
            key = RegionKey(0, 0, 0)
            snap = await w.load_region(key)
            await w.store_region(
                snap.with_objects(objects(key, n_objects, random.Random(7))), expected_version=0
            )
            for _ in range(20):  # warm both paths (connections, scripts)
                await w.load_region(key)
                await w.load_region(key, consistent=False)
            results: dict[str, list[float]] = {
                "redis": [],
                "postgresql": [],
                "redis_all": [],
                "postgresql_all": [],
            }
            for i in range(samples * 4):  # interleave so drift hits all paths alike
                consistent = i % 2 == 0
                touch_all = (i // 2) % 2 == 1
                t0 = time.perf_counter()
                got = await w.load_region(key, consistent=consistent)
                if touch_all:  # build every WorldObject (objects are decoded lazily)
                    n = sum(1 for o in got.objects if o.id)
                    assert n == n_objects
                dt = time.perf_counter() - t0
                assert len(got.objects) == n_objects
                name = ("postgresql" if consistent else "redis") + ("_all" if touch_all else "")
                results[name].append(dt * 1000)
            cache_stats = w.cache.stats.as_dict()
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        import redis

        r = redis.Redis.from_url(REDIS)
        keys = list(r.scan_iter(match=f"{ns}:*"))
        if keys:
            r.delete(*keys)
        r.close()
    pg = percentiles(results["postgresql"], (50, 99))
    rd = percentiles(results["redis"], (50, 99))
    pg_all = percentiles(results["postgresql_all"], (50, 99))
    rd_all = percentiles(results["redis_all"], (50, 99))
    return {
        "postgresql_all_objects_ms": pg_all,
        "redis_all_objects_ms": rd_all,
        "speedup_all_objects_p50": pg_all["p50"] / rd_all["p50"],
        "objects": n_objects,
        "samples_each": samples,
        "postgresql_ms": pg,
        "redis_ms": rd,
        "speedup_p50": pg["p50"] / rd["p50"],
        "speedup_p99": pg["p99"] / rd["p99"],
        "target_speedup": 5.0,
        "cache_stats": cache_stats,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--objects", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=500)
    args = ap.parse_args()
    res = asyncio.run(measure(args.objects, args.samples))
    path = write_result("store", res)
    print(
        format_table(
            ["path", "p50 ms", "p99 ms"],
            [
                [
                    "PostgreSQL (consistent=True)",
                    res["postgresql_ms"]["p50"],
                    res["postgresql_ms"]["p99"],
                ],
                ["Redis (consistent=False)", res["redis_ms"]["p50"], res["redis_ms"]["p99"]],
                [
                    "PostgreSQL + build all objects",
                    res["postgresql_all_objects_ms"]["p50"],
                    res["postgresql_all_objects_ms"]["p99"],
                ],
                [
                    "Redis + build all objects",
                    res["redis_all_objects_ms"]["p50"],
                    res["redis_all_objects_ms"]["p99"],
                ],
            ],
        )
    )
    print(
        f"cached is {res['speedup_p50']:.1f}x faster at p50, {res['speedup_p99']:.1f}x at p99 "
        f"(target >= 5x); building every object too: {res['speedup_all_objects_p50']:.1f}x at "
        f"p50; wrote {path}"
    )


if __name__ == "__main__":
    main()

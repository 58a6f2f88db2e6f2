"""Benchmark of spatial queries that follow the data (issue 9, item 4).

A sparse world on the embedded store (SQLite + in-process cache): ``--regions`` stored
regions scattered over a 200 km box, each with ``--objects`` objects, some of them straddling
a region boundary. Reported, in one run:

1. A 200 km box query (1,030,301 regions by volume): latency from a fresh server (it lists
   the stored regions with one Morton-range scan, then reads them) and from a warm one, the
   number of regions it read, and the same query with ``limit=10``.
2. Small box/sphere queries (tens to hundreds of metres) answered from the region views:
   p50/p99 latency.
3. Straddlers: every object spanning a boundary must be found by a query on either side
   (a correctness count, not a time).

Results go to bench/results/query.json.

    python -m bench.query_bench            # 40 regions x 200 objects
    python -m bench.query_bench --quick    # 10 x 50
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import worldstate
from bench.common import format_table, percentiles, write_result
from regions import RegionKey, Sphere
from worldstate.objects import WorldObject

HALF = 100_000.0  # the 200 km box is +-100 km on each axis


def _objects(key: RegionKey, n: int, rng: random.Random) -> list[WorldObject]:
    lo = key.bounds[0]
    out = []
    for i in range(n):
        p = (lo[0] + rng.uniform(5, 1995), lo[1] + rng.uniform(5, 1995), lo[2] + rng.uniform(0, 60))
        out.append(WorldObject(f"{key}-{i}", "structure", p, (p[0] + 4, p[1] + 4, p[2] + 4)))
    # one straddler per region, centred just inside, reaching 12 m over the +x face
    e, z = lo[0] + 1996.0, lo[2]
    out.append(
        WorldObject(
            f"{key}-x", "structure", (e - 10, lo[1] + 9, z + 1), (e + 14, lo[1] + 11, z + 3)
        )
    )
    return out


async def run(regions: int, objects: int, queries: int, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite+aiosqlite:///{Path(d) / 'world.db'}"
        keys: set[RegionKey] = set()
        while len(keys) < regions:
            keys.add(RegionKey(rng.randint(-49, 49), rng.randint(-49, 49), rng.randint(-2, 2)))
        async with worldstate.connect(url, server_id="writer", bus="memory://qb-w") as w:
            for k in sorted(keys, key=lambda k: k.morton):
                s = await w.load_region(k)
                await w.store_region(s.with_objects(_objects(k, objects, rng)), expected_version=0)
        big = ((-HALF, -HALF, -HALF), (HALF, HALF, HALF))
        async with worldstate.connect(url, server_id="reader", bus="memory://qb-r") as r:
            t = time.perf_counter()
            found = await r.query(big)
            cold = time.perf_counter() - t
            read = r.stats()["regions_in_view"]
            t = time.perf_counter()
            again = await r.query(big)
            warm = time.perf_counter() - t
            t = time.perf_counter()
            first10 = await r.query(big, limit=10)
            limited = time.perf_counter() - t
            assert len(again) == len(found) == regions * (objects + 1) and len(first10) == 10
            small: list[float] = []
            hits = 0
            ks = sorted(keys, key=lambda k: k.morton)
            for _ in range(queries):
                lo = rng.choice(ks).bounds[0]
                c = (
                    lo[0] + rng.uniform(0, 2000),
                    lo[1] + rng.uniform(0, 2000),
                    lo[2] + rng.uniform(0, 60),
                )
                q: Any
                if rng.random() < 0.5:
                    q = Sphere(c, rng.uniform(20, 300))
                else:
                    h = rng.uniform(20, 300)
                    q = ((c[0] - h, c[1] - h, c[2] - h), (c[0] + h, c[1] + h, c[2] + h))
                t = time.perf_counter()
                hits += len(await r.query(q))
                small.append(time.perf_counter() - t)
            straddlers = 0
            for k in ks:
                lo = k.bounds[0]
                y, z = lo[1], lo[2]
                right = await r.query(((lo[0] + 2001, y + 9, z + 1), (lo[0] + 2009, y + 11, z + 3)))
                left = await r.query(((lo[0] + 1987, y + 9, z + 1), (lo[0] + 1999, y + 11, z + 3)))
                want = f"{k}-x"
                straddlers += want in {o.id for o in right} and want in {o.id for o in left}
    lat = percentiles([x * 1000 for x in small], (50, 99))
    return {
        "world": {"regions": regions, "objects_per_region": objects + 1, "box_km": 200},
        "big_box": {
            "regions_by_volume": 101**3,
            "regions_read": read,
            "objects": len(found),
            "cold_ms": cold * 1000,
            "warm_ms": warm * 1000,
            "limit_10_ms": limited * 1000,
        },
        "small_queries": {
            "count": queries,
            "objects_found": hits,
            **{f"{k}_ms": v for k, v in lat.items()},
        },
        "straddlers": {"found_from_both_sides": straddlers, "expected": regions},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--regions", type=int, default=None)
    ap.add_argument("--objects", type=int, default=None)
    ap.add_argument("--queries", type=int, default=None)
    a = ap.parse_args(argv)
    regions = a.regions or (10 if a.quick else 40)
    objects = a.objects or (50 if a.quick else 200)
    queries = a.queries or (200 if a.quick else 2000)
    res = asyncio.run(run(regions, objects, queries))
    b, s = res["big_box"], res["small_queries"]
    rows = [
        [
            "200 km box, fresh server",
            f"{b['cold_ms']:.1f} ms",
            f"{b['regions_read']} of {b['regions_by_volume']:,} regions read",
        ],
        ["200 km box, warm views", f"{b['warm_ms']:.1f} ms", f"{b['objects']} objects"],
        ["200 km box, limit=10", f"{b['limit_10_ms']:.1f} ms", ""],
        [
            "small queries p50 / p99",
            f"{s['p50_ms']:.3f} / {s['p99_ms']:.3f} ms",
            f"{s['count']} queries",
        ],
        [
            "straddlers found from both sides",
            f"{res['straddlers']['found_from_both_sides']} / {res['straddlers']['expected']}",
            "",
        ],
    ]
    print(format_table(["measure", "value", "note"], rows))
    print(f"-> {write_result('query', res)}")
    ok = res["straddlers"]["found_from_both_sides"] == res["straddlers"]["expected"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

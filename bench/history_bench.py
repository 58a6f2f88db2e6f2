"""World history on PostgreSQL: checkpoint, restore, export and import of a world of
``--regions`` regions x ``--objects`` objects (MB/s, seconds, peak memory), and replay of
the causal log (events/s).

    python -m bench.history_bench [--regions 1000] [--objects 1000] [--events 20000]

Needs PostgreSQL (WORLDSTATE_TEST_PG as for the tests); creates and drops its own
database. Writes bench/results/history.json. Peak memory is Python's own allocations
during each step (tracemalloc, measured in a second, separate run of the step so the
timings are not slowed by tracing) plus the process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg

import worldstate
from bench.common import machine_info, write_result
from regions import RegionKey
from worldstate import Config, EmitEvent, WorldObject
from worldstate.history import (
    create_checkpoint,
    delete_checkpoint,
    export_checkpoint,
    import_checkpoint,
    read_events,
    restore_checkpoint,
)
from worldstate.store import Store

PG = os.environ.get("WORLDSTATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
T = TypeVar("T")


def region_objects(key: RegionKey, n: int, rng: random.Random) -> list[WorldObject]:
    lo, _ = key.bounds
    out = []
    for i in range(n):
        x, y, z = (lo[j] + rng.uniform(0, 1990) for j in range(3))
        out.append(
            WorldObject(
                f"s-{key.morton}-{i}",
                "structure",
                (x, y, z),
                (x + 4, y + 4, z + 4),
                {"hp": rng.randint(1, 100)},
            )
        )
    return out


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


async def timed(fn: Callable[[], Awaitable[T]]) -> tuple[T, float]:
    t0 = time.perf_counter()
    out = await fn()
    return out, time.perf_counter() - t0


async def traced_peak(fn: Callable[[], Awaitable[Any]]) -> float:
    tracemalloc.start()
    try:
        await fn()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


async def populate(url: str, regions: int, objects: int) -> int:
    store = Store(url, pool_size=4)
    await store.open()
    rng = random.Random(1)
    side = max(1, round(regions ** (1 / 3)))
    keys = [
        RegionKey(ix, iy, iz)
        for ix in range(side + 1)
        for iy in range(side + 1)
        for iz in range(side + 1)
    ][:regions]
    sem = asyncio.Semaphore(1)  # serialisable writes into one small table: one at a time

    async def one(k: RegionKey) -> None:
        async with sem:
            await store.store_region(
                k,
                region_objects(k, objects, rng),
                expected_version=0,
                epoch=0,
                writer="bench",
                history_versions=1,
            )

    await asyncio.gather(*(one(k) for k in keys))
    await store.close()
    return len(keys)


async def emit_events(url: str, n: int) -> None:
    cfg = Config(store_url=url, server_id="bench-a", bus_url=f"memory://b{uuid.uuid4().hex[:6]}")
    async with worldstate.connect(config=cfg) as w:
        batch = 500
        for start in range(0, n, batch):
            await w.submit_many(
                EmitEvent(position=(10.0, 10.0, 10.0), stream="s", payload={"i": start + i})
                for i in range(min(batch, n - start))
            )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    db = f"ws_bench_history_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(PG)
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    url = f"postgresql+psycopg://{parts.netloc}/{db}"
    out: dict[str, Any] = {"regions": args.regions, "objects_per_region": args.objects}
    try:
        t0 = time.perf_counter()
        out["regions"] = await populate(url, args.regions, args.objects)
        out["populate_s"] = round(time.perf_counter() - t0, 2)
        await emit_events(url, args.events)
        store = Store(url)
        await store.open()
        rss0 = rss_mb()
        cp, secs = await timed(lambda: create_checkpoint(store, "bench", by="bench"))
        out["checkpoint"] = {
            "seconds": round(secs, 2),
            "objects": cp.objects,
            "rows": cp.rows,
            "raw_mb": round(cp.raw_bytes / 1e6, 1),
            "stored_mb": round(cp.bytes / 1e6, 1),
            "mb_per_s_raw": round(cp.raw_bytes / 1e6 / secs, 1),
            "objects_per_s": round(cp.objects / secs),
        }
        restore, secs = await timed(lambda: restore_checkpoint(store, "bench", by="bench"))
        out["restore"] = {
            "seconds": round(secs, 2),
            "rows": restore.rows,
            "mb_per_s_raw": round(cp.raw_bytes / 1e6 / secs, 1),
            "objects_per_s": round(cp.objects / secs),
        }
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.wscp"
            _, secs = await timed(lambda: export_checkpoint(store, "bench", path))
            size = path.stat().st_size
            out["export"] = {
                "seconds": round(secs, 2),
                "file_mb": round(size / 1e6, 1),
                "mb_per_s_raw": round(cp.raw_bytes / 1e6 / secs, 1),
            }
            imported, secs = await timed(
                lambda: import_checkpoint(store, path, name="bench-imported")
            )
            out["import"] = {
                "seconds": round(secs, 2),
                "mb_per_s_raw": round(cp.raw_bytes / 1e6 / secs, 1),
            }
            await delete_checkpoint(store, imported.id)
            if not args.no_memory:
                out["peak_python_mb"] = {
                    "checkpoint": round(
                        await traced_peak(lambda: create_checkpoint(store, "bench-mem")), 1
                    ),
                    "restore": round(
                        await traced_peak(lambda: restore_checkpoint(store, "bench-mem")), 1
                    ),
                    "export": round(
                        await traced_peak(lambda: export_checkpoint(store, "bench-mem", path)), 1
                    ),
                }
        out["peak_rss_mb"] = {"before": round(rss0, 1), "after": round(rss_mb(), 1)}

        async def replay() -> int:
            n = 0
            async for _ in read_events(store):
                n += 1
            return n

        n, secs = await timed(replay)
        out["replay"] = {"events": n, "seconds": round(secs, 2), "events_per_s": round(n / secs)}
        await store.close()
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    total = out["regions"] * args.objects
    out["objects_total"] = total
    if total < 1_000_000:
        scale = 1_000_000 / total
        out["extrapolated_1m_objects_s"] = {
            "checkpoint": round(out["checkpoint"]["seconds"] * scale, 1),
            "restore": round(out["restore"]["seconds"] * scale, 1),
            "note": "linear extrapolation from the measured size (the work is per row)",
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--regions", type=int, default=1000)
    ap.add_argument("--objects", type=int, default=1000)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--no-memory", action="store_true", help="skip the tracemalloc runs")
    args = ap.parse_args()
    results = asyncio.run(run(args))
    path = write_result(
        "history", results, machine=machine_info(("sqlalchemy", "psycopg", "orjson", "numpy"))
    )
    for k, v in results.items():
        print(f"{k}: {v}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

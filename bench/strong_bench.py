"""Strong path on PostgreSQL, side by side in one run (issue 9):

- ``ceiling``: what the store itself sustains — psycopg alone, one writer, each
  transaction a fenced group commit of 256 placements (lease row locked, objects and
  outcomes inserted, region version bumped), the same statements worldstate sends;
- ``spread``: worldstate, 1 server owning 8 regions, 128 clients submitting
  `PlaceStructure` (conflict-checked; 5 % of them overlap an earlier one) through the public API;
- ``hot``: the same load into one owned region;
- ``per_op``: the baseline — one SERIALIZABLE transaction per op (the old read-based
  commit, batch of one), 128 concurrent clients;
- ``half_rate``: open-loop arrivals at half the spread peak rate, for latency (p50/p99);
- ``bank``: 4 worlds, 10 inventories, ``--transfers`` concurrent `TransferItems` (400 in
  flight), totals sampled in one read transaction throughout.

Targets: spread >= 50 % of ceiling; hot >= 50 % of spread; p99 <= 25 ms at half rate; bank:
0 errors, totals conserved at every sample, >= 1,000 committed transfers/s.

    python -m bench.strong_bench [--seconds 10] [--clients 128]

Writes bench/results/strong.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

import worldstate
from bench.common import format_table, percentiles, settle_gc, write_result
from regions import RegionKey
from worldstate import Config, PlaceStructure
from worldstate.operations import ChangeInventory, TransferItems
from worldstate.results import Committed, Rejected, Result
from worldstate.store import Store
from worldstate.store.object_rows import row_checksum
from worldstate.store.strong_commit import commit_region_batch
from worldstate.strong import to_result

PG = os.environ.get("WORLDSTATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


@asynccontextmanager
async def database() -> AsyncIterator[str]:
    db = f"ws_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{db}"')
    try:
        yield f"postgresql+psycopg://{urlsplit(PG).netloc}/{db}"
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


CELLS = (40, 40, 66)
"""45 m x 45 m x 30 m cells per region, each holding at most one 25 m structure."""


def make_ops(
    n: int, regions: list[RegionKey], seed: int, overlap: float = 0.05
) -> list[PlaceStructure]:
    """``n`` placements dealt round-robin over ``regions``: each region's placements take
    distinct cells of its grid, except a fraction ``overlap`` aimed at the cell of an earlier
    placement there (a real overlap, lost by one of the two). So the share of losers is the
    same whatever the number of regions or ops (the ceiling places non-overlapping rows)."""
    rng = random.Random(seed)
    nx, ny, nz = CELLS
    per = -(-n // len(regions))
    cells = {k: rng.sample(range(nx * ny * nz), min(per, nx * ny * nz)) for k in regions}
    used: dict[RegionKey, list[int]] = {k: [] for k in regions}
    ops = []
    for i in range(n):
        key = regions[i % len(regions)]
        lo, _ = key.bounds
        mine = used[key]
        if mine and rng.random() < overlap:
            cell = rng.choice(mine)
        else:
            cell = cells[key][len(mine) % len(cells[key])]
        mine.append(cell)
        cx, rest = divmod(cell, ny * nz)
        cy, cz = divmod(rest, nz)
        x = lo[0] + cx * 45 + rng.uniform(0, 12)
        y = lo[1] + cy * 45 + rng.uniform(0, 12)
        z = lo[2] + cz * 30 + rng.uniform(0, 4)
        ops.append(
            PlaceStructure(structure_id=f"b{seed}-{i}", lo=(x, y, z), hi=(x + 25, y + 25, z + 25))
        )
    return ops


def config(url: str, **changes: Any) -> Config:
    base: dict[str, Any] = {
        "store_url": url,
        "server_id": "bench-1",
        "pool_size": 16,
        "namespace": f"b{uuid.uuid4().hex[:8]}",
        "bus_url": f"memory://{uuid.uuid4().hex}",
        "lease_ttl": 120.0,
        "lease_renew_interval": 30.0,
        "submit_timeout": 30.0,
        # structures here are 25 m; a game states its largest (the default is a whole
        # region, 2 km, which makes every placement a boundary candidate)
        "max_structure_size": 100.0,
    }
    base.update(changes)
    return Config(**base)


# -- the store's own ceiling -----------------------------------------------------------------


async def ceiling(seconds: float, batch: int = 256) -> dict[str, Any]:
    async with database() as url:
        store = Store(url)
        await store.open()
        await store.close()
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        key = RegionKey(0, 0, 0).morton
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
            await c.execute("INSERT INTO ws_leases VALUES (%s, 'ceiling', 1, 1e12, 0)", (key,))
            await c.execute(
                "INSERT INTO ws_regions (region_key, version, payload_version, epoch,"
                " object_count, payload, checksum, write_id, stored_by, stored_at)"
                " VALUES (%s, 1, 1, 1, 0, '', '', 'w', 'ceiling', 0)",
                (key,),
            )
            n = 0
            lat: list[float] = []
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            while time.perf_counter() - t0 < seconds:
                t1 = time.perf_counter()
                ids = [f"c{n + i}" for i in range(batch)]
                ops = [str(uuid.uuid4()) for _ in range(batch)]
                xs = [float((n + i) % 2000) for i in range(batch)]
                sums = [
                    row_checksum(
                        key, ids[i], "structure", (xs[i], 0, 0, xs[i] + 1, 1, 1), "{}", ops[i]
                    )
                    for i in range(batch)
                ]
                async with c.transaction():
                    await c.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                    cur = await c.execute(
                        "SELECT epoch FROM ws_leases WHERE region_key = %s FOR UPDATE", (key,)
                    )
                    assert (await cur.fetchone()) == (1,)
                    await c.execute(
                        "INSERT INTO ws_outcomes (op_id, op_type, status, version, reason,"
                        " winner_op_id, server_id, region_key, at, digest) SELECT * FROM unnest("
                        "%s::text[], %s::text[], %s::text[], %s::int8[], %s::text[], %s::text[],"
                        " %s::text[], %s::int8[], %s::float8[], %s::text[])"
                        " ON CONFLICT DO NOTHING RETURNING op_id",
                        (
                            ops,
                            ["PlaceStructure"] * batch,
                            ["committed"] * batch,
                            [2] * batch,
                            [None] * batch,
                            [None] * batch,
                            ["ceiling"] * batch,
                            [key] * batch,
                            [0.0] * batch,
                            ["d" * 32] * batch,
                        ),
                    )
                    await c.execute(
                        "INSERT INTO ws_objects (region_key, object_id, kind, lox, loy, loz, hix,"
                        " hiy, hiz, data, op_id, checksum) SELECT * FROM unnest(%s::int8[],"
                        " %s::text[], %s::text[], %s::float8[], %s::float8[], %s::float8[],"
                        " %s::float8[], %s::float8[], %s::float8[], %s::text[], %s::text[],"
                        " %s::bytea[]) ON CONFLICT DO NOTHING RETURNING object_id",
                        (
                            [key] * batch,
                            ids,
                            ["structure"] * batch,
                            xs,
                            [0.0] * batch,
                            [0.0] * batch,
                            [x + 1 for x in xs],
                            [1.0] * batch,
                            [1.0] * batch,
                            ["{}"] * batch,
                            ops,
                            sums,
                        ),
                    )
                    await c.execute(
                        "UPDATE ws_regions SET version = version + 1 WHERE region_key = %s"
                        " RETURNING version",
                        (key,),
                    )
                n += batch
                lat.append((time.perf_counter() - t1) * 1000)
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
    return {
        "mode": "ceiling",
        "batch": batch,
        "placements": n,
        "elapsed_s": elapsed,
        "committed_per_s": n / elapsed,
        "cpu_us_per_op": cpu / max(1, n) * 1e6,
        "txn_ms": percentiles(lat, (50, 99)),
    }


# -- worldstate --------------------------------------------------------------------------------


PROFILE_SUBSYSTEMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bench clients", ("bench/strong_bench",)),
    ("sql driver (sqlalchemy, psycopg)", ("sqlalchemy/", "psycopg/")),
    ("R-tree (rtree)", ("rtree/",)),
    ("conflicts.resolve", ("conflicts/",)),
    ("deciding + rows (strong/_state, _regions)", ("worldstate/strong/_state", "strong/_regions")),
    ("statement building (store/)", ("worldstate/store/",)),
    ("pipelines, outcomes, forwarding", ("worldstate/strong/",)),
    (
        "submit: validation, routing, digest",
        (
            "worldstate/world.py",
            "worldstate/node/",
            "worldstate/_validation",
            "worldstate/operations",
            "worldstate/protocol/",
            "regions/",
        ),
    ),
    ("numpy", ("numpy/",)),
    ("asyncio event loop", ("asyncio/",)),
    ("uuid", ("uuid.py",)),
)
"""Where the spread run's CPU goes (``--profile``), innermost known frame first."""


async def _profiled(seconds: float, out: Path) -> dict[str, Any]:
    """py-spy on this very process for ``seconds`` (the timed spread phase)."""
    from bench.load import _profile

    why = await _profile.record(os.getpid(), seconds, out)
    if why is not None:
        return {"skipped": why}
    got = _profile.summarise(out, seconds, 50.0, PROFILE_SUBSYSTEMS)
    got["raw"] = str(out)
    return got


async def closed_loop(
    mode: str,
    seconds: float,
    clients: int,
    n_regions: int,
    per_op: bool = False,
    profile: Path | None = None,
) -> dict[str, Any]:
    async with database() as url:
        pool = 32 if per_op else 16  # the shared PostgreSQL allows ~100 connections
        async with worldstate.connect(config=config(url, pool_size=pool)) as w:
            regions = [RegionKey(i, 0, 0) for i in range(n_regions)]
            for k in regions:
                await w.acquire_region(k)
            n_warm = 200 if per_op else 2000
            every = make_ops(60_000 + n_warm, regions, seed=1)
            ops, warm = every[:60_000], every[60_000:]  # distinct cells
            lat: list[float] = []
            results: list[Result] = []
            errors: list[str] = []
            policy = w.policy

            async def one(op: PlaceStructure) -> Result:
                if not per_op:
                    return await w.submit(op)
                stamped, _, key = w.router.prepare(op)
                assert key is not None
                lease = w.lease_of(key)
                outs = await w.store.run(
                    lambda c: commit_region_batch(
                        c,
                        key,
                        [stamped],
                        epoch=lease.epoch,
                        writer=w.server_id,
                        policy=policy,
                        now=w.clock(),
                    ),
                    "per-op commit",
                )
                return to_result(outs[0])

            deadline = [float("inf")]
            cursor = iter(range(len(ops)))

            async def client(record: bool, source: list[PlaceStructure]) -> None:
                while True:
                    if time.perf_counter() > deadline[0]:
                        return
                    try:
                        i = next(cursor) if record else None
                    except StopIteration:
                        return
                    op = ops[i] if i is not None else (source.pop() if source else None)
                    if op is None:
                        return
                    t0 = time.perf_counter()
                    try:
                        r = await one(op)
                    except worldstate.WorldStateError as e:
                        errors.append(type(e).__name__)
                        continue
                    if record:
                        lat.append((time.perf_counter() - t0) * 1000)
                        results.append(r)

            deadline[0] = time.perf_counter() + 5.0  # warm-up: at most 5 s
            await asyncio.gather(*(client(False, warm) for _ in range(clients)))
            settle_gc()
            retries0 = w.store.stats.retries
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            deadline[0] = t0 + seconds
            spy = (
                asyncio.create_task(_profiled(max(1.0, seconds - 1), profile))  # owned: below
                if profile is not None
                else None
            )
            await asyncio.gather(*(client(True, []) for _ in range(clients)))
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            sampled = await spy if spy is not None else None
            committed = sum(isinstance(r, Committed) for r in results)
            return {
                "mode": mode,
                "clients": clients,
                "regions": n_regions,
                "committed": committed,
                "rejected": sum(isinstance(r, Rejected) for r in results),
                "errors": len(errors),
                "elapsed_s": elapsed,
                "committed_per_s": committed / elapsed,
                "ops_per_s": len(results) / elapsed,
                # this process's CPU per decided op (the Python cost; the database runs in
                # its own processes): the figure that does not depend on the machine's load
                "cpu_us_per_op": cpu / max(1, len(results)) * 1e6,
                "latency_ms": percentiles(lat, (50, 99)),
                "retries": w.store.stats.retries - retries0,
                "groups": w.strong.regions.group_commits,
                "state_loads": w.strong.regions.reloads,
                **({"profile": sampled} if sampled is not None else {}),
            }


async def open_loop(rate: float, seconds: float, n_regions: int) -> dict[str, Any]:
    """Arrivals at a fixed rate (not waiting for answers): latency at a given load."""
    async with database() as url, worldstate.connect(config=config(url)) as w:
        regions = [RegionKey(i, 0, 0) for i in range(n_regions)]
        for k in regions:
            await w.acquire_region(k)
        ops = make_ops(int(rate * seconds) + 1000, regions, seed=3)
        warm = ops[-500:]
        for i in range(0, len(warm), 50):  # warm, 50 at a time
            await asyncio.gather(*(w.submit(op) for op in warm[i : i + 50]))
        lat: list[float] = []
        errors: list[str] = []
        running: set[asyncio.Task[None]] = set()  # only the ones in flight (not 10,000 done)

        async def one(op: PlaceStructure) -> None:
            t0 = time.perf_counter()
            try:
                await w.submit(op)
            except worldstate.WorldStateError as e:
                errors.append(type(e).__name__)
                return
            lat.append((time.perf_counter() - t0) * 1000)

        settle_gc()
        t0 = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(ops[i]))
            running.add(task)
            task.add_done_callback(running.discard)
        while running:
            await asyncio.wait(set(running))
        elapsed = time.perf_counter() - t0
        return {
            "mode": "half_rate",
            "rate_per_s": rate,
            "submitted": n,
            "achieved_per_s": n / elapsed,
            "errors": len(errors),
            "latency_ms": percentiles(lat, (50, 99)),
        }


async def bank(n_transfers: int, in_flight: int) -> dict[str, Any]:
    async with database() as url:
        bus = f"memory://{uuid.uuid4().hex}"
        ns = f"b{uuid.uuid4().hex[:8]}"
        worlds = [
            await worldstate.connect(
                config=config(url, server_id=f"bank-{i}", bus_url=bus, namespace=ns)
            )
            for i in range(4)
        ]
        try:
            invs = [f"acct-{i}" for i in range(10)]
            start = 10_000
            for inv in invs:
                await worlds[0].submit(ChangeInventory(inventory_id=inv, item="gold", delta=start))
            rng = random.Random(1)
            plans = [
                TransferItems(
                    from_inventory=a, to_inventory=b, item="gold", quantity=rng.randint(1, 40)
                )
                for a, b in (rng.sample(invs, 2) for _ in range(n_transfers))
            ]
            lat: list[float] = []
            results: list[Result] = []
            errors: list[str] = []
            samples: list[int] = []
            stop = asyncio.Event()

            async def total(c: Any) -> int:
                rows = await c.exec_driver_sql(
                    "SELECT count FROM ws_inventories WHERE item = 'gold'"
                )
                return sum(int(r[0]) for r in rows)

            async def sampler() -> None:
                while not stop.is_set():
                    samples.append(await worlds[3].store.run(total, "total", read=True))
                    await asyncio.sleep(0.02)

            async def client(w: worldstate.World, mine: list[TransferItems]) -> None:
                for op in mine:
                    t0 = time.perf_counter()
                    try:
                        results.append(await w.submit(op))
                    except worldstate.WorldStateError as e:
                        errors.append(type(e).__name__)
                        continue
                    lat.append((time.perf_counter() - t0) * 1000)

            s = asyncio.create_task(sampler())
            t0 = time.perf_counter()
            await asyncio.gather(
                *(client(worlds[i % 4], plans[i::in_flight]) for i in range(in_flight))
            )
            elapsed = time.perf_counter() - t0
            stop.set()
            await s
            samples.append(await worlds[3].store.run(total, "total", read=True))
            committed = sum(isinstance(r, Committed) for r in results)
            return {
                "mode": "bank",
                "worlds": 4,
                "inventories": 10,
                "transfers": n_transfers,
                "in_flight": in_flight,
                "committed": committed,
                "rejected": sum(isinstance(r, Rejected) for r in results),
                "errors": len(errors),
                "error_kinds": sorted(set(errors)),
                "samples": len(samples),
                "totals_conserved": all(t == start * len(invs) for t in samples),
                "elapsed_s": elapsed,
                "committed_per_s": committed / elapsed,
                "latency_ms": percentiles(lat, (50, 99)),
            }
        finally:
            for w in worlds:
                await w.close()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def step(name: str) -> None:
        if out:
            last = list(out.values())[-1]
            print(f"    {last}", flush=True)
        print(f"... {name}", flush=True)

    step("ceiling")
    out["ceiling"] = await ceiling(args.seconds)
    step("spread")
    out["spread"] = await closed_loop(
        "spread",
        args.seconds,
        args.clients,
        8,
        profile=Path(tempfile.gettempdir()) / "strong-spread-profile.txt" if args.profile else None,
    )
    step("hot")
    out["hot"] = await closed_loop("hot", args.seconds, args.clients, 1)
    step("per-op")
    out["per_op"] = await closed_loop("per_op", args.seconds, args.clients, 8, per_op=True)
    rate = out["spread"]["ops_per_s"] / 2
    step(f"half rate ({rate:.0f}/s)")
    out["half_rate"] = await open_loop(rate, args.seconds, 8)
    step("bank")
    out["bank"] = await bank(args.transfers, 400)
    c, sp, hot = (out[k]["committed_per_s"] for k in ("ceiling", "spread", "hot"))
    out["ratios"] = {
        "spread_of_ceiling": sp / c,
        "hot_of_spread": hot / sp,
        "spread_of_per_op": sp / out["per_op"]["committed_per_s"],
    }
    out["targets"] = {
        "spread_of_ceiling": 0.5,
        "hot_of_spread": 0.5,
        "half_rate_p99_ms": 25.0,
        "bank_committed_per_s": 1000.0,
        "bank_errors": 0,
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0, help="time per mode")
    ap.add_argument("--clients", type=int, default=128)
    ap.add_argument("--transfers", type=int, default=8000)
    ap.add_argument(
        "--profile",
        action="store_true",
        help="sample the spread run with py-spy (pip install py-spy): CPU share by subsystem",
    )
    args = ap.parse_args()
    res = asyncio.run(main_async(args))
    path = write_result("strong", res)
    rows = []
    for k in ("ceiling", "spread", "hot", "per_op"):
        m = res[k]
        lat = m.get("latency_ms") or m.get("txn_ms")
        rows.append([k, f"{m['committed_per_s']:.0f}", f"{lat['p50']:.1f}", f"{lat['p99']:.1f}"])
    h = res["half_rate"]
    rows.append(
        [
            f"half rate {h['rate_per_s']:.0f}/s",
            f"{h['achieved_per_s']:.0f}",
            f"{h['latency_ms']['p50']:.1f}",
            f"{h['latency_ms']['p99']:.1f}",
        ]
    )
    b = res["bank"]
    rows.append(
        [
            "bank (transfers)",
            f"{b['committed_per_s']:.0f}",
            f"{b['latency_ms']['p50']:.1f}",
            f"{b['latency_ms']['p99']:.1f}",
        ]
    )
    print(format_table(["mode", "committed/s", "p50 ms", "p99 ms"], rows))
    prof = res["spread"].get("profile") or {}
    if prof.get("by_subsystem"):
        print(f"spread CPU ({prof['busy_fraction']:.0%} of the wall clock busy), by subsystem:")
        for name, share in prof["by_subsystem"].items():
            print(f"  {share:6.1%}  {name}")
    elif prof:
        print(f"no profile: {prof.get('skipped') or prof.get('error')}")
    r = res["ratios"]
    print(
        f"spread = {r['spread_of_ceiling']:.0%} of the ceiling (target 50 %); hot = "
        f"{r['hot_of_spread']:.0%} of spread (target 50 %); spread = "
        f"{r['spread_of_per_op']:.1f}x per-op; bank: {b['errors']} errors, totals conserved "
        f"at all {b['samples']} samples: {b['totals_conserved']}; wrote {path}"
    )


if __name__ == "__main__":
    main()

"""Causal path throughput and latency: three game servers, each its own process, on real
Mosquitto and PostgreSQL.

Each server runs ``--clients`` tasks that submit `EmitEvent`s (spread over 16 regions) as
fast as they are accepted for ``--seconds``; every event depends on everything its server
had delivered (so the three streams interleave causally all the time). Every server
consumes ``world.updates()`` and checks, delivery by delivery, that causal order holds:
each origin's events arrive in seq order with none skipped, and every dependency (vector
clock entry) was delivered before. Its own events are delivered locally at append time
(the same buffer), the others' arrive over the bus; "deliveries" below count both.

    python -m bench.causal_bench [--seconds 10] [--clients 600] [--light-clients 4]

Two runs: saturated (``--clients`` tasks per server: throughput, and the latency that
queueing behind full batches costs) and light load (``--light-clients`` tasks per server:
the latency of the path itself).

Besides throughput and emit->deliver latency, each run records what bounds it: per server
``process_cpu_share`` (CPU time over wall time: near 1.0 means the process is CPU-bound,
far below with a busy machine means it waited for a CPU), ``append_txn_share`` (wall time
inside append transactions) and ``server_cpu_ms_per_event`` (CPU the three server processes
spent per event, all of them together: submit, append, broadcast, receive at the two
others, and the bench's own checking) — with it, what a machine with N free cores could
carry is roughly N / that.

Needs PostgreSQL and Mosquitto (WORLDSTATE_TEST_PG / WORLDSTATE_TEST_MQTT as for the tests);
creates and drops its own database, uses its own topic namespace. Writes
bench/results/causal.json.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import time
import uuid
from collections.abc import Sequence
from multiprocessing.sharedctypes import SynchronizedArray
from multiprocessing.synchronize import Barrier
from typing import Any
from urllib.parse import urlsplit

import psycopg

import worldstate
from bench.common import format_table, percentiles, settle_gc, write_result
from regions import RegionKey
from worldstate import CausalDelivery, Config, EmitEvent
from worldstate._validation import MAX_STREAM_CAPACITY
from worldstate.store import Store

PG = os.environ.get("WORLDSTATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
MQTT = os.environ.get("WORLDSTATE_TEST_MQTT", "mqtt://127.0.0.1:1883")
SERVERS = 3
REGIONS = [RegionKey(ix, iy, 0) for ix in range(4) for iy in range(4)]
DRAIN_TIMEOUT = 180.0


def _position(key: RegionKey, k: int) -> tuple[float, float, float]:
    lo, _ = key.bounds
    return (lo[0] + 10 + k % 1000, lo[1] + 10, lo[2] + 10)


class Receiver:
    """What one server's update stream delivers, checked for causal order on the way."""

    def __init__(self, world: worldstate.World) -> None:
        self.world = world
        self.seen: dict[str, int] = {}
        self.latencies: list[float] = []
        self.violations = 0
        self.first: float | None = None
        self.last = 0.0

    async def consume(self) -> None:
        me = self.world.server_id
        buffer = self.world.causal.buffer
        async for update in self.world.updates(None, capacity=MAX_STREAM_CAPACITY):
            if not isinstance(update, CausalDelivery):
                continue
            now = time.time()
            o = update.origin
            ok = update.seq == self.seen.get(o, 0) + 1
            for k, n in update.vclock.items():
                if k == o:
                    ok &= n == update.seq
                elif k == me:
                    ok &= n <= buffer.delivered[me]
                else:
                    ok &= n <= self.seen.get(k, 0)
            self.violations += not ok
            self.seen[o] = update.seq
            self.latencies.append((now - update.fields["payload"]["t"]) * 1000)
            if self.first is None:
                self.first = now
            self.last = now


def _time_appends(w: worldstate.World) -> list[float]:
    """Wrap the world's store so that the wall time of append transactions adds up in the
    returned one-element list (how much of the run the server spent waiting on them)."""
    real = w.store.run
    total = [0.0]

    async def run(body: Any, what: str, *, read: bool = False) -> Any:
        t0 = time.perf_counter()
        try:
            return await real(body, what, read=read)
        finally:
            if what.startswith("append"):
                total[0] += time.perf_counter() - t0

    w.store.run = run  # type: ignore[method-assign]
    return total


def worker(
    index: int,
    cfg: dict[str, Any],
    seconds: float,
    clients: int,
    barrier: Barrier,
    accepted: SynchronizedArray[int],
    results: mp.Queue[dict[str, Any]],
) -> None:
    try:
        results.put(asyncio.run(_worker(index, cfg, seconds, clients, barrier, accepted)))
    except BaseException as e:
        barrier.abort()  # the others stop waiting for this one
        results.put({"server": f"bench-{index}", "error": f"{type(e).__name__}: {e}"})
        raise


async def _worker(
    index: int,
    cfg: dict[str, Any],
    seconds: float,
    clients: int,
    barrier: Barrier,
    accepted: SynchronizedArray[int],
) -> dict[str, Any]:
    me = f"bench-{index}"
    config = Config(**cfg, server_id=me)
    async with worldstate.connect(config=config) as w:
        txn_time = _time_appends(w)
        rec = Receiver(w)
        consumer = asyncio.create_task(rec.consume())
        settle_gc()  # what `worldstate serve` does once it is in the mesh
        await asyncio.to_thread(barrier.wait, 60)
        loop = asyncio.get_running_loop()
        start = time.time()
        cpu0 = time.process_time()
        stop_at = loop.time() + seconds
        submit_ms: list[float] = []
        failures = 0

        async def client(c: int) -> None:
            nonlocal failures
            k = 0
            while loop.time() < stop_at:
                key = REGIONS[(c + k) % len(REGIONS)]
                t = time.time()
                op = EmitEvent(position=_position(key, k), stream="bench", payload={"t": t})
                try:
                    await w.submit(op)
                except worldstate.WorldStateError:
                    failures += 1
                    continue
                submit_ms.append((time.time() - t) * 1000)
                k += 1

        await asyncio.gather(*(client(c) for c in range(clients)))
        emit_end = time.time()
        own = w.causal.buffer.delivered[me]
        accepted[index] = own
        await asyncio.to_thread(barrier.wait, 60)
        targets = {f"bench-{j}": int(accepted[j]) for j in range(SERVERS) if j != index}
        deadline = loop.time() + DRAIN_TIMEOUT
        while any(rec.seen.get(o, 0) < n for o, n in targets.items()):
            if loop.time() > deadline:
                break
            await asyncio.sleep(0.01)
        busy_until = max(rec.last, emit_end)
        cpu = time.process_time() - cpu0
        await asyncio.sleep(0.2)  # let any stray duplicate or late delivery show up
        if consumer.done():  # it ended early: say why rather than report nothing delivered
            consumer.result()
        consumer.cancel()
        stats = w.causal.stats()
        out = {
            "server": me,
            "start": start,
            "emit_end": emit_end,
            "first_delivery": rec.first,
            "last_delivery": rec.last,
            "own_events": own,
            "remote_delivered": sum(rec.seen.values()),
            "remote_expected": sum(targets.values()),
            "complete": all(rec.seen.get(o, 0) == n for o, n in targets.items()),
            "violations": rec.violations,
            "cpu_s": cpu,
            "append_txn_s": txn_time[0],
            "cpu_share": cpu / max(1e-9, busy_until - start),
            "latencies_ms": rec.latencies,
            "submit_ms": submit_ms,
            "submit_failures": failures,
            "causal": {k: v for k, v in stats.items() if k != "delivered_clock"},
            "delivered_clock": stats["delivered_clock"],
            "store_retries": w.store.stats.retries,
            "store_retry_reasons": dict(w.store.stats.by_reason),
            "bus": {
                "published": w.bus.stats.published,
                "received": w.bus.stats.received,
                "dropped_incoming": w.bus.stats.dropped_incoming,
            },
        }
        await asyncio.to_thread(barrier.wait, 60)
    return out


async def _create_schema(url: str) -> None:
    store = Store(url)
    try:
        await store.open()
    finally:
        await store.close()


def run(seconds: float, clients: int) -> dict[str, Any]:
    db = f"ws_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{db}"')
    store_url = f"postgresql+psycopg://{urlsplit(PG).netloc}/{db}"
    try:
        cfg: dict[str, Any] = {
            "store_url": store_url,
            "bus_url": MQTT,
            "cache_url": "memory://",
            "namespace": f"cb{uuid.uuid4().hex[:8]}",
            "lease_ttl": 120.0,
            "lease_renew_interval": 30.0,
        }
        # the schema first: Store.open races when several servers create it at once
        asyncio.run(_create_schema(store_url))
        ctx = mp.get_context("spawn")
        barrier = ctx.Barrier(SERVERS)
        accepted: SynchronizedArray[int] = ctx.Array("q", SERVERS)
        results: mp.Queue[dict[str, Any]] = ctx.Queue()
        procs = [
            ctx.Process(
                target=worker,
                args=(i, cfg, seconds, clients, barrier, accepted, results),
                name=f"causal-bench-{i}",
            )
            for i in range(SERVERS)
        ]
        for p in procs:
            p.start()
        got = [results.get(timeout=seconds + DRAIN_TIMEOUT + 120) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        errors = [r["error"] for r in got if "error" in r]
        if errors:
            raise RuntimeError(f"a bench server failed: {errors}")
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    return summarise(sorted(got, key=lambda r: r["server"]), seconds, clients)


def summarise(per: Sequence[dict[str, Any]], seconds: float, clients: int) -> dict[str, Any]:
    start = min(r["start"] for r in per)
    events = sum(r["own_events"] for r in per)
    end = max(max(r["last_delivery"], r["emit_end"]) for r in per)
    span = end - start
    all_lat = [x for r in per for x in r["latencies_ms"]]
    receivers = []
    for r in per:
        delivered = r["own_events"] + r["remote_delivered"]
        r_end = max(r["last_delivery"], r["emit_end"])
        receivers.append(
            {
                "server": r["server"],
                "own_events": r["own_events"],
                "remote_delivered": r["remote_delivered"],
                "delivered_total": delivered,
                "deliveries_per_s": delivered / (r_end - start),
                "remote_deliveries_per_s": r["remote_delivered"] / (r_end - start),
                "complete": r["complete"],
                "causal_violations": r["violations"],
                "latency_ms": percentiles(r["latencies_ms"], (50, 99))
                if r["latencies_ms"]
                else None,
                "submit_ms": percentiles(r["submit_ms"], (50, 99)) if r["submit_ms"] else None,
                "submit_failures": r["submit_failures"],
                "process_cpu_share": r["cpu_share"],
                "append_txn_share": r["append_txn_s"] / (r_end - start),
                "append_batches": r["causal"]["append_batches"],
                "mean_batch": r["causal"]["appended"] / max(1, r["causal"]["append_batches"]),
                "repaired": r["causal"]["repaired"],
                "duplicates": r["causal"]["duplicates"],
                "dropped": r["causal"]["dropped"],
                "store_retries": r["store_retries"],
                "store_retry_reasons": r["store_retry_reasons"],
                "bus": r["bus"],
            }
        )
    clocks = [r["delivered_clock"] for r in per]
    return {
        "servers": SERVERS,
        "processes": "one per server (multiprocessing, spawn)",
        "store": "PostgreSQL (SERIALIZABLE)",
        "bus": "Mosquitto (QoS 1)",
        "clients_per_server": clients,
        "emit_seconds": seconds,
        "events": events,
        "span_s": span,
        "events_per_s": events / span,
        "deliveries_total": sum(x["delivered_total"] for x in receivers),
        "deliveries_per_s_total": sum(x["delivered_total"] for x in receivers) / span,
        "latency_ms": percentiles(all_lat, (50, 90, 99)) if all_lat else None,
        "all_complete": all(x["complete"] for x in receivers),
        "server_cpu_ms_per_event": 1000 * sum(r["cpu_s"] for r in per) / max(1, events),
        "causal_violations": sum(x["causal_violations"] for x in receivers),
        "same_delivered_clock_everywhere": all(c == clocks[0] for c in clocks),
        "receivers": receivers,
    }


def _table(res: dict[str, Any]) -> str:
    rows = [
        [
            x["server"],
            x["own_events"],
            x["remote_delivered"],
            f"{x['deliveries_per_s']:.0f}",
            f"{x['latency_ms']['p50']:.1f}" if x["latency_ms"] else "-",
            f"{x['latency_ms']['p99']:.1f}" if x["latency_ms"] else "-",
            f"{x['mean_batch']:.0f}",
            x["repaired"],
            x["causal_violations"],
            "yes" if x["complete"] else "NO",
        ]
        for x in res["receivers"]
    ]
    headers = [
        "server",
        "emitted",
        "remote delivered",
        "deliveries/s",
        "p50 ms",
        "p99 ms",
        "batch",
        "repaired",
        "violations",
        "complete",
    ]
    lat = res["latency_ms"] or {"p50": float("nan"), "p99": float("nan")}
    return (
        format_table(headers, rows)
        + f"\n{res['events']} events in {res['span_s']:.1f} s = {res['events_per_s']:.0f} "
        f"events/s, each delivered at all {SERVERS} servers: "
        f"{res['deliveries_per_s_total']:.0f} deliveries/s; emit->deliver p50 "
        f"{lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms; causal violations "
        f"{res['causal_violations']}, complete {res['all_complete']}; server processes used "
        f"{res['server_cpu_ms_per_event']:.2f} ms of CPU per event (all three together)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=600, help="submitting tasks per server")
    ap.add_argument(
        "--light-clients",
        type=int,
        default=4,
        help="submitting tasks per server in the light-load run (latency); 0 skips it",
    )
    args = ap.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    saturated = run(args.seconds, args.clients)
    print(f"saturated ({args.clients} submitting tasks per server):\n{_table(saturated)}\n")
    res: dict[str, Any] = {"saturated": saturated}
    if args.light_clients:
        light = run(args.seconds, args.light_clients)
        print(f"light load ({args.light_clients} submitting tasks per server):\n{_table(light)}\n")
        res["light_load"] = light
    res["target_events_per_s"] = 10_000
    res["loadavg_before"] = load_before
    res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    path = write_result("causal", res)
    print(
        f"target 10,000 events/s: {saturated['events_per_s']:.0f} events/s "
        f"({saturated['deliveries_per_s_total']:.0f} deliveries/s over 3 receivers); load "
        f"average before {load_before}, after {res['loadavg_after']} on {os.cpu_count()} CPUs; "
        f"wrote {path}"
    )


if __name__ == "__main__":
    main()

"""Eventual path throughput and latency over real Mosquitto: batched vs one message per update.

Two servers, each its own process (so they do not share one event loop; the receiver is a
`multiprocessing` child started with "spawn"), one MQTT broker, SQLite stores (unused on the
hot path):

- **batched**: the sender moves ``--entities`` creatures (spread over ``--regions`` regions,
  with velocities) at ``--hz`` with `World.move_entities`, one call per game tick followed by
  `EventualPath.tick` (the same code the tick task runs, driven from the game loop so every
  game tick is one bus tick: no coalescing of two game ticks into one batch). The receiver
  is a second `World` watching the whole world (a world-wide `updates()` stream: a server
  hears only what it owns, neighbours and watches); we count rows applied (won LWW) per second there
  and the send→merge latency of every batch (sender's ``time.time()`` stamped in the batch,
  receiver's ``time.time()`` after the merge; same host, same clock).
- **per-message baseline**: the same entities, one MQTT QoS 0 message per entity update
  (id, position, velocity, HLC, send time: 64 bytes), published as fast as the sender can
  (flushing every 500 publishes so nothing is dropped client-side); the receiver decodes each
  and merges it last-writer-wins into a dict. We count updates applied per second there.
  The speedup target compares capacities: this mode's rate against the best batched run
  (``--headroom-hz``), since at the 20 Hz target the batched rate is the offered one.

    python -m bench.eventual_bench [--entities 10000] [--hz 20] [--seconds 10] [--regions 16]
    python -m bench.eventual_bench --signing-overhead   # batched, signed vs unsigned bus

Every world signs and verifies its bus messages (`worldstate.bus.SignedBus`, one envelope per
batch); ``--signing-overhead`` runs the batched mode once more on bare buses (the bus
injected into `World`, which is then not wrapped; ``EVENTUAL_BENCH_UNSIGNED=1`` does that
in both processes) and reports the CPU cost per applied update of both, as a ratio.

Writes bench/results/eventual.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import multiprocessing as mp
import os
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from bench.common import format_table, machine_info, percentiles, settle_gc, write_result
from consistency import lww_wins
from worldstate import Config, World, connect
from worldstate._validation import MAX_STREAM_CAPACITY
from worldstate.bus import Message, MqttBus, open_bus

MQTT = os.environ.get("WORLDSTATE_TEST_MQTT", "mqtt://127.0.0.1:1883")
ROW = struct.Struct("<qqd3d3d")  # id, hlc, sent_at, position, velocity: 64 bytes


def _config(server_id: str, namespace: str, store_dir: str) -> Config:
    return Config(
        # one store for both: servers of one world share it, and with it the bus keys
        store_url=f"sqlite+aiosqlite:///{store_dir}/world.db",
        bus_url=MQTT,
        server_id=server_id,
        namespace=namespace,
        snapshot_interval=3600.0,  # no region is held anyway: nothing to snapshot
    )


# -- receiver (child process) ---------------------------------------------------------------


def _open(cfg: Config) -> Any:
    """The world, on a bare (unsigned) bus when ``EVENTUAL_BENCH_UNSIGNED`` is set."""
    if not os.environ.get("EVENTUAL_BENCH_UNSIGNED"):
        return connect(config=cfg)
    bare = open_bus(cfg.bus_url, client_id=cfg.server_id, prefix=cfg.namespace)
    return _Opened(World(cfg, bus=bare))


class _Opened:
    def __init__(self, world: World) -> None:
        self.world = world

    async def __aenter__(self) -> World:
        return await self.world.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.world.close()


async def _measure(conn: Connection, applied: Callable[[], int], quiet: float) -> dict[str, Any]:
    """Between the sender's "start" and "stop": rows applied, and the time from "start" to
    the last row applied (so the rate is what arrived, not diluted by waiting for the
    stragglers; a receiver that falls behind shows as a longer time, a lower rate)."""
    if await asyncio.to_thread(conn.recv) != "start":
        raise RuntimeError("expected start")
    rows0 = last = applied()
    t0 = t_last = time.perf_counter()
    busy0 = time.process_time()
    stop = asyncio.ensure_future(asyncio.to_thread(conn.recv))
    while True:
        await asyncio.sleep(0.01)
        now, rows = time.perf_counter(), applied()
        if rows != last:
            last, t_last = rows, now
        if stop.done() and now - t_last > quiet:
            break
    return {
        "rows_applied": last - rows0,
        "elapsed": t_last - t0,
        "cpu_s": time.process_time() - busy0,
    }


async def _receive_batched(
    conn: Connection, namespace: str, store_dir: str, seconds: float
) -> None:
    async with _open(_config("bench-rx", namespace, store_dir)) as world:
        path = world.eventual
        # a server hears the eventual batches of what it owns, their neighbours and its
        # streams' interests (docs/fanout.md): this one watches the whole world, as a
        # server with a world-wide `updates()` stream does
        stream = world.updates(None, capacity=MAX_STREAM_CAPACITY)
        if not await world.wait_subscribed():
            raise RuntimeError("the receiver's subscriptions were not acknowledged")

        async def drain() -> None:
            async for _ in stream:
                pass

        drainer = asyncio.create_task(drain())
        settle_gc()  # what `worldstate serve` does once it is in the mesh
        conn.send("ready")
        # the warm-up runs while we wait for "start"; measure from then on
        path.lag_samples.clear()

        def applied() -> int:
            rows: int = path.stats()["rows_applied"]
            return rows

        got = await _measure(conn, applied, quiet=0.5)
        s = path.stats()
        got.update(
            {
                "lag_s": list(path.lag_samples),
                "messages_received": s["messages_received"],
                "dropped": s["dropped"],
                "bus": dataclasses.asdict(world.bus.stats),
            }
        )
        drainer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drainer
        conn.send(got)


async def _receive_per_message(conn: Connection, namespace: str, seconds: float) -> None:
    latest: dict[int, tuple[int, str]] = {}
    lags: list[float] = []
    counts = {"received": 0, "applied": 0}

    def handler(msg: Message) -> None:
        eid, hlc, sent_at, *_ = ROW.unpack(msg.payload)
        counts["received"] += 1
        cur = latest.get(eid)
        if cur is None or lww_wins(hlc, "bench-tx", cur[0], cur[1]):
            latest[eid] = (hlc, "bench-tx")
            counts["applied"] += 1
        lags.append(time.time() - sent_at)

    bus = MqttBus(MQTT, client_id="bench-rx-pm", prefix=namespace, max_queued_incoming=1_000_000)
    async with bus:
        sub = bus.subscribe("pm/+", handler)
        await sub.wait_active(timeout=10)
        conn.send("ready")
        got = await _measure(conn, lambda: counts["applied"], quiet=1.0)
        got.update(
            {
                "received_total": counts["received"],
                "lag_s": lags[:: max(1, len(lags) // 20_000)],
                "bus": dataclasses.asdict(bus.stats),
            }
        )
        conn.send(got)


def _receiver(conn: Connection, mode: str, namespace: str, store_dir: str, seconds: float) -> None:
    if os.environ.get("EVENTUAL_BENCH_PROFILE") and mode == "batched":
        import cProfile

        cProfile.runctx(
            "asyncio.run(_receive_batched(conn, namespace, store_dir, seconds))",
            globals(),
            {"conn": conn, "namespace": namespace, "store_dir": store_dir, "seconds": seconds},
            os.environ["EVENTUAL_BENCH_PROFILE"],
        )
        return
    if mode == "batched":
        asyncio.run(_receive_batched(conn, namespace, store_dir, seconds))
    else:
        asyncio.run(_receive_per_message(conn, namespace, seconds))


# -- sender (this process) ------------------------------------------------------------------


def _scene(n: int, regions: int, seed: int = 1) -> tuple[np.ndarray[Any, Any], ...]:
    """Entities spread over a square of ``regions`` 2 km regions, moving at 2-6 m/s."""
    side = max(1, round(regions**0.5))
    rng = np.random.default_rng(seed)
    pos = rng.uniform(50.0, side * 2000.0 - 50.0, (n, 3))
    pos[:, 2] = rng.uniform(50.0, 1950.0, n)
    vel = rng.normal(0.0, 3.0, (n, 3))
    vel[:, 2] = 0.0
    return np.arange(n, dtype=np.int64), pos, vel, np.array([side * 2000.0, side * 2000.0, 2000.0])


async def _send_batched(
    n: int,
    hz: float,
    seconds: float,
    regions: int,
    namespace: str,
    store_dir: str,
    conn: Connection,
) -> dict[str, Any]:
    ids, pos, vel, extent = _scene(n, regions)
    period = 1.0 / hz
    async with _open(_config("bench-tx", namespace, store_dir)) as world:
        path = world.eventual
        loop = asyncio.get_running_loop()

        async def run(duration: float) -> list[float]:
            nonlocal pos
            costs = []
            next_at = loop.time()
            end = next_at + duration
            while loop.time() < end:
                t0 = time.perf_counter()
                pos = pos + vel * period
                # bounce off the square's walls (vectorised)
                out = (pos < 1.0) | (pos >= extent - 1.0)
                vel[out] = -vel[out]
                np.clip(pos, 1.0, extent - 1.0 - 1e-6, out=pos)
                world.move_entities(ids, pos, vel)
                await path.tick()
                costs.append(time.perf_counter() - t0)
                next_at += period
                delay = next_at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            return costs

        settle_gc()  # what `worldstate serve` does once it is in the mesh
        await run(1.0)  # warm-up: the receiver learns every entity
        await world.bus.flush(5.0)
        await asyncio.sleep(0.5)
        conn.send("start")
        busy0 = time.process_time()
        t0 = time.perf_counter()
        costs = await run(seconds)
        elapsed = time.perf_counter() - t0
        await world.bus.flush(5.0)
        conn.send("stop")
        s = path.stats()
        return {
            "ticks": len(costs),
            "elapsed": elapsed,
            "tick_cost_ms": percentiles(np.array(costs) * 1000, (50, 99)),
            "cpu_s": time.process_time() - busy0,
            "messages_per_tick": s["batches_sent"] / max(1, s["ticks"]),
            "bytes_sent": s["bytes_sent"],
            "bus": dataclasses.asdict(world.bus.stats),
        }


async def _send_per_message(
    n: int, seconds: float, regions: int, namespace: str, conn: Connection
) -> dict[str, Any]:
    ids, pos, vel, _ = _scene(n, regions)
    bus = MqttBus(MQTT, client_id="bench-tx-pm", prefix=namespace)
    async with bus:
        conn.send("start")
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        sent = 0
        hlc = 1
        while loop.time() < end:
            i = sent % n
            hlc += 1
            p, v = pos[i], vel[i]
            payload = ROW.pack(int(ids[i]), hlc, time.time(), p[0], p[1], p[2], v[0], v[1], v[2])
            await bus.publish(f"pm/{i % 64}", payload, qos=0)
            sent += 1
            if sent % 500 == 0:
                await bus.flush(5.0)
        await bus.flush(5.0)
        conn.send("stop")
        return {"published": sent, "bus": dataclasses.asdict(bus.stats)}


def _run_mode(mode: str, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    with tempfile.TemporaryDirectory() as store_dir:
        proc = ctx.Process(
            target=_receiver, args=(child, mode, namespace, store_dir, args.seconds), daemon=True
        )
        proc.start()
        if not parent.poll(60) or parent.recv() != "ready":
            raise RuntimeError("the receiver did not start")
        if mode == "batched" and os.environ.get("EVENTUAL_BENCH_PROFILE_TX"):
            import cProfile

            prof = cProfile.Profile()
            sender = prof.runcall(
                asyncio.run,
                _send_batched(
                    args.entities, args.hz, args.seconds, args.regions, namespace, store_dir, parent
                ),
            )
            prof.dump_stats(os.environ["EVENTUAL_BENCH_PROFILE_TX"])
        elif mode == "batched":
            sender = asyncio.run(
                _send_batched(
                    args.entities, args.hz, args.seconds, args.regions, namespace, store_dir, parent
                )
            )
        else:
            sender = asyncio.run(
                _send_per_message(args.entities, args.seconds, args.regions, namespace, parent)
            )
        if not parent.poll(120):
            raise RuntimeError("the receiver did not report")
        receiver: dict[str, Any] = parent.recv()
        proc.join(30)
    return sender, receiver


def _batched(args: argparse.Namespace, hz: float) -> dict[str, Any]:
    run = argparse.Namespace(**{**vars(args), "hz": hz})
    tx, rx = _run_mode("batched", run)
    lag_ms = np.array(rx["lag_s"]) * 1000.0
    if os.environ.get("EVENTUAL_BENCH_DEBUG"):
        per_s = max(1, int(lag_ms.size / args.seconds))
        for i in range(0, lag_ms.size, per_s):
            w = lag_ms[i : i + per_s]
            print(f"second {i // per_s}: p50 {np.median(w):.1f} max {w.max():.1f} ms")
    offered = args.entities * tx["ticks"] / tx["elapsed"]
    return {
        "entities": args.entities,
        "hz": hz,
        "regions": args.regions,
        "seconds": args.seconds,
        "offered_updates_per_s": offered,
        "applied_updates_per_s": rx["rows_applied"] / rx["elapsed"],
        "rows_applied": rx["rows_applied"],
        "rows_offered": args.entities * tx["ticks"],
        "latency_ms": percentiles(lag_ms, (50, 99)) | {"max": float(lag_ms.max())},
        "batches_measured": int(lag_ms.size),
        "messages_per_tick": tx["messages_per_tick"],
        "sender_tick_cost_ms": tx["tick_cost_ms"],
        "sender_cpu_fraction": tx["cpu_s"] / tx["elapsed"],
        "receiver_cpu_fraction": rx["cpu_s"] / rx["elapsed"],
        "receiver_dropped": rx["dropped"],
        "sender_bus": tx["bus"],
        "receiver_bus": rx["bus"],
    }


def _cpu_per_row(r: dict[str, Any], seconds: float) -> float:
    cpu = (r["sender_cpu_fraction"] + r["receiver_cpu_fraction"]) * seconds
    return float(cpu) / max(1, int(r["rows_applied"]))


async def _cpu_per_tick(signed: bool, n: int, regions: int, ticks: int, store_dir: str) -> float:
    """CPU seconds per tick for one sender and one receiver in this process on the in-process
    bus: moving ``n`` entities, building, (signing,) publishing, (verifying,) decoding and
    merging every batch. Without the MQTT client's own I/O cost, which signing does not touch,
    so the signed/unsigned ratio here is an upper bound of what signing costs the path."""
    ns = f"cpu{uuid.uuid4().hex[:8]}"

    def cfg(sid: str) -> Config:
        return _config(sid, ns, store_dir).replace(bus_url=f"memory://{ns}")

    def opened(c: Config) -> Any:
        if signed:
            return connect(config=c)
        bare = open_bus(c.bus_url, client_id=c.server_id, prefix=c.namespace)
        return _Opened(World(c, bus=bare))

    ids, pos, vel, _ = _scene(n, regions)
    async with opened(cfg("cpu-tx")) as tx, opened(cfg("cpu-rx")) as rx:

        async def tick_all(count: int) -> None:
            nonlocal pos
            for _ in range(count):
                pos = pos + vel * 0.05
                tx.move_entities(ids, pos, vel)
                await tx.eventual.tick()
            sent = tx.eventual.stats()["batches_sent"]
            for _ in range(1_000_000):  # the receiver's handlers run on this loop
                if rx.eventual.stats()["messages_received"] >= sent:
                    break
                await asyncio.sleep(0)

        await tick_all(10)  # warm-up: the receiver learns every entity
        t0 = time.process_time()
        await tick_all(ticks)
        spent = (time.process_time() - t0) / ticks
        s = tx.eventual.stats()
        _BATCHES.append(
            (s["bytes_sent"] / max(1, s["batches_sent"]), s["batches_sent"] / s["ticks"])
        )
        return spent


_BATCHES: list[tuple[float, float]] = []
"""(mean batch bytes, batches per tick) of each in-process run."""


def _seal_and_verify_s(size: int, rounds: int = 2000) -> float:
    """CPU seconds to seal one ``size``-byte body and to open and verify it (what signing
    adds per message: sender and receiver), measured directly."""
    from worldstate.protocol._envelope import Signer, check_mac, derive_server_key, parse, seal

    signer = Signer(derive_server_key(os.urandom(32), "bench-tx"))
    body = os.urandom(size)
    t0 = time.process_time()
    for i in range(rounds):
        env = seal(
            signer,
            "eventual/1",
            body,
            key_id=1,
            sender="bench-tx",
            incarnation=1,
            seq=i,
            conn=1,
            sent_at=0.0,
        )
        check_mac(signer, "eventual/1", parse(env))
    return (time.process_time() - t0) / rounds


def _signing_overhead(args: argparse.Namespace) -> int:
    """The batched mode over MQTT twice each, signed and unsigned, alternating (the machine
    is shared: alternation spreads its noise over both); then in-process CPU per tick, and
    the signing cost measured directly."""
    runs: dict[str, list[dict[str, Any]]] = {"signed": [], "unsigned": []}
    for i in range(2):
        for mode in ("signed", "unsigned") if i % 2 == 0 else ("unsigned", "signed"):
            if mode == "unsigned":
                os.environ["EVENTUAL_BENCH_UNSIGNED"] = "1"
            else:
                os.environ.pop("EVENTUAL_BENCH_UNSIGNED", None)
            runs[mode].append(_batched(args, args.hz))
    os.environ.pop("EVENTUAL_BENCH_UNSIGNED", None)

    def summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "cpu_us_per_update": float(np.median([_cpu_per_row(r, r["seconds"]) for r in rs]))
            * 1e6,
            "sender_tick_p50_ms": float(np.median([r["sender_tick_cost_ms"]["p50"] for r in rs])),
            "applied_updates_per_s": float(np.median([r["applied_updates_per_s"] for r in rs])),
            "latency_p50_ms": float(np.median([r["latency_ms"]["p50"] for r in rs])),
            "latency_p99_ms": float(np.median([r["latency_ms"]["p99"] for r in rs])),
            "runs": rs,
        }

    cpu: dict[str, list[float]] = {"signed": [], "unsigned": []}
    with tempfile.TemporaryDirectory() as store_dir:
        for i in range(6):  # alternate which goes first: no order bias
            for mode in ("signed", "unsigned") if i % 2 else ("unsigned", "signed"):
                cpu[mode].append(
                    asyncio.run(
                        _cpu_per_tick(mode == "signed", args.entities, args.regions, 100, store_dir)
                    )
                )
    in_process = {m: min(v) * 1000 for m, v in cpu.items()}  # min: least disturbed by others
    in_process_ratio = in_process["signed"] / in_process["unsigned"]
    size = float(np.median([b for b, _ in _BATCHES]))
    per_tick = float(np.median([n for _, n in _BATCHES]))
    sign_ms = _seal_and_verify_s(int(size)) * 1000
    direct = {
        "batch_bytes": size,
        "batches_per_tick": per_tick,
        "seal_and_verify_ms_per_batch": sign_ms,
        "signing_ms_per_tick": sign_ms * per_tick,
        "share_of_unsigned_tick": sign_ms * per_tick / in_process["unsigned"],
    }
    signed, unsigned = summary(runs["signed"]), summary(runs["unsigned"])
    ratio = signed["cpu_us_per_update"] / unsigned["cpu_us_per_update"]
    tick_ratio = signed["sender_tick_p50_ms"] / unsigned["sender_tick_p50_ms"]
    results = {
        "signed": signed,
        "unsigned": unsigned,
        "cpu_per_update_ratio": ratio,
        "sender_tick_ratio": tick_ratio,
        "in_process_cpu_ms_per_tick": in_process,
        "in_process_cpu_ratio": in_process_ratio,
        "signing_cost_direct": direct,
        "in_process_cpu_samples_ms": {m: [x * 1000 for x in v] for m, v in cpu.items()},
        "targets_met": {
            "signing costs <= 10% of a tick's CPU (measured directly)": direct[
                "share_of_unsigned_tick"
            ]
            <= 0.10,
            "signing costs <= 10% CPU per tick (in-process, both pairs)": in_process_ratio <= 1.10,
            "signing costs <= 10% CPU per update (two processes over MQTT)": ratio <= 1.10,
        },
    }
    path = write_result(
        "eventual_signing", results, machine=machine_info(("numpy", "aiomqtt", "paho-mqtt"))
    )
    rows = [
        (
            m,
            s["applied_updates_per_s"],
            s["cpu_us_per_update"],
            s["sender_tick_p50_ms"],
            s["latency_p50_ms"],
            s["latency_p99_ms"],
        )
        for m, s in (("signed", signed), ("unsigned", unsigned))
    ]
    print(
        format_table(("bus", "applied/s", "CPU us/update", "tick p50 ms", "p50 ms", "p99 ms"), rows)
    )
    print(f"signed/unsigned CPU per update: {ratio:.3f}; sender tick p50: {tick_ratio:.3f}")
    print(
        f"in-process CPU per tick ({args.entities} entities, {args.regions} regions): signed "
        f"{in_process['signed']:.2f} ms, unsigned {in_process['unsigned']:.2f} ms, "
        f"ratio {in_process_ratio:.3f}"
    )
    print(
        f"signing measured directly: {sign_ms * 1000:.1f} us to seal + verify one "
        f"{size / 1024:.1f} KiB batch, x {per_tick:.1f} batches per tick = "
        f"{sign_ms * per_tick:.2f} ms per tick, {direct['share_of_unsigned_tick']:.1%} of an "
        "unsigned tick's CPU"
    )
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entities", type=int, default=10_000)
    ap.add_argument("--hz", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--regions", type=int, default=16)
    ap.add_argument(
        "--headroom-hz",
        type=float,
        default=40.0,
        help="also run the batched mode at this tick rate to find its ceiling (0: skip)",
    )
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument(
        "--signing-overhead",
        action="store_true",
        help="only: the batched mode with and without message signing, and the cost ratio",
    )
    args = ap.parse_args(argv)
    if args.signing_overhead:
        return _signing_overhead(args)

    batched = _batched(args, args.hz)
    results: dict[str, Any] = {"batched": batched, "mqtt": MQTT, "processes": 2}
    table = [
        (
            f"batched, {args.hz:g} Hz",
            batched["offered_updates_per_s"],
            batched["applied_updates_per_s"],
            batched["latency_ms"]["p50"],
            batched["latency_ms"]["p99"],
        )
    ]
    if args.headroom_hz:
        head = _batched(args, args.headroom_hz)
        results["batched_headroom"] = head
        table.append(
            (
                f"batched, {args.headroom_hz:g} Hz",
                head["offered_updates_per_s"],
                head["applied_updates_per_s"],
                head["latency_ms"]["p50"],
                head["latency_ms"]["p99"],
            )
        )
    best = max(r[2] for r in table)
    if not args.skip_baseline:
        ptx, prx = _run_mode("per-message", args)
        plag = np.array(prx["lag_s"]) * 1000.0
        rate = prx["rows_applied"] / prx["elapsed"] if prx["elapsed"] > 0 else 0.0
        lat = percentiles(plag, (50, 99)) if plag.size else {"p50": math.nan, "p99": math.nan}
        results["per_message"] = {
            "published": ptx["published"],
            "publish_rate_per_s": ptx["published"] / args.seconds,
            "applied_updates_per_s": rate,
            "rows_applied": prx["rows_applied"],
            "received_total": prx["received_total"],
            "latency_ms": lat,
            "receiver_cpu_fraction": prx["cpu_s"] / max(prx["elapsed"], 1e-9),
            "sender_bus": ptx["bus"],
            "receiver_bus": prx["bus"],
        }
        results["speedup_at_target"] = batched["applied_updates_per_s"] / rate if rate else None
        results["speedup_best"] = best / rate if rate else None
        table.append(
            (
                "one message per update",
                results["per_message"]["publish_rate_per_s"],
                rate,
                lat["p50"],
                lat["p99"],
            )
        )
    targets = {
        "keeps up at the target rate (applied >= 99% of offered)": batched["rows_applied"]
        >= 0.99 * batched["rows_offered"],
        "applied_updates_per_s >= 200000 (best run)": best >= 200_000,
        "p99_ms <= 100 at the target rate": batched["latency_ms"]["p99"] <= 100,
    }
    if results.get("speedup_best") is not None:
        # capacity against capacity: the per-message mode publishes as fast as it can, the
        # batched one at the tick rate (at 20 Hz its rate is the offered 200 k/s, so the
        # ratio there is bounded by the offer, not by what batching can carry)
        targets["speedup >= 20x (best batched run)"] = results["speedup_best"] >= 20
    results["targets_met"] = targets
    path = write_result(
        "eventual", results, machine=machine_info(("numpy", "aiomqtt", "paho-mqtt"))
    )
    print(
        format_table(("mode", "offered updates/s", "applied updates/s", "p50 ms", "p99 ms"), table)
    )
    if results.get("speedup_at_target") is not None:
        print(
            f"speedup over one message per update: {results['speedup_best']:.1f}x best run, "
            f"{results['speedup_at_target']:.1f}x at the target rate (bounded by its offer)"
        )
    for name, ok in targets.items():
        print(f"{'met' if ok else 'NOT met'}: {name}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One game-server process of the mesh tests and benchmark: a `World` that places
structures (strong ops) in the regions it holds and records every acknowledged one.

    python -m tests.integration.mesh_server --server-id gs-1 --store URL --bus URL \\
        --namespace NS --acks FILE --status FILE [--rate 20]

Settings beyond those come from ``WORLDSTATE_*`` variables (timeouts). Every `Committed`
op is appended to ``--acks`` (``structure_id morton epoch``) and flushed *after* the ack,
so a line in that file is a write the store promised to keep. ``--status`` is rewritten
(atomically) every 0.1 s with the server's standing and leases, for the test to watch.
SIGTERM/SIGINT close the world cleanly; SIGKILL is the crash under test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from pathlib import Path

import worldstate
from regions import RegionKey
from worldstate import Committed, Config, PlaceStructure, WorldStateError

COLUMNS = 40
CELL = 10.0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mesh_server")
    p.add_argument("--server-id", required=True)
    p.add_argument("--index", type=int, default=0, help="spreads servers' slots apart")
    p.add_argument("--store", required=True)
    p.add_argument("--bus", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--acks", type=Path, required=True)
    p.add_argument("--status", type=Path, required=True)
    p.add_argument("--rate", type=float, default=20.0, help="strong ops per second")
    return p.parse_args(argv)


def structure(args: argparse.Namespace, key: RegionKey, n: int) -> PlaceStructure:
    """The n-th structure of this server in ``key``: a 4 m box in a slot of its own."""
    lo, _ = key.bounds
    x = lo[0] + 10 + args.index * (COLUMNS * CELL) + (n % COLUMNS) * CELL
    y = lo[1] + 10 + (n // COLUMNS % 190) * CELL
    return PlaceStructure(
        structure_id=f"{args.server_id}-{key.morton}-{n}",
        lo=(x, y, 10.0 + n // (COLUMNS * 190)),
        hi=(x + 4, y + 4, 14.0 + n // (COLUMNS * 190)),
    )


def write_status(path: Path, world: worldstate.World, sent: int, acked: int) -> None:
    doc = {
        "server_id": world.server_id,
        "pid": os.getpid(),
        "t": time.time(),
        "authoritative": world.authoritative,
        "leases": {str(k.morton): le.epoch for k, le in world.leases().items()},
        "partition": world.partition_status(),
        "sent": sent,
        "acked": acked,
        "bus_connected": world.bus.connected,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


async def serve(args: argparse.Namespace) -> None:
    config = Config.from_env(
        store_url=args.store,
        bus_url=args.bus,
        namespace=args.namespace,
        server_id=args.server_id,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    counters: dict[int, int] = {}
    sent = acked = 0
    async with worldstate.connect(config=config) as world:
        with args.acks.open("a", encoding="utf-8") as acks:

            async def report() -> None:
                while True:
                    write_status(args.status, world, sent, acked)
                    await asyncio.sleep(0.1)

            reporter = asyncio.create_task(report())
            period = 1.0 / args.rate
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), period)
                held = sorted(world.leases().items(), key=lambda kv: kv[0].morton)
                if not held or not world.authoritative:
                    continue
                key, lease = held[sent % len(held)]
                n = counters.get(key.morton, 0)
                op = structure(args, key, n)
                sent += 1
                try:
                    result = await world.submit(op)
                except WorldStateError:
                    continue  # not acknowledged: not promised; the next op takes a new slot
                finally:
                    counters[key.morton] = n + 1
                if isinstance(result, Committed):
                    acked += 1
                    acks.write(f"{op.structure_id} {key.morton} {lease.epoch}\n")
                    acks.flush()
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            write_status(args.status, world, sent, acked)


def main() -> None:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(parse()))


if __name__ == "__main__":
    main()

"""``worldstate coordinator``: run a mesh coordinator until SIGINT/SIGTERM.

Run as many as you like (one per host, say): one acts, the others stand by and take over
when its lease expires. Settings come from ``WORLDSTATE_*`` variables (see
`worldstate.Config`); the options override the store, bus and namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from typing import Any

from worldstate.config import Config
from worldstate.mesh._coordinator import MeshCoordinator


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "coordinator",
        help="run a mesh coordinator (region assignment, hand-off, rebalancing, membership) "
        "until interrupted",
    )
    p.add_argument("--store", help="store URL (default: WORLDSTATE_STORE_URL or the Config's)")
    p.add_argument("--bus", help="bus URL, e.g. mqtt://broker:1883 (default: WORLDSTATE_BUS_URL)")
    p.add_argument(
        "--namespace", help="topic namespace of the mesh (default: WORLDSTATE_NAMESPACE)"
    )
    p.add_argument("--id", dest="coordinator_id", help="this coordinator's id (default: random)")
    p.add_argument(
        "--rebalance-interval",
        type=float,
        default=60.0,
        help="seconds between automatic rebalances; 0 turns them off (default: 60)",
    )
    p.add_argument(
        "--status-interval",
        type=float,
        default=0.0,
        help="print the membership every N seconds (default: only on changes)",
    )
    p.add_argument("--json", action="store_true", help="print status lines as JSON")


def _config(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {}
    if args.store:
        overrides["store_url"] = args.store
    if args.bus:
        overrides["bus_url"] = args.bus
    if args.namespace:
        overrides["namespace"] = args.namespace
    return Config.from_env(**overrides)


def _line(coord: MeshCoordinator, as_json: bool) -> str:
    m = coord.membership()
    if as_json:
        return json.dumps(
            {
                "at": time.time(),
                "coordinator": coord.coordinator_id,
                "acting": m["acting"],
                "generation": m["generation"],
                "members": m["members"],
                "live": m["live"],
                "regions": {s: d["regions"] for s, d in m["servers"].items()},
            }
        )
    role = "acting" if m["acting"] else f"standing by (acting: {m['coordinator'] or 'none'})"
    regions = ", ".join(f"{s}={d['regions']}" for s, d in m["servers"].items() if d["live"])
    return (
        f"{coord.coordinator_id}: {role}; membership gen {m['generation']} "
        f"{m['members']}; live {m['live']}; regions {regions or '-'}"
    )


async def run(args: argparse.Namespace) -> int:
    if args.rebalance_interval < 0 or args.status_interval < 0:
        raise SystemExit("worldstate coordinator: intervals must be >= 0")
    config = _config(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    coord = MeshCoordinator(
        config,
        coordinator_id=args.coordinator_id,
        rebalance_interval=args.rebalance_interval or None,
    )
    async with coord:
        print(
            f"worldstate coordinator {coord.coordinator_id} on {coord.store.describe()} "
            f"(namespace {config.namespace!r}); Ctrl-C to stop",
            flush=True,
        )
        last = ""
        last_at = 0.0
        seen_events = 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await stop.wait()
            new = min(coord.event_count - seen_events, len(coord.events))
            seen_events = coord.event_count
            for at, text in list(coord.events)[len(coord.events) - new :] if new else []:
                if not args.json:
                    print(f"{time.strftime('%H:%M:%S', time.localtime(at))} {text}", flush=True)
            line = _line(coord, args.json)
            now = time.monotonic()
            due = args.status_interval and now - last_at >= args.status_interval
            if line != last or due:
                print(line, flush=True)
                last, last_at = line, now
    print(f"worldstate coordinator {coord.coordinator_id}: stopped", file=sys.stderr)
    return 0

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
import os
import signal
import sys
import time
from typing import Any

from regions import RegionKey
from worldstate.cli.serve_cmd import add_runtime_options
from worldstate.config import Config
from worldstate.errors import WorldStateError
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
    p.add_argument(
        "--id",
        dest="coordinator_id",
        default=os.environ.get("WORLDSTATE_COORDINATOR_ID"),
        help="this coordinator's id (default: $WORLDSTATE_COORDINATOR_ID, else random)",
    )
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
    p.add_argument(
        "--regions",
        action="append",
        default=[],
        metavar="IX,IY,IZ[:IX,IY,IZ]",
        help="register a region, or every region of an inclusive index box, so it is placed "
        "on a server (repeatable; regions already stored or leased are known anyway)",
    )
    add_runtime_options(p, default_port=9465)


def parse_regions(specs: list[str]) -> list[RegionKey]:
    """``"0,0,0"`` or ``"0,0,0:3,3,0"`` (inclusive box) → region keys (at most 100,000)."""
    keys: list[RegionKey] = []
    for spec in specs:
        parts = spec.split(":")
        try:
            if len(parts) > 2:
                raise ValueError("at most one ':'")
            corners = [RegionKey.parse(p) for p in parts]
        except ValueError as e:
            raise SystemExit(f"worldstate coordinator: --regions {spec!r}: {e}") from None
        lo, hi = corners[0], corners[-1]
        spans = [
            range(min(a, b), max(a, b) + 1)
            for a, b in ((lo.ix, hi.ix), (lo.iy, hi.iy), (lo.iz, hi.iz))
        ]
        if len(spans[0]) * len(spans[1]) * len(spans[2]) + len(keys) > 100_000:
            raise SystemExit("worldstate coordinator: --regions: more than 100,000 regions")
        keys.extend(RegionKey(x, y, z) for x in spans[0] for y in spans[1] for z in spans[2])
    return keys


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
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from worldstate.metrics import coordinator_registry
    from worldstate.serve import HttpEndpoint, Response, configure_logging

    if args.rebalance_interval < 0 or args.status_interval < 0:
        raise SystemExit("worldstate coordinator: intervals must be >= 0")
    regions = parse_regions(args.regions)
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
    configure_logging(args.log_format, server_id=coord.coordinator_id)
    registry = coordinator_registry(coord)

    async def metrics() -> Response:
        return Response(200, generate_latest(registry), CONTENT_TYPE_LATEST)

    def loops_ok() -> bool:
        status = coord.tasks.status()  # the coordinator's supervisor
        return bool(status["healthy"] and status["loops"])

    async def healthz() -> Response:
        ok = loops_ok()
        body = json.dumps({"ok": ok, "acting": coord.acting}).encode() + b"\n"
        return Response(200 if ok else 503, body, "application/json")

    async def readyz() -> Response:
        # a standby is ready too (it serves by waiting): loops run and the store answers
        store = "ok"
        try:
            async with asyncio.timeout(1.0):
                await coord.store.ping()
        except (TimeoutError, WorldStateError, OSError) as e:
            store = f"unreachable: {str(e)[:200] or type(e).__name__}"
        ok = loops_ok() and store == "ok"
        doc = {"ok": ok, "acting": coord.acting, "store": store}
        return Response(200 if ok else 503, json.dumps(doc).encode() + b"\n", "application/json")

    http = HttpEndpoint(
        {"/metrics": metrics, "/healthz": healthz, "/readyz": readyz},
        host=args.metrics_host,
        port=args.metrics_port,
    )
    port = await http.start()
    try:
        async with coord:
            if regions:
                await coord.register_regions(regions)
            print(
                f"worldstate coordinator {coord.coordinator_id} on {coord.store.describe()} "
                f"(namespace {config.namespace!r}); /metrics on port {port}; Ctrl-C to stop",
                flush=True,
            )
            await _status_loop(coord, args, stop)
    finally:
        await http.close()
    print(f"worldstate coordinator {coord.coordinator_id}: stopped", file=sys.stderr)
    return 0


async def _status_loop(
    coord: MeshCoordinator, args: argparse.Namespace, stop: asyncio.Event
) -> None:
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

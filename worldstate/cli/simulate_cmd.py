"""``worldstate simulate``: a few in-process servers populate and query a world."""

from __future__ import annotations

import argparse
from typing import Any

from worldstate.cli.tables import emit_json
from worldstate.demo._simulation import SimulationSettings, run_simulation


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="run a demo mesh of in-process servers on the embedded store and print a summary",
    )
    d = SimulationSettings()
    p.add_argument("--servers", type=int, default=d.servers)
    p.add_argument("--regions", type=int, default=d.regions_per_server, help="regions per server")
    p.add_argument("--objects", type=int, default=d.objects_per_region, help="objects per region")
    p.add_argument("--queries", type=int, default=d.queries)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--store", help="store URL (default: a temporary SQLite file)")
    p.add_argument("--cache", default=d.cache_url, help="cache URL (default: memory://)")
    p.add_argument(
        "--partition",
        action="store_true",
        help="also split the mesh's bus into a majority and a minority and heal it: "
        "demotion, reassignment (epoch + 1) and rebalancing, with a mesh coordinator",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=d.op_rate,
        help="strong ops and trades per second, spread over time as players act "
        f"(default {d.op_rate:g})",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


async def run(args: argparse.Namespace) -> int:
    for name in ("servers", "regions", "objects", "queries"):
        if getattr(args, name) < 1:
            raise SystemExit(f"worldstate simulate: --{name} must be >= 1")
    if not (args.rate > 0 and args.rate < float("inf")):
        raise SystemExit("worldstate simulate: --rate must be a number of ops per second > 0")
    settings = SimulationSettings(
        servers=args.servers,
        regions_per_server=args.regions,
        objects_per_region=args.objects,
        queries=args.queries,
        seed=args.seed,
        store_url=args.store,
        cache_url=args.cache,
        partition=args.partition,
        op_rate=args.rate,
    )
    report = await run_simulation(settings)
    if args.json:
        emit_json(report.as_dict())
    else:
        print("worldstate simulate — summary")
        for line in report.lines():
            print("  " + line)
    return 0

"""``worldstate inspect``: read-only views of a store for operators."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any

from regions import RegionKey
from worldstate.cache import open_cache
from worldstate.cli.tables import emit_json, table, when
from worldstate.errors import ValidationError
from worldstate.store import Store


def add_parser(sub: Any) -> None:
    p = sub.add_parser("inspect", help="read-only views of a world's store (for operators)")
    p.add_argument("--store", help="store URL (default: $WORLDSTATE_STORE_URL)")
    v = p.add_subparsers(dest="view", required=True)
    r = v.add_parser("regions", help="stored regions: version, objects, size, owner, epoch")
    r.add_argument("--limit", type=int, default=1000)
    r.add_argument("--json", action="store_true")
    one = v.add_parser("region", help="one region: lease, objects, history (ix,iy,iz or Morton)")
    one.add_argument("key")
    one.add_argument("--objects", type=int, default=50, help="objects to list (default 50)")
    one.add_argument("--json", action="store_true")
    s = v.add_parser("servers", help="servers holding leases, with region counts")
    s.add_argument("--json", action="store_true")
    inc = v.add_parser(
        "incidents", help="corruption repaired by the store, and checkpoint restores"
    )
    inc.add_argument("--limit", type=int, default=100)
    inc.add_argument("--json", action="store_true")
    cf = v.add_parser("conflicts", help="recent conflict decisions of the strong pipeline")
    cf.add_argument("--limit", type=int, default=100)
    cf.add_argument("--json", action="store_true")
    c = v.add_parser("cache", help="cached region entries (Redis or nothing for memory://)")
    c.add_argument("--cache", help="cache URL (default: $WORLDSTATE_CACHE_URL)")
    c.add_argument("--namespace", help="key namespace (default: $WORLDSTATE_NAMESPACE or ws)")
    c.add_argument("--limit", type=int, default=100)
    c.add_argument("--json", action="store_true")
    ev = v.add_parser("events", help="the durable causal log, in causal order")
    ev.add_argument("--stream", help="only EmitEvents of this stream")
    ev.add_argument("--region", help="only this region (ix,iy,iz, a Morton code, or 'world')")
    ev.add_argument("--since", help="after a cursor token, or at/after a time (Unix seconds)")
    ev.add_argument("--until", help="up to a cursor token, or up to a time (Unix seconds)")
    ev.add_argument("--limit", type=int, default=1000, help="most events to show (default 1000)")
    ev.add_argument("--json", action="store_true")
    m = v.add_parser("map", help="a top-down picture of regions by owner (PNG)")
    m.add_argument("--out", required=True, help="PNG file to write")
    m.add_argument("--z", type=int, default=None, help="only this iz layer (default: all)")


async def run(args: argparse.Namespace, url: str) -> int:
    store = Store(url, read_only=True)
    try:
        await store.open()
        handler = VIEWS[args.view]
        result: int = await handler(args, store)
        return result
    finally:
        await store.close()


async def _regions(args: argparse.Namespace, store: Store) -> int:
    rows = await store.regions(limit=args.limit)
    if args.json:
        emit_json(
            [
                {
                    "key": [r.key.ix, r.key.iy, r.key.iz],
                    "morton": r.key.morton,
                    "version": r.version,
                    "objects": r.object_count,
                    "bytes": r.size,
                    "owner": r.owner,
                    "epoch": r.epoch,
                    "stored_at": r.stored_at,
                    "stored_by": r.stored_by,
                }
                for r in rows
            ]
        )
        return 0
    table(
        ["region", "morton", "version", "objects", "bytes", "owner", "epoch", "stored"],
        [
            (
                r.key,
                r.key.morton,
                r.version,
                r.object_count,
                r.size,
                r.owner or "-",
                r.epoch,
                when(r.stored_at),
            )
            for r in rows
        ],
    )
    print(f"{len(rows)} region(s)")
    return 0


async def _region(args: argparse.Namespace, store: Store) -> int:
    try:
        key = RegionKey.parse(args.key)
    except ValueError as e:
        raise ValidationError(str(e)) from None
    result = await store.load_region(key, repair=False)
    snap = result.snapshot
    lease = await store.lease(key)
    hist = await store.history(key)
    kinds = Counter(o.kind for o in snap.objects)
    if args.json:
        emit_json(
            {
                "key": [key.ix, key.iy, key.iz],
                "morton": key.morton,
                "bounds": key.bounds,
                "version": snap.version,
                "recovered_from": result.recovered_from,
                "lease": None
                if lease is None
                else {
                    "owner": lease.owner,
                    "epoch": lease.epoch,
                    "expires_at": lease.expires_at,
                    "live": lease.live(time.time()),
                },
                "kinds": dict(kinds),
                "objects": [
                    {"id": o.id, "kind": o.kind, "lo": o.lo, "hi": o.hi, "data": dict(o.data)}
                    for o in snap.objects[: args.objects]
                ],
                "history": [_hist(h) for h in hist],
            }
        )
        return 0
    lo, hi = key.bounds
    print(f"region {key}  morton {key.morton}  bounds {lo}..{hi}")
    print(f"version {snap.version}  objects {len(snap.objects)}  stored {when(snap.stored_at)}")
    if result.recovered_from is not None:
        print(
            f"WARNING: the current row fails its checksum; shown: history version "
            f"{result.recovered_from} (a writable connection repairs it on the next load)"
        )
    if lease is None:
        print("lease: never leased")
    else:
        live = "live" if lease.live(time.time()) else "expired"
        print(f"lease: {lease.owner} epoch {lease.epoch} {live} until {when(lease.expires_at)}")
    print("kinds: " + (", ".join(f"{k}={n}" for k, n in sorted(kinds.items())) or "-"))
    print()
    table(
        ["id", "kind", "lo", "hi"],
        [(o.id, o.kind, _v(o.lo), _v(o.hi)) for o in snap.objects[: args.objects]],
    )
    if len(snap.objects) > args.objects:
        print(f"... {len(snap.objects) - args.objects} more (use --objects N)")
    print()
    table(
        ["version", "epoch", "objects", "stored", "by", "checksum"],
        [
            (
                h.version,
                h.epoch,
                h.object_count,
                when(h.stored_at),
                h.stored_by,
                "ok" if h.valid else "BAD",
            )
            for h in hist
        ],
    )
    return 0


def _hist(h: Any) -> dict[str, Any]:
    return {
        "version": h.version,
        "epoch": h.epoch,
        "objects": h.object_count,
        "stored_at": h.stored_at,
        "stored_by": h.stored_by,
        "valid": h.valid,
    }


def _v(p: tuple[float, float, float]) -> str:
    return "(" + ", ".join(f"{c:.1f}" for c in p) + ")"


async def _servers(args: argparse.Namespace, store: Store) -> int:
    now = time.time()
    leases = await store.leases()
    by: dict[str, dict[str, int]] = {}
    for le in leases:
        d = by.setdefault(le.owner, {"live": 0, "expired": 0})
        d["live" if le.live(now) else "expired"] += 1
    if args.json:
        emit_json([{"server": s, **d} for s, d in sorted(by.items())])
        return 0
    table(
        ["server", "live leases", "expired leases"],
        [(s, d["live"], d["expired"]) for s, d in sorted(by.items())],
    )
    return 0


async def _incidents(args: argparse.Namespace, store: Store) -> int:
    rows = await store.incidents(limit=args.limit)
    if args.json:
        emit_json(rows)
        return 0
    table(
        ["at", "region", "kind", "detail"],
        [(when(r["at"]), r["region"], r["kind"], r["detail"]) for r in rows],
    )
    return 0


async def _conflicts(args: argparse.Namespace, store: Store) -> int:
    rows = await store.conflicts(limit=args.limit)
    if args.json:
        emit_json(rows)
        return 0
    table(
        ["at", "region", "type", "rule", "subject", "winner", "losers", "reason"],
        [
            (
                when(r["at"]),
                r["region"] or "-",
                r["conflict_type"],
                r["rule"],
                r["subject"],
                (r["winners"] or ["-"])[0][:8],
                len(r["losers"]),
                r["reason"][:60],
            )
            for r in rows
        ],
    )
    return 0


async def _cache(args: argparse.Namespace, store: Store) -> int:
    import os

    url = args.cache or os.environ.get("WORLDSTATE_CACHE_URL", "memory://")
    ns = args.namespace or os.environ.get("WORLDSTATE_NAMESPACE", "ws")
    cache = open_cache(
        url,
        prefix=f"{ns}:",
        ttl=300.0,
        max_entries=16,
        timeout=1.0,
        breaker_failures=3,
        breaker_reset=5.0,
    )
    try:
        entries = await cache.entries(args.limit)
        stored = {r.key.morton: r.version for r in await store.regions(limit=100_000)}
        rows = []
        for region, version, size in entries:
            current = stored.get(region)
            state = "current" if current == version else f"stale (store v{current})"
            rows.append((RegionKey.from_morton(region), version, size, state))
        if args.json:
            emit_json(
                [{"region": str(r[0]), "version": r[1], "bytes": r[2], "state": r[3]} for r in rows]
            )
            return 0
        print(f"cache {cache.describe()}")
        table(["region", "version", "bytes", "vs store"], rows)
        return 0
    finally:
        await cache.close()


async def _map(args: argparse.Namespace, store: Store) -> int:
    from worldstate.cli.region_map import render_map

    regions = await store.regions(limit=1_000_000)
    n = render_map(regions, args.out, z=args.z)
    print(f"wrote {args.out} ({n} regions)", file=sys.stderr)
    return 0


def _plain(v: Any) -> Any:
    """Mappings (read-only proxies included) and tuples as JSON objects and lists."""
    from collections.abc import Mapping

    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _point(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        from worldstate.updates import Cursor

        return Cursor.decode(text)


async def _events(args: argparse.Namespace, store: Store) -> int:
    from worldstate.history import read_events

    regions = None
    if args.region == "world":
        regions = [-1]
    elif args.region is not None:
        try:
            regions = [RegionKey.parse(args.region).morton]
        except ValueError as e:
            raise ValidationError(str(e)) from None
    rows: list[dict[str, Any]] = []
    async for event in read_events(
        store,
        stream=args.stream,
        regions=regions,
        since=_point(args.since),
        until=_point(args.until),
    ):
        d = event.payload
        rows.append(
            {
                "origin": d.origin,
                "seq": d.seq,
                "region": str(d.region) if d.region is not None else "world",
                "op_type": d.op_type,
                "op_id": d.op_id,
                "fields": _plain(d.fields),
                "vclock": dict(d.vclock),
                "cursor": str(d.cursor),
            }
        )
        if len(rows) >= args.limit:
            break
    if args.json:
        emit_json(rows)
        return 0
    table(
        ["origin", "seq", "region", "type", "stream", "op", "cursor"],
        [
            (
                r["origin"],
                r["seq"],
                r["region"],
                r["op_type"],
                r["fields"].get("stream", "-"),
                r["op_id"][:8],
                r["cursor"],
            )
            for r in rows
        ],
    )
    return 0


VIEWS: dict[str, Any] = {
    "events": _events,
    "regions": _regions,
    "region": _region,
    "servers": _servers,
    "incidents": _incidents,
    "conflicts": _conflicts,
    "cache": _cache,
    "map": _map,
}

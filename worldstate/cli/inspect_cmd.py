"""``worldstate inspect``: read-only views of a store for operators."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import Counter
from typing import Any

from redis.exceptions import AuthenticationError, RedisError

from regions import RegionKey
from worldstate.cache import open_cache
from worldstate.cli.tables import emit_json, table, when
from worldstate.errors import StoreUnavailable, ValidationError
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
    s = v.add_parser(
        "servers",
        help="the mesh: agreed membership, acting coordinator, each server's heartbeat, "
        "verdict and leases",
    )
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
    m = v.add_parser("map", help="a top-down picture of regions by owner (PNG), or --json")
    m.add_argument("--out", help="PNG file to write")
    m.add_argument("--json", action="store_true", help="print the map's columns as JSON")
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
    checks = await store.region_checks([r.key.morton for r in rows])
    out = []
    for r in rows:
        committed, valid = checks.get(r.key.morton, (0, True))
        out.append((r, committed, valid))
    corrupt = sum(1 for _, _, ok in out if not ok)
    if args.json:
        emit_json(
            [
                {
                    "key": [r.key.ix, r.key.iy, r.key.iz],
                    "morton": r.key.morton,
                    "version": r.version,
                    "objects": r.object_count + committed,
                    "snapshot_objects": r.object_count,
                    "committed_objects": committed,
                    "bytes": r.size,
                    "owner": r.owner,
                    "epoch": r.epoch,
                    "stored_at": r.stored_at,
                    "stored_by": r.stored_by,
                    "checksum_ok": ok,
                }
                for r, committed, ok in out
            ]
        )
        return 0
    table(
        [
            "region",
            "morton",
            "version",
            "objects",
            "structures+",
            "bytes",
            "owner",
            "epoch",
            "stored",
            "check",
        ],
        [
            (
                r.key,
                r.key.morton,
                r.version,
                r.object_count + committed,
                committed,
                r.size,
                r.owner or "-",
                r.epoch,
                when(r.stored_at),
                "ok" if ok else "CORRUPT",
            )
            for r, committed, ok in out
        ],
    )
    print(
        f"{len(rows)} region(s); objects = snapshot objects + committed structures/items "
        "(structures+)"
    )
    if corrupt:
        print(
            f"WARNING: {corrupt} region(s) fail their checksum; `inspect region KEY` shows the "
            "history version a server would recover from"
        )
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
                    "expires_at": lease.expires_at if lease.expires_at > 0 else None,
                    "live": lease.live(time.time()),
                    "state": lease_state(lease, time.time()),
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
    print("lease: " + lease_text(lease, time.time()))
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


def lease_state(lease: Any, now: float) -> str:
    """``live``, ``released`` (given up cleanly) or ``expired`` (ran out)."""
    if lease.live(now):
        return "live"
    return "released" if lease.expires_at <= 0 else "expired"


def lease_text(lease: Any, now: float) -> str:
    if lease is None:
        return "never leased"
    state = lease_state(lease, now)
    if state == "released":
        return (
            f"released by {lease.owner} (epoch {lease.epoch}); the next owner gets epoch "
            f"{lease.epoch + 1}"
        )
    if state == "live":
        return f"{lease.owner} epoch {lease.epoch}, live until {when(lease.expires_at)}"
    return f"{lease.owner} epoch {lease.epoch}, expired at {when(lease.expires_at)}"


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
    from worldstate.store import mesh_state

    now = time.time()

    async def read(c: Any) -> tuple[Any, list[Any], Any]:
        return (
            await mesh_state.read_membership(c),
            await mesh_state.member_rows(c),
            await mesh_state.read_coordinator(c),
        )

    membership, rows, coord = await store.run(read, "read the mesh state", read=True)
    leases = await store.leases()
    by: dict[str, dict[str, int]] = {}
    for le in leases:
        d = by.setdefault(le.owner, {"live": 0, "released": 0, "expired": 0})
        d[lease_state(le, now)] += 1
    members = {r.server_id: r for r in rows}
    servers = sorted(set(by) | set(members) | set(membership.members))
    acting = coord.owner if coord is not None and coord.expires_at > now else None
    docs: list[dict[str, Any]] = []
    for sid in servers:
        row = members.get(sid)
        counts = by.get(sid, {"live": 0, "released": 0, "expired": 0})
        docs.append(
            {
                "server": sid,
                "member": sid in membership.members,
                "state": row.state if row else None,
                "verdict": _verdict(row),
                "heartbeat_at": row.heartbeat_at if row else None,
                "heartbeat_age_s": round(now - row.heartbeat_at, 1) if row else None,
                "view": list(row.view) if row else [],
                "generation_seen": row.generation if row else None,
                "live_leases": counts["live"],
                "released_leases": counts["released"],
                "expired_leases": counts["expired"],
            }
        )
    if args.json:
        emit_json(
            {
                "membership": membership.as_dict(),
                "coordinator": None
                if coord is None
                else {
                    "owner": coord.owner,
                    "epoch": coord.epoch,
                    "expires_at": coord.expires_at,
                    "acting": acting is not None,
                },
                "servers": docs,
            }
        )
        return 0
    gen = membership.generation
    print(
        f"membership: generation {gen} {sorted(membership.members)}"
        + (
            f" (by {membership.changed_by} at {when(membership.changed_at)})"
            if gen
            else " (none recorded: no coordinator has run)"
        )
    )
    if coord is None:
        print("coordinator: none elected yet")
    elif acting:
        print(
            f"coordinator: {coord.owner} acting (epoch {coord.epoch}, lease until "
            f"{when(coord.expires_at)})"
        )
    else:
        print(
            f"coordinator: none acting (last: {coord.owner}, epoch {coord.epoch}, lease "
            f"ended {when(coord.expires_at)})"
        )
    print()
    table(
        [
            "server",
            "member",
            "state",
            "verdict",
            "heartbeat",
            "hears",
            "live",
            "released",
            "expired",
        ],
        [
            (
                d["server"],
                "yes" if d["member"] else "no",
                d["state"] or "-",
                d["verdict"] or "-",
                "-" if d["heartbeat_age_s"] is None else f"{d['heartbeat_age_s']:.1f}s ago",
                ",".join(str(v) for v in d["view"] or []) or "-",
                d["live_leases"],
                d["released_leases"],
                d["expired_leases"],
            )
            for d in docs
        ],
    )
    return 0


def _verdict(row: Any) -> str | None:
    """What the server's last store heartbeat says of its standing."""
    if row is None:
        return None
    if row.state == "left":
        return "left the mesh"
    return "majority" if row.authoritative else "minority (demoted)"


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
        try:
            entries = await cache.entries(args.limit)
        except (OSError, RedisError) as e:
            raise StoreUnavailable(cache_problem(e, cache.describe())) from None
        stored = {r.key.morton: r.version for r in await store.regions(limit=100_000)}
        rows = []
        for region, version, size in entries:
            rows.append(
                (
                    RegionKey.from_morton(region),
                    version,
                    size,
                    cache_state(version, size, stored.get(region)),
                )
            )
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


def cache_problem(err: BaseException, where: str) -> str:
    """The first line for a cache that cannot be read: unauthorised vs unreachable."""
    text = str(err)
    if isinstance(err, AuthenticationError) or any(
        w in text for w in ("NOAUTH", "WRONGPASS", "invalid password", "invalid username")
    ):
        return f"the cache ({where}) refused the credentials (unauthorised) — check the URL"
    return f"cannot reach the cache ({where}): {text.splitlines()[0] if text else err!r}"


def cache_state(version: int, size: int, stored: int | None) -> str:
    """How a cache entry compares with the store, truthfully."""
    if stored is None:
        return "orphan (region not in the store)"
    if size <= 0:
        return f"empty marker: v{version} exists, no snapshot cached (store v{stored})"
    if version == stored:
        return "current"
    if version < stored:
        return f"stale (store v{stored})"
    return f"ahead of the store (store v{stored}: a write not yet visible?)"


async def _map(args: argparse.Namespace, store: Store) -> int:
    from worldstate.cli.region_map import columns, render_map

    regions = await store.regions(limit=1_000_000)
    committed = await store.region_checks([r.key.morton for r in regions], verify=False)
    regions = [
        dataclasses.replace(r, object_count=r.object_count + committed.get(r.key.morton, (0,))[0])
        for r in regions
    ]
    if args.json:
        cols = columns(regions, z=args.z)
        emit_json(
            [
                {"ix": ix, "iy": iy, "owner": owner, "objects": n, "regions": k}
                for (ix, iy), (owner, n, k) in sorted(cols.items())
            ]
        )
        if not args.out:
            return 0
    if not args.out:
        raise SystemExit("worldstate inspect map: give --out FILE.png (or --json)")
    n, engine = render_map(regions, args.out, z=args.z)
    print(f"wrote {args.out} ({n} region columns, drawn with {engine})", file=sys.stderr)
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

"""The statements of the owner-resident strong path (`worldstate.strong`): load a region's
committed strong state once, then write only what a group of batches changed.

Every write function runs inside the caller's SERIALIZABLE transaction and uses multi-row
statements. Idempotency and staleness are detected by the writes themselves, not by a read
per batch: outcomes are inserted ``ON CONFLICT DO NOTHING RETURNING op_id`` (an op whose
row is already there was decided before: `DuplicateOps`), placed objects and picked items
likewise (an id taken elsewhere: `TakenIds`), resource claims are conditional decrements
and the region version is a compare-and-set against what the owner holds in memory
(`StaleState`). Those three exceptions roll the transaction back; the strong path then
refreshes what it needs and decides again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from worldstate.store import _lease_rules as lease_rules
from worldstate.store import schema as s
from worldstate.store.bulk import insert_rows, insert_sql
from worldstate.store.leases import locked_lease_rows
from worldstate.store.object_rows import Box6, ObjectRow, read_rows
from worldstate.store.region_state import bump_version
from worldstate.store.strong_commit import OpOutcome

__all__ = [
    "DuplicateOps",
    "LoadedRegion",
    "NearMoved",
    "NeedsCheckedWrite",
    "StaleState",
    "TakenIds",
    "bump_region_versions",
    "check_fences",
    "claim_resources",
    "insert_decisions",
    "insert_items",
    "insert_objects",
    "insert_outcomes",
    "insert_terrain",
    "load_region_state",
    "prior_outcomes",
    "read_near",
    "read_resources",
    "read_structures_near",
    "write_group",
]


INT64_MAX = (1 << 63) - 1


class CountOverflow(Exception):
    """Adding to these (inventory, item) counts would pass int64: nothing was written."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.pairs = list(pairs)
        super().__init__(f"counts would pass {INT64_MAX}: {self.pairs[:5]}")


class StaleState(Exception):
    """What the owner holds in memory no longer matches the store (``what`` says which:
    region keys, resource ids or inventory ids): reload it and decide again."""

    def __init__(self, what: Sequence[Any]) -> None:
        self.what = list(what)
        super().__init__(f"stale in-memory state: {self.what[:5]}")


class DuplicateOps(Exception):
    """Some ops of the group already have a recorded outcome (resubmitted, or an earlier
    attempt committed and its acknowledgement was lost)."""

    def __init__(self, op_ids: Iterable[str]) -> None:
        self.op_ids = sorted(op_ids)
        super().__init__(f"{len(self.op_ids)} op(s) already decided")


class TakenIds(Exception):
    """Structure or item ids the group would place are already used elsewhere in the world
    (``kind`` is "structure" or "item")."""

    def __init__(self, kind: str, ids: Iterable[str]) -> None:
        self.kind = kind
        self.ids = sorted(ids)
        super().__init__(f"{kind} ids already in use: {self.ids[:5]}")


@dataclass(slots=True)
class LoadedRegion:
    version: int
    structures: list[ObjectRow] = field(default_factory=list)
    items: dict[str, str] = field(default_factory=dict)
    """picked item id -> op id of the pickup"""
    tampered: list[str] = field(default_factory=list)


async def load_region_state(conn: AsyncConnection, morton: int) -> LoadedRegion:
    """A region's committed strong state: version, placed structures (verified rows),
    picked items. Resources are read when first claimed (`read_resources`)."""
    r = s.regions
    v = (await conn.execute(select(r.c.version).where(r.c.region_key == morton))).scalar()
    rows, bad = await read_rows(conn, morton)
    it = s.items
    items = {
        str(row.item_id): str(row.op_id)
        for row in await conn.execute(
            select(it.c.item_id, it.c.op_id).where(it.c.region_key == morton)
        )
    }
    return LoadedRegion(int(v or 0), rows, items, bad)


async def prior_outcomes(
    conn: AsyncConnection, op_ids: Sequence[str]
) -> dict[str, tuple[OpOutcome, str | None]]:
    """Recorded outcomes of these op ids, each with the digest of the op it belongs to."""
    if not op_ids:
        return {}
    o = s.outcomes
    rows = (await conn.execute(select(o).where(o.c.op_id.in_(sorted(set(op_ids)))))).all()
    return {
        r.op_id: (
            OpOutcome(r.op_id, r.status == "committed", r.version, r.reason, r.winner_op_id),
            r.digest,
        )
        for r in rows
    }


async def check_fences(
    conn: AsyncConnection,
    table: Any,
    epochs: Mapping[int, int],
    keys: Mapping[int, Any],
    writer: str,
    now: float,
) -> None:
    """One statement: lock the lease rows of ``epochs`` (code -> the epoch the writer holds)
    in key order and check them. A stale epoch is `Fenced`, another live holder
    `RegionOwned` (``keys`` gives the key each code is reported as)."""
    if not epochs:
        return
    rows = await locked_lease_rows(conn, table, epochs)
    for code in sorted(epochs):  # the one fence rule (store/_lease_rules.py), exclusive
        lease_rules.check_fence(
            keys[code],
            lease_rules.lease_row(rows.get(code)),
            epochs[code],
            writer,
            now,
            exclusive=True,
        )


CHUNK = 1000
"""Rows per multi-row statement (bound parameters stay under every dialect's limit)."""


async def _insert_new(
    conn: AsyncConnection, table: Any, rows: Sequence[dict[str, Any]], col: Any
) -> set[str]:
    """Multi-row ``INSERT … ON CONFLICT DO NOTHING RETURNING col``: the values inserted."""
    got = await insert_rows(conn, table, rows, on_conflict="nothing", returning=[col.name])
    return {str(r[0]) for r in got}


async def insert_outcomes(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Record outcomes; `DuplicateOps` when any op id already has one."""
    if not rows:
        return
    got = await _insert_new(conn, s.outcomes, rows, s.outcomes.c.op_id)
    if len(got) != len(rows):
        raise DuplicateOps({str(r["op_id"]) for r in rows} - got)


async def insert_objects(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert placed-object rows (`worldstate.store.object_rows.row_values`); `TakenIds`
    when an id is already used (in another region: this region's are known in memory)."""
    if not rows:
        return
    got = await _insert_new(conn, s.objects, rows, s.objects.c.object_id)
    if len(got) != len(rows):
        raise TakenIds("structure", {str(r["object_id"]) for r in rows} - got)


async def insert_items(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    got = await _insert_new(conn, s.items, rows, s.items.c.item_id)
    if len(got) != len(rows):
        raise TakenIds("item", {str(r["item_id"]) for r in rows} - got)


async def insert_terrain(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    await insert_rows(conn, s.terrain, rows)


async def read_resources(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, float]:
    """Remaining amount of each resource node that exists (absent ids are left out)."""
    want = sorted(set(ids))
    if not want:
        return {}
    t = s.resources
    rows = await conn.execute(
        select(t.c.resource_id, t.c.remaining).where(t.c.resource_id.in_(want))
    )
    return {str(r.resource_id): float(r.remaining) for r in rows}


async def claim_resources(conn: AsyncConnection, claims: Mapping[str, float]) -> dict[str, float]:
    """Take ``amount`` from each node, conditionally (``remaining >= amount``); returns what
    remains. A node holding less than the owner believed is `StaleState` (refilled or
    claimed behind its back): reread it and decide again."""
    t = s.resources
    out: dict[str, float] = {}
    for rid in sorted(claims):
        amount = claims[rid]
        got = (
            await conn.execute(
                update(t)
                .where(t.c.resource_id == rid, t.c.remaining >= amount)
                .values(remaining=t.c.remaining - amount)
                .returning(t.c.remaining)
            )
        ).first()
        if got is None:
            raise StaleState([rid])
        out[rid] = float(got[0])
    return out


async def bump_region_versions(
    conn: AsyncConnection,
    expected: Mapping[int, int],
    epochs: Mapping[int, int],
    writer: str,
    now: float,
) -> dict[int, int]:
    """Each region's version goes up by one, compare-and-set against ``expected`` (what the
    owner holds in memory): one UPDATE … RETURNING for the regions that have a row, the
    first row for those that do not. `StaleState` names the regions that moved."""
    r = s.regions
    have = sorted(m for m, v in expected.items() if v > 0)
    out: dict[int, int] = {}
    if have:
        rows = (
            await conn.execute(
                update(r)
                .where(r.c.region_key.in_(have))
                .values(version=r.c.version + 1, stored_at=now, stored_by=writer)
                .returning(r.c.region_key, r.c.version)
            )
        ).all()
        got = {int(a): int(b) for a, b in rows}
        stale = [m for m in have if got.get(m) != expected[m] + 1]
        if stale:
            raise StaleState(stale)
        out.update(got)
    for m in sorted(m for m, v in expected.items() if v <= 0):
        from regions import RegionKey

        try:
            out[m] = await bump_version(
                conn, RegionKey.from_morton(m), epoch=epochs[m], writer=writer, now=now
            )
        except Exception as e:  # the row exists already: another writer got there
            from worldstate.store.retry import RetryTransaction

            if isinstance(e, RetryTransaction):
                raise StaleState([m]) from None
            raise
        if out[m] != 1:
            raise StaleState([m])
    return out


def _box_and_op(row: Sequence[Any], at: int) -> tuple[Box6, str]:
    """A result row's six box columns from ``at`` on, and the op id after them."""
    box = (
        float(row[at]),
        float(row[at + 1]),
        float(row[at + 2]),
        float(row[at + 3]),
        float(row[at + 4]),
        float(row[at + 5]),
    )
    return box, str(row[at + 6])


async def read_structures_near(
    conn: AsyncConnection, region_keys: Sequence[int], boxes: Sequence[Box6]
) -> dict[str, tuple[Box6, str]]:
    """Committed structures of ``region_keys`` (regions this server does not hold) that
    overlap any of ``boxes``: id -> (box, op id of its placement). Inside the commit's
    transaction, so that two owners placing across their common boundary serialize."""
    if not region_keys or not boxes:
        return {}
    if conn.dialect.name != "sqlite":
        return await _structures_near_unnest(conn, region_keys, boxes)
    clauses = []
    params: dict[str, object] = {"keys": sorted(set(region_keys))}
    for i, b in enumerate(boxes):
        clauses.append(
            f"(lox < :hx{i} AND hix > :lx{i} AND loy < :hy{i} AND hiy > :ly{i}"
            f" AND loz < :hz{i} AND hiz > :lz{i})"
        )
        params.update(
            {
                f"lx{i}": b[0],
                f"ly{i}": b[1],
                f"lz{i}": b[2],
                f"hx{i}": b[3],
                f"hy{i}": b[4],
                f"hz{i}": b[5],
            }
        )
    query = text(
        "SELECT object_id, lox, loy, loz, hix, hiy, hiz, op_id FROM ws_objects"  # noqa: S608
        " WHERE region_key IN :keys AND (" + " OR ".join(clauses) + ")"
    ).bindparams(bindparam("keys", expanding=True))
    out: dict[str, tuple[Box6, str]] = {}
    for row in (await conn.execute(query, params)).all():
        out[str(row[0])] = _box_and_op(row, 1)
    return out


async def _structures_near_unnest(
    conn: AsyncConnection, region_keys: Sequence[int], boxes: Sequence[Box6]
) -> dict[str, tuple[Box6, str]]:
    """`read_structures_near` on PostgreSQL/CockroachDB: the boxes travel as six arrays and
    are joined, so the statement has one text whatever their number (parsed and planned
    once, not once per group)."""
    cols = list(zip(*boxes, strict=True))
    query = text(
        "SELECT DISTINCT o.object_id, o.lox, o.loy, o.loz, o.hix, o.hiy, o.hiz, o.op_id"
        " FROM ws_objects AS o JOIN unnest(CAST(:lx AS FLOAT8[]), CAST(:ly AS FLOAT8[]),"
        " CAST(:lz AS FLOAT8[]), CAST(:hx AS FLOAT8[]), CAST(:hy AS FLOAT8[]),"
        " CAST(:hz AS FLOAT8[])) AS b(lx, ly, lz, hx, hy, hz)"
        " ON o.lox < b.hx AND o.hix > b.lx AND o.loy < b.hy AND o.hiy > b.ly"
        " AND o.loz < b.hz AND o.hiz > b.lz"
        " WHERE o.region_key = ANY(CAST(:keys AS INT8[]))"
    )
    params = {
        "keys": sorted(set(region_keys)),
        **{n: list(c) for n, c in zip(("lx", "ly", "lz", "hx", "hy", "hz"), cols, strict=True)},
    }
    out: dict[str, tuple[Box6, str]] = {}
    for row in (await conn.execute(query, params)).all():
        out[str(row[0])] = _box_and_op(row, 1)
    return out


class NearMoved(Exception):
    """Foreign neighbour regions whose version is not the one the owner's cached rows of
    them were read at (their owner committed since): read them again and decide again."""

    def __init__(self, keys: Iterable[int]) -> None:
        self.keys = sorted(keys)
        super().__init__(f"neighbour regions moved: {self.keys[:5]}")


async def read_near(
    conn: AsyncConnection, wants: Sequence[tuple[int, Box6]]
) -> tuple[list[dict[str, tuple[Box6, str]]], dict[int, int]]:
    """For each (foreign region code, box): that region's committed structures sharing
    interior volume with the box (id -> (box, op id of its placement)); and the version of
    each region named (0 when it has no row). Inside the commit's transaction, so that two
    owners placing across their common boundary serialize."""
    out: list[dict[str, tuple[Box6, str]]] = [{} for _ in wants]
    codes = sorted({n for n, _ in wants})
    if not wants:
        return out, {}
    r = s.regions
    versions = dict.fromkeys(codes, 0)
    for k, v in await conn.execute(
        select(r.c.region_key, r.c.version).where(r.c.region_key.in_(codes))
    ):
        versions[int(k)] = int(v)
    if conn.dialect.name == "sqlite":
        for i, (n, b) in enumerate(wants):
            out[i] = await read_structures_near(conn, [n], [b])
        return out, versions
    cols = list(zip(*(b for _, b in wants), strict=True))
    query = text(
        "SELECT w.i, o.object_id, o.lox, o.loy, o.loz, o.hix, o.hiy, o.hiz, o.op_id"
        " FROM unnest(CAST(:n AS INT8[]), CAST(:i AS INT8[]), CAST(:lx AS FLOAT8[]),"
        " CAST(:ly AS FLOAT8[]), CAST(:lz AS FLOAT8[]), CAST(:hx AS FLOAT8[]),"
        " CAST(:hy AS FLOAT8[]), CAST(:hz AS FLOAT8[])) AS w(n, i, lx, ly, lz, hx, hy, hz)"
        " JOIN ws_objects AS o ON o.region_key = w.n"
        " AND o.lox < w.hx AND o.hix > w.lx AND o.loy < w.hy AND o.hiy > w.ly"
        " AND o.loz < w.hz AND o.hiz > w.lz"
    )
    params: dict[str, Any] = {
        "n": [n for n, _ in wants],
        "i": list(range(len(wants))),
        **{k: list(c) for k, c in zip(("lx", "ly", "lz", "hx", "hy", "hz"), cols, strict=True)},
    }
    for row in (await conn.execute(query, params)).all():
        out[int(row[0])][str(row[1])] = _box_and_op(row, 2)
    return out, versions


async def insert_decisions(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    await insert_rows(conn, s.conflicts, rows)


# -- inventories ---------------------------------------------------------------------------


async def read_counts(
    conn: AsyncConnection, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """Current counts of these (inventory, item) pairs (0 for pairs with no row)."""
    want = sorted(set(keys))
    out = dict.fromkeys(want, 0)
    if not want:
        return out
    t = s.inventories
    invs = sorted({k[0] for k in want})
    rows = await conn.execute(
        select(t.c.inventory_id, t.c.item, t.c["count"].label("n")).where(
            t.c.inventory_id.in_(invs)
        )
    )
    for r in rows:
        k = (str(r.inventory_id), str(r.item))
        if k in out:
            out[k] = int(r.n)
    return out


async def add_counts(conn: AsyncConnection, deltas: Mapping[tuple[str, str], int]) -> None:
    """Add each net delta to its count in one multi-row upsert (``count = count + delta``):
    commutative, so a credit into an inventory another server owns needs no read."""
    rows = [
        {"inventory_id": k[0], "item": k[1], "count": d} for k, d in sorted(deltas.items()) if d
    ]
    got = await insert_rows(
        conn,
        s.inventories,
        rows,
        on_conflict="add",
        set_add=["count"],
        conflict_cols=["inventory_id", "item"],
        returning=["inventory_id", "item"],
        add_at_most=INT64_MAX,
    )
    written = {(str(a), str(b)) for a, b in got}
    pairs = [(str(r["inventory_id"]), str(r["item"])) for r in rows]
    over = [p for p in pairs if p not in written]
    if over:
        raise CountOverflow(over)


async def bump_inventory_versions(
    conn: AsyncConnection, inventories: Iterable[str]
) -> dict[str, int]:
    """Each inventory's version goes up by one (one multi-row upsert … RETURNING)."""
    ids = sorted(set(inventories))
    if not ids:
        return {}
    got = await insert_rows(
        conn,
        s.inventory_versions,
        [{"inventory_id": v, "version": 1} for v in ids],
        on_conflict="add",
        set_add=["version"],
        conflict_cols=["inventory_id"],
        returning=["inventory_id", "version"],
    )
    out = {str(a): int(b) for a, b in got}
    return out


# -- the whole write of a group in one statement (PostgreSQL, CockroachDB) -------------------


class NeedsCheckedWrite(Exception):
    """`write_group` found a row already there (an op decided before, an id taken elsewhere
    in the world): its transaction must roll back, and the group is written again with the
    statement-per-table path, which says exactly which ops and ids."""


async def write_group(
    conn: AsyncConnection,
    *,
    epochs: Mapping[int, int],
    keys: Mapping[int, Any],
    writer: str,
    now: float,
    outcomes: Sequence[dict[str, Any]],
    objects: Sequence[dict[str, Any]],
    items: Sequence[dict[str, Any]],
    terrain: Sequence[dict[str, Any]],
    claims: Mapping[str, float],
    expected: Mapping[int, int],
    decisions: Sequence[dict[str, Any]],
    near_versions: Mapping[int, int] | None = None,
) -> tuple[dict[int, int], dict[str, float]]:
    """Everything a decided group writes, and its fence check, as ONE statement of
    data-modifying CTEs (one round trip instead of one per table): lock and read the lease
    rows; insert outcomes, objects and items ``ON CONFLICT DO NOTHING`` and count what went
    in; insert terrain edits and conflict decisions; take each resource claim conditionally;
    bump each region version. Every check is made on the result, before COMMIT: a stale
    fence raises `Fenced`/`RegionOwned`, a version or resource that moved `StaleState`, a
    count short of the rows sent `NeedsCheckedWrite` — each rolls the transaction back.
    ``expected`` holds versions > 0 only (a region's first row is the checked path's).
    PostgreSQL and CockroachDB (both run mutations in CTEs exactly once, to completion);
    not SQLite. Returns the new region versions and what each claimed resource has left."""
    ctes: list[str] = []
    params: dict[str, Any] = {
        "fk": sorted(epochs),
        "now": now,
        "writer": writer,
    }
    ctes.append(
        "f AS (SELECT region_key, owner, epoch, expires_at FROM ws_leases"
        " WHERE region_key = ANY(CAST(:fk AS INT8[])) FOR UPDATE)"
    )
    tail = [
        "SELECT CAST('f' AS TEXT) AS tag, region_key AS k, owner AS s, epoch AS n,"
        " expires_at AS x FROM f"
    ]
    counted = (("o", s.outcomes, outcomes, "op_id"), ("b", s.objects, objects, "object_id"))
    for name, table, rows_, col in (*counted, ("i", s.items, items, "item_id")):
        if not rows_:
            continue
        sql, p = insert_sql(table, rows_, prefix=name, on_conflict="nothing", returning=[col])
        ctes.append(f"{name} AS ({sql})")
        params.update(p)
        tail.append(  # name: one of o, b, i (a constant of this function)
            f"SELECT CAST('{name}' AS TEXT), CAST(NULL AS INT8), CAST(NULL AS TEXT),"  # noqa: S608
            f" count(*), CAST(NULL AS FLOAT8) FROM {name}"
        )
    for name, table, rows_ in (("t", s.terrain, terrain), ("d", s.conflicts, decisions)):
        if rows_:
            sql, p = insert_sql(table, rows_, prefix=name, returning=[])
            ctes.append(f"{name} AS ({sql} RETURNING 1)")
            params.update(p)
    if claims:
        ids = sorted(claims)
        params["rid"] = ids
        params["ram"] = [float(claims[r]) for r in ids]
        ctes.append(
            "r AS (UPDATE ws_resources SET remaining = ws_resources.remaining - c.amount"
            " FROM unnest(CAST(:rid AS TEXT[]), CAST(:ram AS FLOAT8[])) AS c(resource_id, amount)"
            " WHERE ws_resources.resource_id = c.resource_id"
            " AND ws_resources.remaining >= c.amount"
            " RETURNING ws_resources.resource_id, ws_resources.remaining)"
        )
        tail.append(
            "SELECT CAST('r' AS TEXT), CAST(NULL AS INT8), resource_id, CAST(NULL AS INT8),"
            " remaining FROM r"
        )
    if expected:
        params["vk"] = sorted(expected)
        ctes.append(
            "v AS (UPDATE ws_regions SET version = version + 1, stored_at = :now,"
            " stored_by = :writer WHERE region_key = ANY(CAST(:vk AS INT8[]))"
            " RETURNING region_key, version)"
        )
        tail.append(
            "SELECT CAST('v' AS TEXT), region_key, CAST(NULL AS TEXT), version,"
            " CAST(NULL AS FLOAT8) FROM v"
        )
    if near_versions:
        # the foreign neighbours the decision read (perhaps from the owner's cache): their
        # versions now, in the same statement — a writer there since then is `NearMoved`
        params["nk"] = sorted(near_versions)
        tail.append(
            "SELECT CAST('n' AS TEXT), region_key, CAST(NULL AS TEXT), version,"
            " CAST(NULL AS FLOAT8) FROM ws_regions WHERE region_key = ANY(CAST(:nk AS INT8[]))"
        )
    sql = "WITH " + ", ".join(ctes) + " " + " UNION ALL ".join(tail)
    got = (await conn.execute(text(sql), params)).all()
    fences: dict[int, lease_rules.LeaseRow] = {}
    counts: dict[str, int] = {}
    seen_near: dict[int, int] = {}
    versions: dict[int, int] = {}
    remaining: dict[str, float] = {}
    for tag, k, sv, n, x in got:
        if tag == "f":
            fences[int(k)] = lease_rules.LeaseRow(str(sv), int(n), float(x))
        elif tag == "v":
            versions[int(k)] = int(n)
        elif tag == "r":
            remaining[str(sv)] = float(x)
        elif tag == "n":
            seen_near[int(k)] = int(n)
        else:
            counts[str(tag)] = int(n)
    for code in sorted(epochs):  # the one fence rule (store/_lease_rules.py), exclusive
        lease_rules.check_fence(
            keys[code], fences.get(code), epochs[code], writer, now, exclusive=True
        )
    moved = [m for m, v in (near_versions or {}).items() if seen_near.get(m, 0) != v]
    if moved:
        raise NearMoved(moved)
    sent = {"o": len(outcomes), "b": len(objects), "i": len(items)}
    if any(counts.get(t, 0) != sent[t] for t in sent):
        raise NeedsCheckedWrite
    stale: list[Any] = [m for m in sorted(expected) if versions.get(m) != expected[m] + 1]
    stale += [r for r in sorted(claims) if r not in remaining]
    if stale:
        raise StaleState(stale)
    return versions, remaining

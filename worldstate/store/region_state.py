"""Versioned region state: load with checksum verification and recovery, the three write
modes of ``store_region`` (unconditional, if-absent, if-version-matches), fenced, and the
version bump of strong commits. Runs inside a transaction given by the caller.

A region's state is its snapshot blob (``ws_regions.payload``, checksummed, the last N
kept in ``ws_region_history``) plus the objects strong operations placed (``ws_objects``
rows). ``version`` counts every change to either.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from sqlalchemy import bindparam, delete, desc, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from regions import RegionKey
from worldstate._codec import CodecError, Columns, checksum, decode_columns, encode_objects
from worldstate.errors import CorruptRegion, VersionConflict
from worldstate.objects import RegionSnapshot, WorldObject
from worldstate.store import _lease_rules as lease_rules
from worldstate.store import schema as s
from worldstate.store.object_rows import read_rows, row_checksum

log = logging.getLogger("worldstate.store")

EMPTY_PAYLOAD = encode_objects([])


@dataclass(frozen=True, slots=True)
class StoredRow:
    """A region row (or history row) as read: payload still encoded."""

    key: RegionKey
    version: int
    payload_version: int
    epoch: int
    payload: bytes
    checksum: bytes
    stored_at: float
    stored_by: str

    def valid(self) -> bool:
        return checksum(self.key.morton, self.payload_version, self.payload) == self.checksum


@dataclass(frozen=True, slots=True)
class LoadResult:
    """A decoded region plus what the load had to do to get it."""

    snapshot: RegionSnapshot
    payload: bytes
    """The encoded objects (snapshot and rows together), ready for the cache."""
    recovered_from: int | None = None
    """When the current row was corrupt: the history version the state came from."""
    tampered: tuple[str, ...] = ()
    """Ids of object rows that failed their checksums (left out of the snapshot)."""


def _row(key: RegionKey, r: Any, *, history: bool = False) -> StoredRow:
    pv = r.version if history else r.payload_version
    return StoredRow(
        key,
        r.version,
        pv,
        r.epoch,
        bytes(r.payload),
        bytes(r.checksum),
        r.stored_at,
        r.stored_by,
    )


async def read_lease_row(conn: AsyncConnection, key: RegionKey, *, lock: bool = False) -> Any:
    q = select(s.leases).where(s.leases.c.region_key == key.morton)
    if lock:
        q = q.with_for_update()
    return (await conn.execute(q)).first()


async def read_current(conn: AsyncConnection, key: RegionKey) -> StoredRow | None:
    r = (await conn.execute(select(s.regions).where(s.regions.c.region_key == key.morton))).first()
    return _row(key, r) if r is not None else None


def _decode(row: StoredRow) -> Columns | None:
    if not row.valid():
        return None
    try:
        return decode_columns(row.payload)
    except CodecError:
        return None


def owner_of(lease: Any, now: float) -> tuple[str | None, int]:
    if lease is None:
        return None, 0
    return (lease.owner if lease.expires_at > now else None), int(lease.epoch)


async def object_rows(conn: AsyncConnection, key: RegionKey) -> tuple[Columns | None, list[str]]:
    """The region's strong-placed objects as columns (None when there are none), and the
    ids of rows that fail their checksums: those are left out and logged
    (`worldstate.store.object_rows`); `Store.load_region` records the incident."""
    rows, bad = await read_rows(conn, key.morton)
    if bad:
        log.error("region %s: object rows %s fail their checksums; left out", key, bad[:10])
    if not rows:
        return None, bad
    boxes = np.array([r.box for r in rows], dtype=np.float64).reshape(len(rows), 6)
    return Columns(
        [r.object_id for r in rows],
        [r.kind for r in rows],
        boxes,
        [orjson.loads(r.data) or 0 for r in rows],
    ), bad


def _combine(blob: Columns, rows: Columns | None) -> Columns:
    if rows is None:
        return blob
    return Columns(
        blob.ids + rows.ids,
        blob.kinds + rows.kinds,
        np.concatenate([blob.boxes, rows.boxes]),
        blob.data + rows.data,
    )


def _result(
    key: RegionKey,
    version: int,
    owner: str | None,
    epoch: int,
    blob: Columns,
    rows: Columns | None,
    payload: bytes,
    stored_at: float,
    recovered_from: int | None = None,
) -> LoadResult:
    objects = _combine(blob, rows)
    if rows is not None:
        payload = encode_objects(objects)
    return LoadResult(
        RegionSnapshot(key, version, owner, epoch, objects, stored_at), payload, recovered_from
    )


async def load(conn: AsyncConnection, key: RegionKey, now: float) -> LoadResult | StoredRow:
    """The region's current state, or the corrupt current row (the caller then runs
    `recover` in a write transaction). A region never stored is version 0, empty."""
    lease = await read_lease_row(conn, key)
    owner, epoch = owner_of(lease, now)
    row = await read_current(conn, key)
    if row is None:
        return LoadResult(RegionSnapshot(key, 0, owner, epoch, ()), b"")
    blob = _decode(row)
    if blob is None:
        return row
    rows, bad = await object_rows(conn, key)
    res = _result(key, row.version, owner, epoch, blob, rows, row.payload, row.stored_at)
    return dataclasses.replace(res, tampered=tuple(bad)) if bad else res


async def record_tampered(
    conn: AsyncConnection, key: RegionKey, ids: Sequence[str], now: float
) -> None:
    """Record an incident for object rows that failed their checksums (left out)."""
    shown = ", ".join(repr(i) for i in list(ids)[:20])
    more = f" and {len(ids) - 20} more" if len(ids) > 20 else ""
    await _incident(
        conn,
        key,
        "tampered-object",
        f"object rows {shown}{more} fail their checksums; left out of the region's state "
        "until their owner writes a good copy back (or the operator restores them)",
        now,
    )


async def _incident(
    conn: AsyncConnection, key: RegionKey, kind: str, detail: str, now: float
) -> None:
    await conn.execute(
        insert(s.incidents).values(
            incident_id=str(uuid.uuid4()),
            region_key=key.morton,
            kind=kind,
            detail=detail,
            at=now,
        )
    )


async def recover(
    conn: AsyncConnection, key: RegionKey, now: float, *, repair: bool = True
) -> LoadResult:
    """Repair a corrupt snapshot from the newest valid history version and record an
    incident. An intact copy of the current snapshot restores it as it was; an older one is
    written as a new version (writers holding the lost version get `VersionConflict`).
    Raises `CorruptRegion` when no valid version is left. With ``repair=False`` (read-only
    connections: the operator CLI) nothing is written: the valid version is returned and the
    caller reports it. Strong-placed objects (rows) are not affected by snapshot corruption.
    """
    current = await read_current(conn, key)
    lease = await read_lease_row(conn, key)
    owner, epoch = owner_of(lease, now)
    rows, _ = await object_rows(conn, key)
    if current is not None and (blob := _decode(current)) is not None:  # repaired meanwhile
        return _result(
            key, current.version, owner, epoch, blob, rows, current.payload, current.stored_at
        )
    hist = (
        await conn.execute(
            select(s.region_history)
            .where(s.region_history.c.region_key == key.morton)
            .order_by(desc(s.region_history.c.version))
        )
    ).all()
    checked: list[int] = []
    for h in hist:
        row = _row(key, h, history=True)
        checked.append(row.version)
        blob = _decode(row)
        if blob is None:
            continue
        cur_version = current.version if current is not None else row.version
        cur_pv = current.payload_version if current is not None else row.version
        intact = row.version == cur_pv
        new_version = cur_version if intact else cur_version + 1
        if not repair:
            return _result(
                key,
                cur_version,
                owner,
                epoch,
                blob,
                rows,
                row.payload,
                row.stored_at,
                recovered_from=row.version,
            )
        pv = row.version if intact else new_version
        values = {
            "version": new_version,
            "payload_version": pv,
            "epoch": row.epoch,
            "object_count": len(blob),
            "payload": row.payload,
            "write_id": str(uuid.uuid4()),
            "stored_by": f"recovery:{row.stored_by}"[:200],
            "stored_at": now,
        }
        values["checksum"] = checksum(key.morton, pv, row.payload)
        await conn.execute(
            update(s.regions).where(s.regions.c.region_key == key.morton).values(**values)
        )
        if not intact:
            hv = {k: v for k, v in values.items() if k != "payload_version"}
            await conn.execute(insert(s.region_history).values(region_key=key.morton, **hv))
        lost = "nothing" if intact else f"snapshot versions {row.version + 1}..{cur_pv}"
        detail = (
            f"snapshot (version {cur_pv}) failed its checksum; restored from history version "
            f"{row.version}; region now at version {new_version}; lost: {lost}"
        )
        await _incident(conn, key, "recovered", detail, now)
        log.warning("region %s: %s", key, detail)
        return _result(
            key, new_version, owner, epoch, blob, rows, row.payload, now, recovered_from=row.version
        )
    detail = f"snapshot and history versions {checked} all fail their checksums"
    if repair:
        await _incident(conn, key, "unrecoverable", detail, now)
    log.error("region %s: %s", key, detail)
    raise CorruptRegion(key, checked)


@dataclass(frozen=True, slots=True)
class WriteRequest:
    key: RegionKey
    objects: Sequence[WorldObject]
    expected_version: int | None
    epoch: int
    writer: str
    write_id: str
    history_versions: int


async def check_fence(
    conn: AsyncConnection, key: RegionKey, epoch: int, writer: str, now: float
) -> None:
    """Refuse a write under a stale epoch (`Fenced`) or into another live owner's region
    (`RegionOwned`)."""
    row = await read_lease_row(conn, key, lock=True)
    lease_rules.check_fence(key, lease_rules.lease_row(row), epoch, writer, now)


async def _lock_version(conn: AsyncConnection, key: RegionKey) -> int | None:
    cur = (
        await conn.execute(
            select(s.regions.c.version)
            .where(s.regions.c.region_key == key.morton)
            .with_for_update()
        )
    ).first()
    return int(cur.version) if cur is not None else None


async def store(conn: AsyncConnection, req: WriteRequest, now: float) -> int:
    """Write a new version of the region (see module doc); returns the new version.

    The snapshot replaces the region's whole state: strong-placed objects it leaves out are
    deleted, those it includes are updated, and everything else goes to the blob."""
    key = req.key
    prior = (
        await conn.execute(
            select(s.region_history.c.version).where(
                s.region_history.c.region_key == key.morton,
                s.region_history.c.write_id == req.write_id,
            )
        )
    ).first()
    if prior is not None:  # an earlier attempt committed; its acknowledgement was lost
        return int(prior.version)
    await check_fence(conn, key, req.epoch, req.writer, now)
    cur = await _lock_version(conn, key)
    current = cur if cur is not None else 0
    if req.expected_version is not None and req.expected_version != current:
        raise VersionConflict(key, req.expected_version, current)
    new = current + 1
    o = s.objects
    rows = {
        r.object_id: r
        for r in await conn.execute(
            select(
                o.c.object_id, o.c.op_id, o.c.kind, o.c.lox, o.c.loy, o.c.loz, o.c.hix,
                o.c.hiy, o.c.hiz, o.c.data,
            ).where(o.c.region_key == key.morton)
        )
    }  # fmt: skip
    kept = [x for x in req.objects if x.id in rows]
    blob = [x for x in req.objects if x.id not in rows]
    gone = rows.keys() - {x.id for x in kept}
    if gone:
        await conn.execute(
            delete(o).where(o.c.region_key == key.morton, o.c.object_id.in_(sorted(gone)))
        )
    for x in kept:
        data = orjson.dumps(dict(x.data)).decode()
        box = (*x.lo, *x.hi)
        row = rows[x.id]
        if (
            row.kind == x.kind
            and (row.lox, row.loy, row.loz, row.hix, row.hiy, row.hiz) == box
            and row.data == data
        ):
            continue  # unchanged (an eventual snapshot rewrites the strong rows as they are)
        await conn.execute(
            update(o)
            .where(o.c.region_key == key.morton, o.c.object_id == x.id)
            .values(
                kind=x.kind,
                lox=x.lo[0],
                loy=x.lo[1],
                loz=x.lo[2],
                hix=x.hi[0],
                hiy=x.hi[1],
                hiz=x.hi[2],
                data=data,
                checksum=row_checksum(key.morton, x.id, x.kind, box, data, row.op_id),
            )
        )
    payload = encode_objects(blob)
    values = {
        "version": new,
        "epoch": req.epoch,
        "object_count": len(req.objects),
        "payload": payload,
        "checksum": checksum(key.morton, new, payload),
        "write_id": req.write_id,
        "stored_by": req.writer,
        "stored_at": now,
    }
    if cur is None:
        await conn.execute(
            insert(s.regions).values(region_key=key.morton, payload_version=new, **values)
        )
    else:
        await conn.execute(
            update(s.regions)
            .where(s.regions.c.region_key == key.morton)
            .values(payload_version=new, **values)
        )
    await conn.execute(insert(s.region_history).values(region_key=key.morton, **values))
    await conn.execute(
        delete(s.region_history).where(
            s.region_history.c.region_key == key.morton,
            s.region_history.c.version <= new - req.history_versions,
        )
    )
    return new


async def bump_version(
    conn: AsyncConnection, key: RegionKey, *, epoch: int, writer: str, now: float
) -> int:
    """A strong commit changed the region: its version goes up (the blob is unchanged).
    A region never stored gets its first row (an empty snapshot) at version 1."""
    cur = await _lock_version(conn, key)
    if cur is None:
        values = {
            "version": 1,
            "epoch": epoch,
            "object_count": 0,
            "payload": EMPTY_PAYLOAD,
            "checksum": checksum(key.morton, 1, EMPTY_PAYLOAD),
            "write_id": str(uuid.uuid4()),
            "stored_by": writer,
            "stored_at": now,
        }
        ins = s.insert_for(conn.dialect.name, s.regions).values(
            region_key=key.morton, payload_version=1, **values
        )
        res = await conn.execute(
            ins.on_conflict_do_nothing(index_elements=["region_key"]).returning(
                s.regions.c.region_key
            )
        )
        if res.first() is None:
            from worldstate.store.retry import RetryTransaction

            raise RetryTransaction("region row created concurrently")
        await conn.execute(insert(s.region_history).values(region_key=key.morton, **values))
        return 1
    await conn.execute(
        update(s.regions)
        .where(s.regions.c.region_key == key.morton)
        .values(version=cur + 1, stored_at=now, stored_by=writer)
    )
    return cur + 1


async def bump_versions(
    conn: AsyncConnection,
    keys: Sequence[RegionKey],
    *,
    epochs: dict[RegionKey, int],
    writer: str,
    now: float,
) -> dict[RegionKey, int]:
    """`bump_version` for several regions: one locking read and one batched update for the
    regions that have a row, the first-row insert for those that do not."""
    r = s.regions
    rows = {
        row.region_key: int(row.version)
        for row in (
            await conn.execute(
                select(r.c.region_key, r.c.version)
                .where(r.c.region_key.in_([k.morton for k in keys]))
                .order_by(r.c.region_key)
                .with_for_update()
            )
        ).all()
    }
    out: dict[RegionKey, int] = {}
    updates = []
    for k in keys:
        if k.morton in rows:
            out[k] = rows[k.morton] + 1
            updates.append({"k": k.morton, "v": out[k]})
        else:
            out[k] = await bump_version(conn, k, epoch=epochs[k], writer=writer, now=now)
    if updates:
        await conn.execute(
            update(r)
            .where(r.c.region_key == bindparam("k"))
            .values(version=bindparam("v"), stored_at=now, stored_by=writer),
            updates,
        )
    return out

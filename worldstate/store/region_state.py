"""Versioned region state: load with checksum verification and recovery, and the three
write modes of `store_region` (unconditional, if-absent, if-version-matches), fenced.

Runs inside a transaction given by the caller (see `worldstate.store.Store`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, desc, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from regions import RegionKey
from worldstate.codec import CodecError, checksum, decode_objects
from worldstate.errors import CorruptRegion, Fenced, RegionOwned, VersionConflict
from worldstate.objects import RegionSnapshot, WorldObject
from worldstate.store import schema as s

log = logging.getLogger("worldstate.store")


@dataclass(frozen=True, slots=True)
class StoredRow:
    """A region row as read: payload still encoded."""

    key: RegionKey
    version: int
    epoch: int
    payload: bytes
    checksum: bytes
    stored_at: float
    stored_by: str

    def valid(self) -> bool:
        return checksum(self.key.morton, self.version, self.payload) == self.checksum


@dataclass(frozen=True, slots=True)
class LoadResult:
    """A decoded region plus what the load had to do to get it."""

    snapshot: RegionSnapshot
    payload: bytes
    recovered_from: int | None = None
    """When the current row was corrupt: the history version the state came from."""


def _row(key: RegionKey, r: Any) -> StoredRow:
    return StoredRow(
        key, r.version, r.epoch, bytes(r.payload), bytes(r.checksum), r.stored_at, r.stored_by
    )


async def read_lease_row(conn: AsyncConnection, key: RegionKey, *, lock: bool = False) -> Any:
    q = select(s.leases).where(s.leases.c.region_key == key.morton)
    if lock:
        q = q.with_for_update()
    return (await conn.execute(q)).first()


async def read_current(conn: AsyncConnection, key: RegionKey) -> StoredRow | None:
    r = (await conn.execute(select(s.regions).where(s.regions.c.region_key == key.morton))).first()
    return _row(key, r) if r is not None else None


def _decode(row: StoredRow) -> Sequence[WorldObject] | None:
    if not row.valid():
        return None
    try:
        return decode_objects(row.payload)
    except CodecError:
        return None


def owner_of(lease: Any, now: float) -> tuple[str | None, int]:
    if lease is None:
        return None, 0
    return (lease.owner if lease.expires_at > now else None), int(lease.epoch)


async def load(conn: AsyncConnection, key: RegionKey, now: float) -> LoadResult | StoredRow:
    """The region's current state, or the corrupt current row (the caller then runs
    `recover` in a write transaction). A region never stored is version 0, empty."""
    lease = await read_lease_row(conn, key)
    owner, epoch = owner_of(lease, now)
    row = await read_current(conn, key)
    if row is None:
        return LoadResult(RegionSnapshot(key, 0, owner, epoch, ()), b"")
    objects = _decode(row)
    if objects is None:
        return row
    return LoadResult(
        RegionSnapshot(key, row.version, owner, epoch, objects, row.stored_at), row.payload
    )


async def recover(
    conn: AsyncConnection, key: RegionKey, now: float, *, repair: bool = True
) -> LoadResult:
    """Repair a corrupt current row from the newest valid history version and record an
    incident. An intact copy of the current version restores it as it was; an older one is
    written as a new version (so writers holding the lost version get `VersionConflict`).
    Raises `CorruptRegion` when no valid version is left. With ``repair=False`` (read-only
    connections: the operator CLI) nothing is written: the valid version is returned and the
    caller reports it."""
    current = await read_current(conn, key)
    lease = await read_lease_row(conn, key)
    owner, epoch = owner_of(lease, now)
    if current is not None and (objects := _decode(current)) is not None:
        # repaired meanwhile by someone else
        snap = RegionSnapshot(key, current.version, owner, epoch, objects, current.stored_at)
        return LoadResult(snap, current.payload)
    hist = (
        await conn.execute(
            select(s.region_history)
            .where(s.region_history.c.region_key == key.morton)
            .order_by(desc(s.region_history.c.version))
        )
    ).all()
    checked: list[int] = []
    for h in hist:
        row = _row(key, h)
        checked.append(row.version)
        objects = _decode(row)
        if objects is None:
            continue
        cur_version = current.version if current is not None else row.version
        new_version = cur_version if row.version == cur_version else cur_version + 1
        payload = row.payload
        if not repair:
            snap = RegionSnapshot(key, row.version, owner, epoch, objects, row.stored_at)
            return LoadResult(snap, payload, recovered_from=row.version)
        values = {
            "version": new_version,
            "epoch": row.epoch,
            "object_count": len(objects),
            "payload": payload,
            "checksum": checksum(key.morton, new_version, payload),
            "write_id": str(uuid.uuid4()),
            "stored_by": f"recovery:{row.stored_by}"[:200],
            "stored_at": now,
        }
        await conn.execute(
            update(s.regions).where(s.regions.c.region_key == key.morton).values(**values)
        )
        if new_version != row.version:
            await conn.execute(insert(s.region_history).values(region_key=key.morton, **values))
        lost = (
            "nothing"
            if new_version == row.version
            else f"versions {row.version + 1}..{cur_version}"
        )
        detail = (
            f"current row (version {cur_version}) failed its checksum; restored from history "
            f"version {row.version} as version {new_version}; lost: {lost}"
        )
        await conn.execute(
            insert(s.incidents).values(
                incident_id=str(uuid.uuid4()),
                region_key=key.morton,
                kind="recovered",
                detail=detail,
                at=now,
            )
        )
        log.warning("region %s: %s", key, detail)
        snap = RegionSnapshot(key, new_version, owner, epoch, objects, now)
        return LoadResult(snap, payload, recovered_from=row.version)
    detail = f"current row and history versions {checked} all fail their checksums"
    if not repair:
        raise CorruptRegion(key, checked)
    await conn.execute(
        insert(s.incidents).values(
            incident_id=str(uuid.uuid4()),
            region_key=key.morton,
            kind="unrecoverable",
            detail=detail,
            at=now,
        )
    )
    log.error("region %s: %s", key, detail)
    raise CorruptRegion(key, checked)


@dataclass(frozen=True, slots=True)
class WriteRequest:
    key: RegionKey
    payload: bytes
    object_count: int
    expected_version: int | None
    epoch: int
    writer: str
    write_id: str
    history_versions: int


async def store(conn: AsyncConnection, req: WriteRequest, now: float) -> int:
    """Write a new version of the region (see module doc); returns the new version."""
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
    lease = await read_lease_row(conn, key, lock=True)
    current_epoch = int(lease.epoch) if lease is not None else 0
    if req.epoch != current_epoch:
        raise Fenced(key, req.epoch, current_epoch, lease.owner if lease is not None else None)
    if lease is not None and lease.expires_at > now and lease.owner != req.writer:
        raise RegionOwned(key, lease.owner, int(lease.epoch), float(lease.expires_at))
    cur = (
        await conn.execute(
            select(s.regions.c.version)
            .where(s.regions.c.region_key == key.morton)
            .with_for_update()
        )
    ).first()
    current = int(cur.version) if cur is not None else 0
    if req.expected_version is not None and req.expected_version != current:
        raise VersionConflict(key, req.expected_version, current)
    new = current + 1
    values = {
        "version": new,
        "epoch": req.epoch,
        "object_count": req.object_count,
        "payload": req.payload,
        "checksum": checksum(key.morton, new, req.payload),
        "write_id": req.write_id,
        "stored_by": req.writer,
        "stored_at": now,
    }
    if cur is None:
        await conn.execute(insert(s.regions).values(region_key=key.morton, **values))
    else:
        await conn.execute(
            update(s.regions).where(s.regions.c.region_key == key.morton).values(**values)
        )
    await conn.execute(insert(s.region_history).values(region_key=key.morton, **values))
    await conn.execute(
        delete(s.region_history).where(
            s.region_history.c.region_key == key.morton,
            s.region_history.c.version <= new - req.history_versions,
        )
    )
    return new

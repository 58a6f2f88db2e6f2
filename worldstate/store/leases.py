"""Region leases with fencing epochs. Runs inside a caller's transaction.

Rules: a region with no lease row, or whose lease has expired, can be acquired; acquiring
bumps the epoch (the fencing token) — except that the live holder re-acquiring is a renewal
and keeps it. A release keeps the row and its epoch but ends the lease at once, so the next
acquirer (even the same server) gets epoch + 1. Renewal succeeds only for the holder at its
epoch; anything else is `Fenced`.

Expiry times are seconds since the Unix epoch by the acquiring server's clock: servers are
assumed NTP-synchronised to well under a lease TTL. Fencing keeps a server with a fast or
slow clock from corrupting state: a takeover bumps the epoch, and every write of the old
owner is refused by the store whatever its clock says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from regions import RegionKey
from worldstate.errors import Fenced, RegionOwned
from worldstate.objects import Lease
from worldstate.store import schema as s
from worldstate.store.region_state import read_lease_row
from worldstate.store.retry import RetryTransaction

RELEASED = 0.0
"""``expires_at`` of a released lease: expired for everyone, and never renewed."""


@dataclass(frozen=True, slots=True)
class Grant:
    """A lease as the rules below see it, whatever its key space (regions or shards)."""

    owner: str
    epoch: int
    expires_at: float


async def _row(conn: AsyncConnection, table: Table, code: int) -> Any:
    pk = table.primary_key.columns.values()[0]
    return (await conn.execute(select(table).where(pk == code).with_for_update())).first()


async def acquire_code(
    conn: AsyncConnection, table: Table, code: int, owner: str, ttl: float, now: float, key: Any
) -> Grant:
    """`acquire` over any lease table keyed by one integer (``key`` names it in errors)."""
    pk = table.primary_key.columns.values()[0]
    row = await _row(conn, table, code)
    expires = now + ttl
    if row is None:
        ins = s.insert_for(conn.dialect.name, table).values(
            {pk.name: code, "owner": owner, "epoch": 1, "expires_at": expires, "acquired_at": now}
        )
        res = await conn.execute(ins.on_conflict_do_nothing(index_elements=[pk.name]).returning(pk))
        if res.first() is None:
            raise RetryTransaction("lease row created concurrently")
        return Grant(owner, 1, expires)
    if row.expires_at > now:
        if row.owner != owner:
            raise RegionOwned(key, row.owner, int(row.epoch), float(row.expires_at))
        expires = max(expires, float(row.expires_at))
        await conn.execute(update(table).where(pk == code).values(expires_at=expires))
        return Grant(owner, int(row.epoch), expires)
    epoch = int(row.epoch) + 1
    await conn.execute(
        update(table)
        .where(pk == code)
        .values(owner=owner, epoch=epoch, expires_at=expires, acquired_at=now)
    )
    return Grant(owner, epoch, expires)


async def renew_code(
    conn: AsyncConnection,
    table: Table,
    code: int,
    owner: str,
    epoch: int,
    ttl: float,
    now: float,
    key: Any,
) -> Grant:
    """`renew` over any lease table keyed by one integer."""
    pk = table.primary_key.columns.values()[0]
    row = await _row(conn, table, code)
    if row is None or row.owner != owner or int(row.epoch) != epoch or row.expires_at <= RELEASED:
        current = int(row.epoch) if row is not None else 0
        raise Fenced(key, epoch, current, row.owner if row is not None else None)
    expires = max(now + ttl, float(row.expires_at))
    await conn.execute(update(table).where(pk == code).values(expires_at=expires))
    return Grant(owner, epoch, expires)


async def release_code(
    conn: AsyncConnection, table: Table, code: int, owner: str, epoch: int
) -> bool:
    """`release` over any lease table keyed by one integer."""
    pk = table.primary_key.columns.values()[0]
    res = await conn.execute(
        update(table)
        .where(pk == code, table.c.owner == owner, table.c.epoch == epoch)
        .values(expires_at=RELEASED)
    )
    return bool(res.rowcount == 1)


async def get_code(conn: AsyncConnection, table: Table, code: int) -> Grant | None:
    pk = table.primary_key.columns.values()[0]
    r = (await conn.execute(select(table).where(pk == code))).first()
    return Grant(r.owner, int(r.epoch), float(r.expires_at)) if r is not None else None


def _lease(key: RegionKey, r: Any) -> Lease:
    return Lease(key, r.owner, int(r.epoch), float(r.expires_at))


async def acquire(
    conn: AsyncConnection, key: RegionKey, owner: str, ttl: float, now: float
) -> Lease:
    row = await read_lease_row(conn, key, lock=True)
    expires = now + ttl
    if row is None:
        ins = s.insert_for(conn.dialect.name, s.leases).values(
            region_key=key.morton, owner=owner, epoch=1, expires_at=expires, acquired_at=now
        )
        res = await conn.execute(
            ins.on_conflict_do_nothing(index_elements=["region_key"]).returning(
                s.leases.c.region_key
            )
        )
        if res.first() is None:
            raise RetryTransaction("lease row created concurrently")
        return Lease(key, owner, 1, expires)
    if row.expires_at > now:
        if row.owner != owner:
            raise RegionOwned(key, row.owner, int(row.epoch), float(row.expires_at))
        # never shorten a lease already granted (a delayed or retried renewal)
        expires = max(expires, float(row.expires_at))
        await conn.execute(
            update(s.leases).where(s.leases.c.region_key == key.morton).values(expires_at=expires)
        )
        return Lease(key, owner, int(row.epoch), expires)
    epoch = int(row.epoch) + 1
    await conn.execute(
        update(s.leases)
        .where(s.leases.c.region_key == key.morton)
        .values(owner=owner, epoch=epoch, expires_at=expires, acquired_at=now)
    )
    return Lease(key, owner, epoch, expires)


async def renew(
    conn: AsyncConnection, key: RegionKey, owner: str, epoch: int, ttl: float, now: float
) -> Lease:
    """Extend the holder's lease. The epoch is unchanged even if the lease had just expired,
    as long as nobody took the region over (no owner change happened). A released lease is
    not brought back (a renewal racing a release fails), and a renewal never moves the
    expiry backwards (one delayed behind a newer renewal keeps the later expiry)."""
    row = await read_lease_row(conn, key, lock=True)
    if row is None or row.owner != owner or int(row.epoch) != epoch or row.expires_at <= RELEASED:
        current = int(row.epoch) if row is not None else 0
        raise Fenced(key, epoch, current, row.owner if row is not None else None)
    expires = max(now + ttl, float(row.expires_at))
    await conn.execute(
        update(s.leases).where(s.leases.c.region_key == key.morton).values(expires_at=expires)
    )
    return Lease(key, owner, epoch, expires)


async def release(conn: AsyncConnection, key: RegionKey, owner: str, epoch: int) -> bool:
    res = await conn.execute(
        update(s.leases)
        .where(
            s.leases.c.region_key == key.morton,
            s.leases.c.owner == owner,
            s.leases.c.epoch == epoch,
        )
        .values(expires_at=RELEASED)
    )
    return bool(res.rowcount == 1)


async def get(conn: AsyncConnection, key: RegionKey) -> Lease | None:
    row = await read_lease_row(conn, key)
    return _lease(key, row) if row is not None else None


async def all_leases(conn: AsyncConnection, *, owner: str | None = None) -> list[Lease]:
    q = select(s.leases).order_by(s.leases.c.region_key)
    if owner is not None:
        q = q.where(s.leases.c.owner == owner)
    return [_lease(RegionKey.from_morton(r.region_key), r) for r in (await conn.execute(q)).all()]

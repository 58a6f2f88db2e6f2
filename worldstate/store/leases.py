"""Region leases with fencing epochs: the SQL side. Runs inside a caller's transaction.

The rules (who may acquire, renew, release; what the epoch becomes) are the pure functions
of `worldstate.store._lease_rules`: each function here reads the row, asks the rule and
writes what it decided.

Expiry times are seconds since the Unix epoch by the acquiring server's clock: servers are
assumed NTP-synchronised to well under a lease TTL. Fencing keeps a server with a fast or
slow clock from corrupting state: a takeover bumps the epoch, and every write of the old
owner is refused by the store whatever its clock says.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from regions import RegionKey
from worldstate.errors import WorldStateError
from worldstate.objects import Lease
from worldstate.store import _lease_rules as rules
from worldstate.store import schema as s
from worldstate.store._lease_rules import RELEASED
from worldstate.store.region_state import read_lease_row
from worldstate.store.retry import RetryTransaction

__all__ = ["RELEASED", "acquire", "all_leases", "get", "release", "renew"]


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
    """`acquire` over any lease table keyed by one integer (``key`` names it in errors),
    by the same rules (`_lease_rules`)."""
    pk = table.primary_key.columns.values()[0]
    row = await _row(conn, table, code)
    grant = rules.decide_acquire(key, rules.lease_row(row), owner, now, ttl)
    lease = grant.lease
    if grant.write == "insert":
        ins = s.insert_for(conn.dialect.name, table).values(
            {
                pk.name: code,
                "owner": owner,
                "epoch": lease.epoch,
                "expires_at": lease.expires_at,
                "acquired_at": now,
            }
        )
        res = await conn.execute(ins.on_conflict_do_nothing(index_elements=[pk.name]).returning(pk))
        if res.first() is None:
            raise RetryTransaction("lease row created concurrently")
    elif grant.write == "extend":
        await conn.execute(update(table).where(pk == code).values(expires_at=lease.expires_at))
    else:
        await conn.execute(
            update(table)
            .where(pk == code)
            .values(owner=owner, epoch=lease.epoch, expires_at=lease.expires_at, acquired_at=now)
        )
    return Grant(owner, lease.epoch, lease.expires_at)


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
    """`renew` over any lease table keyed by one integer, by the same rules."""
    pk = table.primary_key.columns.values()[0]
    row = await _row(conn, table, code)
    lease = rules.decide_renew(key, rules.lease_row(row), owner, epoch, now, ttl)
    await conn.execute(update(table).where(pk == code).values(expires_at=lease.expires_at))
    return Grant(owner, epoch, lease.expires_at)


async def locked_lease_rows(
    conn: AsyncConnection, table: Any, codes: Iterable[int]
) -> dict[int, Any]:
    """The lease rows of ``codes`` (region or shard leases), locked, in key order: code ->
    row (primary key, owner, epoch, expires_at). One statement."""
    pk = table.primary_key.columns.values()[0]
    return {
        int(r[0]): r
        for r in (
            await conn.execute(
                select(pk, table.c.owner, table.c.epoch, table.c.expires_at)
                .where(pk.in_(sorted(codes)))
                .order_by(pk)
                .with_for_update()
            )
        ).all()
    }


async def renew_codes(
    conn: AsyncConnection,
    table: Table,
    held: dict[int, tuple[int, Any]],
    owner: str,
    ttl: float,
    now: float,
) -> dict[int, Grant | Exception]:
    """`renew_code` for many leases of one owner in two statements (one locking read, one
    update), not a transaction each: ``held`` maps code -> (epoch held, key to report).
    Each lease is decided by the same rule; one that may not be renewed comes back as its
    `Fenced` error, the others are renewed."""
    if not held:
        return {}
    pk = table.primary_key.columns.values()[0]
    rows = await locked_lease_rows(conn, table, held)
    out: dict[int, Grant | Exception] = {}
    by_expiry: dict[float, list[int]] = {}
    for code in sorted(held):
        epoch, key = held[code]
        try:
            lease = rules.decide_renew(key, rules.lease_row(rows.get(code)), owner, epoch, now, ttl)
        except WorldStateError as e:  # the rule's refusal (Fenced): this lease alone
            out[code] = e
            continue
        out[code] = Grant(owner, epoch, lease.expires_at)
        by_expiry.setdefault(lease.expires_at, []).append(code)
    for expires_at, codes in by_expiry.items():
        await conn.execute(update(table).where(pk.in_(codes)).values(expires_at=expires_at))
    return out


async def release_code(
    conn: AsyncConnection, table: Table, code: int, owner: str, epoch: int
) -> bool:
    """`release` over any lease table keyed by one integer, by the same rules."""
    pk = table.primary_key.columns.values()[0]
    row = await _row(conn, table, code)
    if not rules.decide_release(rules.lease_row(row), owner, epoch):
        return False
    await conn.execute(update(table).where(pk == code).values(expires_at=RELEASED))
    return True


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
    grant = rules.decide_acquire(key, rules.lease_row(row), owner, now, ttl)
    lease = grant.lease
    where = s.leases.c.region_key == key.morton
    if grant.write == "insert":
        ins = s.insert_for(conn.dialect.name, s.leases).values(
            region_key=key.morton,
            owner=owner,
            epoch=lease.epoch,
            expires_at=lease.expires_at,
            acquired_at=now,
        )
        res = await conn.execute(
            ins.on_conflict_do_nothing(index_elements=["region_key"]).returning(
                s.leases.c.region_key
            )
        )
        if res.first() is None:
            raise RetryTransaction("lease row created concurrently")
    elif grant.write == "extend":
        await conn.execute(update(s.leases).where(where).values(expires_at=lease.expires_at))
    else:
        await conn.execute(
            update(s.leases)
            .where(where)
            .values(owner=owner, epoch=lease.epoch, expires_at=lease.expires_at, acquired_at=now)
        )
    return lease


async def renew(
    conn: AsyncConnection, key: RegionKey, owner: str, epoch: int, ttl: float, now: float
) -> Lease:
    """Extend the holder's lease (see `_lease_rules.decide_renew`): a released lease is not
    brought back, and a renewal never moves the expiry backwards."""
    row = await read_lease_row(conn, key, lock=True)
    lease = rules.decide_renew(key, rules.lease_row(row), owner, epoch, now, ttl)
    await conn.execute(
        update(s.leases)
        .where(s.leases.c.region_key == key.morton)
        .values(expires_at=lease.expires_at)
    )
    return lease


async def release(conn: AsyncConnection, key: RegionKey, owner: str, epoch: int) -> bool:
    row = await read_lease_row(conn, key, lock=True)
    if not rules.decide_release(rules.lease_row(row), owner, epoch):
        return False
    await conn.execute(
        update(s.leases).where(s.leases.c.region_key == key.morton).values(expires_at=RELEASED)
    )
    return True


async def get(conn: AsyncConnection, key: RegionKey) -> Lease | None:
    row = await read_lease_row(conn, key)
    return _lease(key, row) if row is not None else None


async def all_leases(conn: AsyncConnection, *, owner: str | None = None) -> list[Lease]:
    q = select(s.leases).order_by(s.leases.c.region_key)
    if owner is not None:
        q = q.where(s.leases.c.owner == owner)
    return [_lease(RegionKey.from_morton(r.region_key), r) for r in (await conn.execute(q)).all()]

"""The mesh's durable state: server heartbeats, the agreed membership, the coordinator's
election lease and region assignments. Each function runs inside a caller's transaction
(`Store.run`); none spans two tables, so concurrent servers and coordinators never form
read/write cycles that a SERIALIZABLE engine would have to abort.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import select, union, update
from sqlalchemy.ext.asyncio import AsyncConnection

from worldstate.store import schema as s
from worldstate.store.retry import RetryTransaction

MESH = "mesh"
"""The name of the one membership row and of the coordinator's lease."""


@dataclass(frozen=True, slots=True)
class MemberRow:
    """A server's heartbeat as the store last got it."""

    server_id: str
    incarnation: int
    state: str
    """``"up"`` while it runs, ``"left"`` after a clean close."""
    authoritative: bool
    started_at: float
    heartbeat_at: float
    generation: int
    """The membership generation the server knew when it wrote."""
    view: tuple[str, ...]
    load: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "server_id": self.server_id,
            "incarnation": self.incarnation,
            "state": self.state,
            "authoritative": self.authoritative,
            "started_at": self.started_at,
            "heartbeat_at": self.heartbeat_at,
            "generation": self.generation,
            "view": list(self.view),
            "load": dict(self.load),
        }


@dataclass(frozen=True, slots=True)
class AgreedMembership:
    """The membership the coordinator recorded: ``generation`` 0 means none yet."""

    generation: int
    members: frozenset[str]
    changed_at: float = 0.0
    changed_by: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "members": sorted(self.members),
            "changed_at": self.changed_at,
            "changed_by": self.changed_by,
        }


NO_MEMBERSHIP = AgreedMembership(0, frozenset())


@dataclass(frozen=True, slots=True)
class CoordinatorLease:
    owner: str
    epoch: int
    expires_at: float

    def live(self, now: float) -> bool:
        return self.expires_at > now


class MembershipChanged(Exception):
    """A conditional membership write found another generation (a rival coordinator)."""


# -- heartbeats ------------------------------------------------------------------------------


async def put_member(conn: AsyncConnection, row: MemberRow) -> None:
    values = {
        "incarnation": row.incarnation,
        "state": row.state,
        "authoritative": row.authoritative,
        "started_at": row.started_at,
        "heartbeat_at": row.heartbeat_at,
        "generation": row.generation,
        "view": orjson.dumps(list(row.view)).decode(),
        "load": orjson.dumps(dict(row.load)).decode(),
    }
    ins = s.insert_for(conn.dialect.name, s.members).values(server_id=row.server_id, **values)
    await conn.execute(ins.on_conflict_do_update(index_elements=["server_id"], set_=values))


async def mark_left(conn: AsyncConnection, server_id: str, incarnation: int, now: float) -> None:
    """A clean leave: only this incarnation's row (a restart under the same id wins)."""
    await conn.execute(
        update(s.members)
        .where(s.members.c.server_id == server_id, s.members.c.incarnation == incarnation)
        .values(state="left", authoritative=False, heartbeat_at=now)
    )


def _json(text: str, default: Any) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return default


async def member_rows(conn: AsyncConnection) -> list[MemberRow]:
    rows = (await conn.execute(select(s.members).order_by(s.members.c.server_id))).all()
    out = []
    for r in rows:
        view = _json(r.view, [])
        load = _json(r.load, {})
        out.append(
            MemberRow(
                r.server_id,
                int(r.incarnation),
                r.state,
                bool(r.authoritative),
                float(r.started_at),
                float(r.heartbeat_at),
                int(r.generation),
                tuple(v for v in view if isinstance(v, str)) if isinstance(view, list) else (),
                load if isinstance(load, dict) else {},
            )
        )
    return out


# -- agreed membership -----------------------------------------------------------------------


async def read_membership(conn: AsyncConnection) -> AgreedMembership:
    r = (await conn.execute(select(s.membership).where(s.membership.c.name == MESH))).first()
    if r is None:
        return NO_MEMBERSHIP
    members = _json(r.members, [])
    if not isinstance(members, list):
        members = []
    return AgreedMembership(
        int(r.generation),
        frozenset(m for m in members if isinstance(m, str)),
        float(r.changed_at),
        r.changed_by,
    )


async def write_membership(
    conn: AsyncConnection,
    expected_generation: int,
    members: Iterable[str],
    now: float,
    by: str,
) -> AgreedMembership:
    """Replace the membership if its generation is still ``expected_generation`` (else
    `MembershipChanged`); the new one has generation + 1."""
    current = await read_membership(conn)
    if current.generation != expected_generation:
        raise MembershipChanged(
            f"membership is at generation {current.generation}, not {expected_generation}"
        )
    new = AgreedMembership(expected_generation + 1, frozenset(members), now, by)
    text = orjson.dumps(sorted(new.members)).decode()
    if expected_generation == 0:
        ins = s.insert_for(conn.dialect.name, s.membership).values(
            name=MESH, generation=new.generation, members=text, changed_at=now, changed_by=by
        )
        res = await conn.execute(
            ins.on_conflict_do_nothing(index_elements=["name"]).returning(s.membership.c.name)
        )
        if res.first() is None:
            raise RetryTransaction("membership row created concurrently")
    else:
        await conn.execute(
            update(s.membership)
            .where(s.membership.c.name == MESH)
            .values(generation=new.generation, members=text, changed_at=now, changed_by=by)
        )
    return new


# -- the coordinator's election --------------------------------------------------------------


async def read_coordinator(conn: AsyncConnection) -> CoordinatorLease | None:
    r = (await conn.execute(select(s.coordinator).where(s.coordinator.c.name == MESH))).first()
    return None if r is None else CoordinatorLease(r.owner, int(r.epoch), float(r.expires_at))


async def claim_coordinator(
    conn: AsyncConnection, owner: str, ttl: float, now: float
) -> CoordinatorLease:
    """Take or extend the coordinator's lease. Returns the lease as it now stands: ours
    (extended, or taken over with epoch + 1 once the previous holder's expired), or the
    live lease of another coordinator (unchanged)."""
    q = select(s.coordinator).where(s.coordinator.c.name == MESH).with_for_update()
    r = (await conn.execute(q)).first()
    expires = now + ttl
    if r is None:
        ins = s.insert_for(conn.dialect.name, s.coordinator).values(
            name=MESH, owner=owner, epoch=1, expires_at=expires, acquired_at=now
        )
        res = await conn.execute(
            ins.on_conflict_do_nothing(index_elements=["name"]).returning(s.coordinator.c.name)
        )
        if res.first() is None:
            raise RetryTransaction("coordinator row created concurrently")
        return CoordinatorLease(owner, 1, expires)
    if r.owner == owner and r.expires_at > 0:
        # our own lease, live or lapsed but never taken over: the epoch stays
        await conn.execute(
            update(s.coordinator).where(s.coordinator.c.name == MESH).values(expires_at=expires)
        )
        return CoordinatorLease(owner, int(r.epoch), expires)
    if r.expires_at > now:
        return CoordinatorLease(r.owner, int(r.epoch), float(r.expires_at))
    epoch = int(r.epoch) + 1
    await conn.execute(
        update(s.coordinator)
        .where(s.coordinator.c.name == MESH)
        .values(owner=owner, epoch=epoch, expires_at=expires, acquired_at=now)
    )
    return CoordinatorLease(owner, epoch, expires)


async def release_coordinator(conn: AsyncConnection, owner: str, epoch: int) -> bool:
    """End our lease at once (the next claimant, even us, gets epoch + 1)."""
    res = await conn.execute(
        update(s.coordinator)
        .where(
            s.coordinator.c.name == MESH,
            s.coordinator.c.owner == owner,
            s.coordinator.c.epoch == epoch,
        )
        .values(expires_at=0.0)
    )
    return bool(res.rowcount == 1)


# -- regions the coordinator places ----------------------------------------------------------


async def put_assignment(
    conn: AsyncConnection, morton: int, server_id: str | None, now: float
) -> None:
    ins = s.insert_for(conn.dialect.name, s.assignments).values(
        region_key=morton, server_id=server_id, assigned_at=now
    )
    await conn.execute(
        ins.on_conflict_do_update(
            index_elements=["region_key"], set_={"server_id": server_id, "assigned_at": now}
        )
    )


async def assignments(conn: AsyncConnection) -> dict[int, str | None]:
    rows = (await conn.execute(select(s.assignments.c.region_key, s.assignments.c.server_id))).all()
    return {int(r.region_key): r.server_id for r in rows}


async def known_regions(conn: AsyncConnection) -> list[int]:
    """Morton codes of every region stored, leased or registered with the coordinator."""
    q = union(
        select(s.regions.c.region_key),
        select(s.leases.c.region_key),
        select(s.assignments.c.region_key),
    )
    return sorted(int(r[0]) for r in (await conn.execute(q)).all() if int(r[0]) >= 0)

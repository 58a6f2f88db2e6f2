"""The durable causal event log: the SQL of ``ws_events`` (with ``ws_outcomes`` for
idempotency). What a body holds is `worldstate.protocol._causal`'s business; here it is bytes.

One row per event, identified by ``(origin, seq)`` (a unique index): each origin's events
are numbered 1, 2, 3, … with no hole, because only the origin appends its own rows and a
seq is only taken by a committed append (`append_group` numbers the fresh ops inside the
transaction, from the ``first_seq`` the caller passes in, and the caller delivers them
locally only once the transaction committed). ``region_key`` is the region's Morton code,
`GLOBAL_REGION` (-1) for the world-wide stream. The primary key is ``(region_key, origin,
seq)``: like every spatial table the log is keyed by space, so a region's events are one
span (one range on CockroachDB).

Every function takes a connection inside a transaction run by `Store.run` (SERIALIZABLE,
retried on 40001): bodies only read and write through it and are safe to run again.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import LargeBinary, Row, Table, and_, bindparam, func, insert, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import TypeEngine, UserDefinedType

from regions import RegionKey
from worldstate.operations import Operation
from worldstate.store import schema as s
from worldstate.store.strong_commit import OpOutcome, _outcome_row, prior_outcomes

GLOBAL_REGION = -1
"""``ws_events.region_key`` of events outside any region (TransferCreature without a
position); Morton codes are never negative."""

ACCEPTED = "accepted"
"""``ws_outcomes.status`` of a causal op appended to the log."""


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One ``ws_events`` row."""

    origin: str
    seq: int
    region_key: int
    op_id: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Appended:
    """A fresh op written as the event ``seq`` with ``body``."""

    seq: int
    op: Operation
    key: RegionKey | None
    body: bytes


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What `append_group` did. ``recovered``: this origin's rows beyond ``first_seq - 1``
    that were already in the log (an earlier append whose commit was not acknowledged);
    ``appended``: the fresh ops, numbered after them; ``recorded``: op ids that already
    had an outcome (nothing written for them)."""

    recovered: list[LoggedEvent]
    appended: list[Appended]
    recorded: frozenset[str]


Morton = Callable[[RegionKey], int]

BodyEncoder = Callable[[int, Operation, RegionKey | None], bytes]
"""Builds the body of the event ``seq`` for an op in a region (None: world-wide)."""


def _row(r: Row[Any]) -> LoggedEvent:
    return LoggedEvent(r.origin, int(r.seq), int(r.region_key), r.op_id, bytes(r.body))


async def heads(conn: AsyncConnection) -> dict[str, int]:
    """The highest seq of every origin in the log (a scan of the primary key: start-up only)."""
    e = s.events
    rows = await conn.execute(
        select(e.c.origin, func.max(e.c.seq).label("top")).group_by(e.c.origin)
    )
    return {r.origin: int(r.top) for r in rows if r.top}


MESH_KEY_NAME = "causal_mesh_key"


async def mesh_key(conn: AsyncConnection) -> bytes:
    """The world's mesh key (``ws_meta``), created by the first server that asks: every
    server reads it from the store, the one channel it already trusts (the eventual path
    keys its messages with it; the causal path relies on the signing bus alone)."""
    m = s.meta
    ins = s.insert_for(conn.dialect.name, m).values(name=MESH_KEY_NAME, value=secrets.token_hex(32))
    await conn.execute(ins.on_conflict_do_nothing(index_elements=["name"]))
    value = (await conn.execute(select(m.c.value).where(m.c.name == MESH_KEY_NAME))).scalar_one()
    return bytes.fromhex(value)


async def read_after(
    conn: AsyncConnection, origin: str, after: int, *, limit: int | None = None
) -> list[LoggedEvent]:
    """``origin``'s events with seq > ``after``, in seq order."""
    e = s.events
    q = select(e).where(e.c.origin == origin, e.c.seq > after).order_by(e.c.seq)
    if limit is not None:
        q = q.limit(limit)
    return [_row(r) for r in await conn.execute(q)]


async def read_ranges(
    conn: AsyncConnection, ranges: Sequence[tuple[str, int, int]], *, limit: int
) -> list[LoggedEvent]:
    """The events in the inclusive seq ranges ``(origin, first, last)``, at most ``limit``,
    by origin then seq (one statement: a union of primary-key range scans)."""
    if not ranges:
        return []
    e = s.events
    cond = or_(*(and_(e.c.origin == o, e.c.seq.between(lo, hi)) for o, lo, hi in ranges))
    q = select(e).where(cond).order_by(e.c.origin, e.c.seq).limit(limit)
    return [_row(r) for r in await conn.execute(q)]


async def append_group(
    conn: AsyncConnection,
    *,
    origin: str,
    entries: Sequence[tuple[Operation, RegionKey | None]],
    first_seq: int,
    encode: BodyEncoder,
    recover: bool,
    now: float,
    morton: Morton | None = None,
) -> AppendResult:
    """Append the ops of ``entries`` (in order) as ``origin``'s events ``first_seq``, … and
    record each op's outcome (``accepted``), in the caller's transaction.

    An op whose op_id already has an outcome (resubmitted, or twice in ``entries``) gets no
    event. ``recover``: first read ``origin``'s rows from ``first_seq`` on — after an append
    that failed, its commit may have happened all the same — and number after them.
    ``morton``: how to get a region's Morton code (a caching one, say).

    PostgreSQL and CockroachDB: the transaction only writes. The outcomes go in first with
    ``ON CONFLICT DO NOTHING RETURNING op_id`` — the ops it returns are the fresh ones —
    and both tables are filled from arrays (``INSERT … SELECT FROM unnest(…)``), one
    statement each. Reading the outcomes first instead would put serializable read locks
    on ``ws_outcomes`` that every other server's append then collides with (40001): three
    servers appending at once retried most of their transactions that way. A concurrent
    insert of the same op_id elsewhere is still caught: it waits for ours and fails with
    40001, and its retry finds our row. SQLite serialises writers, so there the outcomes
    are simply read first (`prior_outcomes`)."""
    recovered: list[LoggedEvent] = []
    if recover:
        recovered = await read_after(conn, origin, first_seq - 1)
        if recovered:
            first_seq = recovered[-1].seq + 1
    unique: dict[str, tuple[Operation, RegionKey | None, int | None]] = {}
    for op, key in entries:
        oid = str(op.op_id)
        if oid not in unique:
            code = None if key is None else morton(key) if morton is not None else key.morton
            unique[oid] = (op, key, code)
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        prior = await prior_outcomes(conn, list(unique))
        fresh = [oid for oid in unique if oid not in prior]
    else:
        # only the columns that vary go as arrays; the group's status, server and time are
        # one value each (and the unset ones default to NULL): a third of the values to send
        params = {
            "op_id": list(unique),
            "op_type": [type(op).__name__ for op, _, _ in unique.values()],
            "region_key": [code for _, _, code in unique.values()],
            "status": ACCEPTED,
            "server_id": origin,
            "at": now,
        }
        inserted = set((await conn.execute(_accepted_insert(), params)).scalars())
        fresh = [oid for oid in unique if oid in inserted]
    appended: list[Appended] = []
    seq = first_seq
    for oid in fresh:
        op, key, _ = unique[oid]
        appended.append(Appended(seq, op, key, encode(seq, op, key)))
        seq += 1
    if appended:
        codes = [unique[oid][2] for oid in fresh]
        regions = [GLOBAL_REGION if c is None else c for c in codes]
        if sqlite:
            fresh_ids = set(fresh)
            outcomes: list[dict[str, object]] = []
            for oid, (op, _, code) in unique.items():
                if oid in fresh_ids:
                    row = _outcome_row(op, OpOutcome(oid, False), None, now)
                    row["status"] = ACCEPTED
                    row["region_key"] = code
                    outcomes.append(row)
            await conn.execute(insert(s.outcomes), outcomes)
            events = [
                {
                    "origin": origin,
                    "seq": a.seq,
                    "region_key": r,
                    "op_id": oid,
                    "body": a.body,
                    "at": now,
                }
                for a, r, oid in zip(appended, regions, fresh, strict=True)
            ]
            await conn.execute(insert(s.events), events)
        else:
            columns = {
                "seq": list(range(first_seq, seq)),
                "region_key": regions,
                "op_id": fresh,
                "body": [a.body for a in appended],
            }
            await conn.execute(_events_insert(), {**columns, "origin": origin, "at": now})
    return AppendResult(recovered, appended, frozenset(unique.keys() - set(fresh)))


class _Bytea(UserDefinedType[bytes]):
    """``BYTEA`` without `LargeBinary`'s bind processor, for array elements: the driver
    takes `bytes` as they are, and wrapping each of a group's bodies in ``psycopg.Binary``
    first only costs a Python call per element."""

    cache_ok = True

    def get_col_spec(self, **_kw: Any) -> str:
        return "BYTEA"


def _array_item(t: TypeEngine[Any]) -> TypeEngine[Any]:
    return _Bytea() if isinstance(t, LargeBinary) else t


def _unnest_with_constants(
    table: Table, arrays: tuple[str, ...], constants: tuple[str, ...]
) -> Any:
    """``INSERT INTO table (arrays…, constants…) SELECT u.*, :c… FROM unnest(:a…) u``: one
    array parameter per varying column, one scalar per column that is the same on every
    row (PostgreSQL, CockroachDB)."""
    params = [bindparam(c, type_=postgresql.ARRAY(_array_item(table.c[c].type))) for c in arrays]
    rows = func.unnest(*params).table_valued(*arrays).render_derived()
    scalars = [bindparam(c, type_=table.c[c].type) for c in constants]
    return postgresql.insert(table).from_select(
        arrays + constants, select(*(rows.c[c] for c in arrays), *scalars)
    )


@functools.cache
def _accepted_insert() -> Any:
    """The ``accepted`` outcomes of one group (`append_group`), returning the fresh op ids."""
    stmt = _unnest_with_constants(
        s.outcomes, ("op_id", "op_type", "region_key"), ("status", "server_id", "at")
    )
    return stmt.on_conflict_do_nothing(index_elements=["op_id"]).returning(s.outcomes.c.op_id)


@functools.cache
def _events_insert() -> Any:
    """The rows of one group (`append_group`): one origin, one time."""
    return _unnest_with_constants(
        s.events, ("seq", "region_key", "op_id", "body"), ("origin", "at")
    )


__all__ = [
    "ACCEPTED",
    "GLOBAL_REGION",
    "AppendResult",
    "Appended",
    "BodyEncoder",
    "LoggedEvent",
    "append_group",
    "heads",
    "mesh_key",
    "read_after",
    "read_ranges",
]

"""Placed-object rows (``ws_objects``): their checksum, and reading them back verified.

A row's checksum covers every column but itself (region key, id, kind, box, data, the op
that placed it), so a row edited behind worldstate's back — or damaged — is detected on
read. A row that fails is left out of the region's state (never served), reported in the
log and recorded as an incident (``kind = "tampered-object"``) by the loader; the owner that
still holds a good copy in memory writes it back (`rewrite`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from worldstate.store import schema as s

Box6 = tuple[float, float, float, float, float, float]


def row_checksum(
    region_key: int, object_id: str, kind: str, box: Sequence[float], data: str, op_id: str
) -> bytes:
    body = orjson.dumps([region_key, object_id, kind, [float(v) for v in box], data, op_id])
    return hashlib.blake2b(body, digest_size=16, person=b"ws-object-row").digest()


def row_values(
    region_key: int, object_id: str, kind: str, box: Sequence[float], data: str, op_id: str
) -> dict[str, Any]:
    """The column values of one object row, checksum included."""
    return {
        "region_key": region_key,
        "object_id": object_id,
        "kind": kind,
        "lox": box[0],
        "loy": box[1],
        "loz": box[2],
        "hix": box[3],
        "hiy": box[4],
        "hiz": box[5],
        "data": data,
        "op_id": op_id,
        "checksum": row_checksum(region_key, object_id, kind, box, data, op_id),
    }


class ObjectRow(NamedTuple):
    """One placed-object row as the owner keeps it in memory. A named tuple of str and
    floats: the garbage collector stops tracking it, so an owner holding a million placed
    structures adds nothing to each full collection's work."""

    object_id: str
    kind: str
    box: Box6
    data: str
    op_id: str


def _verified(region_key: int, r: Any) -> ObjectRow | None:
    box: Box6 = (
        float(r.lox),
        float(r.loy),
        float(r.loz),
        float(r.hix),
        float(r.hiy),
        float(r.hiz),
    )
    want = row_checksum(region_key, r.object_id, r.kind, box, r.data, r.op_id)
    if r.checksum is None or bytes(r.checksum) != want:
        return None
    return ObjectRow(r.object_id, r.kind, box, r.data, r.op_id)


async def read_rows(conn: AsyncConnection, region_key: int) -> tuple[list[ObjectRow], list[str]]:
    """The region's object rows in id order, verified: ``(good rows, ids that fail)``."""
    o = s.objects
    rows = (
        await conn.execute(select(o).where(o.c.region_key == region_key).order_by(o.c.object_id))
    ).all()
    good: list[ObjectRow] = []
    bad: list[str] = []
    for r in rows:
        v = _verified(region_key, r)
        if v is None:
            bad.append(str(r.object_id))
        else:
            good.append(v)
    return good, bad


async def rewrite(conn: AsyncConnection, region_key: int, row: ObjectRow) -> None:
    """Write a good copy of a row back (repairing a tampered one)."""
    o = s.objects
    values = row_values(region_key, row.object_id, row.kind, row.box, row.data, row.op_id)
    await conn.execute(
        update(o)
        .where(o.c.region_key == region_key, o.c.object_id == row.object_id)
        .values(**{k: v for k, v in values.items() if k not in ("region_key", "object_id")})
    )

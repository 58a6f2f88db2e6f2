"""Restore: put the world back exactly as a checkpoint holds it, in ONE transaction.

- Refused while any live lease exists on a region it would change (`RestoreRefused`),
  unless ``force``: servers holding old state must be stopped first, or fenced.
- Every world table (`WORLD_TABLES`) in the checkpoint's scope is emptied and refilled with
  the checkpoint's rows — a per-region or per-inventory checkpoint (an imported partial
  export) touches only its regions' or inventories' rows.
- Every region involved gets a NEW version (above both its current one and the
  checkpoint's: caches keep the newest version, so an older number would be shadowed) and
  its lease epoch goes up by one with the lease released: a server still holding the old
  lease is fenced — its next strong write or renewal is refused (`Fenced`) — and the next
  owner acquires at a higher epoch still. Regions that exist now but not in the checkpoint
  become empty (at a new version, for the same reason).
- An incident record says who restored which checkpoint when (``inspect incidents``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from regions import RegionKey
from worldstate._codec import CodecError, checksum, decode_columns
from worldstate.errors import ExportFormatError, RestoreRefused
from worldstate.history._checkpoint import (
    PRUNED_META,
    Checkpoint,
    ProgressFn,
    chunk_numbers,
    default_actor,
    get_checkpoint,
    read_chunk,
)
from worldstate.history._tables import WORLD_TABLES, columns_of, target_layout
from worldstate.store import Store
from worldstate.store import schema as s
from worldstate.store.leases import RELEASED
from worldstate.store.region_state import EMPTY_PAYLOAD

WORLD_INCIDENT_KEY = -1
"""``ws_incidents.region_key`` of an incident about the whole world (Morton codes are >= 0)."""

INSERT_BATCH = 2000


@dataclass(frozen=True, slots=True)
class RestoreReport:
    checkpoint: Checkpoint
    regions: int
    """Regions whose state and epoch changed."""
    rows: int
    """Rows written into world tables."""
    fenced: list[tuple[str, str, int]]
    """Live leases that were fenced (``force``): (region, owner, old epoch)."""
    incident_id: str
    at: float
    by: str


async def restore_checkpoint(
    store: Store,
    ref: str,
    *,
    force: bool = False,
    by: str | None = None,
    progress: ProgressFn | None = None,
) -> RestoreReport:
    """Restore the complete checkpoint ``ref`` (id or name) into ``store`` (module docs)."""
    cp = await get_checkpoint(store, ref)
    actor = by or default_actor()
    scope = cp.scope

    async def body(conn: AsyncConnection) -> RestoreReport:
        now = store.clock()
        le, r = s.leases, s.regions
        in_scope = scope.where(le) if scope is not None and scope.regions else None
        q = select(le)
        if in_scope is not None:
            q = q.where(in_scope)
        lease_rows = (await conn.execute(q)).all()
        live = [x for x in lease_rows if float(x.expires_at) > now]
        if live and not force:
            raise RestoreRefused(
                [
                    (str(RegionKey.from_morton(x.region_key)), x.owner, float(x.expires_at))
                    for x in live
                ]
            )
        epochs = {int(x.region_key): int(x.epoch) for x in lease_rows}
        versions: dict[int, int] = {}
        if scope is None or scope.regions:
            rq = select(r.c.region_key, r.c.version)
            if scope is not None:
                rq = rq.where(scope.where(r))
            versions = {int(x.region_key): int(x.version) for x in (await conn.execute(rq)).all()}

        for table in WORLD_TABLES:
            if scope is None:
                await conn.execute(delete(table))
            elif (cond := scope.where(table)) is not None:
                await conn.execute(delete(table).where(cond))

        restored: set[int] = set()
        written = 0
        hist_cols = set(columns_of(s.region_history))
        for table in WORLD_TABLES:
            cols = cp.tables.get(table.name)
            if cols is None:
                continue
            _, layout = target_layout(table.name, cols)
            for no in await chunk_numbers(conn, cp.id, table.name):
                batch: list[dict[str, Any]] = []
                hist: list[dict[str, Any]] = []
                for values in await read_chunk(conn, cp.id, table.name, no):
                    row = layout.decode(values)
                    if table is s.regions:
                        rk = int(row["region_key"])
                        restored.add(rk)
                        _restamp(row, rk, versions, epochs, cp, now)
                        hist.append({k: v for k, v in row.items() if k in hist_cols})
                    batch.append(row)
                for i in range(0, len(batch), INSERT_BATCH):
                    await conn.execute(insert(table), batch[i : i + INSERT_BATCH])
                if hist:
                    await conn.execute(insert(s.region_history), hist)
                written += len(batch)
                if progress is not None:
                    progress(table.name, written)

        # regions that exist now but not in the checkpoint: empty, at a new version
        emptied = [rk for rk in versions if rk not in restored]
        if emptied:
            rows = []
            for rk in emptied:
                row = {"region_key": rk, "object_count": 0, "payload": EMPTY_PAYLOAD}
                _restamp(row, rk, versions, epochs, cp, now)
                rows.append(row)
            await conn.execute(insert(s.regions), rows)
            await conn.execute(
                insert(s.region_history),
                [{k: v for k, v in x.items() if k in hist_cols} for x in rows],
            )

        # fence every owner: epoch + 1, lease released
        touched = restored | set(versions) | set(epochs)
        if scope is not None and scope.regions:
            touched &= set(scope.regions)
        elif scope is not None:
            touched = set()
        if touched:
            await conn.execute(delete(le).where(le.c.region_key.in_(sorted(touched))))
            await conn.execute(
                insert(le),
                [
                    {
                        "region_key": rk,
                        "owner": "restore",
                        "epoch": epochs.get(rk, 0) + 1,
                        "expires_at": RELEASED,
                        "acquired_at": now,
                    }
                    for rk in sorted(touched)
                ],
            )

        if scope is None:
            m = s.meta
            await conn.execute(delete(m).where(m.c.name == PRUNED_META))
            pruned = cp.meta.get(PRUNED_META)
            if pruned is not None:
                await conn.execute(
                    insert(m).values(name=PRUNED_META, value=orjson.dumps(pruned).decode())
                )

        fenced = [(str(RegionKey.from_morton(x.region_key)), x.owner, int(x.epoch)) for x in live]
        what = "the whole world" if scope is None else f"scope {scope.to_json()}"
        detail = (
            f"checkpoint {cp.name!r} ({cp.id}, taken {cp.created_at:.3f}) restored by {actor} "
            f"over {what}: {len(touched)} regions at new versions and epochs, {written} rows"
            + (f"; forced: fenced {len(fenced)} live leases" if fenced else "")
        )
        incident_id = str(uuid.uuid4())
        await conn.execute(
            insert(s.incidents).values(
                incident_id=incident_id,
                region_key=WORLD_INCIDENT_KEY,
                kind="restored",
                detail=detail,
                at=now,
            )
        )
        return RestoreReport(cp, len(touched), written, fenced, incident_id, now, actor)

    return await store.run(body, f"restore checkpoint {cp.name}")


def _restamp(
    row: dict[str, Any],
    rk: int,
    versions: dict[int, int],
    epochs: dict[int, int],
    cp: Checkpoint,
    now: float,
) -> None:
    """A region row as restored: a version above the current and the checkpoint's, the
    next epoch, a fresh write id and checksum."""
    version = max(versions.get(rk, 0), int(row.get("version", 0))) + 1
    payload = bytes(row["payload"])
    # the snapshot as the checkpoint copied it: its own checksum must still hold
    if (
        "checksum" in row
        and "payload_version" in row
        and checksum(rk, int(row["payload_version"]), payload) != bytes(row["checksum"])
    ):
        raise ExportFormatError(
            f"region {RegionKey.from_morton(rk)}: the snapshot in checkpoint {cp.name!r} "
            "fails its checksum (corrupt); nothing was restored"
        )
    try:
        decode_columns(payload)
    except CodecError as e:
        raise ExportFormatError(
            f"region {RegionKey.from_morton(rk)}: the snapshot in checkpoint {cp.name!r} does "
            f"not decode ({e}); nothing was restored"
        ) from None
    row.update(
        version=version,
        payload_version=version,
        epoch=epochs.get(rk, 0) + 1,
        checksum=checksum(rk, version, payload),
        write_id=str(uuid.uuid4()),
        stored_by=f"restore:{cp.name}"[:200],
        stored_at=now,
    )


__all__ = ["WORLD_INCIDENT_KEY", "RestoreReport", "restore_checkpoint"]

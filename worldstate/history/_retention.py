"""Retention of the causal log: pruning old events without losing what checkpoints and
resumable streams need.

`Config.event_retention` (seconds) and `Config.event_retention_count` (events kept per
origin) bound the log; `prune_events` deletes, per origin, the events beyond either bound —
but never an event that the OLDEST checkpoint does not hold itself: a checkpoint copies the
log up to its heads, and replaying forward from it needs every event after them, so per
origin nothing above ``min(heads of the oldest checkpoint)`` is removed. Each prune raises
the watermark (``ws_meta`` ``events_pruned``: per-origin seq, and the time cut): a resume
from a cursor or time before it fails with `CursorExpired`, saying to resync from a
checkpoint or a region load, instead of silently skipping what was pruned.

Pruning is idempotent and runs on every server that has a retention set (a supervised
loop, every ``Config.event_prune_interval`` s); two servers pruning at once serialise on
the watermark row (SQLSTATE 40001, retried).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from worldstate.errors import ValidationError
from worldstate.history._events import PRUNED_META, Watermark, watermark
from worldstate.store import Store
from worldstate.store import schema as s


@dataclass(frozen=True, slots=True)
class PruneReport:
    deleted: int
    watermark: Watermark


async def prune_events(
    store: Store,
    *,
    retention: float | None = None,
    keep_per_origin: int | None = None,
) -> PruneReport:
    """Delete causal events older than ``retention`` seconds and/or beyond the newest
    ``keep_per_origin`` of each origin (module docstring); one transaction."""
    if retention is not None and not (
        isinstance(retention, (int, float)) and not isinstance(retention, bool) and retention > 0
    ):
        raise ValidationError(f"retention must be seconds > 0, got {retention!r}")
    if keep_per_origin is not None and (
        isinstance(keep_per_origin, bool)
        or not isinstance(keep_per_origin, int)
        or keep_per_origin < 1
    ):
        raise ValidationError(f"keep_per_origin must be an int >= 1, got {keep_per_origin!r}")
    now = store.clock()

    async def body(conn: AsyncConnection) -> PruneReport:
        e, cp = s.events, s.checkpoints
        mark = await watermark(conn)
        heads = {
            str(o): int(q)
            for o, q in await conn.execute(
                select(e.c.origin, func.max(e.c.seq)).group_by(e.c.origin)
            )
        }
        target: dict[str, int] = {}
        if keep_per_origin is not None:
            for o, q in heads.items():
                if q - keep_per_origin > 0:
                    target[o] = q - keep_per_origin
        if retention is not None:
            cut = now - retention
            rows = await conn.execute(
                select(e.c.origin, func.max(e.c.seq)).where(e.c.at < cut).group_by(e.c.origin)
            )
            for o, q in rows:
                target[str(o)] = max(target.get(str(o), 0), int(q))
        oldest = (
            await conn.execute(
                select(cp.c.heads)
                .where(cp.c.status == "complete")
                .order_by(cp.c.created_at)
                .limit(1)
            )
        ).scalar()
        if oldest is not None:
            keep = orjson.loads(oldest)
            target = {o: min(q, int(keep.get(o, 0))) for o, q in target.items()}
        deleted = 0
        newest_gone = mark.before
        seqs = dict(mark.seqs)
        for o, q in sorted(target.items()):
            if q <= seqs.get(o, 0):
                continue
            gone = and_(e.c.origin == o, e.c.seq <= q)
            last_at = (await conn.execute(select(func.max(e.c.at)).where(gone))).scalar()
            if last_at is not None:
                newest_gone = max(newest_gone, float(last_at))
            res = await conn.execute(delete(e).where(gone))
            deleted += int(res.rowcount or 0)
            seqs[o] = q
        if not deleted and seqs == dict(mark.seqs):
            return PruneReport(0, mark)
        new = Watermark(seqs, newest_gone)
        value = orjson.dumps(new.to_json()).decode()
        m = s.meta
        have = (await conn.execute(select(m.c.name).where(m.c.name == PRUNED_META))).first()
        if have is None:
            await conn.execute(insert(m).values(name=PRUNED_META, value=value))
        else:
            await conn.execute(update(m).where(m.c.name == PRUNED_META).values(value=value))
        return PruneReport(deleted, new)

    return await store.run(body, "prune the causal log")


__all__ = ["PruneReport", "prune_events"]

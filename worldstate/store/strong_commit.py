"""The strong commit: one SERIALIZABLE transaction per batch of a region's operations.

In order: outcomes already recorded for these op ids are returned as they are (an op is
never applied twice, whether resubmitted or retried after an ambiguous commit); the fencing
epoch is checked; the committed state the batch could conflict with is read (overlapping
structures across all regions, resource remainders, picked items); `conflicts.resolve`
chooses the winners deterministically; winners are written, the region version goes up
once, and every op's outcome and every conflict decision is recorded. If the transaction
must be retried (40001), all of this runs again against fresh state.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import orjson
from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

import conflicts as cf
from regions import REGION_SIZE, RegionKey, keys_in_box
from worldstate.operations import (
    ChangeInventory,
    ClaimResource,
    ModifyTerrain,
    Operation,
    PickUpItem,
    PlaceStructure,
    TransferItems,
)
from worldstate.store import _lease_rules as lease_rules
from worldstate.store import schema as s
from worldstate.store.object_rows import row_values
from worldstate.store.region_state import bump_versions


def structure_data(o: PlaceStructure) -> str:
    """The ``data`` column of a placed structure (its owner kept among the data)."""
    return orjson.dumps({**o.data, "owner": o.owner} if o.owner else dict(o.data)).decode()


class OpOutcome(NamedTuple):
    """The decided outcome of one strong op. A named tuple of atomic values, so the
    owner's memory of recent outcomes (`worldstate.strong._outcomes.OutcomeMemory`, up to
    200,000) is not tracked by the garbage collector and does not lengthen its pauses."""

    op_id: str
    committed: bool
    version: int | None = None
    reason: str | None = None
    winner_op_id: str | None = None


async def prior_outcomes(conn: AsyncConnection, op_ids: Sequence[str]) -> dict[str, OpOutcome]:
    if not op_ids:
        return {}
    o = s.outcomes
    rows = (await conn.execute(select(o).where(o.c.op_id.in_(list(op_ids))))).all()
    return {
        r.op_id: OpOutcome(r.op_id, r.status == "committed", r.version, r.reason, r.winner_op_id)
        for r in rows
    }


CONFLICT_DECISIONS: dict[tuple[str, str, str], int] = {}
"""Conflict decisions recorded by this process: (writer server id, conflict type, rule) →
count. Read by `worldstate.metrics`; a counter, never reset. (Counted at the decision; a
transaction retried after it may count one decision twice.)"""


def candidate(op: Operation) -> cf.Candidate:
    """The conflict candidate of a strong spatial op. The op passed entry validation (the
    same id and magnitude rules), so a plain placement is built as prepared; the server id
    and HLC it was stamped with are checked (they come from this server, or from a forwarded
    op's checked sender)."""
    oid, sid, hlc, pri = str(op.op_id), op.server_id, op.hlc, op.priority
    if isinstance(op, PlaceStructure):
        trusted = type(op) is PlaceStructure and type(hlc) is int and 0 <= hlc < 1 << 63
        make = cf.StructurePlacement.prepared if trusted else cf.StructurePlacement
        return make(
            op_id=oid,
            server_id=sid,
            hlc=hlc,
            priority=pri,
            structure_id=op.structure_id,
            lo=op.lo,
            hi=op.hi,
        )
    if isinstance(op, ClaimResource):
        return cf.ResourceClaim(
            op_id=oid,
            server_id=sid,
            hlc=hlc,
            priority=pri,
            resource_id=op.resource_id,
            amount=op.amount,
        )
    if isinstance(op, PickUpItem):
        return cf.ItemPickup(op_id=oid, server_id=sid, hlc=hlc, priority=pri, item_id=op.item_id)
    if isinstance(op, ModifyTerrain):
        return cf.TerrainEdit(
            op_id=oid,
            server_id=sid,
            hlc=hlc,
            priority=pri,
            center=op.center,
            radius=op.radius,
            delta=op.delta,
        )
    raise TypeError(f"{type(op).__name__} is not a spatial strong operation")


async def _committed_state(
    conn: AsyncConnection, ops: Sequence[Operation], region_size: float
) -> cf.CommittedState:
    structures = [o for o in ops if isinstance(o, PlaceStructure)]
    claims = [o for o in ops if isinstance(o, ClaimResource)]
    pickups = [o for o in ops if isinstance(o, PickUpItem)]
    existing: dict[str, tuple[float, ...]] = {}
    if structures:
        t = s.objects
        lo = [min(o.lo[i] for o in structures) for i in range(3)]
        hi = [max(o.hi[i] for o in structures) for i in range(3)]
        cols = (t.c.object_id, t.c.lox, t.c.loy, t.c.loz, t.c.hix, t.c.hiy, t.c.hiz)
        # a structure is at most one region wide (checked at submit), so any structure that
        # overlaps the batch is centred within half a region of the batch's bounding box:
        # the read names those regions' keys and stays on the region index (narrow
        # predicate locks on PostgreSQL, narrow spans on CockroachDB)
        half = region_size / 2
        keys = keys_in_box(
            [c - half for c in lo], [c + half for c in hi], region_size, max_keys=4096
        )
        # one box predicate per candidate, so only structures that really overlap come back;
        # the text is generated (placeholders only, every value a bound parameter) because
        # building hundreds of expression objects per batch costs more than the query
        clauses = []
        params: dict[str, object] = {}
        for i, o in enumerate(structures):
            clauses.append(
                f"(lox < :hx{i} AND hix > :lx{i} AND loy < :hy{i} AND hiy > :ly{i}"
                f" AND loz < :hz{i} AND hiz > :lz{i})"
            )
            params.update(
                {
                    f"lx{i}": o.lo[0],
                    f"ly{i}": o.lo[1],
                    f"lz{i}": o.lo[2],
                    f"hx{i}": o.hi[0],
                    f"hy{i}": o.hi[1],
                    f"hz{i}": o.hi[2],
                }
            )
        params["keys"] = [k.morton for k in keys]
        query = text(
            "SELECT object_id, lox, loy, loz, hix, hiy, hiz FROM ws_objects"  # noqa: S608
            " WHERE region_key IN :keys AND (" + " OR ".join(clauses) + ")"
        ).bindparams(bindparam("keys", expanding=True))
        for r in (await conn.execute(query, params)).all():
            existing[r[0]] = tuple(r[1:7])
        ids = sorted({o.structure_id for o in structures} - existing.keys())
        if ids:
            for r in (await conn.execute(select(*cols).where(t.c.object_id.in_(ids)))).all():
                existing[r[0]] = tuple(r[1:7])
    remaining: dict[str, float] = {}
    if claims:
        r_t = s.resources
        ids = sorted({o.resource_id for o in claims})
        rows = await conn.execute(
            select(r_t.c.resource_id, r_t.c.remaining).where(r_t.c.resource_id.in_(ids))
        )
        remaining = {r.resource_id: float(r.remaining) for r in rows}
    picked: list[str] = []
    if pickups:
        i_t = s.items
        ids = sorted({o.item_id for o in pickups})
        picked = [
            r.item_id
            for r in await conn.execute(select(i_t.c.item_id).where(i_t.c.item_id.in_(ids)))
        ]
    return cf.CommittedState(structures=existing or None, resources=remaining, picked_items=picked)


@dataclass(frozen=True, slots=True)
class RegionBatch:
    """Ops of one region to commit, under the writer's lease ``epoch`` (None: the writer
    owns no lease; then no other server may hold a live one)."""

    key: RegionKey
    ops: Sequence[Operation]
    epoch: int | None


async def commit_region_batch(
    conn: AsyncConnection,
    key: RegionKey,
    ops: Sequence[Operation],
    *,
    epoch: int | None,
    writer: str,
    policy: cf.Policy,
    now: float,
    region_size: float = REGION_SIZE,
) -> list[OpOutcome]:
    """Commit a batch of spatial strong ops of one region; outcomes in the order of ``ops``.
    See `commit_batches`."""
    out = await commit_batches(
        conn,
        [RegionBatch(key, ops, epoch)],
        writer=writer,
        policy=policy,
        now=now,
        region_size=region_size,
    )
    return [out[str(o.op_id)] for o in ops]


async def commit_batches(
    conn: AsyncConnection,
    batches: Sequence[RegionBatch],
    *,
    writer: str,
    policy: cf.Policy,
    now: float,
    region_size: float = REGION_SIZE,
) -> dict[str, OpOutcome]:
    """Commit the batches of several regions in this one transaction; outcome per op id.

    A stale epoch or another live owner in any region raises `Fenced` / `RegionOwned`
    (``.key`` names the region) and the transaction must roll back: the caller drops that
    region's batch and runs the rest again. All candidates are resolved together, so
    conflicts across regions of the transaction are decided too. About ten statements,
    whatever the number of regions and ops."""
    all_ops = [o for b in batches for o in b.ops]
    prior = await prior_outcomes(conn, [str(o.op_id) for o in all_ops])
    region_of_op: dict[str, RegionKey] = {}
    fresh: list[Operation] = []
    for b in batches:
        for o in b.ops:  # the same op twice: the first counts
            oid = str(o.op_id)
            if oid not in prior and oid not in region_of_op:
                region_of_op[oid] = b.key
                fresh.append(o)
    out: dict[str, OpOutcome] = dict(prior)
    if not fresh:
        return out
    epochs = await _check_fences(conn, batches, writer, now)
    state = await _committed_state(conn, fresh, region_size)
    resolution = cf.resolve([candidate(o) for o in fresh], policy=policy, committed=state)
    winners = {c.op_id for c in resolution.winners}
    won = [o for o in fresh if str(o.op_id) in winners]
    versions: dict[RegionKey, int] = {}
    if won:
        await _apply(conn, won, region_of_op, now)
        touched = sorted({region_of_op[str(o.op_id)] for o in won}, key=lambda k: k.morton)
        versions = await bump_versions(
            conn, touched, epochs={k: epochs[k] for k in touched}, writer=writer, now=now
        )
    rows = []
    for o in fresh:
        oid = str(o.op_id)
        key = region_of_op[oid]
        if oid in winners:
            res = OpOutcome(oid, True, versions[key])
        else:
            d = resolution.decision_of(oid)
            outcome = resolution.outcome_of(oid)
            reason = d.reason if d is not None else f"lost ({outcome.rule})"
            res = OpOutcome(oid, False, None, reason, outcome.winner_op_id)
        out[oid] = res
        rows.append(_outcome_row(o, res, key, now))
    await conn.execute(insert(s.outcomes), rows)
    decisions = [d for d in resolution.decisions if d.losers]
    for d in decisions:  # counted for worldstate.metrics (worldstate_conflicts_total)
        counted = (writer, d.conflict_type.value, d.rule.value)
        CONFLICT_DECISIONS[counted] = CONFLICT_DECISIONS.get(counted, 0) + 1
    if decisions:
        by_op = region_of_op
        await conn.execute(
            insert(s.conflicts),
            [
                decision_row(
                    d, by_op[d.losers[0]].morton if d.losers[0] in by_op else None, writer, now
                )
                for d in decisions
            ],
        )
    return out


def decision_row(
    d: cf.ConflictDecision, region_key: int | None, writer: str, now: float
) -> dict[str, object]:
    """The ``ws_conflicts`` row of one conflict decision (who won, who lost, by which rule)."""
    return {
        "decision_id": str(uuid.uuid4()),
        "region_key": region_key,
        "conflict_type": d.conflict_type.value,
        "rule": d.rule.value,
        "subject": d.subject,
        "winners": orjson.dumps(list(d.winners)).decode(),
        "losers": orjson.dumps(list(d.losers)).decode(),
        "reason": d.reason,
        "server_id": writer,
        "at": now,
    }


async def _check_fences(
    conn: AsyncConnection, batches: Sequence[RegionBatch], writer: str, now: float
) -> dict[RegionKey, int]:
    """Lock the batches' lease rows (in key order) and check each region's fence; returns
    the epoch each region's changes are recorded under."""
    keys = sorted({b.key for b in batches}, key=lambda k: k.morton)
    le = s.leases
    rows = {
        r.region_key: r
        for r in (
            await conn.execute(
                select(le)
                .where(le.c.region_key.in_([k.morton for k in keys]))
                .order_by(le.c.region_key)
                .with_for_update()
            )
        ).all()
    }
    epochs: dict[RegionKey, int] = {}
    for b in batches:
        row = lease_rules.lease_row(rows.get(b.key.morton))
        epochs[b.key] = lease_rules.check_fence(b.key, row, b.epoch, writer, now)
    return epochs


def _outcome_row(
    op: Operation, res: OpOutcome, key: RegionKey | None, now: float
) -> dict[str, object]:
    return {
        "op_id": res.op_id,
        "op_type": op.op_type,
        "status": "committed" if res.committed else "rejected",
        "version": res.version,
        "reason": res.reason,
        "winner_op_id": res.winner_op_id,
        "server_id": op.server_id,
        "region_key": key.morton if key is not None else None,
        "at": now,
    }


async def _apply(
    conn: AsyncConnection,
    won: Sequence[Operation],
    region_of_op: dict[str, RegionKey],
    now: float,
) -> None:
    structures = [o for o in won if isinstance(o, PlaceStructure)]
    if structures:
        await conn.execute(
            insert(s.objects),
            [
                row_values(
                    region_of_op[str(o.op_id)].morton,
                    o.structure_id,
                    o.kind,
                    (*o.lo, *o.hi),
                    structure_data(o),
                    str(o.op_id),
                )
                for o in structures
            ],
        )
    claimed: dict[str, float] = {}
    for o in won:
        if isinstance(o, ClaimResource):
            claimed[o.resource_id] = claimed.get(o.resource_id, 0.0) + o.amount
    for rid in sorted(claimed):
        r = s.resources
        await conn.execute(
            update(r).where(r.c.resource_id == rid).values(remaining=r.c.remaining - claimed[rid])
        )
    pickups = [o for o in won if isinstance(o, PickUpItem)]
    if pickups:
        await conn.execute(
            insert(s.items),
            [
                {
                    "item_id": o.item_id,
                    "region_key": region_of_op[str(o.op_id)].morton,
                    "picked_by": o.picker,
                    "op_id": str(o.op_id),
                    "at": now,
                }
                for o in pickups
            ],
        )
    terrain = [o for o in won if isinstance(o, ModifyTerrain)]
    if terrain:
        await conn.execute(
            insert(s.terrain),
            [
                {
                    "op_id": str(o.op_id),
                    "region_key": region_of_op[str(o.op_id)].morton,
                    "cx": o.center[0],
                    "cy": o.center[1],
                    "cz": o.center[2],
                    "radius": o.radius,
                    "delta": o.delta,
                    "hlc": o.hlc,
                }
                for o in terrain
            ],
        )


async def commit_inventory_ops(
    conn: AsyncConnection, ops: Sequence[ChangeInventory | TransferItems], *, now: float
) -> list[OpOutcome]:
    """Apply inventory ops in the given order, each all-or-nothing: an op that would take
    any count below zero is rejected (the others still apply). Rows are locked in sorted
    (inventory, item) order, so concurrent transactions never deadlock on each other."""
    ids = [str(o.op_id) for o in ops]
    prior = await prior_outcomes(conn, ids)
    fresh: list[ChangeInventory | TransferItems] = []
    seen: set[str] = set()
    for o in ops:
        oid = str(o.op_id)
        if oid not in prior and oid not in seen:
            seen.add(oid)
            fresh.append(o)
    if not fresh:
        return [prior[i] for i in ids]
    inv = s.inventories
    keys = sorted({k for o in fresh for k in _inventory_keys(o)})
    counts: dict[tuple[str, str], int] = dict.fromkeys(keys, 0)
    for inv_id, item in keys:
        r = (
            await conn.execute(
                select(inv.c["count"].label("n"))
                .where(inv.c.inventory_id == inv_id, inv.c.item == item)
                .with_for_update()
            )
        ).first()
        if r is not None:
            counts[(inv_id, item)] = int(r.n)
    original = dict(counts)
    out: dict[str, OpOutcome] = dict(prior)
    rows = []
    for o in fresh:
        oid = str(o.op_id)
        deltas = _inventory_deltas(o)
        short = [(k, counts[k] + d) for k, d in deltas if counts[k] + d < 0]
        if short:
            (inv_id, item), after = short[0]
            res = OpOutcome(
                oid,
                False,
                None,
                f"inventory {inv_id!r} holds {counts[(inv_id, item)]} of {item!r}; "
                f"the change would leave {after}",
            )
        else:
            for k, d in deltas:
                counts[k] += d
            res = OpOutcome(oid, True, 0)
        out[oid] = res
        rows.append(_outcome_row(o, res, None, now))
    changed = [k for k in keys if counts[k] != original[k]]
    if changed:
        ins = s.insert_for(conn.dialect.name, inv)
        stmt = ins.on_conflict_do_update(
            index_elements=["inventory_id", "item"], set_={"count": ins.excluded.count}
        )
        await conn.execute(
            stmt, [{"inventory_id": k[0], "item": k[1], "count": counts[k]} for k in changed]
        )
    await conn.execute(insert(s.outcomes), rows)
    return [out[i] for i in ids]


def _inventory_keys(o: ChangeInventory | TransferItems) -> list[tuple[str, str]]:
    return [k for k, _ in _inventory_deltas(o)]


def _inventory_deltas(o: ChangeInventory | TransferItems) -> list[tuple[tuple[str, str], int]]:
    if isinstance(o, ChangeInventory):
        return [((o.inventory_id, o.item), o.delta)]
    return [((o.from_inventory, o.item), -o.quantity), ((o.to_inventory, o.item), o.quantity)]

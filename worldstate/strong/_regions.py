"""The region committer: decides each group of owned regions' batches in memory
(`worldstate.strong._state`) and writes only the deltas, under one fence check per
transaction (`worldstate.store.strong_rows`).

What happens when the store disagrees:

- an op already has an outcome (resubmitted, or an ambiguous commit that did apply): its
  recorded outcome is returned (after checking the op is the same: digest), the regions of
  the group are reloaded, and the rest is decided again;
- a structure or item id is taken elsewhere in the world: those ops are rejected;
- the region version or a resource moved behind the owner's back: that state is reloaded;
- the lease is gone (`Fenced`/`RegionOwned`): the region's state is dropped and its ops
  fail with `NotAuthoritative`;
- the transaction fails for a reason specific to one op (bad input deeper down, a value the
  database refuses): the group is split in halves until the op fails alone, and the others
  commit;
- retries exhausted: the states are reloaded before the next group and the ops fail with
  `StoreUnavailable` (retry with the same op_ids).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

import conflicts as cf
from regions import RegionKey
from worldstate.config import Config
from worldstate.errors import (
    Fenced,
    NotAuthoritative,
    RegionOwned,
    StoreUnavailable,
    ValidationError,
    WorldStateError,
)
from worldstate.objects import Lease
from worldstate.operations import ClaimResource, Operation, PickUpItem, PlaceStructure
from worldstate.results import Committed
from worldstate.store import Store
from worldstate.store import schema as s
from worldstate.store import strong_rows as rows
from worldstate.store.object_rows import Box6, ObjectRow, rewrite, row_values
from worldstate.store.region_state import record_tampered
from worldstate.store.strong_commit import CONFLICT_DECISIONS, decision_row, structure_data
from worldstate.strong._outcomes import OutcomeMemory, check_digest, outcome_row, to_result
from worldstate.strong._pipeline import Entry, GroupCommitter
from worldstate.strong._state import (
    Decision,
    NearRows,
    RegionState,
    boundary_needs,
    decide,
    slab,
)

log = logging.getLogger("worldstate.strong")

__all__ = ["RegionCommitter", "is_poison"]

MAX_ATTEMPTS = 8


@dataclass(slots=True)
class _Writes:
    """The rows a decided group writes, table by table."""

    outcomes: list[dict[str, Any]] = field(default_factory=list)
    objects: list[dict[str, Any]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    terrain: list[dict[str, Any]] = field(default_factory=list)
    claims: dict[str, float] = field(default_factory=dict)
    expected: dict[int, int] = field(default_factory=dict)
    """region code -> the version the owner holds (compare-and-set, +1)"""
    decisions: list[dict[str, Any]] = field(default_factory=list)


def is_poison(e: BaseException) -> bool:
    """Did the transaction fail for a reason that may be specific to one op?"""
    if isinstance(e, (cf.ConflictInputError, TypeError, OverflowError)):
        return True
    if isinstance(e, ValueError) and not isinstance(e, WorldStateError):
        return True
    return (
        isinstance(e, StoreUnavailable)
        and e.attempts == 0
        and isinstance(e.__cause__, (IntegrityError, DataError))
    )


class RegionCommitter(GroupCommitter[RegionKey]):
    name = "strong-regions"

    def __init__(
        self,
        *,
        store: Store,
        config: Config,
        server_id: str,
        clock: Callable[[], float],
        policy: Callable[[], cf.Policy],
        lease_of: Callable[[RegionKey], Lease],
        lost: Callable[[RegionKey, str], None],
        notify: Callable[[RegionKey, int], None],
        outcomes: OutcomeMemory,
        spawn: Callable[..., asyncio.Task[Any]],
    ) -> None:
        super().__init__(
            config.group_commit_window,
            config.region_queue_size,
            spawn,
            config.max_concurrent_commits,
        )
        self.owner = server_id
        self.store = store
        self.config = config
        self.server_id = server_id
        self.clock = clock
        self.policy = policy
        self.lease_of = lease_of
        self.lost = lost
        self.notify = notify
        self.outcomes = outcomes
        self.states: dict[RegionKey, RegionState] = {}
        self._stale: set[RegionKey] = set()
        self.reloads = 0
        self.kept_versions = 0
        """Own eventual snapshots the strong state moved past without a reload."""
        self.splits = 0
        self.poisoned = 0
        self.boundary_reads = 0
        self._near: dict[tuple[int, RegionKey], NearRows] = {}
        """(foreign region code, held region) -> that neighbour's committed rows near the
        held region, at the neighbour's version then (validated by each commit)"""
        self.near_moved = 0
        self._checked_write = False
        """Set for one attempt after `write_group` found a row already there: the next
        attempt writes table by table, which names the ops and ids (then it is cleared)."""
        self.checked_writes = 0

    # -- state -----------------------------------------------------------------------------

    async def load(self, key: RegionKey, epoch: int) -> RegionState:
        """(Re)load a region's committed strong state from the store."""
        loaded = await self.store.run(
            lambda c: rows.load_region_state(c, key.morton),
            f"load strong state of region {key}",
            read=True,
        )
        if loaded.tampered:
            await self._repair(key, loaded.tampered)
        st = RegionState(key, epoch, loaded)
        self.states[key] = st
        self._stale.discard(key)
        self.reloads += 1
        return st

    async def _repair(self, key: RegionKey, ids: list[str]) -> None:
        """Object rows failing their checksums: write back the copy held in memory (the
        owner's state before the reload), else record them as an incident."""
        old = self.states.get(key)
        good = [
            ObjectRow(*old.structures[i]) for i in ids if old is not None and i in old.structures
        ]
        now = self.clock()

        async def body(c: AsyncConnection) -> None:
            for r in good:
                await rewrite(c, key.morton, r)
            if len(good) < len(ids):
                fixed = {r.object_id for r in good}
                await record_tampered(c, key, [i for i in ids if i not in fixed], now)

        await self.store.run(body, f"repair object rows of {key}")
        log.error(
            "region %s: object rows %s failed their checksums (%d rewritten from memory)",
            key,
            ids[:10],
            len(good),
        )

    async def state_for(self, key: RegionKey, lease: Lease) -> RegionState:
        st = self.states.get(key)
        if st is not None and st.epoch == lease.epoch and key not in self._stale:
            return st
        return await self.load(key, lease.epoch)

    def forget(self, key: RegionKey) -> None:
        """The lease is gone: drop the region's state."""
        self.states.pop(key, None)
        self._stale.discard(key)

    def mark_stale(self, key: RegionKey) -> None:
        """Reload before the next decision (e.g. a snapshot was stored meanwhile)."""
        if key in self.states:
            self._stale.add(key)

    def strong_rows_kept(self, key: RegionKey, read: int, written: int) -> bool:
        """This server rewrote ``key`` from version ``read`` to ``written`` keeping every
        strong row exactly as it was at ``read`` (its eventual snapshot: conditional on
        ``read``, so nothing committed in between). The strong state held at ``read`` is then
        the state at ``written``: it moves to it instead of being reloaded on the next group's
        refused commit (as do neighbour rows cached from ``key`` at ``read``). A state at
        another version, or stale, is left as it is (the next commit sorts it out). True
        when the held state moved."""
        code = key.morton
        for pair, near in self._near.items():
            if pair[0] == code and near.version == read:
                near.version = written
        st = self.states.get(key)
        if st is None or key in self._stale or st.version != read:
            return False
        st.version = written
        self.kept_versions += 1
        return True

    # -- commit ----------------------------------------------------------------------------

    async def commit_group(self, group: dict[RegionKey, list[Entry]]) -> None:
        live: dict[RegionKey, list[Entry]] = {}
        seen: dict[str, Entry] = {}
        dups: list[tuple[Entry, Entry]] = []
        for key, entries in group.items():
            try:
                lease = self.lease_of(key)
                await self.state_for(key, lease)
            except WorldStateError as e:
                for x in entries:
                    x.fail(e)
                continue
            mine: list[Entry] = []
            for x in entries:
                oid = str(x.op.op_id)
                first = seen.get(oid)
                if first is not None:
                    dups.append((x, first))
                    continue
                seen[oid] = x
                known = self.outcomes.get(oid)
                if known is not None:
                    self._settle(x, *known)
                    continue
                mine.append(x)
            if mine:
                live[key] = mine
        if live:
            await self._decide_and_write(live, {})
        for x, first in dups:
            if first.fut.done() and not first.fut.cancelled():
                exc = first.fut.exception()
                if exc is not None:
                    x.fail(exc)
                else:
                    check = self.outcomes.get(str(x.op.op_id))
                    if check is not None:
                        self._settle(x, *check)
                    else:
                        x.resolve(first.fut.result())
            else:
                x.fail(StoreUnavailable("the first copy of this op did not finish; resubmit"))

    def _settle(self, x: Entry, out: Any, digest: str | None) -> None:
        try:
            check_digest(x.op, digest)
        except ValidationError as e:
            x.fail(e)
            return
        x.resolve(to_result(out))

    async def _decide_and_write(
        self, live: dict[RegionKey, list[Entry]], taken: dict[str, str]
    ) -> None:
        for _attempt in range(MAX_ATTEMPTS):
            live = {k: v for k, v in live.items() if v}
            if not live:
                return
            # (again) before every attempt: a retry must not go out once this server has
            # been demoted or lost a lease meanwhile
            for key in list(live):
                try:
                    self.lease_of(key)
                except NotAuthoritative as e:
                    for x in live.pop(key):
                        x.fail(e)
            if not live:
                return
            try:
                for key in list(live):
                    if key in self._stale or key not in self.states:
                        await self.load(key, self.lease_of(key).epoch)
                dec, versions, remaining, read = await self._transaction(live, taken)
            except rows.NearMoved as e:
                self.near_moved += 1
                moved = set(e.keys)
                for pair in [q for q in self._near if q[0] in moved]:
                    del self._near[pair]  # read them again inside the next attempt
                continue
            except rows.NeedsCheckedWrite:
                self._checked_write = True
                self.checked_writes += 1
                continue
            except rows.DuplicateOps as e:
                try:
                    prior = await self.store.run(
                        lambda c, ids=e.op_ids: rows.prior_outcomes(c, ids),  # type: ignore[misc]
                        "read prior outcomes",
                        read=True,
                    )
                except WorldStateError as gone:  # the store went away meanwhile: these ops
                    for key, entries in live.items():  # fail alone (resubmit), the loop goes on
                        self._stale.add(key)
                        for x in entries:
                            x.fail(gone)
                    return
                for key, entries in live.items():
                    keep = []
                    for x in entries:
                        p = prior.get(str(x.op.op_id))
                        if p is None:
                            keep.append(x)
                        else:
                            self.outcomes.put(*p)
                            self._settle(x, *p)
                    live[key] = keep
                    self._stale.add(key)  # an ambiguous commit may have applied: reload
                continue
            except rows.TakenIds as e:
                ids = set(e.ids)
                for entries in live.values():
                    for x in entries:
                        op = x.op
                        if (
                            isinstance(op, PlaceStructure)
                            and e.kind == "structure"
                            and op.structure_id in ids
                        ) or (
                            isinstance(op, PickUpItem) and e.kind == "item" and op.item_id in ids
                        ):
                            subject = (
                                op.structure_id if isinstance(op, PlaceStructure) else op.item_id
                            )
                            taken[str(op.op_id)] = (
                                f"{e.kind} id {subject!r} is already in use elsewhere in the world"
                            )
                continue
            except rows.StaleState as e:
                for w in e.what:
                    if isinstance(w, int):
                        k = RegionKey.from_morton(w)
                        self._stale.add(k)
                    else:
                        for st in self.states.values():
                            st.resources.pop(str(w), None)
                continue
            except (Fenced, RegionOwned) as e:
                lost_key = e.key if isinstance(e.key, RegionKey) else None
                err = NotAuthoritative(
                    f"{self.server_id} lost region {e.key} ({e}); the ops were not applied — "
                    "resubmit them (same op_ids)",
                    key=e.key,
                )
                if lost_key is None or lost_key not in live:
                    for entries in live.values():
                        for x in entries:
                            x.fail(err)
                    return
                self.lost(lost_key, str(e))
                self.forget(lost_key)
                for x in live.pop(lost_key):
                    x.fail(err)
                continue
            except NotAuthoritative as e:
                for entries in live.values():
                    for x in entries:
                        x.fail(e)
                return
            except Exception as e:
                if is_poison(e):
                    await self._split(live, taken, e)
                    return
                if isinstance(e, WorldStateError):
                    for key, entries in live.items():
                        self._stale.add(key)
                        for x in entries:
                            x.fail(e)
                    return
                raise
            self._apply(live, dec, versions, remaining, read)
            return
        gave_up = StoreUnavailable(
            "the region's committed state kept changing under its owner; retry with the same op_ids"
        )
        for entries in live.values():
            for x in entries:
                x.fail(gave_up)

    async def _split(
        self, live: dict[RegionKey, list[Entry]], taken: dict[str, str], e: BaseException
    ) -> None:
        flat = [(k, x) for k, es in live.items() for x in es]
        if len(flat) == 1:
            self.poisoned += 1
            k, x = flat[0]
            log.warning(
                "op %s fails alone in region %s: %r",
                x.op.op_id,
                k,
                e,
                extra={"op_id": str(x.op.op_id), "region": str(k)},
            )
            x.fail(
                ValidationError(
                    f"{x.op.op_type} {x.op.op_id} cannot be applied: {e}; nothing was changed"
                )
            )
            return
        self.splits += 1
        half = len(flat) // 2
        for part in (flat[:half], flat[half:]):
            sub: dict[RegionKey, list[Entry]] = {}
            for k, x in part:
                sub.setdefault(k, []).append(x)
            await self._decide_and_write(sub, taken)

    async def _transaction(
        self, live: dict[RegionKey, list[Entry]], taken: dict[str, str]
    ) -> tuple[Decision, dict[int, int], dict[str, float], dict[str, float]]:
        batches = [(self.states[k], [x.op for x in es]) for k, es in live.items()]
        digests = {str(x.op.op_id): x.digest for es in live.values() for x in es}
        held = self.states
        cfg = self.config
        writer = self.server_id
        now = self.clock()
        epochs = {k.morton: self.states[k].epoch for k in live}
        keys = {k.morton: k for k in live}
        pairs, fboxes = boundary_needs(batches, held, cfg.max_structure_size, cfg.region_size)
        qboxes = np.asarray(fboxes, dtype=np.float64).reshape(-1, 6)
        # the foreign neighbours' rows near each held region: from the owner's cache when
        # every pair is there at one version per neighbour (the commit checks that version
        # in its statement), else read inside the transaction
        one_statement = self.store.dialect != "sqlite" and not self._checked_write
        self._checked_write = False  # for one attempt only
        cached = [self._near.get(pair) for pair in pairs]
        warm = one_statement and all(c is not None for c in cached)
        claimed = {
            op.resource_id for _, ops in batches for op in ops if isinstance(op, ClaimResource)
        }
        known: dict[str, float] = {}
        for st, _ in batches:
            known.update({r: v for r, v in st.resources.items() if r in claimed})
        policy = self.policy()
        unknown = claimed - known.keys()
        near_versions: dict[int, int] = {}
        warm_near: dict[str, tuple[Box6, str]] = {}
        if warm:
            for (m, _), c in zip(pairs, cached, strict=True):
                assert c is not None
                if near_versions.setdefault(m, c.version) != c.version:
                    warm = False  # read at two versions: read again
                    break
                warm_near.update(c.meeting(qboxes))
        if pairs:
            self.boundary_reads += 0 if warm else 1

        def decided(
            near: dict[str, tuple[Box6, str]], read: dict[str, float]
        ) -> tuple[Decision, _Writes]:
            dec = decide(
                batches,
                held,
                near=near,
                resources={**known, **read},
                taken=taken,
                policy=policy,
                max_structure_size=cfg.max_structure_size,
                region_size=cfg.region_size,
            )
            return dec, self._writes(batches, dec, digests, now)

        # nothing to read inside the transaction (no foreign neighbour, no resource this
        # owner has not seen): decide before it starts, and a retry reuses the decision
        early = None if ((pairs and not warm) or unknown) else decided(warm_near, {})
        wants = sorted(pairs, key=lambda p: (p[0], p[1].morton))
        slabs = [(m, slab(k, cfg.max_structure_size, cfg.region_size)) for m, k in wants]

        async def body(
            conn: AsyncConnection,
        ) -> tuple[Decision, dict[int, int], dict[str, float], dict[str, float]]:
            if not one_statement:
                await rows.check_fences(conn, s.leases, epochs, keys, writer, now)
            read: dict[str, float] = {}
            if early is None:
                near: dict[str, tuple[Box6, str]] = {}
                if pairs and not warm:
                    found, versions_read = await rows.read_near(conn, slabs)
                    near_versions.clear()
                    near_versions.update(versions_read)
                    for pair, f in zip(wants, found, strict=True):
                        got = NearRows(versions_read[pair[0]], f)
                        self._near[pair] = got
                        near.update(got.meeting(qboxes))
                elif warm:
                    near = warm_near
                read = await rows.read_resources(conn, unknown)
                dec, w = decided(near, read)
            else:
                dec, w = early
            if one_statement and all(v > 0 for v in w.expected.values()):
                versions, remaining = await rows.write_group(
                    conn,
                    epochs=epochs,
                    keys=keys,
                    writer=writer,
                    now=now,
                    outcomes=w.outcomes,
                    objects=w.objects,
                    items=w.items,
                    terrain=w.terrain,
                    claims=w.claims,
                    expected=w.expected,
                    decisions=w.decisions,
                    near_versions=near_versions,
                )
                return dec, versions, remaining, read
            if one_statement:
                await rows.check_fences(conn, s.leases, epochs, keys, writer, now)
            await rows.insert_outcomes(conn, w.outcomes)
            await rows.insert_objects(conn, w.objects)
            await rows.insert_items(conn, w.items)
            await rows.insert_terrain(conn, w.terrain)
            remaining = await rows.claim_resources(conn, w.claims) if w.claims else {}
            versions = await rows.bump_region_versions(conn, w.expected, epochs, writer, now)
            await rows.insert_decisions(conn, w.decisions)
            return dec, versions, remaining, read

        n = sum(len(es) for es in live.values())

        async def fenced_body(
            conn: AsyncConnection,
        ) -> tuple[Decision, dict[int, int], dict[str, float], dict[str, float]]:
            # every attempt (the store retries 40001 inside) goes out only while this server
            # is authoritative and holds each lease: a demotion during an await before it
            # (a state reload, the connection checkout) stops it here, nothing written
            for k in live:
                self.lease_of(k)
            return await body(conn)

        for k in live:
            self.lease_of(k)
        return await self.store.run(fenced_body, f"commit {n} strong ops in {len(live)} region(s)")

    def _writes(
        self,
        batches: list[tuple[RegionState, list[Operation]]],
        dec: Decision,
        digests: dict[str, str],
        now: float,
    ) -> _Writes:
        """The rows a decided group writes."""
        writer = self.server_id
        ops = {str(op.op_id): op for _, b in batches for op in b}
        w = _Writes(
            outcomes=[
                outcome_row(ops[oid], out, dec.region_of[oid].morton, now, digests[oid])
                for oid, out in dec.outcomes.items()
            ]
        )
        for key, delta in dec.deltas.items():
            if not delta:
                continue
            m = key.morton
            w.expected[m] = self.states[key].version
            w.objects += [
                row_values(
                    m, o.structure_id, o.kind, (*o.lo, *o.hi), structure_data(o), str(o.op_id)
                )
                for o in delta.structures
            ]
            w.items += [
                {
                    "region_key": m,
                    "item_id": p.item_id,
                    "picked_by": p.picker,
                    "op_id": str(p.op_id),
                    "at": now,
                }
                for p in delta.pickups
            ]
            w.terrain += [
                {
                    "region_key": m,
                    "op_id": str(t.op_id),
                    "cx": t.center[0],
                    "cy": t.center[1],
                    "cz": t.center[2],
                    "radius": t.radius,
                    "delta": t.delta,
                    "hlc": t.hlc,
                }
                for t in delta.terrain
            ]
            for rid, a in delta.claims.items():
                w.claims[rid] = w.claims.get(rid, 0.0) + a
        w.decisions = [
            decision_row(
                d,
                dec.region_of[d.losers[0]].morton if d.losers[0] in dec.region_of else None,
                writer,
                now,
            )
            for d in dec.decisions
        ]
        return w

    def _apply(
        self,
        live: dict[RegionKey, list[Entry]],
        dec: Decision,
        versions: dict[int, int],
        remaining: dict[str, float],
        read: dict[str, float],
    ) -> None:
        for d in dec.decisions:  # committed: counted once (worldstate_conflicts_total)
            counted = (self.server_id, d.conflict_type.value, d.rule.value)
            CONFLICT_DECISIONS[counted] = CONFLICT_DECISIONS.get(counted, 0) + 1
        for key, entries in live.items():
            st = self.states.get(key)
            delta = dec.deltas.get(key)
            if st is not None:
                mine = {x.op.resource_id for x in entries if isinstance(x.op, ClaimResource)}
                st.resources.update({r: v for r, v in read.items() if r in mine})
                if delta and key.morton in versions:
                    st.apply(delta, versions[key.morton], {r: remaining[r] for r in delta.claims})
            changed = False
            for x in entries:
                oid = str(x.op.op_id)
                err = dec.errors.get(oid)
                if err is not None:
                    self.poisoned += 1
                    x.fail(err)
                    continue
                out = dec.outcomes[oid]
                self.outcomes.put(out, x.digest)
                if out.committed:  # the op's own UUID: no parse of the text form
                    changed = True
                    x.resolve(Committed(x.op.op_id, out.version or 0))
                else:
                    x.resolve(to_result(out))
            if changed and key.morton in versions:
                self.notify(key, versions[key.morton])

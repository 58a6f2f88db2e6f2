"""Owned inventories: inventory shards, leased like regions, each with one writer.

An inventory belongs to shard ``blake2b(inventory_id) mod Config.inventory_shards``. Shard
leases live in ``ws_shard_leases`` (the rules of `worldstate.store.leases`, a key space of
their own: nothing that lists regions sees them). The first server to use an unowned shard
acquires it; the others forward that shard's ops to it. Its pipeline batches every op on
the shard's inventories, decides them in memory and writes one transaction per group.

Who writes what (the design that keeps every hot count single-writer without a two-phase
protocol): an op belongs to the shard of the inventory it takes from (``ChangeInventory``:
its inventory; ``TransferItems``: ``from_inventory``), so every *debit* of an inventory is
decided by that inventory's shard owner, fenced by its shard lease. *Credits* are
commutative increments (``count = count + n``): a transfer into an inventory of another
shard adds to it in the same transaction, without reading it and without its owner's
fence, because an increment can never take a count below zero nor be lost by a concurrent
increment. A transfer is therefore one transaction — totals are conserved at every
instant, whoever owns the two shards. The owner's memory of a count is a lower bound of the
truth (others only ever add), which is all "never below zero" needs; when memory says an
inventory is short, the count is read in the transaction before the op is rejected.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DataError
from sqlalchemy.ext.asyncio import AsyncConnection

from worldstate.config import Config
from worldstate.errors import (
    Fenced,
    NotAuthoritative,
    RegionOwned,
    StoreUnavailable,
    ValidationError,
    WorldStateError,
)
from worldstate.operations import ChangeInventory, Operation, TransferItems
from worldstate.store import Store
from worldstate.store import leases as lease_ops
from worldstate.store import schema as s
from worldstate.store import strong_rows as rows
from worldstate.store.strong_commit import OpOutcome
from worldstate.strong._outcomes import OutcomeMemory, check_digest, outcome_row, to_result
from worldstate.strong._pipeline import Entry, GroupCommitter
from worldstate.strong._regions import is_poison

log = logging.getLogger("worldstate.strong")

__all__ = ["InventoryCommitter", "ShardKey", "shard_of"]

INT64_MAX = (1 << 63) - 1
MAX_ATTEMPTS = 8


@dataclass(frozen=True, slots=True, order=True)
class ShardKey:
    """An inventory shard (its lease key in ``ws_shard_leases``)."""

    shard: int

    def __str__(self) -> str:
        return f"inventory-shard-{self.shard}"


def shard_of(inventory_id: str, shards: int) -> ShardKey:
    h = hashlib.blake2b(inventory_id.encode(), digest_size=8, person=b"ws-inv-shard").digest()
    return ShardKey(int.from_bytes(h, "big") % shards)


def home_inventory(op: ChangeInventory | TransferItems) -> str:
    """The inventory whose shard decides the op (the one it may take from)."""
    return op.inventory_id if isinstance(op, ChangeInventory) else op.from_inventory


def deltas_of(op: ChangeInventory | TransferItems) -> list[tuple[tuple[str, str], int]]:
    if isinstance(op, ChangeInventory):
        return [((op.inventory_id, op.item), op.delta)]
    return [((op.from_inventory, op.item), -op.quantity), ((op.to_inventory, op.item), op.quantity)]


@dataclass(frozen=True, slots=True)
class ShardLease:
    key: ShardKey
    owner: str
    epoch: int
    expires_at: float

    def live(self, now: float) -> bool:
        return self.expires_at > now


class InventoryCommitter(GroupCommitter[ShardKey]):
    name = "strong-inventories"

    def __init__(
        self,
        *,
        store: Store,
        config: Config,
        server_id: str,
        clock: Callable[[], float],
        authoritative: Callable[[], bool],
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
        self.authoritative = authoritative
        self.outcomes = outcomes
        self.leases: dict[ShardKey, ShardLease] = {}
        self.counts: dict[ShardKey, dict[tuple[str, str], int]] = {}
        """per owned shard: (inventory, item) -> a lower bound of the stored count"""
        self.reloads = 0
        self.versions_seen = 0
        self.closing = False

    # -- leases ----------------------------------------------------------------------------

    def holds(self, key: ShardKey) -> bool:
        lease = self.leases.get(key)
        return (
            lease is not None
            and lease.live(self.clock() + self.config.clock_skew_margin)
            and self.authoritative()
        )

    async def acquire(self, key: ShardKey) -> ShardLease:
        now = self.clock()
        ttl = self.config.lease_ttl
        g = await self.store.run(
            lambda c: lease_ops.acquire_code(
                c, s.shard_leases, key.shard, self.server_id, ttl, now, key
            ),
            f"acquire {key}",
        )
        lease = ShardLease(key, g.owner, g.epoch, g.expires_at)
        old = self.leases.get(key)
        if old is None or old.epoch != lease.epoch:
            self.counts[key] = {}  # a new tenure: what it knew may be stale
        self.leases[key] = lease
        return lease

    async def grant(self, key: ShardKey) -> lease_ops.Grant | None:
        """The shard's lease row as stored (live or not), or None."""
        return await self.store.run(
            lambda c: lease_ops.get_code(c, s.shard_leases, key.shard), f"read {key}", read=True
        )

    async def renew(self) -> None:
        if not self.authoritative() or self.closing:
            return
        ttl = self.config.lease_ttl
        leases = dict(self.leases)
        if not leases:
            return
        held = {k.shard: (lease.epoch, k) for k, lease in leases.items()}
        now = self.clock()
        try:  # every shard lease in one transaction (64 shards: not 64 transactions)
            got = await self.store.run(
                lambda c: lease_ops.renew_codes(c, s.shard_leases, held, self.server_id, ttl, now),
                f"renew {len(held)} inventory-shard leases",
            )
        except StoreUnavailable as e:
            log.warning("renewing the inventory-shard leases failed: %s", e)
            return
        for key, lease in leases.items():
            g = got.get(key.shard)
            if isinstance(g, WorldStateError):
                log.warning("%s lost: %s", key, g)
                self.lost(key)
            elif isinstance(g, lease_ops.Grant) and self.leases.get(key) is lease:
                self.leases[key] = ShardLease(key, g.owner, g.epoch, g.expires_at)

    def lost(self, key: ShardKey) -> None:
        self.leases.pop(key, None)
        self.counts.pop(key, None)

    async def release_all(self) -> None:
        self.closing = True
        for key, lease in list(self.leases.items()):
            try:
                await self.store.run(
                    lambda c, k=key, e=lease.epoch: lease_ops.release_code(  # type: ignore[misc]
                        c, s.shard_leases, k.shard, self.server_id, e
                    ),
                    f"release {key}",
                )
            except WorldStateError as e:
                log.warning("releasing %s failed: %s", key, e)
        self.leases.clear()
        self.counts.clear()

    # -- commit ----------------------------------------------------------------------------

    async def commit_group(self, group: dict[ShardKey, list[Entry]]) -> None:
        live: dict[ShardKey, list[Entry]] = {}
        seen: set[str] = set()
        later: list[Entry] = []
        for key, entries in group.items():
            if not self.holds(key):
                err = NotAuthoritative(
                    f"{self.server_id} holds no live lease on {key}; resubmit (same op_ids)"
                )
                for x in entries:
                    x.fail(err)
                continue
            mine = []
            for x in entries:
                oid = str(x.op.op_id)
                if oid in seen:
                    later.append(x)
                    continue
                seen.add(oid)
                known = self.outcomes.get(oid)
                if known is not None:
                    self._settle(x, *known)
                else:
                    mine.append(x)
            if mine:
                live[key] = mine
        if live:
            await self._decide_and_write(live)
        for x in later:  # the same op twice in one group: the first decided it
            known = self.outcomes.get(str(x.op.op_id))
            if known is not None:
                self._settle(x, *known)
            else:
                x.fail(StoreUnavailable("the first copy of this op did not finish; resubmit"))

    def _settle(self, x: Entry, out: OpOutcome, digest: str | None) -> None:
        try:
            check_digest(x.op, digest)
        except ValidationError as e:
            x.fail(e)
            return
        x.resolve(to_result(out))

    async def _decide_and_write(self, live: dict[ShardKey, list[Entry]]) -> None:
        for _attempt in range(MAX_ATTEMPTS):
            live = {k: v for k, v in live.items() if v}
            for key in [k for k in live if not self.holds(k)]:  # demoted or lost meanwhile
                err = NotAuthoritative(
                    f"{self.server_id} holds no live lease on {key}; resubmit (same op_ids)"
                )
                for x in live.pop(key):
                    x.fail(err)
            if not live:
                return
            try:
                outs, errors, deltas, versions = await self._transaction(live)
            except rows.DuplicateOps as e:
                try:
                    prior = await self.store.run(
                        lambda c, ids=e.op_ids: rows.prior_outcomes(c, ids),  # type: ignore[misc]
                        "read prior outcomes",
                        read=True,
                    )
                except WorldStateError as unreachable:  # the store went away meanwhile: these ops
                    for key, entries in live.items():  # fail alone (resubmit), the loop goes on
                        self.counts[key] = {}
                        for x in entries:
                            x.fail(unreachable)
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
                    self.counts[key] = {}  # an ambiguous commit may have applied
                continue
            except (Fenced, RegionOwned) as e:
                err = NotAuthoritative(
                    f"{self.server_id} lost {e.key} ({e}); the ops were not applied — "
                    "resubmit them (same op_ids)"
                )
                gone = [e.key] if isinstance(e.key, ShardKey) and e.key in live else list(live)
                for k in gone:
                    self.lost(k)
                    for x in live.pop(k):
                        x.fail(err)
                continue
            except Exception as e:
                if is_poison(e) or isinstance(e, rows.CountOverflow):
                    await self._split(live, e)
                    return
                if isinstance(e, WorldStateError):
                    for key, entries in live.items():
                        self.counts[key] = {}
                        for x in entries:
                            x.fail(e)
                    return
                raise
            for key, entries in live.items():
                if key in self.leases:
                    self.counts[key] = deltas.get(key, {})
                for x in entries:
                    oid = str(x.op.op_id)
                    if oid in errors:
                        x.fail(errors[oid])
                        continue
                    out = outs[oid]
                    self.outcomes.put(out, x.digest)
                    x.resolve(to_result(out))
            self.versions_seen = max(self.versions_seen, max(versions.values(), default=0))
            return
        gave_up = StoreUnavailable("inventory state kept changing; retry with the same op_ids")
        for entries in live.values():
            for x in entries:
                x.fail(gave_up)

    async def _reject_alone(self, x: Entry, reason: str) -> None:
        """Record ``x`` as rejected on its own (idempotent: a prior outcome wins)."""
        oid = str(x.op.op_id)
        out = OpOutcome(oid, False, None, reason)
        row = outcome_row(x.op, out, None, self.clock(), x.digest)
        try:
            await self.store.run(lambda c: rows.insert_outcomes(c, [row]), f"reject {oid}")
        except rows.DuplicateOps:
            try:
                prior = await self.store.run(
                    lambda c: rows.prior_outcomes(c, [oid]), "read prior outcome", read=True
                )
            except WorldStateError as err:
                x.fail(err)
                return
            if oid in prior:
                self._settle(x, *prior[oid])
                return
        except WorldStateError as err:
            x.fail(err)
            return
        self.outcomes.put(out, x.digest)
        x.resolve(to_result(out))

    async def _split(self, live: dict[ShardKey, list[Entry]], e: BaseException) -> None:
        flat = [(k, x) for k, es in live.items() for x in es]
        if len(flat) == 1:
            x = flat[0][1]
            if isinstance(e, rows.CountOverflow) or (
                isinstance(e, StoreUnavailable) and isinstance(e.__cause__, DataError)
            ):
                # the store's range check refused the count: a credit past int64
                await self._reject_alone(x, f"the change would take a count past {INT64_MAX}")
                return
            log.warning(
                "inventory op %s fails alone: %r", x.op.op_id, e, extra={"op_id": str(x.op.op_id)}
            )
            x.fail(
                ValidationError(
                    f"{x.op.op_type} {x.op.op_id} cannot be applied: {e}; nothing was changed"
                )
            )
            return
        half = len(flat) // 2
        for part in (flat[:half], flat[half:]):
            sub: dict[ShardKey, list[Entry]] = {}
            for k, x in part:
                sub.setdefault(k, []).append(x)
            await self._decide_and_write(sub)

    async def _transaction(
        self, live: dict[ShardKey, list[Entry]]
    ) -> tuple[
        dict[str, OpOutcome],
        dict[str, WorldStateError],
        dict[ShardKey, dict[tuple[str, str], int]],
        dict[str, int],
    ]:
        epochs = {k.shard: self.leases[k].epoch for k in live}
        keys = {k.shard: k for k in live}
        writer = self.server_id
        now = self.clock()
        start = {k: dict(self.counts.get(k, {})) for k in live}
        digests = {str(x.op.op_id): x.digest for es in live.values() for x in es}
        ops = {str(x.op.op_id): x.op for es in live.values() for x in es}

        async def body(
            conn: AsyncConnection,
        ) -> tuple[
            dict[str, OpOutcome],
            dict[str, WorldStateError],
            dict[ShardKey, dict[tuple[str, str], int]],
            dict[str, int],
        ]:
            await rows.check_fences(conn, s.shard_leases, epochs, keys, writer, now)
            base = {k: dict(v) for k, v in start.items()}
            # what each op may take from: memory (a lower bound), else read it now
            need: dict[tuple[str, str], ShardKey] = {}
            for key, entries in live.items():
                for x in entries:
                    for pair, d in _deltas(x.op):
                        if d < 0 and pair not in base[key]:
                            need[pair] = key
            for pair, v in (await rows.read_counts(conn, need)).items():
                base[need[pair]][pair] = v
            outs, errors, after, short = _decide(live, base)
            if short:  # memory said short: read the true counts before rejecting
                for pair, v in (await rows.read_counts(conn, short)).items():
                    base[short[pair]][pair] = max(base[short[pair]].get(pair, 0), v)
                outs, errors, after, _ = _decide(live, base)
            net: dict[tuple[str, str], int] = {}
            touched: set[str] = set()
            for oid, out in outs.items():
                if out.committed:
                    op = ops[oid]
                    assert isinstance(op, (ChangeInventory, TransferItems))
                    touched.add(home_inventory(op))
                    for pair, d in deltas_of(op):
                        net[pair] = net.get(pair, 0) + d
            versions = await rows.bump_inventory_versions(conn, touched)
            for oid, out in list(outs.items()):
                if out.committed:
                    op = ops[oid]
                    assert isinstance(op, (ChangeInventory, TransferItems))
                    outs[oid] = OpOutcome(oid, True, versions[home_inventory(op)])
            await rows.insert_outcomes(
                conn, [outcome_row(ops[o], r, None, now, digests[o]) for o, r in outs.items()]
            )
            await rows.add_counts(conn, net)
            return outs, errors, after, versions

        n = sum(len(es) for es in live.values())

        def require_leases() -> None:
            lost = [k for k in live if not self.holds(k)]
            if lost:
                raise NotAuthoritative(
                    f"{self.server_id} is demoted or lost {lost[0]} before the commit; the ops "
                    "were not applied — resubmit them (same op_ids)"
                )

        async def fenced_body(conn: AsyncConnection) -> Any:
            require_leases()  # every attempt, also the store's own retries (see regions)
            return await body(conn)

        require_leases()
        return await self.store.run(
            fenced_body, f"commit {n} inventory ops in {len(live)} shard(s)"
        )


def _deltas(op: Operation) -> list[tuple[tuple[str, str], int]]:
    return deltas_of(op) if isinstance(op, (ChangeInventory, TransferItems)) else []


def _decide(
    live: dict[ShardKey, list[Entry]], base: dict[ShardKey, dict[tuple[str, str], int]]
) -> tuple[
    dict[str, OpOutcome],
    dict[str, WorldStateError],
    dict[ShardKey, dict[tuple[str, str], int]],
    dict[tuple[str, str], ShardKey],
]:
    """Apply the ops in order against (copies of) the counts: an op that would take a count
    below zero, or one above int64, is rejected and the others still apply. Returns the
    outcomes, per-op errors, the counts after, and the pairs found short (to be read from
    the store before the rejection stands)."""
    outs: dict[str, OpOutcome] = {}
    errors: dict[str, WorldStateError] = {}
    after = {k: dict(v) for k, v in base.items()}
    short_pairs: dict[tuple[str, str], ShardKey] = {}
    for key, entries in live.items():
        mem = after[key]
        for x in entries:
            op = x.op
            oid = str(op.op_id)
            if not isinstance(op, (ChangeInventory, TransferItems)):
                errors[oid] = ValidationError(
                    f"{op.op_type} is not an inventory operation; nothing was changed"
                )
                continue
            ds = deltas_of(op)
            short = [(k, mem.get(k, 0) + d) for k, d in ds if d < 0 and mem.get(k, 0) + d < 0]
            over = [k for k, d in ds if d > 0 and k in mem and mem[k] + d > INT64_MAX]
            if short:
                (inv, item), left = short[0]
                short_pairs.update(dict.fromkeys((k for k, _ in short), key))
                outs[oid] = OpOutcome(
                    oid,
                    False,
                    None,
                    f"inventory {inv!r} holds {mem.get((inv, item), 0)} of {item!r}; "
                    f"the change would leave {left}",
                )
                continue
            if over:
                inv, item = over[0]
                outs[oid] = OpOutcome(
                    oid,
                    False,
                    None,
                    f"inventory {inv!r} would hold more than {INT64_MAX} of {item!r}",
                )
                continue
            for k, d in ds:
                if k in mem:
                    mem[k] += d
            outs[oid] = OpOutcome(oid, True, 0)
    return outs, errors, after, short_pairs


def is_inventory_op(op: Operation) -> bool:
    return isinstance(op, (ChangeInventory, TransferItems))

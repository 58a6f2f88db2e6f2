"""The invariant checks of the simulation: after every committed store transaction
(`Invariants.on_write`), every `CHECK_EVERY` seconds of virtual time (`Invariants._watch`),
and at the end (`Invariants._final_checks`). See `tests.sim.violation.INVARIANTS`."""

from __future__ import annotations

import asyncio
import json

import numpy as np

from consistency import EntityTable
from regions import RegionKey, region_keys
from tests.sim.mesh import EPOCH0, SimMesh

CHECK_EVERY = 0.05
"""Seconds of virtual time between two polls of the servers' beliefs."""


class Invariants(SimMesh):
    """The checks, over the state of `SimMesh`."""

    def on_write(self, client: str, what: str, sent_authoritative: bool, sent_at: float) -> None:
        """After every committed write transaction (see `SimStore.run`)."""
        for rk, owner, epoch in self.db.query(
            "SELECT region_key, owner, epoch FROM ws_leases ORDER BY region_key"
        ):
            last = self.epoch_of.get(rk)
            if last is not None and epoch < last:
                self.fail("one-owner-per-epoch", f"region {rk}: epoch went from {last} to {epoch}")
            known = self.owner_of.get((rk, epoch))
            if known is None:
                self.owner_of[(rk, epoch)] = owner
                if last != epoch:
                    self.record(f"lease {self._region(rk)} -> {owner} epoch {epoch} ({client})")
            elif known != owner:
                self.fail(
                    "one-owner-per-epoch",
                    f"region {rk} epoch {epoch} granted to {known} and then to {owner}",
                )
            self.epoch_of[rk] = epoch
        leases = {
            rk: (owner, epoch, expires)
            for rk, owner, epoch, expires in self.db.query(
                "SELECT region_key, owner, epoch, expires_at FROM ws_leases"
            )
        }
        for rk, version, stored_by in self.db.query(
            "SELECT region_key, version, stored_by FROM ws_regions"
        ):
            if version <= self.versions.get(rk, 0):
                continue
            self.versions[rk] = version
            # The row names its writer. (The transaction that reported this write need not
            # be the one that made it: a read transaction whose statements interleave with
            # another client's commit sees the shared connection's change count move.)
            writer = stored_by
            writer_now = self.clock_of(writer)() if writer in self.skew else self.clock_of(client)()
            key = RegionKey.from_morton(rk)
            believers = [s for s, w in self.worlds.items() if s != writer and w.holds(key)]
            owner, epoch, expires = leases.get(rk, (None, 0, 0.0))
            live_other = owner is not None and owner != writer and expires > writer_now
            if believers or live_other:
                self.fail(
                    "fencing",
                    f"region {self._region(rk)} v{version} written by {writer} ({what!r} of "
                    f"{client}) while {believers or owner} held it (lease epoch "
                    f"{epoch} of {owner}, expires {expires - EPOCH0:.3f}, writer's clock "
                    f"{writer_now - EPOCH0:.3f})",
                )
        for generation, members in self.db.query("SELECT generation, members FROM ws_membership"):
            if generation != self.membership[0]:
                self.membership = (int(generation), frozenset(json.loads(members)))
                self.record(f"membership g{generation}: {sorted(self.membership[1])}")
        (outcomes,) = self.db.query("SELECT COUNT(*) FROM ws_outcomes")[0]
        if outcomes > self.outcomes:
            self.outcomes = outcomes
            # strong commits only: causal appends record outcomes too, and need no authority
            if client in self.worlds and not sent_authoritative and what.startswith("commit "):
                self.fail(
                    "demoted-commit",
                    f"{client} sent {what!r} at {sent_at - EPOCH0:.3f} while demoted, and the "
                    "store accepted it",
                )

    def _region(self, morton: int) -> str:
        k = RegionKey.from_morton(morton)
        return f"r{k.ix}"

    def _majority_side(self, group: set[str], members: set[str]) -> bool:
        if not members:
            return True  # no membership recorded yet: nothing to split from
        inside = group & members
        if 2 * len(inside) > len(members):
            return True
        return 2 * len(inside) == len(members) and min(members) in inside

    async def _watch(self) -> None:
        cfg = self.cfg
        # silence for the timeout, measured from a presence stamped by a clock up to
        # 2 * max_skew ahead and delivered up to max_message_delay late, and the next verdict
        # comes with the next heartbeat (plus one more for the one in flight)
        bound = (
            cfg.partition_timeout
            + 2 * cfg.heartbeat_interval
            + cfg.max_message_delay
            + 2 * cfg.max_skew
            + 0.25
        )
        while True:
            await asyncio.sleep(CHECK_EVERY)
            now = self.now
            for key in self.keys:
                holders = [s for s, w in self.worlds.items() if w.holds(key)]
                if len(holders) > 1:
                    self.fail("lease-exclusive", f"{key} is held by {holders} at once")
            acting = {c for c, co in self.coordinators.items() if co.acting}
            if len(acting) > 1:
                self.fail("coordinator-exclusive", f"{sorted(acting)} act at once")
            if acting != self.acting:
                self.acting = acting
                self.record(f"acting coordinator: {sorted(acting)}")
            for sid, world in self.worlds.items():
                if world.authoritative != self.standing[sid]:
                    self.standing[sid] = world.authoritative
                    self.record(f"{sid} {'promoted' if world.authoritative else 'demoted'}")
            if (
                self.partition is not None
                and not self.one_way
                and now - self.partition_since > bound
                and self.membership == self.partition_membership  # no change meanwhile
            ):
                members = set(self.membership[1])
                for group in self.partition:
                    if self._majority_side(group, members):
                        continue
                    for sid in sorted(group & set(self.worlds)):
                        if self.worlds[sid].authoritative:
                            self.fail(
                                "timely-demotion",
                                f"{sid} (group {sorted(group)}) is still authoritative "
                                f"{now - self.partition_since:.2f}s into the partition "
                                f"(bound {bound:.2f}s)",
                            )

    def _final_checks(self) -> None:
        for op_id, (version, label) in sorted(self.acked.items(), key=lambda kv: str(kv[0])):
            rows = self.db.query(
                "SELECT status, version FROM ws_outcomes WHERE op_id = ?", (str(op_id),)
            )
            placed = self.db.query("SELECT COUNT(*) FROM ws_objects WHERE op_id = ?", (str(op_id),))
            if not rows or rows[0][0] != "committed" or placed[0][0] != 1:
                self.fail("acked-durable", f"{label} was acknowledged (v{version}) but {rows}")
        for key in self.keys:
            holders = [s for s, w in self.worlds.items() if w.holds(key)]
            if len(holders) != 1:
                self.fail("recovery", f"{key} has holders {holders} after the quiet phase")
        for op_id, label in sorted(self.causal_acked.items(), key=lambda kv: str(kv[0])):
            logged = self.db.query("SELECT COUNT(*) FROM ws_events WHERE op_id = ?", (str(op_id),))
            if logged[0][0] != 1:
                self.fail("causal-durable", f"{label} was accepted but is not in the event log")
        heads = dict(self.db.query("SELECT origin, MAX(seq) FROM ws_events GROUP BY origin"))
        for sid, world in self.worlds.items():
            delivered = world.causal.buffer.delivered
            behind = {o: (delivered.get(o), h) for o, h in heads.items() if delivered.get(o) < h}
            if behind:
                self.fail(
                    "causal-delivered",
                    f"{sid} has not delivered logged events (delivered, head): {behind}",
                )
        self._check_convergence()
        self.record(f"end: {dict(sorted(self.counts.items()))}")

    def _check_convergence(self) -> None:
        """Every server agrees with the last-writer-wins merge of all servers' tables on
        every creature whose (merged) position lies in a region it hears (all of them with
        world-wide fan-out; docs/fanout.md)."""
        tables = {sid: w.eventual.positions for sid, w in self.worlds.items()}
        ref = EntityTable()
        for table in tables.values():
            ref.merge(table)
        ids = ref.ids
        if not ids.size:
            return
        cells = region_keys(ref.positions_of(ids))
        for sid, world in self.worlds.items():
            plan = world.interest.plan
            want = ids
            if plan is not None and not plan.world_wide:
                heard = np.array(sorted(k.morton for k in plan.regions), np.int64)
                want = ids[np.isin(cells, heard)]
            table = tables[sid]
            have = table.contains(want)
            got = want[have]
            differ = ~have.copy()
            differ[have] = (
                (table.positions_of(got) != ref.positions_of(got)).any(axis=1)
                | (table.hlc_of(got) != ref.hlc_of(got))
                | np.array(
                    [
                        a != b
                        for a, b in zip(table.writers_of(got), ref.writers_of(got), strict=True)
                    ],
                    dtype=np.bool_,
                )
            )
            if differ.any():
                self.fail(
                    "convergence",
                    f"{sid}'s creature table differs from the merge of all tables on the "
                    f"regions it hears ({int(differ.sum())} of {len(want)} ids, e.g. "
                    f"{want[differ][:5].tolist()})",
                )


__all__ = ["CHECK_EVERY", "Invariants"]

"""The simulation's fault schedule: partitions of servers and coordinators (the store with
one group or reachable from all), one-way faults, message drop/duplicate/reorder/delay
windows on the bus's fault network, store stall and lost-reply windows, and crashes with
restarts — all drawn from the seed."""

from __future__ import annotations

import asyncio
import contextlib
import random

from tests.sim.mesh import STORE, SimMesh
from tests.sim.store_sim import StoreFaults
from worldstate.errors import WorldStateError


class FaultSchedule(SimMesh):
    """What goes wrong, and when."""

    def _heal_network(self) -> None:
        self.hub.heal()
        self.net.cut_off = set(self.down)  # a crashed server stays down until it restarts
        self._store_group = set()
        self.partition = None
        self.one_way = False

    def _draw_partition(self) -> None:
        rng = self.rng
        names = list(self.server_ids)
        rng.shuffle(names)
        k = rng.choice([2, 2, 3]) if len(names) >= 3 else 2
        cuts = sorted(rng.sample(range(1, len(names)), k - 1))
        groups = [set(names[a:b]) for a, b in zip([0, *cuts], [*cuts, len(names)], strict=True)]
        for cid in self.coordinator_ids:
            rng.choice(groups).add(cid)
        store_everywhere = rng.random() < 0.3
        self._store_group = set()
        if not store_everywhere:
            store_group = rng.choice(groups)
            store_group.add(STORE)
            self._store_group = store_group
            everyone = {*self.server_ids, *self.coordinator_ids}
            self.net.cut_off = everyone - store_group
        self.hub.partition([g - {STORE} for g in groups])
        self.partition = [g - {STORE} for g in groups]
        self.partition_since = self.now
        self.partition_membership = self.membership
        where = "everywhere" if store_everywhere else "with its group"
        self.record(f"partition {[sorted(g) for g in groups]} (store {where})")

    def _draw_one_way(self) -> None:
        rng = self.rng
        sid = rng.choice(self.server_ids)
        others = [n for n in [*self.server_ids, *self.coordinator_ids] if n != sid]
        deaf = rng.random() < 0.5
        for other in others:
            if deaf:
                self.hub.block(other, sid)
            else:
                self.hub.block(sid, other)
        self.one_way = True
        self.partition = [{sid}, set(others)]
        self.partition_since = self.now
        self.partition_membership = self.membership
        self.record(f"one-way: {sid} {'hears nobody' if deaf else 'is heard by nobody'}")

    async def _crash_and_restart(self, sid: str, down_for: float) -> None:
        """A crash: the server's bus dies (its last will goes out), it can no longer reach
        the store (so nothing is released: its leases run out), its tasks stop. After
        ``down_for`` seconds a new `World` with the same id (a newer incarnation) starts."""
        world = self.worlds.pop(sid)
        self.crashed.add(sid)
        self.down.add(sid)
        self.standing.pop(sid, None)
        self.record(f"crash {sid} (restart in {down_for:.2f}s)")
        self.counts["crashes"] += 1
        self.net.cut_off.add(sid)
        with contextlib.suppress(WorldStateError):
            self.hub.kill(sid)
        with contextlib.suppress(Exception):
            await world.close()
        await asyncio.sleep(down_for)
        self.down.discard(sid)
        self.net.cut_off.discard(sid)
        group = self._store_group
        if self.partition is not None and STORE in group and sid not in group:
            self.net.cut_off.add(sid)  # the partition it comes back into
        while True:  # a restarting process keeps trying until it can open
            fresh = self._restarting = self._new_world(sid)
            try:
                await fresh.open()
                break
            except WorldStateError as e:  # the store unreachable, a lost reply ...
                self.record(f"restart {sid} failed: {type(e).__name__}; again in 1 s")
                with contextlib.suppress(Exception):
                    await fresh.close()
                await asyncio.sleep(1.0)
        self._restarting = None
        self.worlds[sid] = fresh
        self.standing[sid] = fresh.authoritative
        self.crashed.discard(sid)
        self.record(f"restart {sid}")

    async def _faults(self, until: float) -> None:
        rng = self.rng
        net_until = msg_until = store_until = 0.0
        while self.now < until:
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            now = self.now
            if self.partition is not None and now >= net_until:
                self._heal_network()
                self.record("heal")
            if self.hub.faults.any and now >= msg_until:
                self.hub.set_faults()
                self.record("message faults off")
            if self.net.faults.stall and now >= store_until:
                self.net.faults = StoreFaults()
                self.record("store faults off")
            roll = rng.random()
            if roll < 0.35 and self.partition is None:
                if rng.random() < 0.75:
                    self._draw_partition()
                else:
                    self._draw_one_way()
                net_until = now + rng.uniform(1.5, 8.0)
            elif roll < 0.6 and not self.hub.faults.any:
                delay = (0.0, rng.uniform(0.01, self.cfg.max_message_delay))
                self.hub.set_faults(
                    drop=rng.uniform(0, 0.1),
                    duplicate=rng.uniform(0, 0.1),
                    reorder=rng.uniform(0, 0.1),
                    delay=delay,
                    rng=random.Random(rng.getrandbits(64)),
                )
                msg_until = now + rng.uniform(1.0, 5.0)
                self.record(f"message faults {self.hub.faults}")
            elif roll < 0.68 and not self.crashed and len(self.worlds) > 2:
                sid = rng.choice(sorted(self.worlds))
                self._crash = asyncio.get_running_loop().create_task(
                    self._crash_and_restart(sid, rng.uniform(1.0, 5.0))
                )
            elif roll < 0.8 and not self.net.faults.stall:
                self.net.faults = StoreFaults(
                    stall=rng.uniform(0.02, 0.15),
                    stall_for=(0.5, rng.uniform(1.0, 5.0)),
                    lost_reply=rng.uniform(0.0, 0.1),
                )
                store_until = now + rng.uniform(1.0, 5.0)
                self.record(f"store faults {self.net.faults}")


__all__ = ["FaultSchedule"]

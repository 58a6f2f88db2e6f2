"""The simulation's workload: strong `PlaceStructure` ops (with retries of ambiguous ones
and resubmissions of acknowledged ones), eventual `MoveCreature` writes, causal `EmitEvent`s
and hand-offs asked of the acting coordinator, all drawn from the seed."""

from __future__ import annotations

import asyncio
import uuid

from regions import RegionKey
from tests.sim.mesh import SimMesh
from worldstate import MeshCoordinator
from worldstate.errors import WorldStateError
from worldstate.operations import EmitEvent, MoveCreature, PlaceStructure
from worldstate.results import Accepted, Committed, Rejected


class Workload(SimMesh):
    """What the game servers ask of the mesh."""

    def _op_id(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    async def _submit_strong(self, sid: str, op: PlaceStructure, label: str) -> None:
        world = self.worlds.get(sid)
        if world is None:  # crashed meanwhile: the op waits for a later retry
            self.uncertain.append((op, label))
            return
        try:
            async with asyncio.timeout(self.cfg.submit_timeout):
                result = await world.submit(op)
        except TimeoutError:
            self.counts["strong-timeout"] += 1
            self.uncertain.append((op, label))
            self.record(f"{label} via {sid}: timed out")
            return
        except WorldStateError as e:
            kind = type(e).__name__
            self.counts[f"strong-{kind}"] += 1
            if kind in ("StoreUnavailable", "BusUnavailable", "Overloaded"):
                self.uncertain.append((op, label))
            self.record(f"{label} via {sid}: {kind}")
            return
        except Exception as e:  # a bug in the node core: not a worldstate error
            self.fail("clean-errors", f"{label} via {sid} raised {type(e).__name__}: {e}")
            return
        if isinstance(result, Committed):
            first = self.acked.get(op.op_id)
            if first is not None and first[0] != result.version:
                self.fail(
                    "same-outcome",
                    f"{label} committed as v{first[0]} then v{result.version} on resubmission",
                )
            self.acked.setdefault(op.op_id, (result.version, label))
            self.counts["strong-committed"] += 1
            self.record(f"{label} via {sid}: committed v{result.version}")
        elif isinstance(result, Rejected):
            if op.op_id in self.acked:
                self.fail("same-outcome", f"{label} was committed, then rejected on resubmission")
            self.counts["strong-rejected"] += 1
            self.record(f"{label} via {sid}: rejected")
        else:
            self.fail("clean-errors", f"{label} via {sid}: unexpected result {result!r}")

    def _strong_op(self) -> tuple[PlaceStructure, str]:
        rng = self.rng
        n = next(self.ops)
        key = rng.choice(self.keys)
        lo = key.bounds[0]
        x, y, z = (lo[0] + rng.uniform(50, 1900), lo[1] + rng.uniform(50, 1900), lo[2] + 10.0)
        op = PlaceStructure(
            op_id=self._op_id(),
            structure_id=f"st-{n}",
            kind="wall",
            lo=(x, y, z),
            hi=(x + rng.uniform(1, 60), y + rng.uniform(1, 60), z + 3.0),
        )
        return op, f"op{n}@r{key.ix}"

    async def _strong_load(self, until: float) -> None:
        rng = self.rng
        while self.now < until:
            await asyncio.sleep(rng.expovariate(1 / self.cfg.strong_every))
            sid = rng.choice(sorted(self.worlds))
            if self.uncertain and rng.random() < 0.3:  # retry an ambiguous one, same op_id
                op, label = self.uncertain.pop(rng.randrange(len(self.uncertain)))
                self._spawn(self._submit_strong(sid, op, label + "(retry)"))
            elif self.acked and rng.random() < 0.05:  # resubmit an acknowledged one
                op_id = rng.choice(sorted(self.acked, key=str))
                self.counts["resubmit-acked"] += 1
                self._spawn(self._resubmit(sid, op_id))
            else:
                op, label = self._strong_op()
                self._sent[op.op_id] = op
                self._spawn(self._submit_strong(sid, op, label))

    async def _resubmit(self, sid: str, op_id: uuid.UUID) -> None:
        op = self._sent[op_id]
        await self._submit_strong(sid, op, self.acked[op_id][1] + "(again)")

    def _creatures(self, sid: str) -> list[int]:
        i = self.server_ids.index(sid)
        return [100 * (i + 1) + k for k in range(4)] + [1, 2]  # 1 and 2: written by all

    async def _move(self, sid: str, creature: int) -> None:
        rng = self.rng
        key = rng.choice(self.keys)
        lo = key.bounds[0]
        pos = (lo[0] + rng.uniform(0, 1999), lo[1] + rng.uniform(0, 1999), lo[2] + 1.0)
        op = MoveCreature(op_id=self._op_id(), creature_id=creature, position=pos)
        world = self.worlds.get(sid)
        if world is None:
            return
        try:
            await world.submit(op)
        except WorldStateError as e:
            self.counts[f"move-{type(e).__name__}"] += 1
            self.record(f"move of {creature} by {sid}: {type(e).__name__}: {e}")
        except Exception as e:
            self.fail("clean-errors", f"move via {sid} raised {type(e).__name__}: {e}")

    async def _eventual_load(self, until: float) -> None:
        rng = self.rng
        while self.now < until:
            await asyncio.sleep(rng.expovariate(1 / self.cfg.move_every))
            sid = rng.choice(sorted(self.worlds))
            await self._move(sid, rng.choice(self._creatures(sid)))
            self.counts["moves"] += 1

    async def _emit(self, sid: str) -> None:
        rng = self.rng
        n = next(self.ops)
        key = rng.choice(self.keys)
        lo = key.bounds[0]
        op = EmitEvent(
            op_id=self._op_id(),
            position=(lo[0] + rng.uniform(0, 1999), lo[1] + rng.uniform(0, 1999), lo[2] + 1.0),
            stream="quest",
            payload={"step": n},
        )
        label = f"ev{n}@r{key.ix}"
        world = self.worlds.get(sid)
        if world is None:
            return  # crashed meanwhile
        try:
            async with asyncio.timeout(self.cfg.submit_timeout):
                result = await world.submit(op)
        except (WorldStateError, TimeoutError) as e:
            self.counts[f"causal-{type(e).__name__}"] += 1
            self.record(f"{label} via {sid}: {type(e).__name__}")
            return
        except Exception as e:
            self.fail("clean-errors", f"{label} via {sid} raised {type(e).__name__}: {e}")
            return
        if isinstance(result, Accepted):
            self.causal_acked[op.op_id] = label
            self.counts["causal-accepted"] += 1
            self.record(f"{label} via {sid}: accepted")
        else:
            self.fail("clean-errors", f"{label} via {sid}: unexpected result {result!r}")

    async def _causal_load(self, until: float) -> None:
        rng = self.rng
        while self.now < until:
            await asyncio.sleep(rng.expovariate(1 / self.cfg.causal_every))
            self._spawn(self._emit(rng.choice(sorted(self.worlds))))

    async def _handoffs(self, until: float) -> None:
        rng = self.rng
        while self.now < until:
            await asyncio.sleep(rng.uniform(2.0, 5.0))
            acting = [self.coordinators[c] for c in sorted(self.acting)]
            if not acting:
                continue
            key, to = rng.choice(self.keys), rng.choice(sorted(self.worlds))
            self._spawn(self._handoff(acting[0], key, to))

    async def _handoff(self, coordinator: MeshCoordinator, key: RegionKey, to: str) -> None:
        try:
            async with asyncio.timeout(6.0):
                lease = await coordinator.handoff(key, to)
            self.counts["handoff-ok"] += 1
            self.record(f"handoff r{key.ix} -> {to}: epoch {lease.epoch}")
        except (WorldStateError, TimeoutError) as e:
            self.counts[f"handoff-{type(e).__name__}"] += 1
            self.record(f"handoff r{key.ix} -> {to}: {type(e).__name__}")


__all__ = ["Workload"]

"""``worldstate serve --play N``: N simulated players on the regions this server holds, so
a deploy shows life without a game. The same mix as ``worldstate simulate``
(`worldstate.demo._load`), run continuously: every tick the players move (one vectorised
eventual batch); a few times a second a player builds (strong, overlapping now and then),
mines a shared resource node (contended claims), trades gold (atomic transfers) or
advances a quest (causal)."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from typing import TextIO

import numpy as np

from regions import RegionKey
from worldstate.errors import WorldStateError
from worldstate.operations import (
    ChangeInventory,
    ClaimResource,
    EmitEvent,
    PlaceStructure,
    TransferItems,
)
from worldstate.results import Committed
from worldstate.world import World

log = logging.getLogger("worldstate.serve.play")

ACTIONS_PER_SECOND = 8.0
"""Strong/causal actions per second, whatever N (movement scales with N)."""


class Players:
    """Drives ``count`` players on ``world`` until `stop`."""

    def __init__(
        self, world: World, count: int, *, seed: int | None = None, acks: TextIO | None = None
    ) -> None:
        self.world = world
        self.acks = acks
        """Where each acknowledged strong op is recorded (``op_id kind subject``), flushed
        after the ack: a line there is a write the store promised to keep."""
        self.count = count
        self.rng = random.Random(seed)
        self.ids = np.arange(count, dtype=np.int64) + (abs(hash(world.server_id)) % 1000) * 10**6
        self.tag = uuid.uuid4().hex[:6]
        self.actions = 0
        self.errors = 0
        self._resources: set[RegionKey] = set()
        self._last_plot: tuple[float, float] | None = None
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        w = self.world
        period = 1.0 / w.config.tick_rate
        loop = asyncio.get_running_loop()
        next_action = loop.time()
        tick = 0
        invs = [f"{w.server_id}-player-{i}" for i in range(min(20, max(2, self.count)))]
        funded = False
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(max(1.0, period * 4)):
                    await self._stop.wait()
            except TimeoutError:
                pass
            if self._stop.is_set():
                break
            held = sorted(w.leases(), key=lambda k: k.morton)
            if not held or not w.authoritative:
                continue
            tick += 1
            self._move(held, tick)
            if loop.time() < next_action:
                continue
            next_action = loop.time() + 1.0 / ACTIONS_PER_SECOND
            try:
                if not funded:
                    for v in invs:
                        await w.submit(ChangeInventory(inventory_id=v, item="gold", delta=100))
                    funded = True
                await self._act(held, invs)
                self.actions += 1
            except WorldStateError as e:
                self.errors += 1
                log.debug("play: %s", e)

    def _move(self, held: list[RegionKey], tick: int) -> None:
        n = self.count
        if n == 0:
            return
        home = np.array([held[i % len(held)].bounds[0] for i in range(n)], dtype=np.float64)
        phase = (self.ids % 97).astype(np.float64) + tick * 0.5
        pos = home + np.column_stack(
            [1000 + 800 * np.cos(phase / 20), 1000 + 800 * np.sin(phase / 20), np.full(n, 10.0)]
        )
        self.world.move_entities(self.ids, pos)

    async def _act(self, held: list[RegionKey], invs: list[str]) -> None:
        w, rng = self.world, self.rng
        key = rng.choice(held)
        lo, _ = key.bounds
        kind = rng.random()
        if kind < 0.4:
            # builds cluster in a 150 m square, and every 4th one races for the spot of the
            # one before (two players, one plot): the conflict rules decide
            if self._last_plot is not None and self.actions % 4 == 0:
                x, y = self._last_plot
            else:
                x, y = lo[0] + rng.uniform(100, 250), lo[1] + rng.uniform(100, 250)
            self._last_plot = (x, y)
            sid = f"play-{self.tag}-{self.actions}"
            res = await w.submit(
                PlaceStructure(
                    structure_id=sid, lo=(x, y, lo[2] + 10), hi=(x + 20, y + 20, lo[2] + 15)
                )
            )
            if isinstance(res, Committed) and self.acks is not None:
                self.acks.write(f"{res.op_id} structure {sid}\n")
                self.acks.flush()
        elif kind < 0.55:
            node = f"ore-{key.morton}"
            where = (lo[0] + 1500.0, lo[1] + 1500.0, lo[2] + 5.0)
            if key not in self._resources:
                await w.put_resource(node, where, 1000.0)
                self._resources.add(key)
            await w.submit(
                ClaimResource(
                    resource_id=node,
                    claimant=rng.choice(invs),
                    position=where,
                    amount=rng.uniform(1, 20),
                )
            )
        elif kind < 0.75:
            # look around: a query through the R-tree (regions re-read from the cache)
            c = (lo[0] + rng.uniform(0, 2000), lo[1] + rng.uniform(0, 2000), lo[2] + 10)
            await w.query(
                ((c[0] - 300, c[1] - 300, c[2] - 50), (c[0] + 300, c[1] + 300, c[2] + 50))
            )
        elif kind < 0.85:
            a, b = rng.sample(invs, 2)
            await w.submit(
                TransferItems(
                    from_inventory=a, to_inventory=b, item="gold", quantity=rng.randint(1, 10)
                )
            )
        else:
            await w.submit(
                EmitEvent(
                    position=(lo[0] + 50.0, lo[1] + 50.0, lo[2] + 5.0),
                    stream=f"quest-{key.morton}",
                    payload={"step": self.actions},
                )
            )

"""Concurrent strong operations from three servers, recorded as a history and checked with
the linearizability checker (inventory model: adds that never go below zero, and reads)."""

from __future__ import annotations

import asyncio
import random
import time
from contextlib import AsyncExitStack

from tests.fix_services import Backend
from tests.linearizability import UNKNOWN, Operation, check, inventory_model
from tests.worldstate.fix_world import open_world
from worldstate import World, WorldStateError
from worldstate.operations import ChangeInventory
from worldstate.results import Committed

KEYS = ["inv-x", "inv-y"]


async def test_inventory_history_is_linearizable(backend: Backend) -> None:
    history: list[Operation] = []
    async with AsyncExitStack() as stack:
        worlds: list[World] = [
            await stack.enter_async_context(
                open_world(backend, f"gs-{i}", bus_url=f"memory://{backend.namespace}")
            )
            for i in range(3)
        ]

        async def client(cid: int) -> None:
            rng = random.Random(cid)
            w = worlds[cid % 3]
            for _ in range(25):
                key = rng.choice(KEYS)
                t0 = time.monotonic()
                if rng.random() < 0.35:
                    try:
                        inv = await w.get_inventory(key)
                    except WorldStateError:
                        history.append(Operation(cid, key, ("read",), UNKNOWN, t0, None))
                        continue
                    history.append(
                        Operation(cid, key, ("read",), inv.get("gold", 0), t0, time.monotonic())
                    )
                else:
                    delta = rng.choice([-5, -4, -3, -2, 1, 2, 3])
                    try:
                        res = await w.submit(
                            ChangeInventory(inventory_id=key, item="gold", delta=delta)
                        )
                    except WorldStateError:
                        history.append(Operation(cid, key, ("add", delta), UNKNOWN, t0, None))
                        continue
                    out = "ok" if isinstance(res, Committed) else "rejected"
                    history.append(Operation(cid, key, ("add", delta), out, t0, time.monotonic()))

        await asyncio.gather(*(client(i) for i in range(8)))
    assert len(history) == 200
    result = check(inventory_model(), history)
    assert result.ok, f"non-linearizable history on {result.bad_key}"
    # the history must exercise both outcomes, or the check proves little
    outs = {o.output for o in history if o.input[0] == "add"}
    assert {"ok", "rejected"} <= outs

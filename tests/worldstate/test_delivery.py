"""Delivery guarantees per operation type, under memory-bus fault injection: at-least-once
survives dropped deliveries (and may duplicate), effectively-once never duplicates,
at-most-once never waits for anything (and loses what the bus drops)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest

import worldstate
from regions import RegionKey
from worldstate import (
    ChangeInventory,
    EmitEvent,
    MoveCreature,
    PlaceStructure,
    SetAutomation,
    StateChange,
    TransferCreature,
)
from worldstate.bus import get_hub
from worldstate.errors import ValidationError
from worldstate.results import Accepted

from .fix_world import open_world

R0 = RegionKey(0, 0, 0)
N = 40


@dataclass(frozen=True, kw_only=True)
class Alarm(SetAutomation):
    """A game type that must arrive (duplicates are fine)."""


@dataclass(frozen=True, kw_only=True)
class Door(SetAutomation):
    """A game type that must arrive exactly once."""


@dataclass(frozen=True, kw_only=True)
class Wall(PlaceStructure):
    """A strong game type."""


@dataclass(frozen=True, kw_only=True)
class Quest(EmitEvent):
    """A causal game type."""


def register(w: worldstate.World) -> None:
    w.register_operation(Alarm, "eventual", delivery="at-least-once")
    w.register_operation(Door, "eventual", delivery="effectively-once")


async def eventually(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_defaults_and_refusals() -> None:
    w = worldstate.World(worldstate.Config(store_url="sqlite+aiosqlite:///:memory:"))
    assert w.delivery_of(PlaceStructure) == "effectively-once"
    assert w.delivery_of(ChangeInventory) == "effectively-once"
    assert w.delivery_of(EmitEvent) == "effectively-once"
    assert w.delivery_of(TransferCreature) == "effectively-once"
    assert w.delivery_of(MoveCreature) == "at-most-once"
    assert w.delivery_of(SetAutomation) == "at-most-once"
    with pytest.raises(ValidationError, match="effectively-once"):
        w.register_operation(Wall, "strong", delivery="at-least-once")
    with pytest.raises(ValidationError, match="at-most-once is not offered"):
        w.register_operation(Quest, "causal", delivery="at-most-once")
    w.register_operation(Quest, "causal", delivery="at-least-once")  # served effectively-once
    with pytest.raises(ValidationError, match="delivery must be one of"):
        w.register_operation(Door, "eventual", delivery="twice")
    register(w)
    assert w.delivery_of(Alarm) == "at-least-once"
    assert (
        w.delivery_of(Door(entity_id=1, position=(1.0, 1.0, 1.0), state={})) == "effectively-once"
    )


async def test_delivery_modes_under_dropped_and_duplicated_messages(
    sqlite_url: str, namespace: str
) -> None:
    bus = f"memory://{namespace}"
    async with (
        open_world(sqlite_url, "gs-a", bus_url=bus, namespace=namespace) as a,
        open_world(sqlite_url, "gs-b", bus_url=bus, namespace=namespace) as b,
    ):
        register(a)
        register(b)
        await eventually(lambda: "gs-b" in a.partition_status()["view"], "a to hear b")
        seen: Counter[tuple[str, int]] = Counter()
        stream = b.updates()

        async def consume() -> None:
            async for u in stream:
                if isinstance(u, StateChange):
                    seen[(u.op_type, u.entity_id)] += 1

        task = asyncio.create_task(consume())
        hub = get_hub(namespace)
        lo, _ = R0.bounds
        p = (lo[0] + 5, lo[1] + 5, lo[2] + 5)
        try:
            hub.set_faults(drop=0.5, duplicate=0.3, seed=7)
            for i in range(N):
                for op in (
                    Alarm(entity_id=i, position=p, state={"i": i}),
                    Door(entity_id=1000 + i, position=p, state={"i": i}),
                    SetAutomation(entity_id=2000 + i, position=p, state={"i": i}),
                ):
                    assert await a.submit(op) == Accepted(op.op_id)
                # at-most-once never waits for an acknowledgement: it is not in the outbox
                assert a.eventual.reliable is not None
                assert a.eventual.reliable.stats()["outbox"] <= 2 * (i + 1)
                await asyncio.sleep(1.2 / a.config.tick_rate)  # one tick batch per round
            await asyncio.sleep(0.5)
            hub.set_faults()
            await eventually(
                lambda: all(
                    seen[("Alarm", i)] >= 1 and seen[("Door", 1000 + i)] >= 1 for i in range(N)
                ),
                "every at-least-once and effectively-once op to arrive",
            )
            await eventually(
                lambda: (
                    a.eventual.reliable is not None and a.eventual.reliable.stats()["outbox"] == 0
                ),
                "every ack",
            )
            await asyncio.sleep(0.3)
        finally:
            hub.set_faults()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, worldstate.WorldClosed):
                await task
        sent = a.eventual.reliable.stats() if a.eventual.reliable is not None else {}
        got = b.eventual.reliable.stats() if b.eventual.reliable is not None else {}
        assert sent["redelivered"] > 0, "drops were survived by redelivery"
        # effectively-once: exactly once each, whatever the bus did
        assert all(seen[("Door", 1000 + i)] == 1 for i in range(N))
        # at-least-once: at least once each, and duplicates did reach the game
        assert all(seen[("Alarm", i)] >= 1 for i in range(N))
        assert got["duplicates"] > 0
        assert sum(seen[("Alarm", i)] for i in range(N)) > N
        # at-most-once: what the bus dropped stays lost (never redelivered)
        amo = sum(seen[("SetAutomation", 2000 + i)] for i in range(N))
        assert 0 < sum(1 for i in range(N) if seen[("SetAutomation", 2000 + i)]) < N
        assert amo >= 1
        # state converged for every acknowledged op
        assert b.eventual.states[("automation", 5)].state == {"i": 5}

"""Fan-out follows interest over a real Mosquitto broker: a server does not receive the
batches of a far region it neither owns nor watches (counted at the transport, under the
signing layer), does receive its neighbours' and its watched regions', and re-subscribes on
acquire / release and on opening / closing an `updates()` stream."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

import worldstate
from regions import RegionKey
from tests.worldstate.fix_world import open_world
from worldstate import EntityBatch
from worldstate.bus import SignedBus
from worldstate.updates import UpdateStream

TIMEOUT = 30.0
HOME = RegionKey(0, 0, 0)
NEXT = RegionKey(1, 0, 0)
FAR = RegionKey(12, 5, 0)


def at(key: RegionKey, n: int = 1, seed: int = 0) -> npt.NDArray[np.float64]:
    lo, _ = key.bounds
    return np.asarray(lo) + np.random.default_rng(seed).uniform(10.0, 1990.0, (n, 3))


async def wait_until(pred: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not pred():  # noqa: ASYNC110 (polling state the paths update)
            await asyncio.sleep(0.02)


def knows(w: worldstate.World, ids: list[int]) -> bool:
    return bool(w.eventual.positions.contains(ids).all())


def both_know(a: worldstate.World, w: worldstate.World, near: list[int], far: list[int]) -> bool:
    """``a`` knows the near creatures, ``w`` (the world-wide watcher) knows both."""
    return knows(a, near) and knows(w, far + near)


def transport(w: worldstate.World) -> tuple[int, int]:
    """(messages, payload bytes) the MQTT client under the signing layer received."""
    bus = w.bus
    assert isinstance(bus, SignedBus)
    st = bus.inner.stats
    return st.received, st.bytes_received


async def next_batch(stream: UpdateStream) -> EntityBatch:
    async with asyncio.timeout(TIMEOUT):
        while True:
            u = await anext(stream)
            if isinstance(u, EntityBatch):
                return u


async def test_interest_fanout_over_mosquitto(
    sqlite_url: str, mqtt_url: str, namespace: str
) -> None:
    kw: dict[str, Any] = {
        "bus_url": mqtt_url,
        "namespace": namespace,
        "tick_rate": 0.5,
    }  # ticks by hand
    async with (
        open_world(sqlite_url, "gs-1", **kw) as a,
        open_world(sqlite_url, "gs-2", **kw) as watcher,
        open_world(sqlite_url, "gs-3", **kw) as c,
    ):
        await a.acquire_region(HOME)
        everything = watcher.updates()  # the control: hears the whole world
        assert await a.wait_subscribed() and await watcher.wait_subscribed()
        # let the membership heartbeats settle, then count only eventual traffic
        for rnd in range(3):
            before_a, before_w = a.eventual.stats()["messages_received"], transport(watcher)
            c.move_entities([10 * rnd + 1], at(FAR, seed=rnd))  # the far region first
            c.move_entities([10 * rnd + 2], at(NEXT, seed=rnd))  # then a's neighbour
            assert await c.eventual.tick() == 2
            near, far = [10 * rnd + 2], [10 * rnd + 1]
            await wait_until(functools.partial(both_know, a, watcher, near, far))
            # a got the neighbour's batch, never the far one (the watcher got both)
            assert not a.eventual.positions.contains(far).any()
            assert a.eventual.stats()["messages_received"] == before_a + 1
            assert transport(watcher)[0] >= before_w[0] + 2
        seen: set[RegionKey] = set()
        while len(seen) < 2:
            seen.add((await next_batch(everything)).region)
        assert seen == {FAR, NEXT}
        far_topic = f"eventual/{FAR.morton}"
        assert far_topic not in a.interest.filters()

        # a stream on FAR: subscribed, acknowledged, heard; closed: unsubscribed, deaf again
        stream = a.updates(FAR)
        assert far_topic in a.interest.filters()
        assert await a.wait_subscribed()
        c.move_entities([100], at(FAR))
        await c.eventual.tick()
        got = await next_batch(stream)
        assert got.region == FAR and got.ids.tolist() == [100]
        stream.close()
        assert await a.wait_subscribed()
        assert far_topic not in a.interest.filters()
        base = a.eventual.stats()["messages_received"]
        c.move_entities([101], at(FAR))
        c.move_entities([102], at(HOME))
        await c.eventual.tick()
        await wait_until(lambda: knows(a, [102]) and knows(watcher, [101]))
        assert not knows(a, [101])
        assert a.eventual.stats()["messages_received"] == base + 1

        # acquiring FAR subscribes it (acknowledged before acquire_region returns),
        # releasing it unsubscribes
        await a.acquire_region(FAR)
        assert far_topic in a.interest.filters()
        c.move_entities([200], at(FAR))
        await c.eventual.tick()
        await wait_until(lambda: knows(a, [200]))
        assert await a.release_region(FAR)
        assert await a.wait_subscribed()
        assert far_topic not in a.interest.filters()
        c.move_entities([201], at(FAR))
        c.move_entities([202], at(NEXT))
        await c.eventual.tick()
        await wait_until(lambda: knows(a, [202]) and knows(watcher, [201]))
        assert not knows(a, [201])
        assert a.stats()["interest"]["subscribe_timeouts"] == 0
        assert a.stats()["interest"]["refused"] == {}
        everything.close()


async def test_interest_subscriptions_come_back_after_a_reconnection(
    sqlite_url: str, mqtt_url: str, namespace: str
) -> None:
    """The MQTT adapter subscribes every pattern again on reconnection: the regional
    filters too (the planner's filters are ordinary bus subscriptions)."""
    kw: dict[str, Any] = {"bus_url": mqtt_url, "namespace": namespace, "tick_rate": 0.5}
    async with (
        open_world(sqlite_url, "gs-1", **kw) as a,
        open_world(sqlite_url, "gs-3", **kw) as c,
    ):
        await a.acquire_region(HOME)
        assert await a.wait_subscribed()
        bus = a.bus
        assert isinstance(bus, SignedBus)
        inner = bus.inner
        reconnects = inner.stats.reconnects
        client = getattr(inner, "_client", None)
        assert client is not None
        client._client.disconnect()  # paho: drop the connection under aiomqtt's feet
        await wait_until(lambda: inner.stats.reconnects > reconnects and a.interest.active())
        assert await a.wait_subscribed()
        c.move_entities([1], at(NEXT))
        await c.eventual.tick()
        await wait_until(lambda: knows(a, [1]))

"""The eventual path over a real Mosquitto broker: two servers, a few hundred creatures
written by both, converging by last-writer-wins; `World.updates` delivers their batches."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from regions import RegionKey, region_keys
from tests.worldstate.fix_world import open_world
from worldstate import EntityBatch, SetAutomation, StateChange
from worldstate.updates import Update

TIMEOUT = 30.0


async def wait_until(pred: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not pred():  # noqa: ASYNC110 (polling state the paths update)
            await asyncio.sleep(0.02)


async def test_two_servers_converge_over_mosquitto(
    sqlite_url: str, mqtt_url: str, namespace: str
) -> None:
    async with (
        open_world(sqlite_url, "gs-1", bus_url=mqtt_url, namespace=namespace) as a,
        open_world(sqlite_url, "gs-2", bus_url=mqtt_url, namespace=namespace) as b,
    ):
        # each owns half of the 2x2x2 block written: each hears the other half as neighbours
        for ix in (0, 1):
            for iy in (0, 1):
                for iz in (0, 1):
                    await (a if ix == 0 else b).acquire_region(RegionKey(ix, iy, iz))
        assert await a.wait_subscribed() and await b.wait_subscribed()
        ids = np.arange(400, dtype=np.int64)
        rng = np.random.default_rng(5)
        # rounds of overlapping writes from both servers, over 8 regions
        for _ in range(5):
            for w in (a, b):
                pick = np.sort(rng.choice(ids, 300, replace=False))
                w.move_entities(pick, rng.uniform(0.0, 3999.0, (300, 3)), rng.normal(size=(300, 3)))
            await asyncio.sleep(0.03)
        # every entity written at least once by somebody
        a.move_entities(ids, rng.uniform(0.0, 3999.0, (400, 3)))
        await a.submit(SetAutomation(entity_id=1, position=(5.0, 5.0, 5.0), state={"run": 1}))
        await b.submit(SetAutomation(entity_id=1, position=(5.0, 5.0, 5.0), state={"run": 2}))

        def converged() -> bool:
            ta, tb = a.eventual.positions, b.eventual.positions
            if not (ta.contains(ids).all() and tb.contains(ids).all()):
                return False
            sa, sb = (
                a.eventual.states.get(("automation", 1)),
                b.eventual.states.get(("automation", 1)),
            )
            return (
                ta == tb
                and a.eventual.velocities == b.eventual.velocities
                and sa is not None
                and sb is not None
                and (sa.hlc, sa.server_id) == (sb.hlc, sb.server_id)
            )

        await wait_until(converged)
        assert a.eventual.stats()["dropped_total"] == 0
        assert b.eventual.stats()["dropped_total"] == 0
        # the broker sent our own batches back (dropped by the signing bus, or by the path)
        echoes = getattr(a.bus, "echoes", 0)
        assert a.eventual.stats()["echoes"] + echoes > 0


async def test_updates_stream_over_mosquitto(
    sqlite_url: str, mqtt_url: str, namespace: str
) -> None:
    async with (
        open_world(sqlite_url, "gs-1", bus_url=mqtt_url, namespace=namespace) as a,
        open_world(sqlite_url, "gs-2", bus_url=mqtt_url, namespace=namespace) as b,
    ):
        k = RegionKey(0, 0, 0)
        stream = b.updates(k)
        assert await b.wait_subscribed()  # the broker has b's subscription to k's batches
        ids = np.arange(250, dtype=np.int64)
        pos = np.random.default_rng(2).uniform(1.0, 1999.0, (250, 3))
        a.move_entities(ids, pos)
        await a.submit(SetAutomation(entity_id=77, region=k, state={"mode": "on"}))
        got: dict[int, list[float]] = {}
        changes: list[StateChange] = []
        async with asyncio.timeout(TIMEOUT):
            while len(got) < 250 or not changes:
                u: Update = await anext(stream)
                if isinstance(u, EntityBatch):
                    assert u.region == k and u.server_id == "gs-1"
                    assert (region_keys(u.positions) == k.morton).all()
                    got.update(zip(u.ids.tolist(), u.positions.tolist(), strict=True))
                elif isinstance(u, StateChange):
                    changes.append(u)
        np.testing.assert_array_equal(np.array([got[i] for i in range(250)]), pos)
        assert changes[0].entity_id == 77 and dict(changes[0].state) == {"mode": "on"}

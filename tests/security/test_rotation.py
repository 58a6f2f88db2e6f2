"""Key rotation on a running mesh (in-process bus, SQLite).

A routine rotation drops nothing: the new key is accepted everywhere first and signs only
after the grace period. After a compromise (``--retire-previous``) the new key signs at once;
a peer that has not re-read the keys yet re-reads them as soon as it sees a key id newer than
it knows, instead of at its next poll."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack

from tests.fix_services import Backend
from tests.worldstate.fix_mesh import Mesh, until
from worldstate import Committed, PlaceStructure, World
from worldstate.bus import SignedBus
from worldstate.protocol._envelope import KeySet
from worldstate.store import bus_keys


def keys_of(w: World) -> KeySet:
    assert isinstance(w.bus, SignedBus) and w.bus.keys is not None
    return w.bus.keys


def place(i: int) -> PlaceStructure:
    x = 2010.0 + 10 * i
    return PlaceStructure(structure_id=f"r{i}", lo=(x, 10, 10), hi=(x + 4, 14, 14))


async def test_a_routine_rotation_drops_nothing(sqlite_url: str, namespace: str) -> None:
    async with AsyncExitStack() as stack:
        m = Mesh(Backend("sqlite", sqlite_url, "memory://", namespace), stack)
        a = await m.open("gs-1", bus_key_refresh=0.2)
        b = await m.open("gs-2", bus_key_refresh=0.2)
        await a.acquire_region((1, 0, 0))
        kid = await a.store.run(lambda c: bus_keys.rotate(c, time.time(), grace=1.5), "rotate")
        i = 0
        # forwarded ops (b → a and back) all through the switch
        while not all(keys_of(w).signing_key(time.time()) == kid for w in (a, b)):
            assert isinstance(await b.submit(place(i), timeout=30), Committed)
            i += 1
        for _ in range(5):
            assert isinstance(await b.submit(place(i), timeout=30), Committed)
            i += 1
        for w in (a, b):
            assert not any(w.bus.stats.rejected.values()), w.bus.stats.rejected
        assert i > 5


async def test_after_a_compromise_a_peer_catches_up_at_once(
    sqlite_url: str, namespace: str
) -> None:
    async with AsyncExitStack() as stack:
        m = Mesh(Backend("sqlite", sqlite_url, "memory://", namespace), stack)
        a = await m.open("gs-1", bus_key_refresh=600.0)
        b = await m.open("gs-2", bus_key_refresh=600.0)
        now = time.time()
        kid = await a.store.run(lambda c: bus_keys.rotate(c, now, retire_previous=True), "rotate")
        fresh = await a.store.run(lambda c: bus_keys.load(c, time.time()), "keys")
        assert isinstance(a.bus, SignedBus)
        a.bus.refresh_now(fresh)  # gs-1 has read it; gs-2 would poll only in 600 s
        assert keys_of(b).current == kid - 1
        await until(lambda: keys_of(b).current == kid, "gs-2 re-read the keys", timeout=20)
        assert b.bus.stats.rejected["unknown_key"] >= 1  # gs-1's heartbeat woke it
        await until(lambda: set(b.partition_status()["view"]) == {"gs-1", "gs-2"}, "hears gs-1")

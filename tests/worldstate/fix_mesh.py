"""Helpers for the mesh tests: several worlds and coordinators on one in-process bus hub
(``memory://<namespace>``, so the hub's partition/heal/kill reach them), short timeouts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import worldstate
from regions import RegionKey
from tests.fix_services import Backend
from worldstate import Config, MeshCoordinator
from worldstate.bus import Hub, get_hub

TIMING: dict[str, Any] = {
    "heartbeat_interval": 0.1,
    "partition_timeout": 0.8,
    "lease_ttl": 1.5,
    "lease_renew_interval": 0.4,
}
"""Short enough for tests, long enough for a loaded 2-core machine running SQLite."""

DEADLINE = 45.0
"""Generous: a condition that should take about a second may take many under load."""


async def until(cond: Callable[[], bool], what: str, timeout: float = DEADLINE) -> float:
    """Wait until ``cond()`` holds (polling); the seconds it took. Fails the test with
    ``what`` after ``timeout``."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


def config_for(backend: Backend, **changes: Any) -> Config:
    base: dict[str, Any] = {
        "store_url": backend.store_url,
        "cache_url": backend.cache_url,
        "namespace": backend.namespace,
        "bus_url": f"memory://{backend.namespace}",
        **TIMING,
    }
    base.update(changes)
    return Config(**base)


@dataclass
class Mesh:
    backend: Backend
    stack: AsyncExitStack
    worlds: dict[str, worldstate.World] = field(default_factory=dict)
    coordinators: list[MeshCoordinator] = field(default_factory=list)

    @property
    def hub(self) -> Hub:
        return get_hub(self.backend.namespace)

    def __getitem__(self, server_id: str) -> worldstate.World:
        return self.worlds[server_id]

    async def open(self, server_id: str, **changes: Any) -> worldstate.World:
        cfg = config_for(self.backend, server_id=server_id, **changes)
        world = await self.stack.enter_async_context(worldstate.connect(config=cfg))
        self.worlds[server_id] = world
        return world

    async def coordinator(self, coordinator_id: str, **kwargs: Any) -> MeshCoordinator:
        coord = MeshCoordinator(config_for(self.backend), coordinator_id=coordinator_id, **kwargs)
        await coord.start()
        self.stack.push_async_callback(coord.close)
        self.coordinators.append(coord)
        return coord

    @property
    def acting(self) -> MeshCoordinator:
        acting = [c for c in self.coordinators if c.acting]
        assert len(acting) == 1, f"{len(acting)} coordinators act"
        return acting[0]

    def authoritative(self, ids: Sequence[str]) -> bool:
        return all(self.worlds[s].authoritative for s in ids)

    def demoted(self, ids: Sequence[str]) -> bool:
        return not any(self.worlds[s].authoritative for s in ids)

    def holders(self, key: RegionKey) -> list[str]:
        return [s for s, w in self.worlds.items() if w.holds(key)]


@asynccontextmanager
async def mesh(
    backend: Backend, ids: Sequence[str] = (), coordinators: Sequence[str] = ("coord-a",)
) -> AsyncIterator[Mesh]:
    """Open worlds ``ids`` and coordinators; with coordinators, wait until one acts and
    has recorded every world in the membership."""
    async with AsyncExitStack() as stack:
        m = Mesh(backend, stack)
        for sid in ids:
            await m.open(sid)
        for cid in coordinators:
            await m.coordinator(cid)
        if coordinators:
            await until(lambda: sum(c.acting for c in m.coordinators) == 1, "a coordinator acts")
            await until(
                lambda: (
                    set(m.acting.membership()["members"]) == set(ids)
                    and set(m.acting.eligible()) == set(ids)
                ),
                "every server is a member",
            )
        yield m


def keys(n: int, iy: int = 0) -> list[RegionKey]:
    return [RegionKey(i, iy, 0) for i in range(n)]

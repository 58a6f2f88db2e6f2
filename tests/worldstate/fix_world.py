"""Helpers shared by the worldstate tests: a controllable clock and world factories."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import worldstate
from regions import RegionKey
from tests.fix_services import Backend
from worldstate import Config
from worldstate.objects import WorldObject


class FakeClock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_config(store_url: str, **changes: Any) -> Config:
    base: dict[str, Any] = {"store_url": store_url, "lease_ttl": 10.0, "lease_renew_interval": 3.0}
    base.update(changes)
    return Config(**base)


@asynccontextmanager
async def open_world(
    where: str | Backend,
    server_id: str = "gs-1",
    *,
    clock: Callable[[], float] | None = None,
    **changes: Any,
) -> AsyncIterator[worldstate.World]:
    if isinstance(where, Backend):
        changes.setdefault("cache_url", where.cache_url)
        changes.setdefault("namespace", where.namespace)
        where = where.store_url
    cfg = make_config(where, server_id=server_id, **changes)
    kwargs: dict[str, Any] = {"config": cfg}
    if clock is not None:
        kwargs["clock"] = clock
    async with worldstate.connect(**kwargs) as world:
        yield world


def obj(
    oid: str, key: RegionKey, offset: float = 10.0, kind: str = "structure", **data: Any
) -> WorldObject:
    """A 2 m cube near the low corner of ``key``."""
    lo, _ = key.bounds
    a = (lo[0] + offset, lo[1] + offset, lo[2] + offset)
    return WorldObject(oid, kind, a, (a[0] + 2, a[1] + 2, a[2] + 2), data)

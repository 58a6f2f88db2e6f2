"""PLACEHOLDER being replaced by the eventual path (ticks, batches, LWW, snapshots)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from regions import RegionKey
from worldstate.errors import WorldStateError
from worldstate.operations import Operation
from worldstate.results import Accepted

if TYPE_CHECKING:
    from worldstate.world import World


class EventualPath:
    def __init__(self, world: World) -> None:
        self.world = world

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def submit(self, op: Operation, key: RegionKey | None) -> Accepted:
        raise WorldStateError("eventual path not built yet")

    def move_entities(self, ids: Any, positions: Any, velocities: Any = None) -> int:
        raise WorldStateError("eventual path not built yet")

    async def flush_region(self, key: RegionKey) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}

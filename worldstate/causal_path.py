"""PLACEHOLDER being replaced by the causal path (vector clocks, durable log, delivery)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from regions import RegionKey
from worldstate.errors import WorldStateError
from worldstate.operations import Operation
from worldstate.results import Accepted

if TYPE_CHECKING:
    from worldstate.world import World


class CausalPath:
    def __init__(self, world: World) -> None:
        self.world = world

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def submit(self, op: Operation, key: RegionKey | None) -> Accepted:
        raise WorldStateError("causal path not built yet")

    def stats(self) -> dict[str, Any]:
        return {}

"""What `World.updates(interest)` yields, and the per-subscriber stream behind it."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from regions import Box, RegionKey, Sphere, as_region_key, as_shape, keys_of_shape
from worldstate.errors import Overloaded, ValidationError, WorldClosed, WorldStateError


@dataclass(frozen=True, slots=True)
class EntityBatch:
    """Positions of many entities in one region from one server at one tick (eventual,
    already merged last-writer-wins: only rows that won are included)."""

    region: RegionKey
    server_id: str
    hlc: int
    ids: npt.NDArray[np.int64]
    positions: npt.NDArray[np.float64]
    velocities: npt.NDArray[np.float64] | None = None


@dataclass(frozen=True, slots=True)
class StateChange:
    """Eventual state of one entity (CosmeticEffect, SetAutomation, SetPowerGrid)."""

    region: RegionKey
    server_id: str
    hlc: int
    op_type: str
    entity_id: int
    state: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class CausalDelivery:
    """A causal event (EmitEvent, TransferCreature), delivered in causal order."""

    region: RegionKey | None
    origin: str
    seq: int
    op_type: str
    op_id: str
    fields: Mapping[str, Any]
    vclock: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class RegionChanged:
    """A strong commit changed the region on some server (reload it to see how)."""

    region: RegionKey
    version: int
    server_id: str


Update = EntityBatch | StateChange | CausalDelivery | RegionChanged


def interest_keys(
    interest: object, *, region_size: float, max_keys: int
) -> frozenset[RegionKey] | None:
    """Region keys of an interest: region keys, a Box, a Sphere, a (lo, hi) pair, or None
    for the whole world."""
    if interest is None:
        return None
    try:
        if isinstance(interest, (Box, Sphere)):
            return frozenset(keys_of_shape(interest, region_size, max_keys=max_keys))
        if isinstance(interest, RegionKey):
            return frozenset([interest])
        if (
            isinstance(interest, (tuple, list))
            and len(interest) == 2
            and all(isinstance(p, (tuple, list)) and len(p) == 3 for p in interest)
        ):
            return frozenset(keys_of_shape(as_shape(interest), region_size, max_keys=max_keys))
        if isinstance(interest, Iterable) and not isinstance(interest, (str, bytes)):
            keys = frozenset(as_region_key(k) for k in interest)
            if len(keys) > max_keys:
                raise ValidationError(f"interest names {len(keys)} regions; limit {max_keys}")
            return keys
    except ValueError as e:
        raise ValidationError(f"bad interest: {e}") from None
    raise ValidationError(
        "interest must be region keys, a Box, a Sphere, a (lo, hi) pair or None, got "
        f"{type(interest).__name__}"
    )


class UpdateStream(AsyncIterator[Update]):
    """One subscriber's updates. Bounded: a consumer that falls ``capacity`` updates behind
    ends the stream with `Overloaded` (it must resynchronise: reload regions) rather than
    silently missing updates. Ends with `WorldClosed` when the world closes or loses its
    bus."""

    def __init__(self, keys: frozenset[RegionKey] | None, capacity: int, on_close: Any) -> None:
        self.keys = keys
        self.capacity = capacity
        self._items: collections.deque[Update] = collections.deque()
        self._wakeup = asyncio.Event()
        self._error: WorldStateError | None = None
        self._on_close = on_close

    def wants(self, region: RegionKey | None) -> bool:
        return self.keys is None or (region is not None and region in self.keys)

    def put(self, update: Update) -> None:
        if self._error is not None:
            return
        if len(self._items) >= self.capacity:
            self.fail(
                Overloaded(
                    f"update stream fell {self.capacity} updates behind; reload the regions of "
                    "interest and subscribe again"
                )
            )
            return
        self._items.append(update)
        self._wakeup.set()

    def fail(self, err: WorldStateError) -> None:
        if self._error is None:
            self._error = err
            self._wakeup.set()

    def __aiter__(self) -> UpdateStream:
        return self

    async def __anext__(self) -> Update:
        while True:
            if self._items:
                return self._items.popleft()
            if self._error is not None:
                self.close()
                raise self._error
            self._wakeup.clear()
            await self._wakeup.wait()

    def close(self) -> None:
        if self._error is None:
            self._error = WorldClosed("update stream closed")
        self._on_close(self)


__all__ = [
    "CausalDelivery",
    "EntityBatch",
    "RegionChanged",
    "StateChange",
    "Update",
    "UpdateStream",
    "interest_keys",
]

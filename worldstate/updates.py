"""What `World.updates(interest)` yields, and the per-subscriber stream behind it."""

from __future__ import annotations

import asyncio
import base64
import collections
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from consistency import ConsistencyInputError, VectorClock
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
class Cursor:
    """A resume point in the causal log: how many events of each origin lie before it.

    Every `CausalDelivery` carries the cursor just after itself; a game stores it (as
    ``str(cursor)``, a short token) and later calls ``world.updates(interest,
    since=token)`` to get every causal event after it, in causal order, then live.
    Deliveries are causally ordered, so what came before a cursor is a prefix of each
    origin's sequence: a vector clock says it exactly."""

    clock: VectorClock

    PREFIX = "c1."

    def __str__(self) -> str:
        return self.encode()

    def encode(self) -> str:
        doc = orjson.dumps(self.clock.to_dict(), option=orjson.OPT_SORT_KEYS)
        return self.PREFIX + base64.urlsafe_b64encode(doc).decode().rstrip("=")

    @classmethod
    def decode(cls, token: object) -> Cursor:
        """A cursor from its token (or a cursor, or a ``{origin: seq}`` mapping);
        `ValidationError` for anything else."""
        if isinstance(token, Cursor):
            return token
        if isinstance(token, VectorClock):
            return cls(token)
        try:
            if isinstance(token, Mapping):
                return cls(VectorClock(token))
            if not isinstance(token, str) or not token.startswith(cls.PREFIX):
                raise ValueError("not a worldstate cursor token")
            raw = token[len(cls.PREFIX) :]
            if len(raw) > 1_000_000:
                raise ValueError("too long")
            doc = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
            return cls(VectorClock.from_dict(doc))
        except (ValueError, TypeError, orjson.JSONDecodeError, ConsistencyInputError) as e:
            raise ValidationError(f"bad cursor {token!r:.60}: {e}") from None

    def after(self, origin: str, seq: int) -> Cursor:
        """The cursor once ``origin``'s event ``seq`` is delivered too."""
        if seq < 1:
            raise ValidationError(f"an event seq is >= 1, got {seq!r}")
        return Cursor(self.clock.with_counter(origin, seq))


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
    cursor: Cursor | None = None
    """The resume point just after this event (see `Cursor`)."""


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
        self._held: collections.deque[Update] | None = None
        self._room = asyncio.Event()
        self._since: VectorClock | None = None
        self.task: asyncio.Task[None] | None = None
        """The replay task of a resumed stream (``since=``), cancelled when it closes."""

    def wants(self, region: RegionKey | None) -> bool:
        return self.keys is None or (region is not None and region in self.keys)

    def resume_after(self, since: Cursor) -> None:
        """Resume mode: live updates are held back (in order) until `release`, while the
        replay of the events after ``since`` goes in with `put_replayed`; live causal
        events at or before ``since`` are dropped (already seen by the game)."""
        self._held = collections.deque()
        self._since = since.clock

    @property
    def failed(self) -> bool:
        """Whether the stream has ended (closed, failed or overloaded)."""
        return self._error is not None

    def put_replayed(self, update: Update) -> None:
        self._put(update, self._items)

    async def wait_room(self) -> None:
        """Wait until the consumer has taken enough for another replayed update (a replay
        goes at the consumer's pace instead of overflowing the stream)."""
        while self._error is None and len(self._items) >= max(1, self.capacity // 2):
            self._room.clear()
            await self._room.wait()

    def release(self) -> None:
        """End of the replay: the held live updates follow it."""
        held, self._held = self._held, None
        if held:
            self._items.extend(held)
            self._wakeup.set()

    def put(self, update: Update) -> None:
        since = self._since
        if (
            since is not None
            and isinstance(update, CausalDelivery)
            and update.seq <= since.get(update.origin)
        ):
            return
        self._put(update, self._items if self._held is None else self._held)

    def _put(self, update: Update, into: collections.deque[Update]) -> None:
        if self._error is not None:
            return
        if len(self._items) + len(self._held or ()) >= self.capacity:
            self.fail(
                Overloaded(
                    f"update stream fell {self.capacity} updates behind; reload the regions of "
                    "interest and subscribe again"
                )
            )
            return
        into.append(update)
        if into is self._items:
            self._wakeup.set()

    def fail(self, err: WorldStateError) -> None:
        if self._error is None:
            self._error = err
            self._wakeup.set()
            self._room.set()

    def __aiter__(self) -> UpdateStream:
        return self

    async def __anext__(self) -> Update:
        while True:
            if self._items:
                self._room.set()
                return self._items.popleft()
            if self._error is not None:
                self.close()
                raise self._error
            self._wakeup.clear()
            await self._wakeup.wait()

    def close(self) -> None:
        if self._error is None:
            self._error = WorldClosed("update stream closed")
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self._on_close(self)


__all__ = [
    "CausalDelivery",
    "Cursor",
    "EntityBatch",
    "RegionChanged",
    "StateChange",
    "Update",
    "UpdateStream",
    "interest_keys",
]

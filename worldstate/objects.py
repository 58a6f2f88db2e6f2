"""The values worldstate hands out: world objects, region snapshots and leases."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from regions import Box, RegionKey, Vec3

BASE_OBJECT_KINDS = frozenset(
    {
        "structure",
        "resource",
        "item",
        "creature",
        "terrain",
        "effect",
        "automation",
        "power",
        "marker",
    }
)
"""Kinds every world knows; games add their own with ``Config(extra_object_kinds=...)``."""


@dataclass(frozen=True, slots=True)
class WorldObject:
    """One object in a region: an id unique within the world, a kind, an axis-aligned
    bounding box in metres, and a JSON-serialisable ``data`` mapping.

    Instances are plain values; validate untrusted ones with
    `worldstate._validation.check_object` (every public call does).
    """

    id: str
    kind: str
    lo: Vec3
    hi: Vec3
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def bbox(self) -> tuple[float, float, float, float, float, float]:
        return (*self.lo, *self.hi)

    @property
    def box(self) -> Box:
        return Box(self.lo, self.hi)

    @property
    def center(self) -> Vec3:
        return (
            (self.lo[0] + self.hi[0]) / 2,
            (self.lo[1] + self.hi[1]) / 2,
            (self.lo[2] + self.hi[2]) / 2,
        )


@dataclass(frozen=True, slots=True)
class RegionSnapshot:
    """A region's durable state at one version.

    ``version`` 0 means the region has never been stored. ``owner``/``epoch`` are the lease
    as read with the state (``owner`` None when no live lease); pass the snapshot back to
    ``store_region`` to write it under that epoch. An object belongs to the region holding
    its bounding-box centre.
    """

    key: RegionKey
    version: int
    owner: str | None
    epoch: int
    objects: Sequence[WorldObject] = ()
    """The region's objects: a tuple, or a lazily decoded sequence when read from the store
    or cache (objects are built on first access)."""
    stored_at: float = 0.0

    def with_objects(self, objects: Iterable[WorldObject]) -> RegionSnapshot:
        """A copy holding other objects (same key, version, owner and epoch)."""
        return RegionSnapshot(
            self.key, self.version, self.owner, self.epoch, tuple(objects), self.stored_at
        )

    def object(self, object_id: str) -> WorldObject | None:
        for o in self.objects:
            if o.id == object_id:
                return o
        return None


@dataclass(frozen=True, slots=True)
class Lease:
    """Authority over one region: ``owner`` holds it at fencing token ``epoch`` until
    ``expires_at`` (seconds since the Unix epoch, by the acquiring server's clock)."""

    key: RegionKey
    owner: str
    epoch: int
    expires_at: float

    def live(self, now: float) -> bool:
        return self.expires_at > now

    def remaining(self, now: float) -> float:
        return max(0.0, self.expires_at - now)


@dataclass(frozen=True, slots=True)
class ResourceNode:
    """A claimable resource: ``remaining`` of ``capacity`` is left to claim."""

    resource_id: str
    position: Vec3
    capacity: float
    remaining: float

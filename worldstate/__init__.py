"""worldstate: the world-state backend under a mesh of game servers."""

from worldstate.config import Config
from worldstate.errors import (
    BusUnavailable,
    CorruptRegion,
    Fenced,
    NotAuthoritative,
    RegionOwned,
    StoreUnavailable,
    ValidationError,
    VersionConflict,
    WorldClosed,
    WorldStateError,
)
from worldstate.objects import Lease, RegionSnapshot, WorldObject
from worldstate.world import World, connect

__all__ = [
    "BusUnavailable",
    "Config",
    "CorruptRegion",
    "Fenced",
    "Lease",
    "NotAuthoritative",
    "RegionOwned",
    "RegionSnapshot",
    "StoreUnavailable",
    "ValidationError",
    "VersionConflict",
    "World",
    "WorldClosed",
    "WorldObject",
    "WorldStateError",
    "connect",
]

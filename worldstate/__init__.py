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

__all__ = [
    "BusUnavailable",
    "Config",
    "CorruptRegion",
    "Fenced",
    "NotAuthoritative",
    "RegionOwned",
    "StoreUnavailable",
    "ValidationError",
    "VersionConflict",
    "WorldClosed",
    "WorldStateError",
]

"""worldstate: the world-state backend under a mesh of game servers."""

from worldstate.config import Config
from worldstate.errors import (
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

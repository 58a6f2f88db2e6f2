"""worldstate: the world-state backend under a mesh of game servers.

async with worldstate.connect("sqlite+aiosqlite:///world.db", server_id="gs-1") as world:
    await world.acquire_region((0, 0, 0))
    result = await world.submit(PlaceStructure(structure_id="wall-1", lo=(0, 0, 0),
                                               hi=(4, 1, 3)))
"""

from consistency import ConsistencyClass, Registry
from regions import Box, RegionKey, Sphere
from worldstate._validation import MAX_SPEED
from worldstate.config import Config
from worldstate.errors import (
    AuthorityLost,
    BusRefused,
    BusUnavailable,
    CheckpointNotFound,
    CorruptRegion,
    CursorExpired,
    ExportFormatError,
    Fenced,
    HandoffFailed,
    NotAuthoritative,
    Overloaded,
    RegionOwned,
    RestoreRefused,
    RetryableError,
    StoreUnavailable,
    SubmitTimeout,
    ValidationError,
    VersionConflict,
    WorldClosed,
    WorldStateError,
)
from worldstate.history import Checkpoint
from worldstate.mesh import MeshCoordinator, Move
from worldstate.objects import Lease, RegionSnapshot, ResourceNode, WorldObject
from worldstate.operations import (
    BUILTIN_OPERATIONS,
    ChangeInventory,
    ClaimResource,
    CosmeticEffect,
    EmitEvent,
    ModifyTerrain,
    MoveCreature,
    Operation,
    PickUpItem,
    PlaceStructure,
    SetAutomation,
    SetPowerGrid,
    TransferCreature,
    TransferItems,
)
from worldstate.results import Accepted, Committed, Rejected, Result
from worldstate.updates import (
    CausalDelivery,
    Cursor,
    EntityBatch,
    RegionChanged,
    StateChange,
    Update,
)
from worldstate.world import World, connect

_DEFAULT_ROUTING = Registry({t: t.default_consistency for t in BUILTIN_OPERATIONS})


def consistency_of(op_or_type: object) -> ConsistencyClass:
    """The default consistency class of an operation (instance or type). A world may route
    game-defined types differently: see `World.register_operation` and
    `World.consistency_of`."""
    from worldstate._validation import inner

    return inner(_DEFAULT_ROUTING.of, op_or_type)


__all__ = [
    "MAX_SPEED",
    "Accepted",
    "AuthorityLost",
    "Box",
    "BusRefused",
    "BusUnavailable",
    "CausalDelivery",
    "ChangeInventory",
    "Checkpoint",
    "CheckpointNotFound",
    "ClaimResource",
    "Committed",
    "Config",
    "ConsistencyClass",
    "CorruptRegion",
    "CosmeticEffect",
    "Cursor",
    "CursorExpired",
    "EmitEvent",
    "EntityBatch",
    "ExportFormatError",
    "Fenced",
    "HandoffFailed",
    "Lease",
    "MeshCoordinator",
    "ModifyTerrain",
    "Move",
    "MoveCreature",
    "NotAuthoritative",
    "Operation",
    "Overloaded",
    "PickUpItem",
    "PlaceStructure",
    "RegionChanged",
    "RegionKey",
    "RegionOwned",
    "RegionSnapshot",
    "Rejected",
    "ResourceNode",
    "RestoreRefused",
    "Result",
    "RetryableError",
    "SetAutomation",
    "SetPowerGrid",
    "Sphere",
    "StateChange",
    "StoreUnavailable",
    "SubmitTimeout",
    "TransferCreature",
    "TransferItems",
    "Update",
    "ValidationError",
    "VersionConflict",
    "World",
    "WorldClosed",
    "WorldObject",
    "WorldStateError",
    "connect",
    "consistency_of",
]

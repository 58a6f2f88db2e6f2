"""Resource nodes as read back, and the world-dependent limits every operation must meet."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from regions import Vec3
from worldstate.config import Config
from worldstate.ids import check_id
from worldstate.operations import Operation
from worldstate.validation import check_data

ID_FIELDS = frozenset(
    {
        "structure_id",
        "resource_id",
        "claimant",
        "inventory_id",
        "item",
        "from_inventory",
        "to_inventory",
        "item_id",
        "picker",
        "stream",
        "to_server",
        "owner",
    }
)
DATA_FIELDS = frozenset({"data", "payload", "state"})


@dataclass(frozen=True, slots=True)
class ResourceNode:
    """A claimable resource: ``remaining`` of ``capacity`` is left to claim."""

    resource_id: str
    position: Vec3
    capacity: float
    remaining: float


def check_op_limits(op: Operation, config: Config) -> None:
    """Ids well-formed and short enough, data JSON-safe and small enough."""
    for f in dataclasses.fields(op):
        v = getattr(op, f.name)
        if f.name in ID_FIELDS and not (f.name == "owner" and v == ""):
            check_id(v, f.name, config.max_id_length)
        elif f.name in DATA_FIELDS and isinstance(v, Mapping):
            check_data(v, f.name, config.max_object_data_bytes)

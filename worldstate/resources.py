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


_FIELDS: dict[type[Operation], tuple[tuple[str, ...], tuple[str, ...]]] = {}


def _checked_fields(cls: type[Operation]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    got = _FIELDS.get(cls)
    if got is None:
        names = [f.name for f in dataclasses.fields(cls)]
        got = _FIELDS[cls] = (
            tuple(n for n in names if n in ID_FIELDS),
            tuple(n for n in names if n in DATA_FIELDS),
        )
    return got


def check_op_limits(op: Operation, config: Config) -> None:
    """Ids well-formed and short enough, data JSON-safe and small enough."""
    ids, datas = _checked_fields(type(op))
    for name in ids:
        v = getattr(op, name)
        if not (name == "owner" and v == ""):
            check_id(v, name, config.max_id_length)
    for name in datas:
        v = getattr(op, name)
        if isinstance(v, Mapping) and v:
            check_data(v, name, config.max_object_data_bytes)

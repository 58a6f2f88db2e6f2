"""Typed world operations, each with a default consistency class.

Every operation carries ``op_id`` (a UUID, generated when absent), ``server_id`` and ``hlc``
(both filled in by `World.submit`) and ``priority`` (higher wins under the PRIORITY
strategy). Field types are checked when an operation is built; world-dependent limits
(bounds, id length, data size, declared kinds) when it is submitted
(`worldstate._validation.check_operation`). A bad operation raises `ValidationError` and
changes nothing. Coordinates, radii and terrain deltas are finite and within
``MAX_MAGNITUDE`` (1e12, the limit `conflicts` resolves within); kinds are checked like ids
(printable, at most 64 characters); inventory deltas and quantities within ``2**53``.

Entity ids on the eventual path (creatures, effects, automation, power grids) are integers
(int64), so that thousands of them move per tick as numpy arrays.
"""

from __future__ import annotations

import math
import numbers
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from conflicts import MAX_MAGNITUDE, id_problem
from consistency import ConsistencyClass
from regions import RegionKey, Vec3
from worldstate.errors import ValidationError

INT64_MAX = (1 << 63) - 1

MAX_ITEM_DELTA = 1 << 53
"""Largest ``|delta|`` of one `ChangeInventory` and largest `TransferItems` quantity: larger
is refused as absurd (`ValidationError`). 2**53 is also the largest integer every JSON reader
(and float64) holds exactly."""

MAX_KIND_LENGTH = 64
"""Longest object or structure kind, in characters (kinds follow the id rule,
`conflicts.id_problem`, with this length; see `worldstate._validation.check_kind_name`)."""


def _kind(v: object, name: str) -> str:
    problem = id_problem(v, name, MAX_KIND_LENGTH)
    if problem is not None:
        raise ValidationError(problem)
    assert isinstance(v, str)
    return v


def _vec3(v: object, name: str) -> Vec3:
    if type(v) is tuple and len(v) == 3:
        x, y, z = v
        if (
            type(x) is float
            and type(y) is float
            and type(z) is float
            and -MAX_MAGNITUDE <= x <= MAX_MAGNITUDE
            and -MAX_MAGNITUDE <= y <= MAX_MAGNITUDE
            and -MAX_MAGNITUDE <= z <= MAX_MAGNITUDE
        ):
            return v  # already a tuple of 3 finite floats within the magnitude limit
    if isinstance(v, (str, bytes)) or not hasattr(v, "__len__") or len(v) != 3:
        raise ValidationError(f"{name} must be 3 numbers (x, y, z), got {v!r:.60}")
    out = []
    for c in v:  # type: ignore[attr-defined]
        if isinstance(c, bool) or not isinstance(c, numbers.Real) or not math.isfinite(c):
            raise ValidationError(f"{name} must hold 3 finite numbers, got {v!r:.60}")
        f = float(c)
        if not -MAX_MAGNITUDE <= f <= MAX_MAGNITUDE:
            raise ValidationError(
                f"{name} coordinates must be within +-{MAX_MAGNITUDE:g} m, got {v!r:.60}"
            )
        out.append(f)
    return (out[0], out[1], out[2])


def _num(
    v: object,
    name: str,
    *,
    positive: bool = False,
    nonneg: bool = False,
    limit: float | None = None,
) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise ValidationError(f"{name} must be a finite number, got {v!r:.60}")
    f = float(v)
    if limit is not None and not -limit <= f <= limit:
        raise ValidationError(f"{name} must be within +-{limit:g}, got {f}")
    if positive and f <= 0:
        raise ValidationError(f"{name} must be > 0, got {f}")
    if nonneg and f < 0:
        raise ValidationError(f"{name} must be >= 0, got {f}")
    return f


def _int(v: object, name: str, *, lo: int | None = None, hi: int = INT64_MAX) -> int:
    """A plain `int` (numpy integers accepted and converted; bool refused) in ``lo..hi``."""
    if type(v) is int and (lo if lo is not None else -INT64_MAX - 1) <= v <= hi:
        return v
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise ValidationError(f"{name} must be an int, got {type(v).__name__}")
    i = int(v)
    lo = -INT64_MAX - 1 if lo is None else lo
    if not lo <= i <= hi:
        raise ValidationError(f"{name} must be in [{lo}, {hi}], got {i}")
    return i


def _str(v: object, name: str) -> str:
    if not isinstance(v, str) or not v:
        raise ValidationError(f"{name} must be a non-empty str, got {v!r:.60}")
    return v


def _mapping(v: object, name: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise ValidationError(f"{name} must be a mapping, got {type(v).__name__}")
    return MappingProxyType(dict(v))


@dataclass(frozen=True, kw_only=True)
class Operation:
    """Base of every operation. Subclasses set ``default_consistency``."""

    op_id: uuid.UUID = field(default_factory=uuid.uuid4)
    server_id: str = ""
    hlc: int = 0
    priority: int = 0

    default_consistency: ClassVar[ConsistencyClass] = ConsistencyClass.STRONG

    def __post_init__(self) -> None:
        if isinstance(self.op_id, str):
            try:
                object.__setattr__(self, "op_id", uuid.UUID(self.op_id))
            except ValueError:
                raise ValidationError(f"op_id {self.op_id!r:.60} is not a UUID") from None
        if not isinstance(self.op_id, uuid.UUID):
            raise ValidationError(f"op_id must be a UUID, got {type(self.op_id).__name__}")
        if not isinstance(self.server_id, str):
            raise ValidationError("server_id must be a str (submit fills it in)")
        object.__setattr__(self, "hlc", _int(self.hlc, "hlc", lo=0))
        object.__setattr__(
            self, "priority", _int(self.priority, "priority", lo=-(1 << 31), hi=(1 << 31) - 1)
        )

    @property
    def op_type(self) -> str:
        return type(self).__name__

    def where(self) -> Vec3 | None:
        """Where the operation happens (routes it to a region), or None (non-spatial)."""
        return None


# -- STRONG -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PlaceStructure(Operation):
    structure_id: str
    kind: str = "structure"
    lo: Vec3
    hi: Vec3
    owner: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        _str(self.structure_id, "structure_id")
        _kind(self.kind, "kind")
        lo, hi = _vec3(self.lo, "lo"), _vec3(self.hi, "hi")
        if any(a > b for a, b in zip(lo, hi, strict=True)):
            raise ValidationError(f"structure box lo {lo} exceeds hi {hi}")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)
        if not isinstance(self.owner, str):
            raise ValidationError("owner must be a str")
        object.__setattr__(self, "data", _mapping(self.data, "data"))

    def where(self) -> Vec3:
        return (
            (self.lo[0] + self.hi[0]) / 2,
            (self.lo[1] + self.hi[1]) / 2,
            (self.lo[2] + self.hi[2]) / 2,
        )


@dataclass(frozen=True, kw_only=True)
class ClaimResource(Operation):
    resource_id: str
    claimant: str
    position: Vec3
    amount: float

    def __post_init__(self) -> None:
        super().__post_init__()
        _str(self.resource_id, "resource_id")
        _str(self.claimant, "claimant")
        object.__setattr__(self, "position", _vec3(self.position, "position"))
        object.__setattr__(self, "amount", _num(self.amount, "amount", positive=True))

    def where(self) -> Vec3:
        return self.position


@dataclass(frozen=True, kw_only=True)
class ModifyTerrain(Operation):
    center: Vec3
    radius: float
    delta: float

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "center", _vec3(self.center, "center"))
        # the same magnitude limit as `conflicts` (which resolves terrain overlaps)
        radius = _num(self.radius, "radius", nonneg=True, limit=MAX_MAGNITUDE)
        object.__setattr__(self, "radius", radius)
        object.__setattr__(self, "delta", _num(self.delta, "delta", limit=MAX_MAGNITUDE))

    def where(self) -> Vec3:
        return self.center


@dataclass(frozen=True, kw_only=True)
class ChangeInventory(Operation):
    inventory_id: str
    item: str
    delta: int

    def __post_init__(self) -> None:
        super().__post_init__()
        _str(self.inventory_id, "inventory_id")
        _str(self.item, "item")
        object.__setattr__(
            self, "delta", _int(self.delta, "delta", lo=-MAX_ITEM_DELTA, hi=MAX_ITEM_DELTA)
        )


@dataclass(frozen=True, kw_only=True)
class TransferItems(Operation):
    from_inventory: str
    to_inventory: str
    item: str
    quantity: int

    def __post_init__(self) -> None:
        super().__post_init__()
        _str(self.from_inventory, "from_inventory")
        _str(self.to_inventory, "to_inventory")
        _str(self.item, "item")
        object.__setattr__(
            self, "quantity", _int(self.quantity, "quantity", lo=1, hi=MAX_ITEM_DELTA)
        )
        if self.from_inventory == self.to_inventory:
            raise ValidationError("from_inventory and to_inventory must differ")


@dataclass(frozen=True, kw_only=True)
class PickUpItem(Operation):
    item_id: str
    picker: str
    position: Vec3

    def __post_init__(self) -> None:
        super().__post_init__()
        _str(self.item_id, "item_id")
        _str(self.picker, "picker")
        object.__setattr__(self, "position", _vec3(self.position, "position"))

    def where(self) -> Vec3:
        return self.position


# -- CAUSAL -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EmitEvent(Operation):
    position: Vec3
    stream: str
    payload: Mapping[str, Any] = field(default_factory=dict)

    default_consistency: ClassVar[ConsistencyClass] = ConsistencyClass.CAUSAL

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "position", _vec3(self.position, "position"))
        _str(self.stream, "stream")
        object.__setattr__(self, "payload", _mapping(self.payload, "payload"))

    def where(self) -> Vec3:
        return self.position


@dataclass(frozen=True, kw_only=True)
class TransferCreature(Operation):
    creature_id: int
    to_server: str
    position: Vec3 | None = None

    default_consistency: ClassVar[ConsistencyClass] = ConsistencyClass.CAUSAL

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "creature_id", _int(self.creature_id, "creature_id", lo=0))
        _str(self.to_server, "to_server")
        if self.position is not None:
            object.__setattr__(self, "position", _vec3(self.position, "position"))

    def where(self) -> Vec3 | None:
        return self.position


# -- EVENTUAL -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MoveCreature(Operation):
    creature_id: int
    position: Vec3
    velocity: Vec3 = (0.0, 0.0, 0.0)

    default_consistency: ClassVar[ConsistencyClass] = ConsistencyClass.EVENTUAL

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "creature_id", _int(self.creature_id, "creature_id", lo=0))
        object.__setattr__(self, "position", _vec3(self.position, "position"))
        object.__setattr__(self, "velocity", _vec3(self.velocity, "velocity"))

    def where(self) -> Vec3:
        return self.position


@dataclass(frozen=True, kw_only=True)
class _EntityState(Operation):
    """Eventual state of one entity (``entity_id``) placed by ``position`` or ``region``."""

    entity_id: int
    state: Mapping[str, Any] = field(default_factory=dict)
    position: Vec3 | None = None
    region: RegionKey | None = None

    default_consistency: ClassVar[ConsistencyClass] = ConsistencyClass.EVENTUAL

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "entity_id", _int(self.entity_id, "entity_id", lo=0))
        object.__setattr__(self, "state", _mapping(self.state, "state"))
        if (self.position is None) == (self.region is None):
            raise ValidationError(f"{self.op_type} needs exactly one of position= or region=")
        if self.position is not None:
            object.__setattr__(self, "position", _vec3(self.position, "position"))
        if self.region is not None and not isinstance(self.region, RegionKey):
            raise ValidationError("region must be a regions.RegionKey")

    def where(self) -> Vec3 | None:
        if self.position is not None:
            return self.position
        assert self.region is not None
        lo, hi = self.region.bounds
        return ((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2)


@dataclass(frozen=True, kw_only=True)
class CosmeticEffect(_EntityState):
    pass


@dataclass(frozen=True, kw_only=True)
class SetAutomation(_EntityState):
    pass


@dataclass(frozen=True, kw_only=True)
class SetPowerGrid(_EntityState):
    pass


BUILTIN_OPERATIONS: tuple[type[Operation], ...] = (
    PlaceStructure,
    ClaimResource,
    ModifyTerrain,
    ChangeInventory,
    TransferItems,
    PickUpItem,
    EmitEvent,
    TransferCreature,
    MoveCreature,
    CosmeticEffect,
    SetAutomation,
    SetPowerGrid,
)

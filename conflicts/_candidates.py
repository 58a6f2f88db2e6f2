"""Candidate records: the concurrent operations a resolver chooses among.

Each record is a frozen, slotted dataclass with keyword-only fields. The common fields are
``op_id`` (UUID text, unique per operation), ``server_id`` (the submitting server), ``hlc``
(hybrid logical clock, ``(wall_ms << 16) | logical``, a non-negative int64) and ``priority``
(int64; higher wins under `Strategy.PRIORITY`). Every field is validated in
``__post_init__``; a bad value raises `ConflictInputError`, so a record that exists is valid.
Coordinates, radii and deltas are finite and within ``MAX_MAGNITUDE`` (1e12).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import ClassVar, TypeVar

from conflicts._errors import ConflictInputError, geometry_as_input_errors
from conflicts._kinds import ConflictType
from conflicts._validate import INT64_MAX, check_id, check_int, check_magnitude, check_real
from regions import Vec3, as_vec3

BBox6 = tuple[float, float, float, float, float, float]
_PACK6 = struct.Struct("=6d").pack


@dataclass(frozen=True, slots=True, kw_only=True)
class _CandidateBase:
    op_id: str
    server_id: str
    hlc: int
    priority: int = 0
    sort_key: str = field(init=False, repr=False, compare=False)
    """The canonical order ``(hlc, server_id, op_id)`` as one string that sorts the same
    way, derived on construction: 16 hex digits of ``hlc``, then ``server_id``, a NUL, and
    ``op_id`` (ids are printable, so the NUL ends the server id below any character)."""

    conflict_type: ClassVar[ConflictType]


def _check_common(c: _CandidateBase) -> None:
    # Called explicitly: zero-argument super() does not work in slotted dataclasses on 3.11.
    name = type(c).__name__
    object.__setattr__(c, "op_id", check_id(c.op_id, f"{name}.op_id"))
    object.__setattr__(c, "server_id", check_id(c.server_id, f"{name}.server_id"))
    object.__setattr__(c, "hlc", check_int(c.hlc, f"{name}.hlc", 0, INT64_MAX))
    object.__setattr__(c, "priority", check_int(c.priority, f"{name}.priority"))
    object.__setattr__(c, "sort_key", f"{c.hlc:016x}{c.server_id}\x00{c.op_id}")


def _vec3(value: object, name: str) -> Vec3:
    with geometry_as_input_errors():
        v = as_vec3(value, name)
    for c in v:
        check_magnitude(c, f"{name} coordinate")
    return v


@dataclass(frozen=True, slots=True, kw_only=True)
class StructurePlacement(_CandidateBase):
    """Place structure ``structure_id`` occupying the axis-aligned box ``lo..hi`` (metres).

    Two placements conflict when their boxes share interior volume (faces, edges or corners
    merely touching do not conflict, so walls can be built side by side; a box of zero
    thickness has no interior and never conflicts by overlap), or when they place the same
    ``structure_id``.
    """

    structure_id: str
    lo: Vec3
    hi: Vec3
    bbox: BBox6 = field(init=False, repr=False, compare=False)
    """``(*lo, *hi)``, the interleaved form the R-tree takes (derived, not an argument)."""
    packed_bbox: bytes = field(init=False, repr=False, compare=False)
    """``bbox`` as 6 native float64 (derived): a batch's ``(N, 6)`` array is one
    ``bytes.join`` away, with no per-number conversion."""

    conflict_type: ClassVar[ConflictType] = ConflictType.STRUCTURE_OVERLAP

    @classmethod
    def prepared(
        cls,
        *,
        op_id: str,
        server_id: str,
        hlc: int,
        priority: int,
        structure_id: str,
        lo: tuple[float, float, float],
        hi: tuple[float, float, float],
    ) -> StructurePlacement:
        """A placement from values a caller has already validated by these same rules (the
        shared id and magnitude rules of `conflicts._validate`, float tuples with
        ``lo <= hi``): built without checking them again. worldstate's strong path uses it
        for ops its entry validation passed; anything else should call the constructor."""
        self = object.__new__(cls)
        put = object.__setattr__
        put(self, "op_id", op_id)
        put(self, "server_id", server_id)
        put(self, "hlc", hlc)
        put(self, "priority", priority)
        put(self, "sort_key", f"{hlc:016x}{server_id}\x00{op_id}")
        put(self, "structure_id", structure_id)
        put(self, "lo", lo)
        put(self, "hi", hi)
        put(self, "bbox", (*lo, *hi))
        put(self, "packed_bbox", _PACK6(*lo, *hi))
        return self

    def __post_init__(self) -> None:
        _check_common(self)
        object.__setattr__(self, "structure_id", check_id(self.structure_id, "structure_id"))
        lo = _vec3(self.lo, "StructurePlacement.lo")
        hi = _vec3(self.hi, "StructurePlacement.hi")
        if lo[0] > hi[0] or lo[1] > hi[1] or lo[2] > hi[2]:
            raise ConflictInputError(f"StructurePlacement: lo {lo} exceeds hi {hi} on some axis")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)
        object.__setattr__(self, "bbox", (*lo, *hi))
        object.__setattr__(self, "packed_bbox", _PACK6(*lo, *hi))


@dataclass(frozen=True, slots=True, kw_only=True)
class TerrainEdit(_CandidateBase):
    """Add ``delta`` to the terrain density at every point of the closed ball
    ``|p - center| <= radius``. Deltas commute, so under `Strategy.MERGE` every edit applies;
    two edits overlap when their balls share a point."""

    center: Vec3
    radius: float
    delta: float

    conflict_type: ClassVar[ConflictType] = ConflictType.TERRAIN_OVERLAP

    def __post_init__(self) -> None:
        _check_common(self)
        object.__setattr__(self, "center", _vec3(self.center, "TerrainEdit.center"))
        radius = check_magnitude(check_real(self.radius, "TerrainEdit.radius"), "radius")
        if radius < 0:
            raise ConflictInputError(f"TerrainEdit.radius must be >= 0, got {radius}")
        object.__setattr__(self, "radius", radius)
        delta = check_magnitude(check_real(self.delta, "TerrainEdit.delta"), "delta")
        object.__setattr__(self, "delta", delta)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceClaim(_CandidateBase):
    """Take ``amount`` (> 0) from resource node ``resource_id``. Claims on one node conflict
    when together they exceed what the node has left."""

    resource_id: str
    amount: float

    conflict_type: ClassVar[ConflictType] = ConflictType.RESOURCE_CLAIM

    def __post_init__(self) -> None:
        _check_common(self)
        object.__setattr__(self, "resource_id", check_id(self.resource_id, "resource_id"))
        amount = check_real(self.amount, "ResourceClaim.amount")
        if amount <= 0:
            raise ConflictInputError(f"ResourceClaim.amount must be > 0, got {amount}")
        object.__setattr__(self, "amount", amount)


@dataclass(frozen=True, slots=True, kw_only=True)
class ItemPickup(_CandidateBase):
    """Pick up item ``item_id``. Any two pickups of one item conflict: one winner per item."""

    item_id: str

    conflict_type: ClassVar[ConflictType] = ConflictType.ITEM_PICKUP

    def __post_init__(self) -> None:
        _check_common(self)
        object.__setattr__(self, "item_id", check_id(self.item_id, "item_id"))


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatureClaim(_CandidateBase):
    """Make server ``claimant`` the owner of creature ``creature_id``.

    ``claimant`` is usually the submitting server itself (a creature wandered into its
    region) or, for a hand-over, the receiving server (submitted by the current owner). Two
    claims on one creature conflict when they name different claimants.
    """

    creature_id: str
    claimant: str

    conflict_type: ClassVar[ConflictType] = ConflictType.CREATURE_OWNERSHIP

    def __post_init__(self) -> None:
        _check_common(self)
        object.__setattr__(self, "creature_id", check_id(self.creature_id, "creature_id"))
        object.__setattr__(self, "claimant", check_id(self.claimant, "claimant"))


Candidate = StructurePlacement | TerrainEdit | ResourceClaim | ItemPickup | CreatureClaim
"""Any candidate record."""

CANDIDATE_TYPES: tuple[type[Candidate], ...] = (
    StructurePlacement,
    TerrainEdit,
    ResourceClaim,
    ItemPickup,
    CreatureClaim,
)

C = TypeVar("C", bound=_CandidateBase)

_op_id = attrgetter("op_id")


def unique_candidates(items: object, kinds: tuple[type[C], ...], caller: str) -> list[C]:
    """The set of candidates in ``items``, as a list in arrival order.

    Resolvers are functions of the *set* of operations: a record repeated verbatim (a
    retried message) counts once. Two different records with one ``op_id`` are bad input,
    as is anything that is not one of ``kinds``.
    """
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise ConflictInputError(
            f"{caller} takes an iterable of candidates, got {type(items).__name__}"
        )
    listed: list[C] = list(items)
    allowed = set(kinds)
    for t in set(map(type, listed)):
        if t not in allowed:
            names = ", ".join(k.__name__ for k in kinds)
            raise ConflictInputError(f"{caller} takes {names}; got {t.__name__}")
    by_id = dict(zip(map(_op_id, listed), listed, strict=True))
    if len(by_id) == len(listed):
        return listed
    out: list[C] = []
    seen: dict[str, C] = {}
    for c in listed:
        prev = seen.get(c.op_id)
        if prev is None:
            seen[c.op_id] = c
            out.append(c)
        elif prev is not c and prev != c:
            raise ConflictInputError(f"two different candidates share op_id {c.op_id!r}")
    return out

"""The vocabularies: conflict types, resolution strategies, and decision rules."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from conflicts._errors import ConflictInputError


class ConflictType(StrEnum):
    """What kind of contest a decision settles. Values are stable (they are logged)."""

    STRUCTURE_OVERLAP = "structure_overlap"
    TERRAIN_OVERLAP = "terrain_overlap"
    RESOURCE_CLAIM = "resource_claim"
    ITEM_PICKUP = "item_pickup"
    CREATURE_OWNERSHIP = "creature_ownership"


class Strategy(StrEnum):
    """How the winners of a contest are chosen. Each has a total order (see `precedence_key`).

    - ``TIMESTAMP``: first write wins — lowest HLC, then lowest server id, then lowest op id.
    - ``LOWEST_SERVER``: lowest server id wins, then lowest HLC, then lowest op id.
    - ``PRIORITY``: highest priority wins, then as ``TIMESTAMP``.
    - ``LWW``: last write wins — highest HLC, then lowest server id, then lowest op id.
    - ``MERGE``: terrain only; every edit wins and the density deltas add up.
    """

    TIMESTAMP = "timestamp"
    LOWEST_SERVER = "lowest_server"
    PRIORITY = "priority"
    MERGE = "merge"
    LWW = "lww"


class Rule(StrEnum):
    """The rule a decision applied: a strategy's name, or ``COMMITTED`` when a candidate
    lost to state already committed in the store."""

    TIMESTAMP = "timestamp"
    LOWEST_SERVER = "lowest_server"
    PRIORITY = "priority"
    MERGE = "merge"
    LWW = "lww"
    COMMITTED = "committed"

    @classmethod
    def of(cls, strategy: Strategy) -> Rule:
        return cls(strategy.value)


_E = TypeVar("_E", bound=StrEnum)


def parse_enum(enum: type[_E], value: object, what: str) -> _E:
    """``value`` as a member of ``enum``: a member, its value, or its name (any case)."""
    if isinstance(value, enum):
        return value
    if isinstance(value, str):
        key = value.strip().lower()
        for member in enum:
            if key in (member.value, member.name.lower()):
                return member
        choices = ", ".join(m.value for m in enum)
        raise ConflictInputError(f"unknown {what} {value!r}; expected one of: {choices}")
    raise ConflictInputError(f"{what} must be a str or {enum.__name__}, got {type(value).__name__}")


def as_strategy(value: object) -> Strategy:
    """Accept a `Strategy` or its name (``"lww"``, ``"TIMESTAMP"`` …)."""
    return parse_enum(Strategy, value, "strategy")


def as_conflict_type(value: object) -> ConflictType:
    """Accept a `ConflictType` or its name (``"item_pickup"`` …)."""
    return parse_enum(ConflictType, value, "conflict type")

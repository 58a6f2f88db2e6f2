"""The vocabularies: conflict types, resolution strategies, and decision rules."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

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
    CUSTOM = "custom"
    """A game's `CustomStrategy` (its name is in the decision's reason)."""

    @classmethod
    def of(cls, strategy: Strategy | CustomStrategy) -> Rule:
        if isinstance(strategy, CustomStrategy):
            return cls.CUSTOM
        return cls(strategy.value)


_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class CustomStrategy:
    """A game's own precedence order: ``key(candidate)`` ranks candidates (smaller first),
    and the full first-write-wins tie-break — lowest HLC, then lowest server id, then lowest
    op id — orders whatever the key ties. So the order stays total and the winners remain a
    function of the *set* of candidates, as long as ``key`` is a pure function of the
    candidate's fields (same candidate, same key, on every server).

    ``key`` may return a bool, int, finite float, str, bytes, or a tuple/list of those
    (nested); values of different kinds order by kind (bools < numbers < str < bytes <
    tuples), so any two keys compare. Anything else, NaN, or a key that raises, is a
    `ConflictInputError` from the resolver (never a wrong answer). ``name``: letters,
    digits, ``_.-`` (1-64), shown in decisions; ``description``: one line for the reasons.

    Example — larger structures win, then first write::

        biggest = CustomStrategy("biggest", lambda c: -c.volume)
        policy = Policy(structures=biggest)
    """

    name: str
    key: Callable[[Any], Any]
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConflictInputError(
                f"custom strategy name must be 1-64 letters, digits or _.- , got {self.name!r}"
            )
        if not callable(self.key):
            raise ConflictInputError(f"custom strategy {self.name!r}: key must be callable")
        if not isinstance(self.description, str) or len(self.description) > 200:
            raise ConflictInputError(
                f"custom strategy {self.name!r}: description must be a str of <= 200 chars"
            )

    @property
    def value(self) -> str:
        """``custom:<name>``, as in `Policy.to_dict`."""
        return f"custom:{self.name}"

    def rank(self, candidate: Any) -> tuple[Any, ...]:
        """The key of ``candidate`` in a canonical, always comparable form."""
        try:
            k = self.key(candidate)
        except Exception as e:
            raise ConflictInputError(
                f"custom strategy {self.name!r}: key raised {type(e).__name__}: {e}"
            ) from None
        return _canon(k, self.name)


def _canon(v: object, name: str, depth: int = 0) -> tuple[Any, ...]:
    if isinstance(v, bool):
        return (0, int(v))
    if isinstance(v, int):
        return (1, v)
    if isinstance(v, float):
        if math.isnan(v):
            raise ConflictInputError(f"custom strategy {name!r}: key returned NaN")
        return (1, v)
    if isinstance(v, str):
        return (2, v)
    if isinstance(v, bytes):
        return (3, v)
    if isinstance(v, (tuple, list)) and depth < 8:
        return (4, tuple(_canon(x, name, depth + 1) for x in v))
    raise ConflictInputError(
        f"custom strategy {name!r}: key returned {type(v).__name__}; use bool, int, float, "
        "str, bytes or a tuple of them"
    )


AnyStrategy = Strategy | CustomStrategy
"""What a `Policy` field holds: a built-in strategy or a game's `CustomStrategy`."""


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


def as_any_strategy(value: object) -> AnyStrategy:
    """Accept a `CustomStrategy`, a `Strategy` or a strategy's name."""
    if isinstance(value, CustomStrategy):
        return value
    return as_strategy(value)


def as_conflict_type(value: object) -> ConflictType:
    """Accept a `ConflictType` or its name (``"item_pickup"`` …)."""
    return parse_enum(ConflictType, value, "conflict type")

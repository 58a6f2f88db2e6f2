"""Which strategy settles which conflict type, and each strategy's total order."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from conflicts._candidates import Candidate
from conflicts._errors import ConflictInputError
from conflicts._kinds import (
    AnyStrategy,
    ConflictType,
    CustomStrategy,
    Strategy,
    as_any_strategy,
    as_conflict_type,
    as_strategy,
)

PrecedenceKey = tuple[Any, ...]

_FIELD_OF: dict[ConflictType, str] = {
    ConflictType.STRUCTURE_OVERLAP: "structures",
    ConflictType.TERRAIN_OVERLAP: "terrain",
    ConflictType.RESOURCE_CLAIM: "resources",
    ConflictType.ITEM_PICKUP: "items",
    ConflictType.CREATURE_OWNERSHIP: "creatures",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A strategy per conflict type; configurable per game.

    Defaults: first write wins (`Strategy.TIMESTAMP`) for structures, resource claims, item
    pickups and creature ownership, and `Strategy.MERGE` for terrain. Creatures use
    TIMESTAMP rather than LWW so that two servers racing for a creature cannot hand it back
    and forth: the first claim holds, and the loser learns the winner's op id. Fields accept
    a `Strategy`, its name, or a game's `CustomStrategy` (its key, then the full timestamp
    tie-break); `Strategy.MERGE` is only meaningful (and only accepted) for terrain, and a
    custom strategy makes terrain edits exclusive (the first in its order wins an overlap).
    Read it as a mapping with ``policy[ConflictType.ITEM_PICKUP]``.
    """

    structures: AnyStrategy = Strategy.TIMESTAMP
    terrain: AnyStrategy = Strategy.MERGE
    resources: AnyStrategy = Strategy.TIMESTAMP
    items: AnyStrategy = Strategy.TIMESTAMP
    creatures: AnyStrategy = Strategy.TIMESTAMP

    def __post_init__(self) -> None:
        for ctype, name in _FIELD_OF.items():
            strategy = as_any_strategy(getattr(self, name))
            if strategy is Strategy.MERGE and ctype is not ConflictType.TERRAIN_OVERLAP:
                raise ConflictInputError(
                    f"strategy 'merge' applies only to terrain, not to {ctype.value}"
                )
            object.__setattr__(self, name, strategy)

    def __getitem__(self, ctype: ConflictType | str) -> AnyStrategy:
        strategy: AnyStrategy = getattr(self, _FIELD_OF[as_conflict_type(ctype)])
        return strategy

    def with_strategy(
        self, ctype: ConflictType | str, strategy: Strategy | CustomStrategy | str
    ) -> Policy:
        """A copy with one conflict type's strategy replaced."""
        fields: dict[str, Any] = {_FIELD_OF[as_conflict_type(ctype)]: as_any_strategy(strategy)}
        return dataclasses.replace(self, **fields)

    @classmethod
    def from_mapping(cls, mapping: Mapping[Any, Any]) -> Policy:
        """Build from ``{conflict type: strategy}`` (members or names, e.g. from a game's
        config file); types not named keep their defaults. Unknown names raise
        `ConflictInputError`."""
        if not isinstance(mapping, Mapping):
            raise ConflictInputError(f"policy must be a mapping, got {type(mapping).__name__}")
        fields = {_FIELD_OF[as_conflict_type(k)]: v for k, v in mapping.items()}
        return cls(**fields)

    def to_dict(self) -> dict[str, str]:
        """``{conflict type value: strategy value}`` for every type (JSON-safe; a custom
        strategy shows as ``custom:<name>``)."""
        return {ctype.value: self[ctype].value for ctype in ConflictType}


DEFAULT_POLICY = Policy()
"""The default policy (see `Policy`)."""


def _priority_key(c: Candidate) -> PrecedenceKey:
    return (-c.priority, c.hlc, c.server_id, c.op_id)


def _lww_key(c: Candidate) -> PrecedenceKey:
    return (-c.hlc, c.server_id, c.op_id)


_KEY_FN: dict[Strategy, Callable[[Candidate], PrecedenceKey]] = {
    Strategy.TIMESTAMP: attrgetter("hlc", "server_id", "op_id"),
    Strategy.LOWEST_SERVER: attrgetter("server_id", "hlc", "op_id"),
    Strategy.PRIORITY: _priority_key,
    Strategy.LWW: _lww_key,
    Strategy.MERGE: attrgetter("hlc", "server_id", "op_id"),
}

canonical_key: Callable[[Candidate], str] = attrgetter("sort_key")
"""Sort key of the canonical order ``(hlc, server_id, op_id)`` of winners, losers and merge
sums: the candidates' precomputed ``sort_key`` strings, which order exactly as the tuples
do and compare several times faster."""

_SORT_FN: dict[Strategy, Callable[[Candidate], Any]] = {
    **_KEY_FN,
    Strategy.TIMESTAMP: canonical_key,
    Strategy.MERGE: canonical_key,
}


def precedence_key_fn(strategy: AnyStrategy) -> Callable[[Candidate], Any]:
    """A sort key ordering candidates as `precedence_key` does (smaller first); for the
    timestamp order it is `canonical_key`."""
    if isinstance(strategy, CustomStrategy):
        rank = strategy.rank
        return lambda c: (rank(c), c.sort_key)
    return _SORT_FN[as_strategy(strategy)]


def precedence_key(strategy: AnyStrategy | str, candidate: Candidate) -> PrecedenceKey:
    """The total-order key under which ``strategy`` ranks ``candidate`` (smaller first).

    Every key ends in a full tie-break, so no two operations with distinct op ids tie:

    - TIMESTAMP and MERGE: ``(hlc, server_id, op_id)``
    - LOWEST_SERVER: ``(server_id, hlc, op_id)``
    - PRIORITY: ``(-priority, hlc, server_id, op_id)``
    - LWW: ``(-hlc, server_id, op_id)``
    - a `CustomStrategy`: ``(its key, hlc, server_id, op_id)``

    Strings compare by code point (Python's and numpy's order), identically on every server.
    """
    if isinstance(strategy, CustomStrategy):
        return (strategy.rank(candidate), candidate.hlc, candidate.server_id, candidate.op_id)
    return _KEY_FN[as_strategy(strategy)](candidate)


STRATEGY_TEXT: dict[Strategy, str] = {
    Strategy.TIMESTAMP: "first write wins (lowest HLC, then lowest server id, then lowest op id)",
    Strategy.LOWEST_SERVER: "lowest server id wins (then lowest HLC, then lowest op id)",
    Strategy.PRIORITY: "highest priority wins (then lowest HLC, lowest server id, lowest op id)",
    Strategy.LWW: "last write wins (highest HLC, then lowest server id, then lowest op id)",
    Strategy.MERGE: "terrain deltas merge: every edit applies and the deltas add",
}
"""One line per strategy for decision reasons."""


def strategy_text(strategy: AnyStrategy) -> str:
    """One line on how ``strategy`` decides, for decision reasons."""
    if isinstance(strategy, CustomStrategy):
        how = strategy.description or "the game's key"
        return (
            f"custom strategy {strategy.name!r} ({how}), then lowest HLC, lowest server id, "
            "lowest op id"
        )
    return STRATEGY_TEXT[strategy]

"""The result of resolving a batch: winners, losers, decisions, and derived state."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from conflicts._candidates import Candidate
from conflicts._decisions import ConflictDecision, Outcome
from conflicts._kinds import ConflictType, Rule
from conflicts._merge import TerrainMerge
from conflicts._policy import canonical_key

_TYPE_ORDER = {t: i for i, t in enumerate(ConflictType)}

CandT = TypeVar("CandT", bound=Candidate)


def decision_order(d: ConflictDecision) -> tuple[int, str, tuple[str, ...], str]:
    """Decisions are listed by conflict type, then subject, then losers, then rule."""
    return (_TYPE_ORDER[d.conflict_type], d.subject, d.losers, d.rule.value)


@dataclass(frozen=True, slots=True)
class Resolution(Generic[CandT]):
    """The outcome of resolving a set of concurrent candidates.

    - ``winners``: admitted candidates in canonical order ``(hlc, server_id, op_id)``, the
      order in which the pipeline applies them. No two conflict, and none conflicts with
      the committed state the batch was resolved against.
    - ``losers``: the rest, in canonical order. Each is named in exactly one decision.
    - ``decisions``: `ConflictDecision` records, by conflict type then subject. Besides one
      record per lost contest, a MERGE record lists each group of overlapping terrain edits.
    - ``terrain``: the `TerrainMerge` of the winning terrain edits (None when there were
      none). Under MERGE every edit wins, so this is the combined density delta of all.
    - ``resource_remaining``: for each resource node claimed in the batch and known to the
      committed state, the amount left after the winning claims (``math.inf`` stays inf).

    `outcome_of` answers per op id. Equal inputs give equal resolutions, field for field.
    """

    winners: tuple[CandT, ...]
    losers: tuple[CandT, ...]
    decisions: tuple[ConflictDecision, ...]
    terrain: TerrainMerge | None = None
    resource_remaining: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    win_rules: Mapping[ConflictType, Rule] = field(
        default_factory=lambda: MappingProxyType({}), repr=False
    )
    """The rule that admitted winners of each type (the policy's strategy for it)."""
    _lookup: dict[str, ConflictDecision | Candidate] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def _index(self) -> dict[str, ConflictDecision | Candidate]:
        if not self._lookup and (self.winners or self.losers):
            for c in self.winners:
                self._lookup[c.op_id] = c
            for d in self.decisions:
                for op in d.losers:
                    self._lookup[op] = d
        return self._lookup

    def outcome_of(self, op_id: str) -> Outcome:
        """``(won, rule, winner_op_id)`` for an op of this batch (see `Outcome`); KeyError
        for an op id that was not in the batch."""
        entry = self._index().get(op_id)
        if entry is None:
            raise KeyError(f"op {op_id!r} was not in the resolved batch")
        if isinstance(entry, ConflictDecision):
            return Outcome(False, entry.rule, entry.winner_op_id)
        return Outcome(True, self.win_rules[entry.conflict_type], op_id)

    def decision_of(self, op_id: str) -> ConflictDecision | None:
        """The decision that names ``op_id`` as a loser, or None if it won."""
        entry = self._index().get(op_id)
        if entry is None:
            raise KeyError(f"op {op_id!r} was not in the resolved batch")
        return entry if isinstance(entry, ConflictDecision) else None

    @property
    def winner_ids(self) -> tuple[str, ...]:
        return tuple(c.op_id for c in self.winners)

    @property
    def loser_ids(self) -> tuple[str, ...]:
        return tuple(c.op_id for c in self.losers)


def make_resolution(
    winners: Sequence[CandT],
    losers: Sequence[CandT],
    decisions: Iterable[ConflictDecision],
    win_rules: Mapping[ConflictType, Rule],
    *,
    terrain: TerrainMerge | None = None,
    resource_remaining: Mapping[str, float] | None = None,
    presorted: bool = False,
) -> Resolution[CandT]:
    """Assemble a `Resolution`, putting everything in canonical order (``presorted``: the
    winners are already in canonical order)."""
    return Resolution(
        winners=tuple(winners) if presorted else tuple(sorted(winners, key=canonical_key)),
        losers=tuple(sorted(losers, key=canonical_key)),
        decisions=tuple(sorted(decisions, key=decision_order)),
        terrain=terrain,
        resource_remaining=MappingProxyType(dict(sorted((resource_remaining or {}).items()))),
        win_rules=MappingProxyType(dict(win_rules)),
    )


def combine_resolutions(parts: Sequence[Resolution[Any]]) -> Resolution[Candidate]:
    """One resolution from per-type resolutions of disjoint candidate sets."""
    terrain = [p.terrain for p in parts if p.terrain is not None]
    remaining: dict[str, float] = {}
    rules: dict[ConflictType, Rule] = {}
    for p in parts:
        remaining.update(p.resource_remaining)
        rules.update(p.win_rules)
    winners: list[Candidate] = [c for p in parts for c in p.winners]
    losers: list[Candidate] = [c for p in parts for c in p.losers]
    return make_resolution(
        winners,
        losers,
        [d for p in parts for d in p.decisions],
        rules,
        terrain=terrain[0] if len(terrain) == 1 else None,
        resource_remaining=remaining,
    )

"""Decision records: what a resolver decided and why, for the store's log and the operator."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from conflicts._errors import ConflictInputError
from conflicts._kinds import ConflictType, Rule, as_conflict_type, parse_enum
from conflicts._validate import check_id

_KEYS = ("conflict_type", "rule", "subject", "winners", "losers", "committed_ids", "reason")


def _ids(value: object, name: str) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
        raise ConflictInputError(f"ConflictDecision.{name} must be a list of ids")
    out = tuple(check_id(v, f"ConflictDecision.{name}[]") for v in value)
    if len(set(out)) != len(out):
        raise ConflictInputError(f"ConflictDecision.{name} repeats an id")
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ConflictDecision:
    """One settled contest.

    - ``conflict_type``: what was contested; ``subject``: the contested thing (a structure,
      resource, item or creature id, or a terrain sphere's description).
    - ``rule``: the strategy applied, or `Rule.COMMITTED` when the losers lost to state
      already in the store (then ``winners`` is empty and ``committed_ids`` names the
      committed objects: structure ids, the resource, item or creature id).
    - ``winners``: op ids that beat the losers, highest precedence first; ``winner_op_id``
      is the first of them (None for committed).
    - ``losers``: op ids that lost, highest precedence first. Empty only for a MERGE record,
      which lists overlapping terrain edits that were combined (all of them winners).
    - ``reason``: a sentence for the operator.

    ``to_dict()`` is JSON-safe and ``from_dict(to_dict(d)) == d``; ``from_dict`` validates
    like the constructor (`ConflictInputError` on anything malformed or unknown).
    """

    conflict_type: ConflictType
    rule: Rule
    subject: str
    winners: tuple[str, ...] = ()
    losers: tuple[str, ...] = ()
    committed_ids: tuple[str, ...] = ()
    reason: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "conflict_type", as_conflict_type(self.conflict_type))
        rule = parse_enum(Rule, self.rule, "rule")
        object.__setattr__(self, "rule", rule)
        object.__setattr__(self, "subject", check_id(self.subject, "ConflictDecision.subject"))
        winners = _ids(self.winners, "winners")
        losers = _ids(self.losers, "losers")
        committed = _ids(self.committed_ids, "committed_ids")
        if not isinstance(self.reason, str) or not self.reason:
            raise ConflictInputError("ConflictDecision.reason must be a non-empty str")
        if set(winners) & set(losers):
            raise ConflictInputError("ConflictDecision: an op cannot both win and lose")
        if rule is Rule.MERGE:
            if losers or committed or self.conflict_type is not ConflictType.TERRAIN_OVERLAP:
                raise ConflictInputError(
                    "a merge decision is for terrain, names no losers and no committed ids"
                )
        elif not losers:
            raise ConflictInputError("ConflictDecision: a non-merge decision names its losers")
        if rule is Rule.COMMITTED and winners:
            raise ConflictInputError("ConflictDecision: a committed decision has no winner ops")
        object.__setattr__(self, "winners", winners)
        object.__setattr__(self, "losers", losers)
        object.__setattr__(self, "committed_ids", committed)

    @property
    def winner_op_id(self) -> str | None:
        """The op that beat the losers (highest precedence), or None (committed, merge)."""
        return self.winners[0] if self.winners and self.rule is not Rule.MERGE else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "conflict_type": self.conflict_type.value,
            "rule": self.rule.value,
            "subject": self.subject,
            "winners": list(self.winners),
            "losers": list(self.losers),
            "committed_ids": list(self.committed_ids),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConflictDecision:
        if not isinstance(data, Mapping):
            raise ConflictInputError(f"decision must be a mapping, got {type(data).__name__}")
        unknown = set(data) - set(_KEYS)
        missing = set(_KEYS) - set(data)
        if unknown or missing:
            raise ConflictInputError(
                f"decision keys: unknown {sorted(map(str, unknown))}, missing {sorted(missing)}"
            )
        return cls(**{k: data[k] for k in _KEYS})


def trusted_decision(
    *,
    conflict_type: ConflictType,
    rule: Rule,
    subject: str,
    winners: tuple[str, ...] = (),
    losers: tuple[str, ...] = (),
    committed_ids: tuple[str, ...] = (),
    reason: str,
) -> ConflictDecision:
    """A `ConflictDecision` built without re-validating its fields.

    For the resolvers only: their ids come from validated candidates and their structure
    follows the record's invariants (the tests round-trip every decision they produce
    through the validating `ConflictDecision.from_dict`). Skipping the checks matters when a
    batch of thousands yields hundreds of decisions.
    """
    d = object.__new__(ConflictDecision)
    for name, value in (
        ("conflict_type", conflict_type),
        ("rule", rule),
        ("subject", subject),
        ("winners", winners),
        ("losers", losers),
        ("committed_ids", committed_ids),
        ("reason", reason),
    ):
        object.__setattr__(d, name, value)
    return d


class Outcome(NamedTuple):
    """What happened to one op: ``(won, rule, winner_op_id)``.

    For a winner, ``winner_op_id`` is its own op id and ``rule`` the strategy of its type.
    For a loser, ``rule`` and ``winner_op_id`` are those of the decision that names it
    (``winner_op_id`` is None when it lost to committed state).
    """

    won: bool
    rule: Rule
    winner_op_id: str | None

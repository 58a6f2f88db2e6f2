"""Creature ownership: disputes between servers claiming one creature."""

from __future__ import annotations

from collections.abc import Iterable

from conflicts._candidates import CreatureClaim, unique_candidates
from conflicts._committed import CommittedState, as_committed
from conflicts._decisions import ConflictDecision, trusted_decision
from conflicts._errors import ConflictInputError
from conflicts._kinds import AnyStrategy, ConflictType, Rule, Strategy, as_any_strategy
from conflicts._policy import precedence_key_fn, strategy_text
from conflicts._resolution import Resolution, make_resolution

_TYPE = ConflictType.CREATURE_OWNERSHIP


def _by_creature(claims: list[CreatureClaim]) -> dict[str, list[CreatureClaim]]:
    groups: dict[str, list[CreatureClaim]] = {}
    for c in claims:
        groups.setdefault(c.creature_id, []).append(c)
    return dict(sorted(groups.items()))


def detect_creature_disputes(claims: Iterable[CreatureClaim]) -> dict[str, tuple[str, ...]]:
    """Creatures claimed for two or more different servers: creature id -> op ids (sorted)."""
    items = unique_candidates(claims, (CreatureClaim,), "detect_creature_disputes")
    return {
        cid: tuple(sorted(c.op_id for c in group))
        for cid, group in _by_creature(items).items()
        if len({c.claimant for c in group}) > 1
    }


def resolve_creatures_checked(
    items: list[CreatureClaim], strategy: AnyStrategy, state: CommittedState
) -> Resolution[CreatureClaim]:
    """`resolve_creatures` on already-validated, de-duplicated input."""
    if strategy is Strategy.MERGE:
        raise ConflictInputError("creature claims cannot be merged; choose another strategy")
    rule = Rule.of(strategy)
    winners: list[CreatureClaim] = []
    losers: list[CreatureClaim] = []
    decisions: list[ConflictDecision] = []
    for cid, group in _by_creature(sorted(items, key=precedence_key_fn(strategy))).items():
        owner = state.creature_owners.get(cid)
        if owner is not None:
            refused = [c for c in group if owner not in (c.claimant, c.server_id)]
            group = [c for c in group if owner in (c.claimant, c.server_id)]
            if refused:
                losers.extend(refused)
                decisions.append(
                    trusted_decision(
                        conflict_type=_TYPE,
                        rule=Rule.COMMITTED,
                        subject=cid,
                        losers=tuple(c.op_id for c in refused),
                        committed_ids=(cid,),
                        reason=f"creature {cid!r} is owned by server {owner!r}; only its "
                        "owner can hand it over",
                    )
                )
        if not group:
            continue
        claimant = group[0].claimant
        won = [c for c in group if c.claimant == claimant]
        lost = [c for c in group if c.claimant != claimant]
        winners.extend(won)
        if lost:
            losers.extend(lost)
            decisions.append(
                trusted_decision(
                    conflict_type=_TYPE,
                    rule=rule,
                    subject=cid,
                    winners=tuple(c.op_id for c in won),
                    losers=tuple(c.op_id for c in lost),
                    reason=f"creature {cid!r} goes to server {claimant!r} (op "
                    f"{group[0].op_id}); {strategy_text(strategy)}",
                )
            )
    return make_resolution(winners, losers, decisions, {_TYPE: rule})


def resolve_creatures(
    claims: Iterable[CreatureClaim],
    *,
    strategy: AnyStrategy | str = Strategy.TIMESTAMP,
    committed: CommittedState | None = None,
) -> Resolution[CreatureClaim]:
    """Settle creature-ownership disputes.

    Per creature, the claim first in ``strategy``'s precedence order fixes the new owner;
    every claim naming that same claimant wins too (they agree), claims naming another
    server lose to it. A claim on a creature `CommittedState.creature_owners` lists as owned
    loses with rule ``committed`` unless it comes from the owner or names the owner.
    """
    items = unique_candidates(claims, (CreatureClaim,), "resolve_creatures")
    return resolve_creatures_checked(items, as_any_strategy(strategy), as_committed(committed))

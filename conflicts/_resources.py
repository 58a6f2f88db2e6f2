"""Resource claims: collisions on one node, and batch resolution against remaining amounts."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from fractions import Fraction

from conflicts._candidates import ResourceClaim, unique_candidates
from conflicts._committed import CommittedState, as_committed
from conflicts._decisions import ConflictDecision, trusted_decision
from conflicts._errors import ConflictInputError
from conflicts._kinds import AnyStrategy, ConflictType, Rule, Strategy, as_any_strategy
from conflicts._policy import precedence_key_fn, strategy_text
from conflicts._resolution import Resolution, make_resolution
from conflicts._validate import check_id, check_real

_TYPE = ConflictType.RESOURCE_CLAIM


def _by_resource(claims: list[ResourceClaim]) -> dict[str, list[ResourceClaim]]:
    groups: dict[str, list[ResourceClaim]] = {}
    for c in claims:
        groups.setdefault(c.resource_id, []).append(c)
    return dict(sorted(groups.items()))


def detect_resource_collisions(
    claims: Iterable[ResourceClaim], *, remaining: Mapping[str, float] | None = None
) -> dict[str, tuple[str, ...]]:
    """Resource nodes whose claims collide: node id -> op ids of its claims (sorted).

    Without ``remaining``, every node claimed by two or more ops. With it, every node whose
    claims together exceed its remaining amount (a node not listed has nothing left).
    """
    items = unique_candidates(claims, (ResourceClaim,), "detect_resource_collisions")
    limits: dict[str, float] | None = None
    if remaining is not None:
        if not isinstance(remaining, Mapping):
            raise ConflictInputError("remaining must be a mapping resource id -> amount")
        limits = {
            check_id(k, "resource id"): check_real(v, f"remaining of {k!r}", allow_inf=True)
            for k, v in remaining.items()
        }
    out: dict[str, tuple[str, ...]] = {}
    for rid, group in _by_resource(items).items():
        if limits is None:
            collide = len(group) > 1
        else:
            limit = limits.get(rid, 0.0)
            collide = not math.isinf(limit) and sum(Fraction(c.amount) for c in group) > Fraction(
                max(limit, 0.0)
            )
        if collide:
            out[rid] = tuple(sorted(c.op_id for c in group))
    return out


def _amount(x: float | Fraction) -> str:
    return f"{float(x):.6g}"


def resolve_claims_checked(
    items: list[ResourceClaim], strategy: AnyStrategy, state: CommittedState
) -> Resolution[ResourceClaim]:
    """`resolve_claims` on already-validated, de-duplicated input."""
    if strategy is Strategy.MERGE:
        raise ConflictInputError("resource claims cannot be merged; choose another strategy")
    rule = Rule.of(strategy)
    ordered = sorted(items, key=precedence_key_fn(strategy))
    winners: list[ResourceClaim] = []
    losers: list[ResourceClaim] = []
    decisions: list[ConflictDecision] = []
    remaining: dict[str, float] = {}
    for rid, group in _by_resource(ordered).items():
        known = state.resources.get(rid)
        if known is None:
            losers.extend(group)
            decisions.append(
                trusted_decision(
                    conflict_type=_TYPE,
                    rule=Rule.COMMITTED,
                    subject=rid,
                    losers=tuple(c.op_id for c in group),
                    committed_ids=(rid,),
                    reason=f"resource node {rid!r} has no known remaining amount; claims on "
                    "it cannot be checked, so it counts as exhausted",
                )
            )
            continue
        unlimited = math.isinf(known)
        limit = Fraction(0) if unlimited else Fraction(known)
        used = Fraction(0)
        admitted: list[ResourceClaim] = []
        too_big: list[ResourceClaim] = []
        for c in group:
            amount = Fraction(c.amount)
            if unlimited or used + amount <= limit:
                admitted.append(c)
                used += amount
            elif amount > limit:
                too_big.append(c)
            else:
                decisions.append(
                    trusted_decision(
                        conflict_type=_TYPE,
                        rule=rule,
                        subject=rid,
                        winners=tuple(w.op_id for w in admitted),
                        losers=(c.op_id,),
                        reason=f"claim of {_amount(amount)} on {rid!r} does not fit: "
                        f"{_amount(limit - used)} of {_amount(limit)} left after "
                        f"{len(admitted)} claim(s) ahead of it; {strategy_text(strategy)}",
                    )
                )
                losers.append(c)
        if too_big:
            losers.extend(too_big)
            decisions.append(
                trusted_decision(
                    conflict_type=_TYPE,
                    rule=Rule.COMMITTED,
                    subject=rid,
                    losers=tuple(c.op_id for c in too_big),
                    committed_ids=(rid,),
                    reason=f"each claim exceeds the {_amount(limit)} committed as remaining "
                    f"on {rid!r}",
                )
            )
        winners.extend(admitted)
        remaining[rid] = math.inf if unlimited else float(limit - used)
    return make_resolution(winners, losers, decisions, {_TYPE: rule}, resource_remaining=remaining)


def resolve_claims(
    claims: Iterable[ResourceClaim],
    *,
    strategy: AnyStrategy | str = Strategy.TIMESTAMP,
    committed: CommittedState | None = None,
) -> Resolution[ResourceClaim]:
    """Choose which resource claims of a concurrent batch are granted.

    Per node, claims are walked in ``strategy``'s precedence order and each is granted if
    it fits in what is left after the claims granted before it (first fit: a smaller claim
    further down may still fit). Amounts are compared exactly, as rationals, so rounding can
    never grant more than the node holds. A claim larger than the node's committed remaining
    amount, or on a node `CommittedState.resources` does not list, loses with rule
    ``committed``. ``resource_remaining`` in the result gives each node's new amount.
    """
    items = unique_candidates(claims, (ResourceClaim,), "resolve_claims")
    return resolve_claims_checked(items, as_any_strategy(strategy), as_committed(committed))

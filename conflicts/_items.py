"""Item pickups: one winner per item."""

from __future__ import annotations

from collections.abc import Iterable

from conflicts._candidates import ItemPickup, unique_candidates
from conflicts._committed import CommittedState, as_committed
from conflicts._decisions import ConflictDecision, trusted_decision
from conflicts._errors import ConflictInputError
from conflicts._kinds import AnyStrategy, ConflictType, Rule, Strategy, as_any_strategy
from conflicts._policy import precedence_key_fn, strategy_text
from conflicts._resolution import Resolution, make_resolution

_TYPE = ConflictType.ITEM_PICKUP


def _by_item(pickups: list[ItemPickup]) -> dict[str, list[ItemPickup]]:
    groups: dict[str, list[ItemPickup]] = {}
    for p in pickups:
        groups.setdefault(p.item_id, []).append(p)
    return dict(sorted(groups.items()))


def detect_pickup_races(pickups: Iterable[ItemPickup]) -> dict[str, tuple[str, ...]]:
    """Items picked up by two or more ops: item id -> their op ids (sorted)."""
    items = unique_candidates(pickups, (ItemPickup,), "detect_pickup_races")
    return {
        item: tuple(sorted(p.op_id for p in group))
        for item, group in _by_item(items).items()
        if len(group) > 1
    }


def resolve_pickups_checked(
    items: list[ItemPickup], strategy: AnyStrategy, state: CommittedState
) -> Resolution[ItemPickup]:
    """`resolve_pickups` on already-validated, de-duplicated input."""
    if strategy is Strategy.MERGE:
        raise ConflictInputError("item pickups cannot be merged; choose another strategy")
    rule = Rule.of(strategy)
    winners: list[ItemPickup] = []
    losers: list[ItemPickup] = []
    decisions: list[ConflictDecision] = []
    for item, group in _by_item(sorted(items, key=precedence_key_fn(strategy))).items():
        if item in state.picked_items:
            losers.extend(group)
            decisions.append(
                trusted_decision(
                    conflict_type=_TYPE,
                    rule=Rule.COMMITTED,
                    subject=item,
                    losers=tuple(p.op_id for p in group),
                    committed_ids=(item,),
                    reason=f"item {item!r} was already picked up",
                )
            )
            continue
        first, rest = group[0], group[1:]
        winners.append(first)
        if rest:
            losers.extend(rest)
            decisions.append(
                trusted_decision(
                    conflict_type=_TYPE,
                    rule=rule,
                    subject=item,
                    winners=(first.op_id,),
                    losers=tuple(p.op_id for p in rest),
                    reason=f"item {item!r} goes to op {first.op_id} from server "
                    f"{first.server_id!r}; {strategy_text(strategy)}",
                )
            )
    return make_resolution(winners, losers, decisions, {_TYPE: rule})


def resolve_pickups(
    pickups: Iterable[ItemPickup],
    *,
    strategy: AnyStrategy | str = Strategy.TIMESTAMP,
    committed: CommittedState | None = None,
) -> Resolution[ItemPickup]:
    """One winner per item: the pickup first in ``strategy``'s precedence order. Pickups of
    an item already in `CommittedState.picked_items` all lose with rule ``committed``."""
    items = unique_candidates(pickups, (ItemPickup,), "resolve_pickups")
    return resolve_pickups_checked(items, as_any_strategy(strategy), as_committed(committed))

"""Resource claims, item pickups and creature ownership."""

from __future__ import annotations

import math
from collections import defaultdict
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conflicts import (
    CommittedState,
    CreatureClaim,
    ItemPickup,
    ResourceClaim,
    Rule,
    Strategy,
    detect_creature_disputes,
    detect_pickup_races,
    detect_resource_collisions,
    resolve_claims,
    resolve_creatures,
    resolve_pickups,
)
from tests.conflicts import gen

EXCLUSIVE = [s for s in Strategy if s is not Strategy.MERGE]

remaining_amounts = st.dictionaries(
    st.sampled_from(gen.RESOURCES),
    st.sampled_from([0.0, 0.3, 1.0, 2.5, 6.0, 10.0, math.inf]),
)


def claim(op: str, rid: str, amount: float, hlc: int = 0, server: str = "gs-1") -> ResourceClaim:
    return ResourceClaim(op_id=op, server_id=server, hlc=hlc, resource_id=rid, amount=amount)


# ---- resources ----


@given(gen.resources, remaining_amounts, st.sampled_from(EXCLUSIVE))
def test_claims_never_exceed_the_remaining_amount(
    batch: list[ResourceClaim], remaining: dict[str, float], strategy: Strategy
) -> None:
    res = resolve_claims(batch, strategy=strategy, committed=CommittedState(resources=remaining))
    taken: dict[str, Fraction] = defaultdict(Fraction)
    for w in res.winners:
        assert w.resource_id in remaining  # unknown nodes grant nothing
        taken[w.resource_id] += Fraction(w.amount)
    for rid, amount in taken.items():
        if not math.isinf(remaining[rid]):
            assert amount <= Fraction(remaining[rid])
            assert res.resource_remaining[rid] == float(Fraction(remaining[rid]) - amount)
    # the naive first-fit rule, per node, in precedence order
    expected = []
    used: dict[str, Fraction] = defaultdict(Fraction)
    for c in sorted(batch, key=gen.tuple_key(strategy.value)):
        limit = remaining.get(c.resource_id)
        if limit is None:
            continue
        if math.isinf(limit) or used[c.resource_id] + Fraction(c.amount) <= Fraction(limit):
            used[c.resource_id] += Fraction(c.amount)
            expected.append(c)
    assert set(res.winners) == set(expected)


@given(st.data(), gen.resources, remaining_amounts, st.sampled_from(EXCLUSIVE))
def test_claims_order_independent_and_idempotent(
    data: st.DataObject, batch: list[Any], remaining: dict[str, float], strategy: Strategy
) -> None:
    state = CommittedState(resources=remaining)
    res = resolve_claims(batch, strategy=strategy, committed=state)
    assert resolve_claims(data.draw(gen.arrivals(batch)), strategy=strategy, committed=state) == res
    again = resolve_claims(res.winners, strategy=strategy, committed=state)
    assert again.winners == res.winners and again.losers == () and again.decisions == ()


def test_claims_first_fit_rules_and_reasons() -> None:
    state = CommittedState(resources={"ore": 5.0, "gold": 1.0})
    batch = [
        claim("a", "ore", 3.0, hlc=1),
        claim("b", "ore", 3.0, hlc=2),  # does not fit after a
        claim("c", "ore", 2.0, hlc=3),  # still fits: first fit
        claim("d", "gold", 2.0, hlc=1),  # more than the node ever had
        claim("e", "silver", 1.0, hlc=1),  # unknown node
    ]
    res = resolve_claims(batch, committed=state)
    assert res.winner_ids == ("a", "c")
    assert res.outcome_of("b") == (False, Rule.TIMESTAMP, "a")
    assert res.outcome_of("d") == (False, Rule.COMMITTED, None)
    assert res.outcome_of("e") == (False, Rule.COMMITTED, None)
    assert dict(res.resource_remaining) == {"gold": 1.0, "ore": 0.0}
    b = res.decision_of("b")
    assert b is not None and "does not fit" in b.reason
    e = res.decision_of("e")
    assert e is not None and e.committed_ids == ("silver",) and "no known" in e.reason


def test_claims_are_compared_exactly() -> None:
    # 0.1 + 0.2 > 0.3 in floats; exact rationals of the floats decide, never rounding
    state = CommittedState(resources={"ore": 0.3})
    res = resolve_claims([claim("a", "ore", 0.1, 1), claim("b", "ore", 0.2, 2)], committed=state)
    total = Fraction(0.1) + Fraction(0.2)
    assert (len(res.winners) == 2) == (total <= Fraction(0.3))


def test_unlimited_node() -> None:
    state = CommittedState(resources={"water": math.inf})
    res = resolve_claims([claim(f"o{i}", "water", 1e300) for i in range(5)], committed=state)
    assert len(res.winners) == 5 and res.resource_remaining["water"] == math.inf


def test_detect_resource_collisions() -> None:
    batch = [claim("a", "ore", 3.0), claim("b", "ore", 3.0), claim("c", "wood", 1.0)]
    assert detect_resource_collisions(batch) == {"ore": ("a", "b")}
    assert detect_resource_collisions(batch, remaining={"ore": 6.0, "wood": 1.0}) == {}
    assert detect_resource_collisions(batch, remaining={"ore": 5.0}) == {
        "ore": ("a", "b"),
        "wood": ("c",),
    }


# ---- items ----


@given(st.data(), gen.pickups, st.sets(st.sampled_from(gen.ITEMS)), st.sampled_from(EXCLUSIVE))
def test_pickups_one_winner_per_item(
    data: st.DataObject, batch: list[ItemPickup], picked: set[str], strategy: Strategy
) -> None:
    state = CommittedState(picked_items=picked)
    res = resolve_pickups(batch, strategy=strategy, committed=state)
    items = [w.item_id for w in res.winners]
    assert len(items) == len(set(items))
    assert not set(items) & picked
    key = gen.tuple_key(strategy.value)
    for item in {p.item_id for p in batch} - picked:
        assert min((p for p in batch if p.item_id == item), key=key) in res.winners
    assert (
        resolve_pickups(data.draw(gen.arrivals(batch)), strategy=strategy, committed=state) == res
    )
    again = resolve_pickups(res.winners, strategy=strategy, committed=state)
    assert again.winners == res.winners and again.decisions == ()


def test_pickup_race_decision() -> None:
    p = [
        ItemPickup(op_id=o, server_id=s, hlc=h, item_id="gem")
        for o, s, h in [("x", "gs-2", 5), ("y", "gs-1", 5), ("z", "gs-1", 4)]
    ]
    assert detect_pickup_races(p) == {"gem": ("x", "y", "z")}
    res = resolve_pickups(p)
    (d,) = res.decisions
    assert d.winners == ("z",) and d.losers == ("y", "x") and d.subject == "gem"
    res = resolve_pickups(p, committed=CommittedState(picked_items={"gem"}))
    assert res.winners == () and res.decisions[0].rule is Rule.COMMITTED


# ---- creatures ----

owners = st.dictionaries(st.sampled_from(gen.CREATURES), st.sampled_from(gen.SERVERS))


@given(st.data(), gen.creatures, owners, st.sampled_from(EXCLUSIVE))
def test_creature_claims_agree_on_one_owner(
    data: st.DataObject, batch: list[CreatureClaim], owned: dict[str, str], strategy: Strategy
) -> None:
    state = CommittedState(creature_owners=owned)
    res = resolve_creatures(batch, strategy=strategy, committed=state)
    new_owner: dict[str, str] = {}
    for w in res.winners:
        assert new_owner.setdefault(w.creature_id, w.claimant) == w.claimant
        if w.creature_id in owned:
            assert owned[w.creature_id] in (w.claimant, w.server_id)
    assert detect_creature_disputes(res.winners) == {}
    arrived = data.draw(gen.arrivals(batch))
    assert resolve_creatures(arrived, strategy=strategy, committed=state) == res
    again = resolve_creatures(res.winners, strategy=strategy, committed=state)
    assert again.winners == res.winners and again.decisions == ()


def test_creature_dispute_and_handover() -> None:
    def cc(op: str, server: str, claimant: str, hlc: int) -> CreatureClaim:
        return CreatureClaim(
            op_id=op, server_id=server, hlc=hlc, creature_id="wolf", claimant=claimant
        )

    a, b = cc("a", "gs-1", "gs-1", 2), cc("b", "gs-2", "gs-2", 1)
    assert detect_creature_disputes([a, b]) == {"wolf": ("a", "b")}
    assert resolve_creatures([a, b]).winner_ids == ("b",)
    assert resolve_creatures([a, b], strategy="lww").winner_ids == ("a",)
    # owned by gs-3: only gs-3 may hand it over, here to gs-1
    state = CommittedState(creature_owners={"wolf": "gs-3"})
    handover = cc("h", "gs-3", "gs-1", 3)
    res = resolve_creatures([a, b, handover], committed=state)
    assert res.winner_ids == ("h",)  # gs-1 claiming for itself is not a hand-over
    assert res.outcome_of("a") == res.outcome_of("b") == (False, Rule.COMMITTED, None)
    d = res.decision_of("a")
    assert d is not None and d.losers == ("b", "a") and "owned by server 'gs-3'" in d.reason
    # in the same batch the receiver's own claim is still refused: the batch is resolved
    # against the owner committed before it (gs-3), not against the hand-over
    receiver = cc("r", "gs-1", "gs-1", 4)
    assert resolve_creatures([handover, receiver], committed=state).winner_ids == ("h",)


@pytest.mark.parametrize("strategy", ["timestamp", "lww"])
def test_same_claimant_claims_all_win(strategy: str) -> None:
    claims = [
        CreatureClaim(
            op_id=f"o{i}", server_id=f"gs-{i}", hlc=i, creature_id="bear", claimant="gs-9"
        )
        for i in range(3)
    ]
    assert len(resolve_creatures(claims, strategy=strategy).winners) == 3

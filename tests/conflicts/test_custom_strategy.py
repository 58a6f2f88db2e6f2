"""A game's own strategy (`CustomStrategy`): its key first, then the full timestamp
tie-break, so winners stay a function of the set of candidates (issue 9, item 7)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import conflicts
from conflicts import (
    Candidate,
    ConflictDecision,
    ConflictInputError,
    CustomStrategy,
    ItemPickup,
    Policy,
    Rule,
    StructurePlacement,
    precedence_key,
)
from tests.conflicts import gen


def volume(c: Any) -> float:
    if isinstance(c, StructurePlacement):
        return float((c.hi[0] - c.lo[0]) * (c.hi[1] - c.lo[1]) * (c.hi[2] - c.lo[2]))
    return 0.0


BIGGEST = CustomStrategy("biggest", lambda c: -volume(c), "the larger structure wins")
BY_SERVER_LENGTH = CustomStrategy("short-server", lambda c: (len(c.server_id), c.priority))
COARSE = CustomStrategy("coarse", lambda c: c.hlc // 2)  # ties constantly: the tie-break decides
CUSTOMS = [BIGGEST, BY_SERVER_LENGTH, COARSE]

POLICIES = [Policy(structures=s, terrain=s, resources=s, items=s, creatures=s) for s in CUSTOMS]


def canonical(r: conflicts.Resolution[Any]) -> tuple[Any, ...]:
    return (r.winner_ids, r.loser_ids, r.decisions, r.resource_remaining)


@gen.heavy
@given(
    st.sampled_from(POLICIES), gen.mixed.flatmap(lambda b: st.tuples(st.just(b), gen.arrivals(b)))
)
def test_winners_are_order_independent_under_a_custom_key(
    policy: Policy, pair: tuple[list[Candidate], list[Candidate]]
) -> None:
    batch, arrival = pair
    a = conflicts.resolve(batch, policy=policy)
    b = conflicts.resolve(arrival, policy=policy)
    assert canonical(a) == canonical(b)


@given(gen.structures)
def test_structures_follow_the_custom_key_then_the_full_tie_break(
    batch: list[StructurePlacement],
) -> None:
    res = conflicts.resolve_structures(batch, strategy=BIGGEST)
    want = gen.greedy(
        batch,
        lambda c: (-volume(c), c.hlc, c.server_id, c.op_id),
        lambda x, y: gen.boxes_overlap(x, y) or x.structure_id == y.structure_id,
    )
    assert sorted(res.winner_ids) == sorted(c.op_id for c in want)
    for d in res.decisions:
        assert d.rule is Rule.CUSTOM and "biggest" in d.reason


def test_the_key_decides_before_the_timestamp() -> None:
    small = StructurePlacement(
        op_id="a", server_id="gs-1", hlc=1, structure_id="hut", lo=(0, 0, 0), hi=(1, 1, 1)
    )
    big = StructurePlacement(
        op_id="b", server_id="gs-2", hlc=9, structure_id="hall", lo=(0, 0, 0), hi=(5, 5, 5)
    )
    first_wins = conflicts.resolve_structures([small, big])
    assert first_wins.winner_ids == ("a",)
    biggest = conflicts.resolve_structures([small, big], strategy=BIGGEST)
    assert biggest.winner_ids == ("b",)
    (d,) = biggest.decisions
    assert d.rule is Rule.CUSTOM and d.winner_op_id == "b" and "larger structure" in d.reason
    assert ConflictDecision.from_dict(d.to_dict()) == d
    assert precedence_key(BIGGEST, big)[1:] == (9, "gs-2", "b")


def test_policy_accepts_custom_strategies() -> None:
    p = Policy(items=COARSE).with_strategy("structure_overlap", BIGGEST)
    assert p["structure_overlap"] is BIGGEST and p["item_pickup"] is COARSE
    assert p.to_dict()["structure_overlap"] == "custom:biggest"
    assert Policy.from_mapping({"terrain_overlap": BIGGEST})["terrain_overlap"] is BIGGEST
    ops = [
        ItemPickup(op_id=o, server_id=s, hlc=h, item_id="gem")
        for o, s, h in [("x", "gs-2", 3), ("y", "gs-1", 2)]
    ]
    # COARSE ties 3//2 == 2//2: the tie-break (lowest HLC) picks y
    assert conflicts.resolve(ops, policy=p).winner_ids == ("y",)


@pytest.mark.parametrize(
    "key",
    [
        lambda c: float("nan"),
        lambda c: {"a": 1},
        lambda c: None,
        lambda c: 1 / 0,
        lambda c: object(),
    ],
)
def test_bad_keys_raise_instead_of_answering(key: Any) -> None:
    s = CustomStrategy("bad", key)
    ops = [ItemPickup(op_id=o, server_id="gs-1", hlc=1, item_id="gem") for o in "ab"]
    with pytest.raises(ConflictInputError, match="bad"):
        conflicts.resolve_pickups(ops, strategy=s)


def test_mixed_key_kinds_still_compare() -> None:
    s = CustomStrategy("mixed", lambda c: 1 if c.op_id == "a" else "z")
    ops = [ItemPickup(op_id=o, server_id="gs-1", hlc=1, item_id="gem") for o in "ab"]
    assert conflicts.resolve_pickups(ops, strategy=s).winner_ids == ("a",)  # numbers < str


@pytest.mark.parametrize(
    "args",
    [("", lambda c: 0), ("has space", lambda c: 0), ("x" * 65, lambda c: 0), ("ok", 3)],
)
def test_bad_custom_strategies_are_refused(args: tuple[Any, Any]) -> None:
    with pytest.raises(ConflictInputError):
        CustomStrategy(*args)

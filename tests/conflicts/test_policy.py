"""Strategies, their total orders and tie-breaks, the policy, and decision records."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import conflicts
from conflicts import (
    DEFAULT_POLICY,
    ConflictDecision,
    ConflictType,
    ItemPickup,
    Policy,
    Rule,
    Strategy,
    precedence_key,
)
from conflicts._policy import canonical_key, precedence_key_fn
from tests.conflicts import gen


def pick(op_id: str, server_id: str, hlc: int, priority: int = 0) -> ItemPickup:
    return ItemPickup(op_id=op_id, server_id=server_id, hlc=hlc, priority=priority, item_id="gem")


def winner(strategy: str, *ops: ItemPickup) -> str:
    res = conflicts.resolve_pickups(ops, strategy=strategy)
    assert len(res.winners) == 1
    return res.winners[0].op_id


# (strategy, pickups as (op_id, server_id, hlc, priority), expected winner)
TIE_BREAKS: list[tuple[str, list[tuple[str, str, int, int]], str]] = [
    ("timestamp", [("x", "gs-2", 10, 0), ("y", "gs-1", 11, 0)], "x"),  # earlier HLC
    ("timestamp", [("x", "gs-2", 10, 0), ("y", "gs-1", 10, 0)], "y"),  # tie: lowest server
    ("timestamp", [("x", "gs-1", 10, 0), ("w", "gs-1", 10, 0)], "w"),  # tie: lowest op id
    ("timestamp", [("x", "gs-10", 10, 0), ("y", "gs-1", 10, 0)], "y"),  # prefix sorts first
    ("timestamp", [("x", "gs-10", 10, 0), ("y", "gs-2", 10, 0)], "x"),  # by code point
    ("lww", [("x", "gs-2", 10, 0), ("y", "gs-1", 11, 0)], "y"),  # later HLC
    ("lww", [("x", "gs-2", 11, 0), ("y", "gs-1", 11, 0)], "y"),  # tie: lowest server
    ("lww", [("b", "gs-1", 11, 0), ("a", "gs-1", 11, 0)], "a"),  # tie: lowest op id
    ("lowest_server", [("x", "gs-1", 99, 0), ("y", "gs-2", 1, 0)], "x"),
    ("lowest_server", [("x", "gs-1", 9, 0), ("y", "gs-1", 8, 0)], "y"),  # then HLC
    ("lowest_server", [("b", "gs-1", 8, 0), ("a", "gs-1", 8, 0)], "a"),  # then op id
    ("priority", [("x", "gs-1", 1, 0), ("y", "gs-2", 9, 5)], "y"),  # highest priority
    ("priority", [("x", "gs-2", 9, 5), ("y", "gs-1", 9, 5)], "y"),  # tie: HLC, then server
    ("priority", [("x", "gs-1", 8, 5), ("y", "gs-1", 9, 5)], "x"),
    ("priority", [("b", "gs-1", 9, -3), ("a", "gs-1", 9, -3)], "a"),
]


@pytest.mark.parametrize(("strategy", "ops", "expected"), TIE_BREAKS)
def test_tie_breaks_always_give_the_same_answer(
    strategy: str, ops: list[tuple[str, str, int, int]], expected: str
) -> None:
    cands = [pick(*o) for o in ops]
    assert winner(strategy, *cands) == expected
    assert winner(strategy, *reversed(cands)) == expected


@given(st.lists(gen.pickup(), min_size=1, max_size=20), st.sampled_from(list(Strategy)))
def test_precedence_keys_are_total_and_match_the_documented_tuples(
    specs: list[dict[str, Any]], strategy: Strategy
) -> None:
    cands = [
        ItemPickup(op_id=f"op-{i}", **{k: v for k, v in s.items() if k != "kind"})
        for i, s in enumerate(specs)
    ]
    keys = [precedence_key(strategy, c) for c in cands]
    assert len(set(keys)) == len(cands)  # no two distinct ops tie
    expected = sorted(cands, key=gen.tuple_key(strategy.value))
    assert sorted(cands, key=precedence_key_fn(strategy)) == expected
    assert [precedence_key(strategy, c) for c in expected] == sorted(keys)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**63 - 1) | st.integers(0, 3), st.sampled_from(gen.SERVERS), gen.op_ids
        ),
        max_size=30,
        unique_by=lambda t: t[2],
    )
)
def test_sort_key_string_orders_exactly_as_the_canonical_tuple(
    rows: list[tuple[int, str, str]],
) -> None:
    batch = [ItemPickup(op_id=o, server_id=s, hlc=h, item_id="gem") for h, s, o in rows]
    assert sorted(batch, key=canonical_key) == sorted(batch, key=gen.tuple_key("timestamp"))


def test_default_policy_and_overrides() -> None:
    assert DEFAULT_POLICY.to_dict() == {
        "structure_overlap": "timestamp",
        "terrain_overlap": "merge",
        "resource_claim": "timestamp",
        "item_pickup": "timestamp",
        "creature_ownership": "timestamp",
    }
    p = Policy.from_mapping({"ITEM_PICKUP": "LWW", ConflictType.CREATURE_OWNERSHIP: "priority"})
    assert p[ConflictType.ITEM_PICKUP] is Strategy.LWW
    assert p["creature_ownership"] is Strategy.PRIORITY
    assert p.structures is Strategy.TIMESTAMP
    assert p.with_strategy("terrain_overlap", "lww").terrain is Strategy.LWW
    assert Policy.from_mapping(p.to_dict()) == p


def test_policy_changes_the_outcome() -> None:
    early = pick("early", "gs-2", 1)
    late = pick("late", "gs-1", 2)
    assert conflicts.resolve([early, late]).winner_ids == ("early",)
    lww = Policy(items=Strategy.LWW)
    assert conflicts.resolve([early, late], policy=lww).winner_ids == ("late",)


def test_decision_round_trips_through_json() -> None:
    d = ConflictDecision(
        conflict_type=ConflictType.STRUCTURE_OVERLAP,
        rule=Rule.COMMITTED,
        subject="st-1",
        losers=("op-2", "op-3"),
        committed_ids=("st-0",),
        reason="overlaps committed structure 'st-0'",
    )
    text = json.dumps(d.to_dict())
    back = ConflictDecision.from_dict(json.loads(text))
    assert back == d
    assert back.winner_op_id is None
    assert isinstance(back.losers, tuple)


def test_decision_winner_op_id_is_the_first_winner() -> None:
    d = ConflictDecision(
        conflict_type=ConflictType.RESOURCE_CLAIM,
        rule=Rule.LWW,
        subject="ore",
        winners=("w1", "w2"),
        losers=("l",),
        reason="did not fit",
    )
    assert d.winner_op_id == "w1"
    assert d.rule is Rule.LWW and d.conflict_type is ConflictType.RESOURCE_CLAIM

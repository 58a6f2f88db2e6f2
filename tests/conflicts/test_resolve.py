"""The mixed-batch entry point: order independence, safety, idempotence, outcomes."""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from fractions import Fraction
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from conflicts import (
    Candidate,
    CommittedState,
    ConflictDecision,
    CreatureClaim,
    ItemPickup,
    Policy,
    ResourceClaim,
    Rule,
    Strategy,
    StructurePlacement,
    TerrainEdit,
    resolve,
)
from tests.conflicts import gen

STATE = CommittedState(
    structures={"old-1": (0, 0, 0, 3, 3, 3), "st-7": (20, 20, 20, 21, 21, 21)},
    resources={"ore-1": 5.0, "wood": math.inf},
    picked_items={"gem"},
    creature_owners={"wolf": "gs-2"},
)

policies = st.builds(
    Policy,
    structures=st.sampled_from([s for s in Strategy if s is not Strategy.MERGE]),
    terrain=st.sampled_from(list(Strategy)),
    resources=st.sampled_from([s for s in Strategy if s is not Strategy.MERGE]),
    items=st.sampled_from([s for s in Strategy if s is not Strategy.MERGE]),
    creatures=st.sampled_from([s for s in Strategy if s is not Strategy.MERGE]),
)


@gen.heavy
@given(st.data(), gen.mixed, policies, st.booleans())
def test_any_arrival_gives_the_same_resolution(
    data: st.DataObject, batch: list[Any], policy: Policy, with_state: bool
) -> None:
    state = STATE if with_state else None
    first = resolve(batch, policy=policy, committed=state)
    again = resolve(data.draw(gen.arrivals(batch)), policy=policy, committed=state)
    assert again == first
    assert again.winners == first.winners
    assert again.decisions == first.decisions
    assert again.terrain == first.terrain


@given(gen.mixed, policies)
def test_safety_and_accounting(batch: list[Any], policy: Policy) -> None:
    res = resolve(batch, policy=policy, committed=STATE)
    ops = {c.op_id for c in batch}
    assert {c.op_id for c in res.winners} | {c.op_id for c in res.losers} == ops
    assert not {c.op_id for c in res.winners} & {c.op_id for c in res.losers}
    assert list(res.winners) == sorted(res.winners, key=gen.tuple_key("timestamp"))
    # every loser is named by exactly one decision, winners by none as losers
    named = [op for d in res.decisions for op in d.losers]
    assert sorted(named) == sorted(c.op_id for c in res.losers)
    for c in res.winners:
        assert res.outcome_of(c.op_id).won
    for c in res.losers:
        won, rule, winner = res.outcome_of(c.op_id)
        assert not won
        assert (winner is None) == (rule is Rule.COMMITTED)
        if winner is not None:
            assert winner in {w.op_id for w in res.winners}
    # every decision survives the validating JSON round trip
    for d in res.decisions:
        assert ConflictDecision.from_dict(json.loads(json.dumps(d.to_dict()))) == d

    structures = [w for w in res.winners if isinstance(w, StructurePlacement)]
    for a, b in itertools.combinations(structures, 2):
        assert not gen.boxes_overlap(a, b) and a.structure_id != b.structure_id
    assert all(w.structure_id not in ("old-1", "st-7") for w in structures)
    items = [w.item_id for w in res.winners if isinstance(w, ItemPickup)]
    assert len(items) == len(set(items)) and "gem" not in items
    taken: dict[str, Fraction] = defaultdict(Fraction)
    for w in res.winners:
        if isinstance(w, ResourceClaim):
            taken[w.resource_id] += Fraction(w.amount)
    assert set(taken) <= {"ore-1", "wood"} and taken["ore-1"] <= 5
    owners: dict[str, str] = {}
    for w in res.winners:
        if isinstance(w, CreatureClaim):
            assert owners.setdefault(w.creature_id, w.claimant) == w.claimant
    edits = [w for w in res.winners if isinstance(w, TerrainEdit)]
    if policy.terrain is Strategy.MERGE:
        assert len(edits) == sum(isinstance(c, TerrainEdit) for c in set(batch))
    else:
        assert not any(gen.balls_overlap(a, b) for a, b in itertools.combinations(edits, 2))


@given(gen.mixed, policies)
def test_resolving_the_winners_again_changes_nothing(batch: list[Any], policy: Policy) -> None:
    res = resolve(batch, policy=policy, committed=STATE)
    again = resolve(res.winners, policy=policy, committed=STATE)
    assert again.winners == res.winners
    assert again.losers == ()
    assert again.decisions == tuple(d for d in res.decisions if d.rule is Rule.MERGE)
    assert again.terrain == res.terrain
    won_nodes = {w.resource_id for w in res.winners if isinstance(w, ResourceClaim)}
    assert dict(again.resource_remaining) == {
        k: v for k, v in res.resource_remaining.items() if k in won_nodes
    }


def test_empty_batch() -> None:
    res = resolve([])
    assert res.winners == () and res.losers == () and res.decisions == ()
    assert res.terrain is None and dict(res.resource_remaining) == {}


def test_one_of_each_kind() -> None:
    common: dict[str, Any] = {"server_id": "gs-1", "hlc": 1}
    batch: list[Candidate] = [
        StructurePlacement(op_id="s", structure_id="hut", lo=(1, 1, 1), hi=(2, 2, 2), **common),
        TerrainEdit(op_id="t", center=(0, 0, 0), radius=1, delta=-1, **common),
        ResourceClaim(op_id="r", resource_id="ore-1", amount=6, **common),
        ItemPickup(op_id="i", item_id="gem", **common),
        CreatureClaim(op_id="c", creature_id="bear", claimant="gs-1", **common),
    ]
    res = resolve(batch, committed=STATE)
    assert res.winner_ids == ("c", "t")  # canonical order: hlc, server id, op id
    assert [res.outcome_of(o) for o in ("s", "r", "i")] == [(False, Rule.COMMITTED, None)] * 3
    assert res.outcome_of("c") == (True, Rule.TIMESTAMP, "c")
    assert res.outcome_of("t") == (True, Rule.MERGE, "t")
    assert [d.conflict_type.value for d in res.decisions] == [
        "structure_overlap",
        "resource_claim",
        "item_pickup",
    ]

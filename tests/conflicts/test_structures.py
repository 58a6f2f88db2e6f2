"""Structure placements: R-tree detection equals brute force; batch resolution is safe,
order-independent and idempotent, and respects committed structures."""

from __future__ import annotations

import itertools
import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import conflicts
from conflicts import (
    CommittedState,
    ConflictType,
    Rule,
    Strategy,
    StructurePlacement,
    detect_structure_overlaps,
    resolve_structures,
)
from conflicts._overlap import Boxes, self_join
from regions import SpatialIndex
from tests.conflicts import gen

STRATEGIES = [s for s in Strategy if s is not Strategy.MERGE]


def place(
    op: str, lo: Any, hi: Any, *, sid: str | None = None, hlc: int = 0, server: str = "gs-1"
) -> StructurePlacement:
    return StructurePlacement(
        op_id=op, server_id=server, hlc=hlc, structure_id=sid or f"st-{op}", lo=lo, hi=hi
    )


def conflict(a: StructurePlacement, b: StructurePlacement) -> bool:
    return gen.boxes_overlap(a, b) or a.structure_id == b.structure_id


@gen.heavy
@given(gen.structures, st.sampled_from([1, 2, 3, 5]))
def test_rtree_detector_equals_brute_force(batch: list[StructurePlacement], k: int) -> None:
    expected = gen.brute_pairs(batch, gen.boxes_overlap)
    assert detect_structure_overlaps(batch) == expected
    assert detect_structure_overlaps(batch, method="pairwise") == expected
    # the R-tree join itself at small run sizes, so that small batches still span many runs
    geom = Boxes(
        np.array([p.lo for p in batch]).reshape(-1, 3),
        np.array([p.hi for p in batch]).reshape(-1, 3),
    )
    first, second = self_join(geom, k)
    got = sorted(
        tuple(sorted((batch[i].op_id, batch[j].op_id)))
        for i, j in zip(first.tolist(), second.tolist(), strict=True)
    )
    assert got == expected


def random_boxes(n: int, seed: int, world: float, sizes: tuple[float, float]) -> list[Any]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lo = [rng.uniform(0, world) for _ in range(3)]
        if i % 7 == 0:
            lo[2] = 0.0  # a shared ground plane: many exact touches
        hi = [c + rng.uniform(*sizes) for c in lo]
        out.append(
            place(f"op-{i:05d}", lo, hi, hlc=rng.randrange(50), server=f"gs-{rng.randrange(5)}")
        )
    return out


@pytest.mark.parametrize(
    ("n", "world", "sizes"),
    [(1500, 300.0, (1.0, 12.0)), (800, 50.0, (0.0, 9.0)), (300, 5.0, (0.0, 3.0))],
)
def test_rtree_detector_equals_pairwise_on_larger_batches(
    n: int, world: float, sizes: tuple[float, float]
) -> None:
    # many runs and slabs in the R-tree join; dense worlds where most boxes overlap
    batch = random_boxes(n, seed=n, world=world, sizes=sizes)
    by_rtree = detect_structure_overlaps(batch)
    assert by_rtree == detect_structure_overlaps(batch, method="pairwise")
    assert len(by_rtree) > 0
    res = resolve_structures(batch)
    assert res == resolve_structures(batch, method="pairwise")


@given(gen.structures, st.sampled_from(STRATEGIES))
def test_safety_and_the_naive_greedy_rule(
    batch: list[StructurePlacement], strategy: Strategy
) -> None:
    res = resolve_structures(batch, strategy=strategy)
    for a, b in itertools.combinations(res.winners, 2):
        assert not conflict(a, b)  # no two winners overlap or share an id
    assert len(res.winners) + len(res.losers) == len({c.op_id for c in batch})
    expected = gen.greedy(batch, gen.tuple_key(strategy.value), conflict)
    assert set(res.winners) == set(expected)


@given(st.data(), gen.structures, st.sampled_from(STRATEGIES))
def test_order_independence_and_idempotence(
    data: st.DataObject, batch: list[Any], strategy: Strategy
) -> None:
    first = resolve_structures(batch, strategy=strategy)
    again = resolve_structures(data.draw(gen.arrivals(batch)), strategy=strategy)
    assert again == first
    assert again.winners == first.winners and again.decisions == first.decisions
    # resolving the winners again changes nothing
    rerun = resolve_structures(first.winners, strategy=strategy)
    assert rerun.winners == first.winners
    assert rerun.losers == () and rerun.decisions == ()


@gen.heavy
@given(gen.structures, gen.structures)
def test_winners_never_conflict_with_committed_structures(
    batch: list[StructurePlacement], existing: list[StructurePlacement]
) -> None:
    committed = {p.structure_id: p for p in existing}
    state = CommittedState(structures={sid: p.bbox for sid, p in committed.items()})
    res = resolve_structures(batch, committed=state)

    hit = {
        p.op_id: p.structure_id in committed
        or any(gen.boxes_overlap(p, q) for q in committed.values())
        for p in batch
    }

    def blocked(p: StructurePlacement) -> bool:
        return hit[p.op_id]

    assert not any(blocked(w) for w in res.winners)
    expected = gen.greedy(batch, gen.tuple_key("timestamp"), conflict, blocked)
    assert set(res.winners) == set(expected)
    for loser in res.losers:
        outcome = res.outcome_of(loser.op_id)
        if blocked(loser):
            assert outcome == (False, Rule.COMMITTED, None)
            decision = res.decision_of(loser.op_id)
            assert decision is not None and decision.committed_ids
        else:
            assert outcome.rule is Rule.TIMESTAMP and outcome.winner_op_id is not None


def test_committed_state_forms_agree() -> None:
    existing = random_boxes(200, seed=3, world=100.0, sizes=(1.0, 8.0))
    ids = [p.structure_id for p in existing]
    boxes = np.array([p.bbox for p in existing])
    index: SpatialIndex[str] = SpatialIndex()
    for p in existing:
        index.insert(p.structure_id, p.bbox)
    batch = [
        place(f"new-{p.op_id}", p.lo, p.hi, sid=f"new-{p.structure_id}")
        for p in random_boxes(300, seed=4, world=100.0, sizes=(1.0, 8.0))
    ]
    results = [
        resolve_structures(batch, committed=CommittedState(structures=form))
        for form in (index, dict(zip(ids, boxes.tolist(), strict=True)), (ids, boxes))
    ]
    assert results[0] == results[1] == results[2]
    assert any(d.rule is Rule.COMMITTED for d in results[0].decisions)
    hits = conflicts.detect_committed_overlaps(batch, CommittedState(structures=index))
    assert set(hits) == {d.losers[0] for d in results[0].decisions if d.rule is Rule.COMMITTED}


def test_touching_faces_do_not_conflict_but_shared_volume_does() -> None:
    wall = place("a", (0, 0, 0), (1, 4, 3), hlc=1)
    beside = place("b", (1, 0, 0), (2, 4, 3), hlc=2)  # shares a face
    inside = place("c", (0.5, 1, 1), (0.6, 2, 2), hlc=3)
    flat = place("d", (0.2, 0.2, 1), (0.8, 0.8, 1), hlc=4)  # zero thickness: no volume
    res = resolve_structures([inside, beside, wall, flat])
    assert res.winner_ids == ("a", "b", "d")
    assert res.outcome_of("c") == (False, Rule.TIMESTAMP, "a")
    assert detect_structure_overlaps([wall, beside, inside, flat]) == [("a", "c")]


def test_same_structure_id_conflicts_and_decision_says_why() -> None:
    a = place("a", (0, 0, 0), (1, 1, 1), sid="tower", hlc=1)
    b = place("b", (50, 0, 0), (51, 1, 1), sid="tower", hlc=2)
    res = resolve_structures([b, a])
    assert res.winner_ids == ("a",)
    (d,) = res.decisions
    assert d.conflict_type is ConflictType.STRUCTURE_OVERLAP
    assert d.winner_op_id == "a" and d.losers == ("b",) and "reuses structure id" in d.reason
    committed = CommittedState(structures={"tower": (90, 90, 90, 91, 91, 91)})
    res = resolve_structures([a], committed=committed)
    assert res.outcome_of("a") == (False, Rule.COMMITTED, None)
    assert res.decisions[0].committed_ids == ("tower",)


def test_loser_names_the_admitted_winner_not_a_fellow_loser() -> None:
    # a beats b, b would beat c, but b lost, so c is free; d overlaps a and c
    a = place("a", (0, 0, 0), (2, 2, 2), hlc=1)
    b = place("b", (1, 0, 0), (4, 2, 2), hlc=2)
    c = place("c", (3, 0, 0), (6, 2, 2), hlc=3)
    d = place("d", (1.5, 0, 0), (3.5, 2, 2), hlc=4)
    res = resolve_structures([d, c, b, a])
    assert res.winner_ids == ("a", "c")
    assert res.outcome_of("b") == (False, Rule.TIMESTAMP, "a")
    decision = res.decision_of("d")
    assert decision is not None and decision.winners == ("a", "c")
    with pytest.raises(KeyError):
        res.outcome_of("nope")


@given(
    lo=st.tuples(*[st.floats(-1e6, 1e6)] * 3),
    size=st.tuples(*[st.floats(0, 1e3)] * 3),
    hlc=st.integers(0, 2**63 - 1),
    priority=st.integers(-(2**63), 2**63 - 1),
)
def test_a_prepared_placement_is_the_placement_the_constructor_builds(
    lo: tuple[float, float, float],
    size: tuple[float, float, float],
    hlc: int,
    priority: int,
) -> None:
    """`StructurePlacement.prepared` (valid values, no re-check) builds exactly what the
    validating constructor builds, derived fields included."""
    hi = (lo[0] + size[0], lo[1] + size[1], lo[2] + size[2])
    args = {
        "op_id": "00000000-0000-4000-8000-000000000001",
        "server_id": "gs-1",
        "hlc": hlc,
        "priority": priority,
        "structure_id": "wall-1",
        "lo": lo,
        "hi": hi,
    }
    built = StructurePlacement(**args)  # type: ignore[arg-type]
    prepared = StructurePlacement.prepared(**args)  # type: ignore[arg-type]
    assert prepared == built
    for name in ("sort_key", "bbox", "packed_bbox", "lo", "hi"):
        assert getattr(prepared, name) == getattr(built, name)

"""Terrain: MERGE loses nothing and is commutative and associative; other strategies make
overlapping edits exclusive."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from conflicts import (
    Rule,
    Strategy,
    TerrainEdit,
    detect_terrain_overlaps,
    merge_terrain,
    resolve_terrain,
)
from conflicts._overlap import Balls, pairwise_join, self_join
from tests.conflicts import gen

PROBES = np.array(
    [[x / 2, y / 2, z / 2] for x in range(-4, 30, 4) for y in range(-4, 30, 6) for z in (0, 11)]
)


def edit(op: str, center: Any, radius: float, delta: float, hlc: int = 0) -> TerrainEdit:
    return TerrainEdit(
        op_id=op, server_id="gs-1", hlc=hlc, center=center, radius=radius, delta=delta
    )


def reference_field(edits: list[TerrainEdit], points: np.ndarray) -> np.ndarray:
    out = []
    for p in points:
        out.append(
            math.fsum(
                e.delta
                for e in edits
                if sum((p[k] - e.center[k]) ** 2 for k in range(3)) <= e.radius**2
            )
        )
    return np.array(out)


@given(gen.terrains, st.sampled_from([1, 2, 3, 5]))
def test_rtree_detector_equals_brute_force(edits: list[TerrainEdit], k: int) -> None:
    expected = gen.brute_pairs(edits, gen.balls_overlap)
    assert detect_terrain_overlaps(edits) == expected
    assert detect_terrain_overlaps(edits, method="pairwise") == expected
    geom = Balls(
        np.array([e.center for e in edits]).reshape(-1, 3),
        np.array([e.radius for e in edits]).reshape(-1),
    )
    first, second = self_join(geom, k)  # the R-tree join itself at small run sizes
    got = sorted(
        tuple(sorted((edits[i].op_id, edits[j].op_id)))
        for i, j in zip(first.tolist(), second.tolist(), strict=True)
    )
    assert got == expected


@gen.heavy
@given(gen.terrains)
def test_merge_wins_every_edit_and_the_field_is_the_sum(edits: list[TerrainEdit]) -> None:
    res = resolve_terrain(edits)
    assert set(res.winners) == set(edits) and res.losers == ()
    assert res.terrain is not None or not edits
    if res.terrain is not None:
        got = res.terrain.delta_field(PROBES)
        np.testing.assert_allclose(got, reference_field(edits, PROBES), rtol=1e-12, atol=1e-12)
        # groups partition the edits, and no two groups overlap
        grouped = [e for g in res.terrain.groups for e in g.edits]
        assert sorted(grouped, key=lambda e: e.op_id) == sorted(edits, key=lambda e: e.op_id)
        for g1, g2 in itertools.combinations(res.terrain.groups, 2):
            assert not any(gen.balls_overlap(a, b) for a in g1.edits for b in g2.edits)
        merges = [d for d in res.decisions if d.rule is Rule.MERGE]
        assert len(merges) == sum(1 for g in res.terrain.groups if len(g.edits) > 1)


@given(gen.terrains, st.data())
def test_merge_is_commutative_and_associative(
    edits: list[TerrainEdit], data: st.DataObject
) -> None:
    cut1 = data.draw(st.integers(0, len(edits)))
    cut2 = data.draw(st.integers(cut1, len(edits)))
    a, b, c = (merge_terrain(part) for part in (edits[:cut1], edits[cut1:cut2], edits[cut2:]))
    assert a.combine(b) == b.combine(a)
    left, right = a.combine(b).combine(c), a.combine(b.combine(c))
    assert left == right == merge_terrain(edits)
    # bit-identical fields whatever the grouping (sums run in canonical order)
    assert np.array_equal(left.delta_field(PROBES), right.delta_field(PROBES))
    assert np.array_equal(left.delta_field(PROBES), c.combine(a).combine(b).delta_field(PROBES))


@given(st.data(), gen.terrains, st.sampled_from(list(Strategy)))
def test_order_independence_and_idempotence(
    data: st.DataObject, edits: list[TerrainEdit], strategy: Strategy
) -> None:
    res = resolve_terrain(edits, strategy=strategy)
    assert resolve_terrain(data.draw(gen.arrivals(edits)), strategy=strategy) == res
    again = resolve_terrain(res.winners, strategy=strategy)
    assert again.winners == res.winners and again.losers == ()
    assert again.decisions == tuple(d for d in res.decisions if d.rule is Rule.MERGE)


@given(gen.terrains, st.sampled_from([s for s in Strategy if s is not Strategy.MERGE]))
def test_exclusive_strategies_admit_no_overlapping_pair(
    edits: list[TerrainEdit], strategy: Strategy
) -> None:
    res = resolve_terrain(edits, strategy=strategy)
    for a, b in itertools.combinations(res.winners, 2):
        assert not gen.balls_overlap(a, b)
    expected = gen.greedy(edits, gen.tuple_key(strategy.value), gen.balls_overlap)
    assert set(res.winners) == set(expected)
    if res.winners:
        assert res.terrain is not None and set(res.terrain.edits) == set(res.winners)


def test_overlapping_edits_merge_none_lost() -> None:
    a = edit("a", (0, 0, 0), 2.0, 1.5, hlc=2)
    b = edit("b", (1, 0, 0), 2.0, -0.5, hlc=1)
    far = edit("c", (100, 0, 0), 1.0, 4.0)
    res = resolve_terrain([a, far, b])
    assert res.winner_ids == ("c", "b", "a")  # canonical order: hlc, server, op id
    assert res.terrain is not None
    assert res.terrain.delta_at((0.5, 0, 0)) == 1.0
    assert res.terrain.delta_at((-1.5, 0, 0)) == 1.5
    assert res.terrain.delta_at((100, 0, 0)) == 4.0
    assert res.terrain.delta_at((50, 0, 0)) == 0.0
    (d,) = res.decisions
    assert d.rule is Rule.MERGE and set(d.winners) == {"a", "b"} and d.losers == ()
    assert d.winner_op_id is None
    assert res.outcome_of("a") == (True, Rule.MERGE, "a")


def test_touching_balls_overlap_under_lww() -> None:
    a = edit("a", (0, 0, 0), 1.0, 1.0, hlc=1)
    b = edit("b", (2, 0, 0), 1.0, 1.0, hlc=2)  # touch at (1, 0, 0)
    res = resolve_terrain([a, b], strategy="lww")
    assert res.winner_ids == ("b",)
    assert res.outcome_of("a") == (False, Rule.LWW, "b")


def test_balls_far_from_the_origin_keep_their_touching_pairs() -> None:
    # rounding of centre +- radius must never lose a pair the exact test accepts
    rng = np.random.default_rng(5)
    centres = 1e6 + rng.uniform(0, 50, (400, 3))
    radii = rng.uniform(0, 3, 400)
    # make some pairs touch exactly along x
    centres[1::2] = centres[::2] + np.array([1.0, 0, 0]) * (radii[::2] + radii[1::2])[:, None]
    geom = Balls(centres, radii)
    assert self_join(geom, 4)[0].tolist() == pairwise_join(geom)[0].tolist()
    assert self_join(geom, 4)[1].tolist() == pairwise_join(geom)[1].tolist()

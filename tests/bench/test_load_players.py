"""The simulated players: deterministic, clustered, and some cross region borders."""

from __future__ import annotations

import numpy as np

from bench.load._players import (
    MIXES,
    PlayerModel,
    WorldLayout,
    boxes_overlap,
    build_box,
    sample_actions,
)


def test_same_seed_same_world() -> None:
    layout = WorldLayout.for_servers(4)
    a = PlayerModel(1000, layout, seed=3)
    b = PlayerModel(1000, layout, seed=3)
    assert np.array_equal(a.positions(12.5), b.positions(12.5))
    assert len(layout.keys) >= 16


def test_wanderers_stay_home_and_crossers_cross() -> None:
    layout = WorldLayout.for_servers(4)
    m = PlayerModel(2000, layout, seed=1, crossers=0.05)
    cells = np.array([layout.cell_of(m.positions(t)) for t in np.arange(0, 60, 0.5)])
    changed = (cells != cells[0]).any(axis=0)
    assert not changed[~m.crosser].any()
    assert changed[m.crosser].all()
    assert cells.min() >= 0 and cells.max() < layout.cols * layout.rows


def test_actions_are_drawn_among_local_players() -> None:
    rng = np.random.default_rng(1)
    local = np.arange(100, 200, dtype=np.int64)
    acts = sample_actions(rng, local, MIXES["builders"], 1.0)
    assert acts.build.size > 0
    assert np.isin(acts.build, local).all()
    none = sample_actions(rng, np.empty(0, np.int64), MIXES["default"], 1.0)
    assert none.build.size == none.chat.size == 0


def test_builds_snap_to_a_grid_so_neighbours_overlap() -> None:
    lo1, hi1 = build_box(np.array([101.0, 201.0, 10.0]))
    lo2, hi2 = build_box(np.array([103.0, 204.0, 10.0]))
    assert (lo1, hi1) == (lo2, hi2) and boxes_overlap(lo1, hi1, lo2, hi2)
    _, hi3 = build_box(np.array([1999.0, 10.0, 10.0]))
    assert hi3[0] < 2000.0  # kept inside its region


def test_candidates_cover_every_player_in_a_held_cell() -> None:
    layout = WorldLayout.for_servers(4)
    m = PlayerModel(3000, layout, seed=2, crossers=0.05)
    rng = np.random.default_rng(0)
    for t in (0.0, 3.3, 17.0, 41.9):
        held = rng.random(layout.cols * layout.rows) < 0.3
        cand = m.candidates(held)
        inside = np.flatnonzero(held[layout.cell_of(m.positions(t))])
        assert np.isin(inside, cand).all()
        assert np.array_equal(m.positions(t, cand), m.positions(t)[cand])

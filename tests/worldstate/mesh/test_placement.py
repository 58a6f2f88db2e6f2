"""The coordinator's pure placement and rebalance plans, without a mesh."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from worldstate.mesh._placement import (
    LeaseView,
    Placement,
    RebalanceMove,
    plan_placements,
    plan_rebalance,
    region_weight,
)

NOW = 1000.0


def place(**kw: object) -> list[Placement]:
    args: dict[str, object] = {
        "regions": [1, 2, 3],
        "leases": {},
        "eligible": ["a", "b"],
        "loads": {"a": 0.0, "b": 0.0},
        "desired": {},
        "busy": [],
        "in_flight": [],
        "now": NOW,
        "grace": 10.0,
    }
    args.update(kw)
    return plan_placements(**args)  # type: ignore[arg-type]


def test_orphans_spread_over_the_idlest_lowest_id_first() -> None:
    assert place() == [Placement(1, "a"), Placement(2, "b"), Placement(3, "a")]


def test_no_eligible_server_no_plan() -> None:
    assert place(eligible=[]) == []


def test_live_leases_and_busy_regions_stay() -> None:
    got = place(leases={1: LeaseView("b", NOW + 5)}, busy=[2])
    assert got == [Placement(3, "a")]


def test_desired_owner_gets_its_region_back_when_eligible() -> None:
    assert place(regions=[7], desired={7: "b"}, loads={"a": 0, "b": 9}) == [Placement(7, "b")]
    assert place(regions=[7], desired={7: "gone"}) == [Placement(7, "a")]


def test_a_lapsed_lease_of_a_live_owner_gets_a_grace_then_goes_back_to_it() -> None:
    lapsed = {5: LeaseView("b", NOW - 3)}
    assert place(regions=[5], leases=lapsed, loads={"a": 0, "b": 50}) == []
    late = {5: LeaseView("b", NOW - 30)}
    assert place(regions=[5], leases=late, loads={"a": 0, "b": 50}) == [Placement(5, "b")]


def test_a_released_lease_is_placed_at_once() -> None:
    released = {5: LeaseView("b", 0.0)}
    assert place(regions=[5], leases=released, loads={"a": 0, "b": 50}) == [Placement(5, "a")]


def test_in_flight_placements_count_as_load() -> None:
    assert place(regions=[1], in_flight=["a"]) == [Placement(1, "b")]


def test_region_weight() -> None:
    assert region_weight(None, None) == 1.0
    assert region_weight(1000, 0) == 2.0
    assert region_weight(0, 50.0) == 2.0


def rebalance(held: dict[str, dict[int, float]], **kw: object) -> list[RebalanceMove]:
    args: dict[str, object] = {
        "held": held,
        "moved_at": {},
        "now": NOW,
        "hysteresis": 0.25,
        "cooldown": 60.0,
        "max_moves": 8,
    }
    args.update(kw)
    return plan_rebalance(**args)  # type: ignore[arg-type]


def test_a_new_server_gets_half_of_the_regions() -> None:
    moves = rebalance({"a": {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}, "b": {}})
    assert [(m.source, m.target) for m in moves] == [("a", "b"), ("a", "b")]
    assert sorted(m.morton for m in moves) == [1, 2]


def test_balanced_enough_means_no_move() -> None:
    assert rebalance({"a": {1: 1.0, 2: 1.0}, "b": {3: 1.0}}) == []


def test_cooldown_keeps_a_recently_moved_region() -> None:
    moves = rebalance({"a": {1: 1.0, 2: 1.0, 3: 1.0}, "b": {}}, moved_at={1: NOW - 5, 2: NOW - 5})
    assert [m.morton for m in moves] == [3]


def test_one_server_no_move_and_max_moves_caps() -> None:
    assert rebalance({"a": {1: 1.0, 2: 1.0}}) == []
    held = {"a": {i: 1.0 for i in range(20)}, "b": {}}
    assert len(rebalance(held, max_moves=3)) == 3


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["a", "b", "c", "d"]),
        st.dictionaries(st.integers(0, 50), st.floats(1.0, 5.0), max_size=12),
        min_size=2,
    )
)
def test_rebalance_never_makes_the_spread_worse_and_is_deterministic(
    held: dict[str, dict[int, float]],
) -> None:
    # a region is held by one server only
    seen: set[int] = set()
    clean = {}
    for s in sorted(held):
        clean[s] = {m: w for m, w in held[s].items() if m not in seen}
        seen |= set(clean[s])
    moves = rebalance(clean)
    assert moves == rebalance(dict(reversed(list(clean.items()))))
    load = {s: sum(r.values()) for s, r in clean.items()}
    before = max(load.values()) - min(load.values())
    for m in moves:
        load[m.source] -= m.weight
        load[m.target] += m.weight
    assert max(load.values()) - min(load.values()) <= before + 1e-9

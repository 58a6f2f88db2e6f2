"""The load harness's invariant checkers catch what they exist to catch (pure, no I/O)."""

from __future__ import annotations

import numpy as np

from bench.load._invariants import (
    check_acknowledged,
    check_causal,
    check_causal_complete,
    check_claims,
    check_conservation,
    check_convergence,
    check_single_owner,
)


def test_conservation_holds_and_catches_a_leak() -> None:
    assert check_conservation({"gold": 100}, {"gold": 100})["ok"]
    bad = check_conservation({"gold": 100}, {"gold": 97})
    assert not bad["ok"] and bad["diff"] == {"gold": -3}


def test_a_lost_acknowledged_op_is_caught() -> None:
    assert check_acknowledged(["a", "b"], ["a", "b", "c"])["ok"]
    bad = check_acknowledged(["a", "b", "lost"], ["a", "b"])
    assert not bad["ok"] and bad["missing"] == 1 and bad["missing_examples"] == ["lost"]


def test_claims_may_take_more_than_acknowledged_but_never_less() -> None:
    cap = {"ore": 10.0}
    assert check_claims({"ore": 3.0}, cap, {"ore": 7.0})["ok"]
    assert check_claims({"ore": 3.0}, cap, {"ore": 6.0})["ok"]  # a claim whose ack was lost
    assert not check_claims({"ore": 3.0}, cap, {"ore": 8.0})["ok"]  # an acked claim undone
    assert not check_claims({}, cap, {"ore": -1.0})["ok"]
    assert not check_claims({"gone": 1.0}, cap, {"ore": 10.0})["ok"]


def test_a_hand_off_is_one_owner_at_a_time() -> None:
    samples = [
        (1.0, "gs-1", {7: 1}),
        (1.1, "gs-1", {7: 1}),
        (1.2, "gs-2", {}),
        (1.3, "gs-2", {7: 2}),
        (1.4, "gs-1", {}),
    ]
    v = check_single_owner(samples)
    assert v["ok"], v
    assert v["ownership_spans"] == 2


def test_a_double_owner_is_caught() -> None:
    overlap = [
        (1.0, "gs-1", {7: 1}),
        (1.1, "gs-2", {7: 2}),
        (1.2, "gs-1", {7: 1}),  # gs-1 still believes it holds 7 after gs-2 took it
    ]
    v = check_single_owner(overlap)
    assert not v["ok"] and v["violations"] == 1
    same_epoch = [(1.0, "gs-1", {7: 3}), (5.0, "gs-2", {7: 3})]
    v = check_single_owner(same_epoch)
    assert not v["ok"] and "epoch 3" in v["examples"][0]["why"]


def test_causal_order_passes_in_order_and_catches_an_inversion() -> None:
    # b:1 depends on a:1; the receiver c gets a:1 first: fine
    ok = {"c": [("a", 1, {"a": 1}), ("b", 1, {"a": 1, "b": 1})]}
    assert check_causal(ok)["ok"]
    inverted = {"c": [("b", 1, {"a": 1, "b": 1}), ("a", 1, {"a": 1})]}
    v = check_causal(inverted)
    assert not v["ok"] and v["inversions"] == 1


def test_causal_gaps_duplicates_and_floors() -> None:
    gap = {"c": [("a", 2, {"a": 2})]}
    assert check_causal(gap)["gaps"] == 1
    # a receiver that started after a:1..5 were delivered (floor) goes on from a:6
    assert check_causal({"c": [("a", 6, {"a": 6})]}, {"c": {"a": 5}})["ok"]
    dup = {"c": [("a", 1, {"a": 1}), ("a", 1, {"a": 1})]}
    assert check_causal(dup)["duplicates"] == 1
    # a dependency on the receiver's own events is always met (it wrote them)
    own = {"gs-2.1": [("a", 1, {"a": 1, "gs-2": 9})]}
    assert check_causal(own, origin_of={"gs-2.1": "gs-2"})["ok"]


def test_a_lost_causal_event_is_caught() -> None:
    deliveries = {"a": [], "b": [("a", 1, {"a": 1})]}
    v = check_causal(
        deliveries,
        accepted={"a": {"e1", "e2"}},
        delivered_ids={"a": set(), "b": {"e1"}},
        full_receivers={"a", "b"},
    )
    assert not v["ok"] and v["lost"] == 1


def test_convergence() -> None:
    ids = np.array([1, 2, 3])
    pos = np.arange(9, dtype=float).reshape(3, 3)
    same = {"a": (ids, pos), "b": (ids[::-1].copy(), pos[::-1].copy())}
    assert check_convergence(same)["ok"]
    moved = pos.copy()
    moved[1, 0] += 1
    v = check_convergence({"a": (ids, pos), "b": (ids, moved)})
    assert not v["ok"] and v["mismatched"] == 1
    v = check_convergence({"a": (ids, pos), "b": (ids[:2], pos[:2])})
    assert not v["ok"] and v["missing"] == 1


def test_a_floor_mid_stream_covers_what_was_not_recorded() -> None:
    # the stream was re-opened after a:1..3 were delivered unseen; a:4 follows
    events = [("a", 1, {"a": 1}), ("", -1, {"a": 3}), ("a", 4, {"a": 4})]
    assert check_causal({"c": events})["ok"]
    assert check_causal({"c": [("a", 1, {"a": 1}), ("a", 4, {"a": 4})]})["gaps"] == 1


def test_completeness_by_delivered_clocks() -> None:
    clocks = {"a": {"a": 5, "b": 2}, "b": {"a": 5, "b": 2}, "c.1": {"a": 4, "b": 2, "c": 1}}
    origin_of = {"c.1": "c"}
    v = check_causal_complete(clocks, {"a", "b"}, origin_of)
    assert not v["ok"] and v["lost"] == 2 and "c:1" in v["examples"][0]
    assert check_causal_complete(clocks, {"a"}, origin_of)["lost"] == 1
    clocks["a"]["c"] = 1
    clocks["b"]["c"] = 1
    assert check_causal_complete(clocks, {"a", "b"}, origin_of)["ok"]

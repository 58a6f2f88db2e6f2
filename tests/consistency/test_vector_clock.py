"""Vector clocks: lattice laws of merge, the happens-before order, validation."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consistency import ConsistencyInputError, Ordering, VectorClock

SERVERS = ["a", "b", "c", "d"]

clocks = st.dictionaries(st.sampled_from(SERVERS), st.integers(0, 4), max_size=4).map(VectorClock)


def pointwise_le(x: VectorClock, y: VectorClock) -> bool:
    return all(x[s] <= y[s] for s in SERVERS)


@given(clocks, clocks)
def test_merge_commutative(a: VectorClock, b: VectorClock) -> None:
    assert a.merge(b) == b.merge(a)


@given(clocks, clocks, clocks)
def test_merge_associative(a: VectorClock, b: VectorClock, c: VectorClock) -> None:
    assert a.merge(b).merge(c) == a.merge(b.merge(c))


@given(clocks)
def test_merge_idempotent(a: VectorClock) -> None:
    assert a.merge(a) == a


@given(clocks, clocks)
def test_merge_is_least_upper_bound(a: VectorClock, b: VectorClock) -> None:
    m = a.merge(b)
    assert a <= m
    assert b <= m
    for s in SERVERS:
        assert m[s] == max(a[s], b[s])


@given(clocks, clocks)
def test_compare_matches_pointwise_order(a: VectorClock, b: VectorClock) -> None:
    le, ge = pointwise_le(a, b), pointwise_le(b, a)
    expected = {
        (True, True): Ordering.EQUAL,
        (True, False): Ordering.BEFORE,
        (False, True): Ordering.AFTER,
        (False, False): Ordering.CONCURRENT,
    }[(le, ge)]
    assert a.compare(b) is expected


@given(clocks, clocks)
def test_compare_consistent_with_happens_before(a: VectorClock, b: VectorClock) -> None:
    order = a.compare(b)
    assert a.happens_before(b) == (order is Ordering.BEFORE) == (a < b)
    assert b.happens_before(a) == (order is Ordering.AFTER) == (a > b)
    assert a.concurrent(b) == (order is Ordering.CONCURRENT)
    assert (order is Ordering.EQUAL) == (a == b)
    assert (a <= b) == (order in (Ordering.BEFORE, Ordering.EQUAL))
    assert (a >= b) == (order in (Ordering.AFTER, Ordering.EQUAL))
    flipped = {
        Ordering.BEFORE: Ordering.AFTER,
        Ordering.AFTER: Ordering.BEFORE,
        Ordering.EQUAL: Ordering.EQUAL,
        Ordering.CONCURRENT: Ordering.CONCURRENT,
    }
    assert b.compare(a) is flipped[order]


@given(clocks, clocks)
def test_antisymmetry(a: VectorClock, b: VectorClock) -> None:
    if a <= b and b <= a:
        assert a == b
        assert hash(a) == hash(b)
    assert not (a.happens_before(b) and b.happens_before(a))


@given(clocks, clocks, clocks)
def test_transitivity(a: VectorClock, b: VectorClock, c: VectorClock) -> None:
    if a <= b and b <= c:
        assert a <= c


@given(clocks, st.sampled_from(SERVERS))
def test_increment_happens_after(a: VectorClock, server: str) -> None:
    b = a.increment(server)
    assert a.happens_before(b)
    assert b[server] == a[server] + 1
    assert a.compare(b) is Ordering.BEFORE


def test_zero_entries_are_omitted_and_equal() -> None:
    assert VectorClock({"a": 0, "b": 2}) == VectorClock({"b": 2})
    assert VectorClock({"a": 0}) == VectorClock()
    assert len(VectorClock({"a": 0, "b": 2})) == 1
    assert "a" not in VectorClock({"a": 0})
    assert VectorClock()["zzz"] == 0
    assert VectorClock({"b": 1, "a": 2}).to_dict() == {"a": 2, "b": 1}
    assert list(VectorClock({"b": 1, "a": 2})) == ["a", "b"]
    assert VectorClock({"b": 1}).with_counter("b", 0) == VectorClock()


def test_immutable_operations_return_new_clocks() -> None:
    a = VectorClock({"a": 1})
    a.increment("a")
    a.merge(VectorClock({"b": 5}))
    a.with_counter("c", 3)
    assert a == VectorClock({"a": 1})


@given(clocks)
def test_dict_and_pickle_round_trip(a: VectorClock) -> None:
    assert VectorClock.from_dict(a.to_dict()) == a
    assert pickle.loads(pickle.dumps(a)) == a


def test_hashable_as_dict_key() -> None:
    d = {VectorClock({"a": 1, "b": 0}): "x"}
    assert d[VectorClock({"a": 1})] == "x"


@pytest.mark.parametrize(
    "bad",
    [
        [("a", 1)],
        "a=1",
        None,
        {"a": -1},
        {"a": 1.0},
        {"a": True},
        {"a": "1"},
        {"": 1},
        {1: 1},
        {"a\n": 1},
        {"x" * 300: 1},
        {"a": 2**63},
        {f"s{i}": 1 for i in range(5000)},
    ],
)
def test_from_dict_rejects_bad_input(bad: object) -> None:
    with pytest.raises(ConsistencyInputError):
        VectorClock.from_dict(bad)


def test_comparisons_with_other_types() -> None:
    a = VectorClock({"a": 1})
    assert a != {"a": 1}
    with pytest.raises(TypeError):
        _ = a <= {"a": 1}
    with pytest.raises(ConsistencyInputError):
        a.merge({"a": 1})  # type: ignore[arg-type]
    with pytest.raises(ConsistencyInputError):
        a.compare("a")  # type: ignore[arg-type]


def test_total_and_repr() -> None:
    a = VectorClock({"a": 2, "b": 3})
    assert a.total() == 5
    assert repr(a) == "VectorClock({'a': 2, 'b': 3})"


@given(clocks, st.sampled_from(SERVERS), st.integers(1, 9))
def test_trusted_with_is_with_counter_for_checked_values(
    vc: VectorClock, server: str, counter: int
) -> None:
    before = vc.to_dict()
    got = vc.trusted_with(server, counter)
    want = vc.with_counter(server, counter)
    assert got == want and got.to_dict() == want.to_dict() and hash(got) == hash(want)
    assert got[server] == counter
    assert vc.to_dict() == before  # a copy: the original is unchanged

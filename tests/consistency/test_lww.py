"""Last-writer-wins: the scalar rule, the vectorised entity table, snapshots."""

from __future__ import annotations

import random
import struct

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consistency import ConsistencyInputError, EntityTable, lww_wins, lww_wins_many

SERVERS = ["gs-1", "gs-10", "gs-2", "a", "zz"]

State = dict[int, tuple[int, str, tuple[float, float, float]]]


def test_scalar_rule() -> None:
    assert lww_wins(2, "b", 1, "a")
    assert not lww_wins(1, "a", 2, "b")
    assert lww_wins(5, "a", 5, "b")  # equal HLC: lowest server id wins
    assert not lww_wins(5, "b", 5, "a")
    assert not lww_wins(5, "a", 5, "a")  # a write never beats itself
    assert lww_wins(5, "gs-10", 5, "gs-2")  # string order, not numeric


@given(st.integers(0, 5), st.sampled_from(SERVERS), st.integers(0, 5), st.sampled_from(SERVERS))
def test_scalar_rule_is_a_strict_total_order(h1: int, s1: str, h2: int, s2: str) -> None:
    if (h1, s1) == (h2, s2):
        assert not lww_wins(h1, s1, h2, s2)
    else:
        assert lww_wins(h1, s1, h2, s2) != lww_wins(h2, s2, h1, s1)


def test_lww_wins_many_matches_scalar() -> None:
    rng = np.random.default_rng(0)
    ah, bh = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    ar, br = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    got = lww_wins_many(ah, ar, bh, br)
    names = ["a", "b", "c"]
    for i in range(200):
        assert got[i] == lww_wins(int(ah[i]), names[ar[i]], int(bh[i]), names[br[i]])


def test_equal_hlc_lowest_server_wins_in_table() -> None:
    t = EntityTable()
    ids = np.array([1, 2, 3])
    t.apply_batch(ids, np.zeros((3, 3)), 100, "gs-5")
    assert t.apply_batch(ids, np.ones((3, 3)), 100, "gs-7") == 0  # higher id loses the tie
    assert t.apply_batch(ids, np.full((3, 3), 2.0), 100, "gs-3") == 3  # lower id wins it
    assert t.writers_of(ids) == ["gs-3"] * 3
    assert t.apply_batch(ids, np.full((3, 3), 3.0), 100, "gs-3") == 0  # same write: no-op
    assert t.apply_batch(ids, np.full((3, 3), 4.0), 99, "a") == 0  # older loses
    assert t.apply_batch(ids, np.full((3, 3), 5.0), 101, "zz") == 3  # newer wins
    np.testing.assert_array_equal(t.positions_of(ids), np.full((3, 3), 5.0))
    np.testing.assert_array_equal(t.hlc_of(ids), [101, 101, 101])


def test_duplicates_in_one_batch_last_occurrence_wins() -> None:
    t = EntityTable()
    ids = np.array([7, 3, 7, 7, 3])
    pos = np.arange(15, dtype=float).reshape(5, 3)
    mask = t.apply_batch_mask(ids, pos, 10, "a")
    assert mask.tolist() == [False, False, False, True, True]
    np.testing.assert_array_equal(t.positions_of([3, 7]), pos[[4, 3]])
    # per-row HLCs: highest HLC first, then last occurrence among equals
    mask = t.apply_batch_mask(ids, pos + 100, np.array([20, 11, 20, 12, 11]), "a")
    assert mask.tolist() == [False, False, True, False, True]
    np.testing.assert_array_equal(t.hlc_of([3, 7]), [11, 20])


def test_unknown_ids_read_as_nan_and_minus_one() -> None:
    t = EntityTable()
    t.apply_batch(np.array([5]), np.array([[1.0, 2.0, 3.0]]), 1, "a")
    p = t.positions_of(np.array([5, 6, -1]))
    assert p[0].tolist() == [1.0, 2.0, 3.0]
    assert np.isnan(p[1:]).all()
    assert t.hlc_of(np.array([6, 5])).tolist() == [-1, 1]
    assert t.writers_of(np.array([6, 5])) == [None, "a"]
    assert t.contains(np.array([5, 6])).tolist() == [True, False]
    assert EntityTable().positions_of(np.array([1])).shape == (1, 3)


# -- reference model -----------------------------------------------------------------------


def ref_apply(
    state: State,
    ids: list[int],
    pos: npt.NDArray[np.float64],
    hlc: int | list[int],
    server: str,
) -> list[bool]:
    """Per-entity Python: one winner per id in the batch (highest HLC, then last row), then
    `lww_wins` against the current write."""
    best: dict[int, int] = {}
    stamp = (lambda i: hlc) if isinstance(hlc, int) else (lambda i: hlc[i])
    for i, e in enumerate(ids):
        if e not in best or stamp(i) >= stamp(best[e]):
            best[e] = i
    mask = [False] * len(ids)
    for e, i in best.items():
        cur = state.get(e)
        if cur is None or lww_wins(stamp(i), server, cur[0], cur[1]):
            state[e] = (stamp(i), server, (pos[i, 0], pos[i, 1], pos[i, 2]))
            mask[i] = True
    return mask


def assert_table_matches(table: EntityTable, state: State) -> None:
    keys = sorted(state)
    assert table.ids.tolist() == keys
    assert len(table) == len(keys)
    ids = np.array(keys, dtype=np.int64)
    assert table.hlc_of(ids).tolist() == [state[k][0] for k in keys]
    assert table.writers_of(ids) == [state[k][1] for k in keys]
    np.testing.assert_array_equal(
        table.positions_of(ids), np.array([state[k][2] for k in keys]).reshape(-1, 3)
    )


id_pools = st.sampled_from(
    [
        list(range(0, 40)),  # small dense ids: the direct-lookup path
        [-(2**62), -5, 0, 3, 2**40, 2**62, 2**63 - 1],  # sparse ids: the binary-search path
        [*range(1000, 1030), 2**50],
    ]
)


@given(id_pools, st.integers(0, 2**32 - 1), st.integers(1, 12))
@settings(max_examples=150)
def test_vectorised_equals_scalar(pool: list[int], seed: int, n_batches: int) -> None:
    rng = random.Random(seed)
    table = EntityTable()
    state: State = {}
    for _ in range(n_batches):
        n = rng.randrange(0, 25)
        ids = [rng.choice(pool) for _ in range(n)]
        if rng.random() < 0.3:
            ids = sorted(set(ids))
            n = len(ids)
        pos = np.array([[rng.uniform(-1e4, 1e4) for _ in range(3)] for _ in range(n)])
        pos = pos.reshape(n, 3)
        hlc: int | list[int] = (
            rng.randrange(0, 6) if rng.random() < 0.5 else [rng.randrange(0, 6) for _ in ids]
        )
        server = rng.choice(SERVERS)
        hlc_arg = hlc if isinstance(hlc, int) else np.array(hlc, dtype=np.int64)
        expected = ref_apply(state, ids, pos, hlc, server)
        got = table.apply_batch_mask(np.array(ids, dtype=np.int64), pos, hlc_arg, server)
        assert got.tolist() == expected
        assert_table_matches(table, state)


Write = tuple[int, int, str, tuple[float, float, float]]

writes_st = st.lists(
    st.tuples(
        st.integers(0, 12),
        st.integers(0, 4),
        st.sampled_from(SERVERS),
        st.tuples(*[st.floats(-100, 100, allow_nan=False)] * 3),
    ),
    max_size=60,
    unique_by=lambda w: (w[0], w[1], w[2]),  # one write per (entity, hlc, server)
)


def apply_writes(writes: list[Write], rng: random.Random) -> EntityTable:
    """Apply writes in the given order, grouped into random same-(hlc, server) batches."""
    table = EntityTable()
    i = 0
    while i < len(writes):
        _, h, s, _ = writes[i]
        j = i + 1
        while j < len(writes) and writes[j][1:3] == (h, s) and rng.random() < 0.7:
            j += 1
        group = writes[i:j]
        ids = np.array([w[0] for w in group], dtype=np.int64)
        pos = np.array([w[3] for w in group], dtype=np.float64).reshape(-1, 3)
        table.apply_batch(ids, pos, h, s)
        i = j
    return table


@given(writes_st, st.integers(0, 2**32 - 1))
def test_merge_order_independent(writes: list[Write], seed: int) -> None:
    rng = random.Random(seed)
    first = apply_writes(writes, rng)
    shuffled = list(writes)
    rng.shuffle(shuffled)
    second = apply_writes(shuffled, rng)
    assert first == second
    # the winner per entity is the maximum by (hlc, lowest server)
    for e in {w[0] for w in writes}:
        mine = [w for w in writes if w[0] == e]
        win = mine[0]
        for w in mine[1:]:
            if lww_wins(w[1], w[2], win[1], win[2]):
                win = w
        assert first.hlc_of([e]).tolist() == [win[1]]
        assert first.writers_of([e]) == [win[2]]
        assert first.positions_of([e])[0].tolist() == list(win[3])


@given(writes_st, st.integers(0, 2**32 - 1))
def test_table_merge_commutative_and_idempotent(writes: list[Write], seed: int) -> None:
    rng = random.Random(seed)
    # two servers' views of one history: each saw some of the writes
    w1 = [w for w in writes if rng.random() < 0.6]
    w2 = [w for w in writes if rng.random() < 0.6]
    a, b = apply_writes(w1, rng), apply_writes(w2, rng)
    ab, ba = a.copy(), b.copy()
    ab.merge(b)
    ba.merge(a)
    assert ab == ba
    assert ab == apply_writes(sorted(set(w1) | set(w2)), rng)
    assert ab.merge(a) == 0
    assert ab.merge(ab.copy()) == 0


@given(writes_st, st.integers(0, 2**32 - 1))
def test_snapshot_round_trip(writes: list[Write], seed: int) -> None:
    table = apply_writes(writes, random.Random(seed))
    back = EntityTable.restore(table.snapshot())
    assert back == table
    # the restored table keeps working like the original
    ids = np.arange(0, 13, dtype=np.int64)
    pos = np.ones((13, 3))
    assert back.apply_batch(ids, pos, 3, "gs-2") == table.apply_batch(ids, pos, 3, "gs-2")
    assert back == table


def test_snapshot_drops_unused_writers() -> None:
    t = EntityTable()
    t.apply_batch(np.array([1]), np.zeros((1, 3)), 1, "old")
    t.apply_batch(np.array([1]), np.zeros((1, 3)), 2, "new")
    snap = t.snapshot()
    assert b"old" not in snap
    assert EntityTable.restore(snap).writers_of([1]) == ["new"]


def _snapshot() -> bytes:
    t = EntityTable()
    t.apply_batch(np.array([1, 2, 3]), np.arange(9.0).reshape(3, 3), 5, "gs-1")
    return t.snapshot()


def _corrupt(offset_from_end: int, value: bytes) -> bytes:
    snap = bytearray(_snapshot())
    at = len(snap) - offset_from_end
    snap[at : at + len(value)] = value
    return bytes(snap)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "truncated"),
        (b"NOTASNAP" + bytes(12), "magic"),
        (_snapshot()[:-1], "bytes of rows"),
        (_snapshot() + b"\0", "bytes of rows"),
        (_corrupt(24 * 3 + 12 + 24 + 16, struct.pack("<q", 9)), "ascending"),  # ids[1] = 9
        (_corrupt(24 * 3 + 12, struct.pack("<i", 4)), "unknown writer"),  # codes[0] = 4
        (_corrupt(24 * 3 + 12 + 8, struct.pack("<q", -1)), "negative hlc"),  # hlc[2] = -1
        (_corrupt(8, struct.pack("<d", float("nan"))), "non-finite"),
    ],
)
def test_restore_rejects_corrupt_snapshots(data: bytes, match: str) -> None:
    with pytest.raises(ConsistencyInputError, match=match):
        EntityTable.restore(data)


def test_restore_rejects_non_bytes() -> None:
    with pytest.raises(ConsistencyInputError):
        EntityTable.restore("snapshot")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ids", "pos", "hlc", "server"),
    [
        (np.array([1.5]), np.zeros((1, 3)), 1, "a"),
        (np.array([[1]]), np.zeros((1, 3)), 1, "a"),
        (np.array([True]), np.zeros((1, 3)), 1, "a"),
        (np.array([2**64 - 1], dtype=np.uint64), np.zeros((1, 3)), 1, "a"),
        (np.array([1]), np.zeros((1, 2)), 1, "a"),
        (np.array([1]), np.zeros((2, 3)), 1, "a"),
        (np.array([1]), np.array([[np.nan, 0, 0]]), 1, "a"),
        (np.array([1]), np.array([[np.inf, 0, 0]]), 1, "a"),
        (np.array([1]), np.array([["a", "b", "c"]]), 1, "a"),
        (np.array([1]), np.zeros((1, 3)), -1, "a"),
        (np.array([1]), np.zeros((1, 3)), 2**63, "a"),
        (np.array([1]), np.zeros((1, 3)), True, "a"),
        (np.array([1]), np.zeros((1, 3)), np.array([1, 2]), "a"),
        (np.array([1]), np.zeros((1, 3)), np.array([-1]), "a"),
        (np.array([1]), np.zeros((1, 3)), np.array([1.0]), "a"),
        (np.array([1]), np.zeros((1, 3)), 1, ""),
        (np.array([1]), np.zeros((1, 3)), 1, 7),
    ],
)
def test_apply_batch_rejects_bad_input_and_changes_nothing(
    ids: object, pos: object, hlc: object, server: object
) -> None:
    t = EntityTable()
    t.apply_batch(np.array([1]), np.ones((1, 3)), 0, "z")
    before = t.copy()
    with pytest.raises(ConsistencyInputError):
        t.apply_batch(ids, pos, hlc, server)  # type: ignore[arg-type]
    assert t == before


def test_empty_batch_and_repr() -> None:
    t = EntityTable()
    assert t.apply_batch(np.array([], dtype=np.int64), np.zeros((0, 3)), 1, "a") == 0
    assert len(t) == 0
    assert "0 entities" in repr(t)
    assert EntityTable.restore(t.snapshot()) == t
    with pytest.raises(ConsistencyInputError):
        t.merge("table")  # type: ignore[arg-type]


def test_large_batches_match_reference() -> None:
    # 10,000-row batches with repeats, two servers per tick at the same HLC
    rng = np.random.default_rng(7)
    t = EntityTable()
    state: dict[int, tuple[int, str, int]] = {}  # id -> (hlc, writer, row in its batch)
    batches: dict[tuple[int, str], npt.NDArray[np.float64]] = {}
    for tick in range(1, 5):
        for server in ("gs-2", "gs-1"):  # gs-2 first: gs-1 then wins every tie
            ids = rng.integers(0, 20_000, 10_000)
            pos = rng.normal(size=(10_000, 3))
            batches[tick, server] = pos
            t.apply_batch(ids, pos, tick, server)
            for i, e in enumerate(ids.tolist()):
                cur = state.get(e)
                if (
                    cur is None
                    or lww_wins(tick, server, cur[0], cur[1])
                    or cur[:2]
                    == (
                        tick,
                        server,
                    )
                ):
                    state[e] = (tick, server, i)
    keys = sorted(state)
    assert t.ids.tolist() == keys
    assert t.hlc_of(keys).tolist() == [state[k][0] for k in keys]
    assert t.writers_of(keys) == [state[k][1] for k in keys]
    expected = np.array([batches[state[k][0], state[k][1]][state[k][2]] for k in keys])
    np.testing.assert_array_equal(t.positions_of(keys), expected)

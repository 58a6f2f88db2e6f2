"""Hybrid logical clock: packing, monotonicity, receive rule, overflow, drift refusal."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consistency import (
    MAX_TIMESTAMP,
    MAX_WALL_MS,
    ClockDriftError,
    ClockError,
    ConsistencyInputError,
    HybridClock,
    check_timestamp,
    pack,
    unpack,
)


class FakeWall:
    """A wall clock the test sets by hand (seconds)."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


ms_st = st.integers(0, MAX_WALL_MS)
logical_st = st.integers(0, 0xFFFF)


@given(ms_st, logical_st)
def test_pack_unpack_round_trip(ms: int, logical: int) -> None:
    ts = pack(ms, logical)
    assert unpack(ts) == (ms, logical)
    assert 0 <= ts <= MAX_TIMESTAMP
    assert ts < 2**63  # fits a signed 64-bit column


@given(ms_st, logical_st, ms_st, logical_st)
def test_packed_order_is_lexicographic(m1: int, l1: int, m2: int, l2: int) -> None:
    assert (pack(m1, l1) < pack(m2, l2)) == ((m1, l1) < (m2, l2))


@pytest.mark.parametrize(
    ("ms", "logical"),
    [(-1, 0), (MAX_WALL_MS + 1, 0), (0, -1), (0, 0x10000), (True, 0), (1.5, 0), ("1", 0)],
)
def test_pack_rejects(ms: object, logical: object) -> None:
    with pytest.raises(ClockError):
        pack(ms, logical)  # type: ignore[arg-type]


@pytest.mark.parametrize("ts", [-1, MAX_TIMESTAMP + 1, 2**64, 1.0, None, False])
def test_check_timestamp_rejects(ts: object) -> None:
    with pytest.raises(ClockError):
        check_timestamp(ts)
    assert issubclass(ClockError, ConsistencyInputError)


def test_now_follows_wall_clock() -> None:
    wall = FakeWall(1000.0)
    clock = HybridClock(wall)
    assert clock.now() == pack(1_000_000, 0)
    assert clock.now() == pack(1_000_000, 1)
    wall.t = 1000.5
    assert clock.now() == pack(1_000_500, 0)


@given(st.lists(st.floats(0, 2e9, allow_nan=False) | st.just(0.0), min_size=1, max_size=60))
def test_now_is_strictly_monotonic_whatever_the_wall_does(walls: list[float]) -> None:
    wall = FakeWall(walls[0])
    clock = HybridClock(wall)
    prev = -1
    for t in walls:
        wall.t = t
        ts = clock.now()
        assert ts > prev
        assert ts >= int(t * 1000) << 16  # never behind the wall clock
        prev = ts
    assert clock.last == prev


Action = tuple[str, float, int]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["now", "update"]),
            st.floats(1e9, 1e9 + 1000, allow_nan=False),  # wall seconds, may go backwards
            st.integers(-50_000, 50_000),  # remote offset from the wall, ms
        ),
        min_size=1,
        max_size=80,
    ),
    st.integers(0, 0xFFFF),
)
def test_update_exceeds_remote_and_previous(actions: list[Action], remote_logical: int) -> None:
    wall = FakeWall()
    clock = HybridClock(wall, max_drift=60.0)
    prev = 0
    for kind, t, offset in actions:
        wall.t = t
        if kind == "now":
            ts = clock.now()
        else:
            remote = pack(int(t * 1000) + offset, remote_logical)
            ts = clock.update(remote)
            assert ts > remote
        assert ts > prev
        prev = ts


def test_update_follows_kulkarni_cases() -> None:
    wall = FakeWall(10.0)  # 10_000 ms
    clock = HybridClock(wall)
    clock.now()  # (10000, 0)
    # remote ahead in ms: take its ms, logical + 1
    assert clock.update(pack(10_005, 7)) == pack(10_005, 8)
    # same ms as local, remote logical larger: max(logicals) + 1
    assert clock.update(pack(10_005, 20)) == pack(10_005, 21)
    # remote behind: local logical + 1
    assert clock.update(pack(9_000, 99)) == pack(10_005, 22)
    # wall clock overtakes everything: wall ms, logical 0
    wall.t = 11.0
    assert clock.update(pack(10_999, 5)) == pack(11_000, 0)


def test_logical_overflow_carries_into_ms() -> None:
    wall = FakeWall(5.0)  # stuck wall clock
    clock = HybridClock(wall)
    assert clock.update(pack(5_000, 0xFFFD)) == pack(5_000, 0xFFFE)
    assert clock.now() == pack(5_000, 0xFFFF)
    carried = clock.now()
    assert carried == pack(5_001, 0)
    assert unpack(carried) == (5_001, 0)
    # a remote at the top of a millisecond also carries
    assert clock.update(pack(5_001, 0xFFFF)) == pack(5_002, 0)


def test_many_events_in_one_millisecond_stay_monotonic() -> None:
    clock = HybridClock(FakeWall(1.0))
    prev = 0
    for _ in range(70_000):  # more than 2**16 events in one wall millisecond
        ts = clock.now()
        assert ts > prev
        prev = ts
    assert unpack(prev)[0] == 1_001


def test_drift_refused_and_clock_unchanged() -> None:
    wall = FakeWall(100.0)
    clock = HybridClock(wall, max_drift=5.0)
    before = clock.now()
    forged = pack(100_000 + 5_001, 0)
    with pytest.raises(ClockDriftError) as info:
        clock.update(forged)
    err = info.value
    assert (err.remote_ts, err.wall_ms, err.max_drift_ms) == (forged, 100_000, 5_000)
    assert "ahead" in str(err)
    assert clock.last == before
    assert clock.now() == before + 1
    # exactly at the limit is accepted
    assert clock.update(pack(105_000, 0)) == pack(105_000, 1)


def test_drift_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(ClockDriftError(pack(9, 0), 1, 2)))
    assert isinstance(err, ClockDriftError)
    assert (err.remote_ts, err.wall_ms, err.max_drift_ms) == (pack(9, 0), 1, 2)


@pytest.mark.parametrize("remote", [-1, MAX_TIMESTAMP + 1, 3.0, "5", True])
def test_update_rejects_malformed(remote: object) -> None:
    clock = HybridClock(FakeWall())
    with pytest.raises(ClockError):
        clock.update(remote)  # type: ignore[arg-type]
    assert clock.last == 0


@pytest.mark.parametrize("reading", [float("nan"), float("inf"), -1.0, 1e12])
def test_bad_wall_clock_readings(reading: float) -> None:
    clock = HybridClock(FakeWall(reading))
    with pytest.raises(ClockError):
        clock.now()


@pytest.mark.parametrize("drift", [0, -1.0, float("inf"), float("nan"), True, "5"])
def test_bad_max_drift(drift: object) -> None:
    with pytest.raises(ClockError):
        HybridClock(FakeWall(), drift)  # type: ignore[arg-type]


def test_default_wall_is_real_time() -> None:
    import time

    clock = HybridClock()
    ts = clock.now()
    assert abs(unpack(ts)[0] - time.time() * 1000) < 60_000

"""Causal delivery: random causal histories, permuted, duplicated and with omissions."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consistency import (
    CausalBuffer,
    CausalEvent,
    CausalOrderError,
    ConsistencyInputError,
    Gap,
    VectorClock,
)


def simulate(rng: random.Random, n_servers: int, n_steps: int) -> list[CausalEvent]:
    """A causal history made by servers that emit and receive events.

    Independent of CausalBuffer: each simulated server keeps its own delivered counts and only
    receives an event whose dependencies it has delivered, so every event's ``deps`` is its
    origin's true delivered clock at the time it emitted.
    """
    servers = [f"s{i}" for i in range(n_servers)]
    seen: dict[str, dict[str, int]] = {s: {} for s in servers}
    events: list[CausalEvent] = []
    for _ in range(n_steps):
        s = rng.choice(servers)
        mine = seen[s]
        if not events or rng.random() < 0.45:
            seq = mine.get(s, 0) + 1
            events.append(CausalEvent(s, seq, VectorClock(mine), payload=len(events)))
            mine[s] = seq
            continue
        ready = [
            e
            for e in events
            if e.seq == mine.get(e.origin, 0) + 1
            and all(c <= mine.get(k, 0) for k, c in e.deps.items() if k != e.origin)
        ]
        if ready:
            e = rng.choice(ready)
            mine[e.origin] = e.seq
    return events


def offer_checked(
    buf: CausalBuffer, event: CausalEvent, log: list[CausalEvent], now: float | None = None
) -> None:
    """Offer one event and check every delivery against the delivered-so-far clock."""
    before = dict(buf.delivered.items())
    for e in buf.offer(event, now=now):
        assert e.seq == before.get(e.origin, 0) + 1, "per-origin order broken"
        assert all(c <= before.get(k, 0) for k, c in e.deps.items() if k != e.origin), (
            "delivered before its dependencies"
        )
        before[e.origin] = e.seq
        log.append(e)
    assert dict(buf.delivered.items()) == before


def depends_on(e: CausalEvent, o: CausalEvent) -> bool:
    """``o`` happened before ``e`` or is ``e``."""
    return o.clock <= e.clock


histories = st.tuples(st.integers(3, 5), st.integers(5, 120), st.integers(0, 2**32 - 1))


@given(histories, st.integers(0, 2**32 - 1))
@settings(max_examples=150)
def test_permuted_duplicated_history_delivers_everything_in_causal_order(
    history: tuple[int, int, int], seed: int
) -> None:
    n_servers, n_steps, hseed = history
    events = simulate(random.Random(hseed), n_servers, n_steps)
    rng = random.Random(seed)
    stream = events + [rng.choice(events) for _ in range(rng.randrange(len(events) + 1))]
    rng.shuffle(stream)

    buf = CausalBuffer("rx")
    log: list[CausalEvent] = []
    for now, e in enumerate(stream):
        offer_checked(buf, e, log, now=float(now))

    assert len(log) == len(events)
    assert {e.key for e in log} == {e.key for e in events}  # each exactly once
    assert buf.duplicates == len(stream) - len(events)
    assert buf.pending() == 0
    assert buf.missing(now=1e9) == {}
    assert buf.oldest_gap_age(now=1e9) == 0.0
    # a linear extension of happens-before
    position = {e.key: i for i, e in enumerate(log)}
    for a in events:
        for b in events:
            if a.happens_before(b):
                assert position[a.key] < position[b.key]


@given(histories, st.integers(0, 2**32 - 1), st.floats(0.05, 0.5))
@settings(max_examples=150)
def test_omissions_block_dependents_show_up_missing_and_repair(
    history: tuple[int, int, int], seed: int, omit_rate: float
) -> None:
    n_servers, n_steps, hseed = history
    events = simulate(random.Random(hseed), n_servers, n_steps)
    rng = random.Random(seed)
    omitted = [e for e in events if rng.random() < omit_rate]
    omitted_keys = {e.key for e in omitted}
    offered = [e for e in events if e.key not in omitted_keys]
    stream = offered + [rng.choice(offered) for _ in range(len(offered) // 3)] if offered else []
    rng.shuffle(stream)

    buf = CausalBuffer("rx")
    log: list[CausalEvent] = []
    for e in stream:
        offer_checked(buf, e, log, now=10.0)

    delivered = {e.key for e in log}
    assert len(delivered) == len(log)  # no duplicates
    # exactly the events that depend on no omitted event are delivered
    expected = {e.key for e in offered if not any(depends_on(e, o) for o in omitted)}
    assert delivered == expected
    assert buf.pending() == len(offered) - len(delivered)

    gaps = buf.missing(now=12.5)
    for o in omitted:
        known = any(
            (f.origin == o.origin and f.seq > o.seq) or f.deps[o.origin] >= o.seq for f in offered
        )
        if known:
            assert o.origin in gaps and o.seq in gaps[o.origin], f"{o.key} not reported missing"
            assert gaps[o.origin].age == pytest.approx(2.5)
    for f in offered:  # received events are never reported missing
        assert f.origin not in gaps or f.seq not in gaps[f.origin]
    for gap in gaps.values():
        assert gap.count == sum(len(r) for r in gap.holes) > 0
        assert all(gap.seqs.start <= s < gap.seqs.stop for r in gap.holes for s in r)

    # repair: the omitted events arrive late (as from the durable log)
    rng.shuffle(omitted)
    for e in omitted:
        offer_checked(buf, e, log, now=20.0)
    assert {e.key for e in log} == {e.key for e in events}
    assert len(log) == len(events)
    assert buf.pending() == 0
    assert buf.missing(now=21.0) == {}


def test_happy_path_and_explicit_semantics() -> None:
    a, b = CausalBuffer("a"), CausalBuffer("b")
    a1 = a.emit("hello")
    assert (a1.origin, a1.seq, a1.deps) == ("a", 1, VectorClock())
    assert a1.clock == VectorClock({"a": 1})
    assert a.delivered == VectorClock({"a": 1})
    assert b.offer(a1) == [a1]
    b1 = b.emit("reply")
    assert b1.deps == VectorClock({"a": 1})
    assert b1.clock == VectorClock({"a": 1, "b": 1})
    assert a1.happens_before(b1)
    # a third server gets the reply first: it waits for the message it answers
    c = CausalBuffer("c")
    assert c.offer(b1) == []
    assert c.pending() == 1
    assert c.offer(a1) == [a1, b1]
    assert c.pending() == 0
    # echo of own event is a duplicate
    assert a.offer(a1) == []
    assert a.duplicates == 1


def test_duplicate_of_buffered_event_is_dropped() -> None:
    e2 = CausalEvent("x", 2, VectorClock({"x": 1}))
    buf = CausalBuffer("rx")
    assert buf.offer(e2) == []
    assert buf.offer(e2) == []
    assert buf.duplicates == 1
    assert buf.pending() == 1
    assert buf.buffered() == [e2]


def test_gap_ages_take_time_from_the_caller() -> None:
    buf = CausalBuffer("rx")
    buf.offer(CausalEvent("x", 3, VectorClock({"x": 2, "y": 4})), now=100.0)
    gaps = buf.missing(now=103.0)
    assert set(gaps) == {"x", "y"}
    assert gaps["x"].holes == (range(1, 3),)
    assert gaps["y"].holes == (range(1, 5),)
    assert gaps["x"].since == 100.0
    assert gaps["x"].age == 3.0
    assert buf.oldest_gap_age(now=104.0) == 4.0
    # partial repair keeps the gap's age; closing it drops the gap
    buf.offer(CausalEvent("x", 1, VectorClock()), now=105.0)
    assert buf.missing(now=106.0)["x"].age == 6.0
    buf.offer(CausalEvent("x", 2, VectorClock({"x": 1})), now=107.0)
    # x's gap closed (x:3 delivered); a new gap later has a fresh age
    buf.offer(CausalEvent("x", 5, VectorClock({"x": 4})), now=300.0)
    assert buf.missing(now=301.0)["x"].age == 1.0
    assert buf.missing(now=301.0)["x"].holes == (range(4, 5),)
    # a gap opened by an offer without `now` is stamped by the first query that sees it
    buf.offer(CausalEvent("z", 2, VectorClock({"z": 1})))
    assert buf.missing(now=200.0)["z"].age == 0.0
    assert buf.missing(now=250.0)["z"].age == 50.0


def test_holes_between_buffered_events() -> None:
    buf = CausalBuffer("rx")
    for seq in (3, 5, 6, 9):
        buf.offer(CausalEvent("x", seq, VectorClock({"x": seq - 1})))
    gap = buf.missing(now=0.0)["x"]
    assert gap.holes == (range(1, 3), range(4, 5), range(7, 9))
    assert gap.seqs == range(1, 9)
    assert gap.count == 5
    assert 4 in gap
    assert 5 not in gap


def test_blocked_head_without_hole_is_not_a_gap() -> None:
    # x:1 is buffered (waits for y:1, which nobody has seen yet... but deps name it)
    buf = CausalBuffer("rx")
    buf.offer(CausalEvent("x", 1, VectorClock({"y": 1})))
    gaps = buf.missing(now=0.0)
    assert "x" not in gaps
    assert gaps["y"].holes == (range(1, 2),)


def test_overflow_drops_newest_and_reports_it_missing() -> None:
    buf = CausalBuffer("rx", max_pending=2)
    e = [CausalEvent("x", s, VectorClock({"x": s - 1})) for s in range(1, 6)]
    assert buf.offer(e[2]) == []
    assert buf.offer(e[3]) == []
    assert buf.offer(e[4]) == []  # buffer full: dropped, counted, remembered
    assert buf.overflowed == 1
    assert buf.pending() == 2
    gap = buf.missing(now=0.0)["x"]
    assert 5 in gap and 1 in gap and 2 in gap
    # the causally earliest event is always accepted, even when full
    assert buf.offer(e[0]) == [e[0]]
    assert buf.offer(e[1]) == [e[1], e[2], e[3]]
    assert buf.offer(e[4]) == [e[4]]  # repaired
    assert buf.missing(now=1.0) == {}


def test_seed_starts_from_a_known_point() -> None:
    buf = CausalBuffer("rx")
    e2 = CausalEvent("x", 2, VectorClock({"x": 1}))
    e4 = CausalEvent("x", 4, VectorClock({"x": 3}))
    y1 = CausalEvent("y", 1, VectorClock({"x": 3}))
    buf.offer(e2)
    buf.offer(e4)
    buf.offer(y1)
    assert buf.seed(VectorClock({"x": 3})) == [e4, y1]  # e2 is covered by the seed
    assert buf.delivered == VectorClock({"x": 4, "y": 1})
    assert buf.pending() == 0
    assert buf.missing(now=0.0) == {}
    # seeding never moves the clock back
    assert buf.seed(VectorClock({"x": 1})) == []
    assert buf.delivered == VectorClock({"x": 4, "y": 1})
    # a constructor seed behaves the same
    assert CausalBuffer("rx", delivered=VectorClock({"x": 3})).offer(e4) == [e4]


def test_emit_refuses_when_own_events_are_missing() -> None:
    buf = CausalBuffer("me")
    # another server saw our event 1 before we restarted without it
    buf.offer(CausalEvent("other", 1, VectorClock({"me": 1})))
    with pytest.raises(CausalOrderError, match="seed"):
        buf.emit("x")
    buf.seed(VectorClock({"me": 1}))
    e = buf.emit("x")
    assert e.seq == 2
    assert e.deps == VectorClock({"me": 1, "other": 1})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"origin": "x", "seq": 0, "deps": VectorClock()},
        {"origin": "x", "seq": 2, "deps": VectorClock({"x": 2})},
        {"origin": "", "seq": 1, "deps": VectorClock()},
        {"origin": "x", "seq": 1, "deps": {"x": 0}},
        {"origin": "x", "seq": 1.0, "deps": VectorClock()},
        {"origin": "x", "seq": True, "deps": VectorClock()},
    ],
)
def test_event_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConsistencyInputError):
        CausalEvent(**kwargs)  # type: ignore[arg-type]


def test_event_dict_round_trip_and_rejection() -> None:
    e = CausalEvent("x", 2, VectorClock({"x": 1, "y": 3}), payload={"k": [1, 2]})
    back = CausalEvent.from_dict(e.to_dict())
    assert back == e
    assert back.payload == {"k": [1, 2]}
    for bad in [
        [],
        {"origin": "x", "seq": 1},
        {"origin": "x", "seq": 1, "deps": {}, "extra": 1},
        {"origin": "x", "seq": 1, "deps": {"y": -1}},
        {"origin": 5, "seq": 1, "deps": {}},
    ]:
        with pytest.raises(ConsistencyInputError):
            CausalEvent.from_dict(bad)


def test_buffer_argument_validation() -> None:
    with pytest.raises(ConsistencyInputError):
        CausalBuffer("")
    with pytest.raises(ConsistencyInputError):
        CausalBuffer("rx", max_pending=0)
    buf = CausalBuffer("rx")
    with pytest.raises(ConsistencyInputError):
        buf.offer({"origin": "x", "seq": 1, "deps": {}})  # type: ignore[arg-type]
    with pytest.raises(ConsistencyInputError):
        buf.missing(now=float("nan"))
    with pytest.raises(ConsistencyInputError):
        buf.offer(CausalEvent("x", 1, VectorClock()), now=float("inf"))
    with pytest.raises(ConsistencyInputError):
        buf.seed({"x": 1})  # type: ignore[arg-type]


def test_offer_many_and_gap_type() -> None:
    a = CausalBuffer("a")
    events = [a.emit(i) for i in range(5)]
    rx = CausalBuffer("rx")
    assert rx.offer_many(reversed(events)) == events
    assert isinstance(Gap("x", (range(1, 2),), 0.0, 0.0).seqs, range)
    assert "pending=0" in repr(rx)

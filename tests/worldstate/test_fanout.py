"""Fan-out follows interest (issue #13 item 4), on the in-process bus: the pure planner
(table and hypothesis), and worlds that hear the regions they own, their neighbours and
their streams' interests — not a far region nobody of them cares about — re-subscribing on
acquire / release / lease loss and on opening / closing an `updates()` stream, loudly when
the broker refuses or does not answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

import worldstate
from regions import RegionKey
from worldstate import EntityBatch
from worldstate.bus import SignedBus
from worldstate.errors import BusUnavailable, ValidationError
from worldstate.node._interest import InterestPlan, plan_interest
from worldstate.updates import UpdateStream

from .fix_world import open_world

TIMEOUT = 15.0
HOME = RegionKey(0, 0, 0)
NEXT = RegionKey(1, 0, 0)  # HOME's neighbour
FAR = RegionKey(10, 0, 0)  # nobody's neighbour
FAR2 = RegionKey(-10, 3, 0)


def at(key: RegionKey, n: int = 1, seed: int = 0) -> npt.NDArray[np.float64]:
    lo, _ = key.bounds
    return np.asarray(lo) + np.random.default_rng(seed).uniform(10.0, 1990.0, (n, 3))


async def wait_until(pred: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not pred():  # noqa: ASYNC110 (polling state the paths update)
            await asyncio.sleep(0.01)


def knows(w: worldstate.World, ids: list[int]) -> bool:
    return bool(w.eventual.positions.contains(ids).all())


def heard(w: worldstate.World) -> int:
    """Eventual batches that reached the eventual path (own echoes included)."""
    n: int = w.eventual.stats()["messages_received"]
    return n


def inner_bytes(w: worldstate.World) -> int:
    """Payload bytes the transport under the signing layer received for this world."""
    bus = w.bus
    assert isinstance(bus, SignedBus)
    return bus.inner.stats.bytes_received


def eventual_filters(w: worldstate.World) -> set[str]:
    return {f for f in w.interest.filters() if f.startswith("eventual")}


@asynccontextmanager
async def trio(sqlite_url: str, **changes: Any) -> AsyncIterator[list[worldstate.World]]:
    changes.setdefault("bus_url", f"memory://fanout-{abs(hash(sqlite_url))}")
    async with (
        open_world(sqlite_url, "gs-1", **changes) as a,
        open_world(sqlite_url, "gs-2", **changes) as b,
        open_world(sqlite_url, "gs-3", **changes) as c,
    ):
        yield [a, b, c]


# -- the planner (pure) ------------------------------------------------------------------------

N_HOME = frozenset([HOME, *HOME.neighbours()])

PLANS: list[tuple[str, dict[str, Any], bool, frozenset[RegionKey], str]] = [
    ("nothing owned, no stream", {}, False, frozenset(), "interest"),
    ("owned + its 26 neighbours", {"owned": [HOME]}, False, N_HOME, "interest"),
    (
        "neighbours off",
        {"owned": [HOME], "neighbours": False},
        False,
        frozenset([HOME]),
        "interest",
    ),
    ("a watched region", {"interests": [frozenset([FAR])]}, False, frozenset([FAR]), "interest"),
    (
        "owned and watched",
        {"owned": [HOME], "interests": [frozenset([FAR]), frozenset([FAR2])]},
        False,
        N_HOME | {FAR, FAR2},
        "interest",
    ),
    ("a world-wide stream", {"interests": [frozenset([FAR]), None]}, True, frozenset(), "stream"),
    ("world mode", {"owned": [HOME], "mode": "world"}, True, frozenset(), "mode"),
    ("too many regions", {"owned": [HOME], "max_regions": 26}, True, frozenset(), "too-many"),
    ("exactly the limit", {"owned": [HOME], "max_regions": 27}, False, N_HOME, "interest"),
]


@pytest.mark.parametrize(("what", "args", "wide", "regions", "reason"), PLANS, ids=lambda p: p)
def test_plan_table(
    what: str, args: dict[str, Any], wide: bool, regions: frozenset[RegionKey], reason: str
) -> None:
    plan = plan_interest(args.pop("owned", []), args.pop("interests", []), **args)
    assert plan == InterestPlan(wide, regions, reason), what
    eventual = plan.filters("eventual")
    if wide:
        assert eventual == {"eventual/+"} and plan.filters("notice") == {"notice/+"}
    else:
        assert eventual == {f"eventual/{k.morton}" for k in regions}
    assert all(plan.hears(k) for k in regions)


def test_plan_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="fanout mode"):
        plan_interest([], [], mode="everything")
    with pytest.raises(ValidationError, match=r"Config\.fanout"):
        worldstate.Config(fanout="everything")


keys = st.builds(RegionKey, st.integers(-20, 20), st.integers(-20, 20), st.integers(-2, 2)).filter(
    lambda k: True
)
key_sets = st.frozensets(keys, max_size=6)


@given(
    owned=st.lists(keys, max_size=5),
    interests=st.lists(st.one_of(st.none(), key_sets), max_size=4),
    max_regions=st.integers(1, 200),
    seed=st.randoms(use_true_random=False),
)
def test_plan_properties(
    owned: list[RegionKey],
    interests: list[frozenset[RegionKey] | None],
    max_regions: int,
    seed: Any,
) -> None:
    plan = plan_interest(owned, interests, max_regions=max_regions)
    # the order of ownership and streams does not matter
    o2, i2 = list(owned), list(interests)
    seed.shuffle(o2)
    seed.shuffle(i2)
    assert plan_interest(o2, i2, max_regions=max_regions) == plan
    wanted: set[RegionKey] = set()
    for k in owned:
        wanted |= {k, *k.neighbours()}
    for s in interests:
        wanted |= s or set()
    if any(s is None for s in interests) or len(wanted) > max_regions:
        assert plan.world_wide and not plan.regions
    else:
        assert not plan.world_wide and plan.regions == wanted  # exactly: nothing extra
    # the filters of one family never overlap (no message is received twice)
    filters = plan.filters("eventual")
    assert ("eventual/+" in filters) == plan.world_wide
    assert len(filters) == (1 if plan.world_wide else len(plan.regions))


# -- worlds on the in-process bus -------------------------------------------------------------


async def test_far_region_is_not_heard_neighbours_and_watched_are(sqlite_url: str) -> None:
    async with trio(sqlite_url) as (a, b, c):
        await a.acquire_region(HOME)
        everything = b.updates()  # b watches the whole world: the control
        assert await a.wait_subscribed() and await b.wait_subscribed()
        assert f"eventual/{NEXT.morton}" in eventual_filters(a)
        assert f"eventual/{FAR.morton}" not in eventual_filters(a)
        assert eventual_filters(b) == {"eventual/+"}
        before_msgs, before_bytes = heard(a), inner_bytes(a)
        b_bytes = inner_bytes(b)
        # one tick of c: a batch of the far region, one of a's neighbour
        c.move_entities([1], at(FAR))
        c.move_entities([2], at(NEXT))
        assert await c.eventual.tick() == 2
        await wait_until(lambda: knows(a, [2]) and knows(b, [1, 2]))
        assert not a.eventual.positions.contains([1]).any()
        assert heard(a) == before_msgs + 1  # the neighbour's batch only
        near_bytes = inner_bytes(a) - before_bytes
        assert 0 < near_bytes < inner_bytes(b) - b_bytes  # b also got the far one
        regions = {u.region for u in drain(everything) if isinstance(u, EntityBatch)}
        assert regions == {FAR, NEXT}
        # a server that does not watch FAR stays deaf to it for many ticks
        for i in range(5):
            c.move_entities([100 + i], at(FAR, seed=i))
            c.move_entities([200 + i], at(HOME, seed=i))
            await c.eventual.tick()
        await wait_until(lambda: knows(a, [200 + i for i in range(5)]))
        await wait_until(lambda: knows(b, [100 + i for i in range(5)]))
        assert not a.eventual.positions.contains([100 + i for i in range(5)]).any()
        assert heard(a) == before_msgs + 6
        # a stream on FAR makes a hear it; closing it makes a deaf again
        stream = a.updates(FAR)
        assert f"eventual/{FAR.morton}" in eventual_filters(a)  # subscribed at once
        c.move_entities([300], at(FAR))
        await c.eventual.tick()
        got = await anext_batch(stream)
        assert got.region == FAR and got.ids.tolist() == [300] and knows(a, [300])
        stream.close()
        assert await a.wait_subscribed()
        assert f"eventual/{FAR.morton}" not in eventual_filters(a)
        base = heard(a)
        c.move_entities([301], at(FAR))
        c.move_entities([302], at(HOME))
        await c.eventual.tick()
        await wait_until(lambda: knows(a, [302]) and knows(b, [301]))
        assert not a.eventual.positions.contains([301]).any() and heard(a) == base + 1
        everything.close()


def drain(stream: UpdateStream) -> list[Any]:
    out = list(stream._items)
    stream._items.clear()
    return out


async def anext_batch(stream: UpdateStream) -> EntityBatch:
    async with asyncio.timeout(TIMEOUT):
        while True:
            u = await anext(stream)
            if isinstance(u, EntityBatch):
                return u


async def test_resubscribes_on_acquire_release_and_lease_loss(sqlite_url: str) -> None:
    async with trio(sqlite_url) as (a, _, c):
        assert eventual_filters(a) == set()  # owns nothing, watches nothing: hears nothing
        plans = a.interest.stats()["plans"]
        await a.acquire_region(FAR)
        assert a.interest.stats()["plans"] == plans + 1
        assert eventual_filters(a) == {f"eventual/{k.morton}" for k in [FAR, *FAR.neighbours()]}
        assert f"notice/{FAR.morton}" in a.interest.filters()
        c.move_entities([1], at(FAR))
        await c.eventual.tick()
        await wait_until(lambda: knows(a, [1]))
        assert await a.release_region(FAR)
        assert await a.wait_subscribed()
        assert eventual_filters(a) == set()
        c.move_entities([2], at(FAR))
        c.move_entities([3], at(HOME))  # nobody hears HOME either
        await c.eventual.tick()
        b_stream = c.updates(HOME)  # the other way round: c's own stream on HOME
        a.move_entities([4], at(HOME))
        await a.eventual.tick()
        assert (await anext_batch(b_stream)).ids.tolist() == [4]
        assert not a.eventual.positions.contains([2, 3]).any()
        b_stream.close()
        # a lease lost to another owner (the store said so) drops the region too
        await a.acquire_region(HOME)
        assert f"eventual/{NEXT.morton}" in eventual_filters(a)
        a.lost_lease(HOME, "taken over (test)")
        assert await a.wait_subscribed()
        assert eventual_filters(a) == set()
        stats = a.stats()["interest"]
        assert stats["unsubscribed"] >= 2 * 27 and stats["refused"] == {}


async def test_world_wide_stream_and_back_without_a_hole(sqlite_url: str) -> None:
    """Switching between the region filters and the family filter is make-before-break:
    the owned region is heard throughout."""
    async with trio(sqlite_url) as (a, _, c):
        await a.acquire_region(HOME)
        assert await a.wait_subscribed()
        wide = a.updates()
        assert "eventual/+" in eventual_filters(a)
        assert await a.wait_subscribed()
        assert eventual_filters(a) == {"eventual/+"}  # the region filters are gone: no overlap
        c.move_entities([1], at(FAR))
        await c.eventual.tick()
        await wait_until(lambda: knows(a, [1]))
        wide.close()
        assert "eventual/+" in eventual_filters(a)  # kept until the region filters are live
        assert await a.wait_subscribed()
        assert "eventual/+" not in eventual_filters(a)
        assert len(eventual_filters(a)) == 27
        c.move_entities([2], at(HOME))
        await c.eventual.tick()
        await wait_until(lambda: knows(a, [2]))
        assert a.stats()["interest"]["world_wide"] is False


async def test_a_stream_opened_after_a_bus_loss_hears_everything_again(sqlite_url: str) -> None:
    """A transient loss of the bus ends the open streams (they may have missed updates)
    but not the later ones: a world-wide stream reopened while the bus is down keeps the
    server subscribed world-wide and hears a far region once the bus is back. (It used to
    fail at once, forever: the server then heard only its own regions and neighbours, and
    a load run's eventual state did not converge after a partition or a broker restart.)"""
    async with trio(sqlite_url) as (a, _, c):
        wide = a.updates()
        assert await a.wait_subscribed()
        inner = a.bus.inner if isinstance(a.bus, SignedBus) else a.bus
        hub = inner.hub  # type: ignore[attr-defined]
        hub.cut(inner.client_id)
        with pytest.raises(BusUnavailable):
            async with asyncio.timeout(TIMEOUT):
                async for _ in wide:
                    pass
        again = a.updates()  # reopened at once, as a consumer does: the bus is still down
        assert not again.failed
        assert a.stats()["interest"]["world_wide"] is True
        hub.restore(inner.client_id)
        await wait_until(lambda: a.bus.connected)
        assert await a.wait_subscribed()
        assert eventual_filters(a) == {"eventual/+"}
        c.move_entities([7], at(FAR))
        await c.eventual.tick()
        got = await anext_batch(again)
        assert got.region == FAR and got.ids.tolist() == [7] and knows(a, [7])
        again.close()


async def test_world_mode_hears_everything(sqlite_url: str) -> None:
    async with trio(sqlite_url, fanout="world") as (a, _, c):
        assert eventual_filters(a) == {"eventual/+"}
        c.move_entities([1], at(FAR))
        await c.eventual.tick()
        await wait_until(lambda: knows(a, [1]))


async def test_interest_fanout_converges_for_what_each_server_cares_about(
    sqlite_url: str,
) -> None:
    """Three servers owning one region each of a row (HOME, NEXT, and NEXT's other
    neighbour), all writing creatures in HOME and NEXT: convergence for the regions each
    server hears."""
    third = RegionKey(2, 0, 0)
    async with trio(sqlite_url) as (a, b, c):
        await a.acquire_region(HOME)
        await b.acquire_region(NEXT)
        await c.acquire_region(third)
        for w in (a, b, c):
            assert await w.wait_subscribed()
        ids = np.arange(200, dtype=np.int64)
        rng = np.random.default_rng(11)
        for _ in range(4):
            for w in (a, b, c):
                pick = np.sort(rng.choice(ids, 120, replace=False))
                lo = np.array(HOME.bounds[0])
                w.move_entities(pick, lo + rng.uniform(1.0, 3999.0, (120, 3)) * [1, 0.5, 0.5])
            await asyncio.sleep(0.02)
        # every creature written at least once more: the even ones end in HOME, the odd in NEXT
        final = np.where((ids % 2 == 0)[:, None], at(HOME, 200, seed=3), at(NEXT, 200, seed=4))
        a.move_entities(ids, final)
        odd = ids[1::2]

        def agree(x: worldstate.World, y: worldstate.World, which: npt.NDArray[np.int64]) -> bool:
            tx, ty = x.eventual.positions, y.eventual.positions
            return bool(tx.contains(which).all() and ty.contains(which).all()) and bool(
                np.array_equal(tx.positions_of(which), ty.positions_of(which))
                and np.array_equal(tx.hlc_of(which), ty.hlc_of(which))
            )

        # HOME's and NEXT's owners hear both regions: they agree on everything; the third
        # hears NEXT (its neighbour), not HOME: it agrees on what lies in NEXT
        await wait_until(lambda: agree(a, b, ids) and agree(b, c, odd))
        np.testing.assert_array_equal(a.eventual.positions.positions_of(ids), final)
        for w in (a, b, c):
            assert w.eventual.stats()["dropped_total"] == 0


# -- failures are loud -------------------------------------------------------------------------


async def test_a_refused_subscription_is_loud_and_retried(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with trio(sqlite_url) as (a, _, _c):
        bus = a.bus
        assert isinstance(bus, SignedBus)
        inner: Any = bus.inner
        real = inner._pattern_added

        def refuse(state: Any, new: bool) -> None:
            inner._mark_active(state, BusUnavailable("the broker refused it (test ACL)"))

        inner._pattern_added = refuse
        a.interest.retry_min = 0.01
        with caplog.at_level(logging.ERROR, "worldstate.interest"):
            await a.acquire_region(FAR)  # bounded: the refusal answers at once
            await wait_until(lambda: bool(a.interest.refused))
        assert f"eventual/{FAR.morton}" in a.interest.refused
        assert any("refused the subscription" in r.getMessage() for r in caplog.records)
        ready = await a.readiness()
        assert not ready["ok"] and "refused" in ready["checks"]["subscriptions"]
        assert not a.interest.stats()["settled"]
        inner._pattern_added = real  # the ACL is fixed: the retry subscribes
        await wait_until(lambda: not a.interest.refused)
        assert await a.wait_subscribed()
        assert (await a.readiness())["checks"]["subscriptions"] == "ok"
        assert a.health()["ok"]


async def test_an_unacknowledged_subscription_has_a_deadline(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with trio(sqlite_url) as (a, _, _c):
        bus = a.bus
        assert isinstance(bus, SignedBus)
        inner: Any = bus.inner
        real = inner._pattern_added
        inner._pattern_added = lambda state, new: None  # the broker never answers
        a.interest.subscribe_timeout = 0.05
        a.interest.retry_min = 0.01
        with caplog.at_level(logging.WARNING, "worldstate.interest"):
            stream = a.updates(FAR)
            assert not await a.wait_subscribed(timeout=0.3)
            await wait_until(lambda: a.interest.subscribe_timeouts > 0)
        assert any("not acknowledged" in r.getMessage() for r in caplog.records)
        inner._pattern_added = real
        # the next attempt is still waiting on the same subscriptions: a reconnection (here,
        # the hub marks every pattern again) makes them live, and the plan settles
        for state in list(inner._patterns.values()):
            inner._mark_active(state)
        assert await a.wait_subscribed()
        assert "ws-interest-gs-1" in a.health()["tasks"]["loops"]
        stream.close()


async def test_an_overloaded_stream_gives_its_interest_up(sqlite_url: str) -> None:
    async with trio(sqlite_url) as (a, _, c):
        stream = a.updates(FAR, capacity=1)
        assert f"eventual/{FAR.morton}" in eventual_filters(a)
        for i in range(2):  # two batches for a consumer that takes none: overloaded
            c.move_entities([i], at(FAR, seed=i))
            await c.eventual.tick()
        await wait_until(lambda: stream.failed)
        assert await a.wait_subscribed()
        assert f"eventual/{FAR.morton}" not in eventual_filters(a)
        with pytest.raises(worldstate.Overloaded):
            async with asyncio.timeout(TIMEOUT):
                async for _ in stream:
                    pass


async def test_coordinator_handoff_moves_the_subscriptions(sqlite_url: str, namespace: str) -> None:
    """A hand-off is a release on the old owner and an acquire on the new one: the region's
    topics follow it, and the new owner hears (and holds) the region's creatures."""
    from tests.fix_services import Backend

    from .fix_mesh import mesh

    far = RegionKey(8, 8, 0)  # nobody's neighbour but its owner's
    async with mesh(Backend("sqlite", sqlite_url, "memory://", namespace), ("gs-1", "gs-2")) as m:
        coord = m.acting
        g1, g2 = m["gs-1"], m["gs-2"]
        topic = f"eventual/{far.morton}"
        await coord.assign(far, "gs-1")
        assert topic in eventual_filters(g1) and topic not in eventual_filters(g2)
        g1.move_entities([1, 2], at(far, 2))
        await coord.handoff(far, "gs-2")
        assert await g1.wait_subscribed() and await g2.wait_subscribed()
        assert topic in eventual_filters(g2) and topic not in eventual_filters(g1)
        assert knows(g2, [1, 2])  # carried by the snapshot the old owner flushed
        g1.move_entities([3], at(far))  # a writer that no longer owns the region
        await g1.eventual.tick()
        await wait_until(lambda: knows(g2, [3]))


async def test_a_region_heard_late_is_seeded_from_its_snapshot(sqlite_url: str) -> None:
    """Anti-entropy: what was written before a server started hearing a region reaches it
    through the owner's stored snapshot, not only through later batches."""
    async with trio(sqlite_url, snapshot_interval=3600.0) as (a, b, c):
        await a.acquire_region(FAR)
        c.move_entities([7, 8], at(FAR, 2))
        await c.eventual.tick()
        await wait_until(lambda: knows(a, [7, 8]))
        await a.eventual.flush_region(FAR)  # the owner's snapshot now holds them
        assert not b.eventual.positions.contains([7, 8]).any()
        seeded = b.interest.seeded
        stream = b.updates(FAR)  # b starts hearing FAR: seeded at once, no batch needed
        await wait_until(lambda: knows(b, [7, 8]))
        assert b.interest.seeded == seeded + 1
        np.testing.assert_array_equal(
            b.eventual.positions.positions_of([7, 8]), a.eventual.positions.positions_of([7, 8])
        )
        assert (
            b.eventual.positions.hlc_of([7]).tolist() == a.eventual.positions.hlc_of([7]).tolist()
        )
        stream.close()

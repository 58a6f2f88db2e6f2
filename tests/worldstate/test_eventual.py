"""The eventual path on the in-process bus: local apply, one batch per region per tick,
last-writer-wins merge (ties to the lowest server id), validation of local input and of bus
messages (bad ones dropped and counted, changing nothing), snapshots of owned regions, and
the wire format's round trip and robustness (hypothesis)."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

import worldstate
from consistency import pack
from regions import DEFAULT_BOUNDS, RegionKey, WorldBounds, region_keys
from tests.fix_services import Backend
from worldstate import (
    CosmeticEffect,
    EntityBatch,
    MoveCreature,
    SetAutomation,
    SetPowerGrid,
    StateChange,
    ValidationError,
)
from worldstate.bus import Message, SignedBus, open_bus
from worldstate.eventual._path import MAX_MOVE_ROWS
from worldstate.objects import WorldObject
from worldstate.protocol._eventual import (
    HEADER,
    Batch,
    MalformedBatch,
    StateRecord,
    decode_batch,
    encode_batch,
)
from worldstate.store import bus_keys
from worldstate.updates import Update, UpdateStream

from .fix_world import open_world

K = RegionKey(0, 0, 0)
K2 = RegionKey(1, 0, 0)
TIMEOUT = 15.0
U = TypeVar("U")


def in_region(key: RegionKey, n: int, seed: int = 0) -> npt.NDArray[np.float64]:
    """``n`` random positions inside ``key`` (2 km regions), away from its faces."""
    lo, _ = key.bounds
    rng = np.random.default_rng(seed)
    return np.asarray(lo) + rng.uniform(10.0, 1990.0, (n, 3))


async def injector(w: worldstate.World, client_id: str = "gs-inject") -> SignedBus:
    """A started bus of a server of this world (it holds the bus keys): what it publishes
    passes the signing layer and reaches the eventual path's own checks. (A world drops its
    own eventual echoes unverified, so a test cannot inject through a world's bus.)"""
    bus = SignedBus(
        open_bus(w.config.bus_url, client_id=client_id, prefix=w.config.namespace),
        load_keys=bus_keys.loader(w.store, time.time),
    )
    await bus.start()
    return bus


@asynccontextmanager
async def mesh(
    where: str | Backend, n: int = 2, **changes: Any
) -> AsyncIterator[list[worldstate.World]]:
    name = where.namespace if isinstance(where, Backend) else str(abs(hash(where)))
    changes.setdefault("bus_url", f"memory://eventual-{name}")
    async with open_world(where, "gs-1", **changes) as a:
        if n == 1:
            yield [a]
            return
        async with open_world(where, "gs-2", **changes) as b:
            if n == 2:
                yield [a, b]
                return
            async with open_world(where, "gs-3", **changes) as c:
                yield [a, b, c]


async def wait_until(pred: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not pred():  # noqa: ASYNC110 (polling state the paths update)
            await asyncio.sleep(0.01)


async def next_of(stream: UpdateStream, kind: type[U], timeout: float = TIMEOUT) -> U:
    async with asyncio.timeout(timeout):
        while True:
            u: Update = await anext(stream)
            if isinstance(u, kind):
                return u


def knows(w: worldstate.World, ids: npt.ArrayLike) -> bool:
    return bool(w.eventual.positions.contains(ids).all())


# -- moves and state between servers ---------------------------------------------------------


async def test_move_entities_reach_the_other_server(sqlite_url: str) -> None:
    async with mesh(sqlite_url) as (a, b):
        stream = b.updates()
        ids = np.arange(100, 300, dtype=np.int64)
        pos = np.concatenate([in_region(K, 120, 1), in_region(K2, 80, 2)])
        vel = np.tile([1.0, -2.0, 0.5], (200, 1))
        assert a.move_entities(ids, pos, vel) == 200
        seen: dict[int, npt.NDArray[np.float64]] = {}
        regions = set()
        while len(seen) < 200:
            batch = await next_of(stream, EntityBatch)
            assert batch.server_id == "gs-1"
            regions.add(batch.region)
            assert (region_keys(batch.positions) == batch.region.morton).all()
            assert batch.velocities is not None
            np.testing.assert_array_equal(
                batch.velocities, np.tile([1.0, -2.0, 0.5], (len(batch.ids), 1))
            )
            for i, p in zip(batch.ids.tolist(), batch.positions, strict=True):
                seen[i] = p
        assert regions == {K, K2}
        got = np.array([seen[i] for i in ids.tolist()])
        np.testing.assert_array_equal(got, pos)
        np.testing.assert_array_equal(b.eventual.positions.positions_of(ids), pos)
        np.testing.assert_array_equal(b.eventual.velocities.positions_of(ids), vel)
        s = b.eventual.stats()
        assert s["rows_applied"] == 200 and s["dropped_total"] == 0
        assert a.eventual.stats()["rows_sent"] == 200


async def test_one_message_per_region_per_tick_last_row_wins(sqlite_url: str) -> None:
    async with mesh(sqlite_url, tick_rate=0.5) as (a, b):  # ticks driven by hand
        stream = b.updates()
        before = a.eventual.stats()["batches_sent"]
        a.move_entities([1, 2, 3], in_region(K, 3, 1))
        a.move_entities([2, 3], in_region(K, 2, 2))  # newer rows for 2 and 3, same tick
        last = in_region(K, 1, 3)
        await a.submit(MoveCreature(creature_id=3, position=tuple(last[0])))
        # a state change in the same region and tick, newer than every row
        await a.submit(SetPowerGrid(entity_id=1, region=K, state={"on": 1}))
        sent = await a.eventual.tick()
        assert sent == 1 and a.eventual.stats()["batches_sent"] == before + 1
        batch = await next_of(stream, EntityBatch)
        assert sorted(batch.ids.tolist()) == [1, 2, 3]
        by_id = dict(zip(batch.ids.tolist(), batch.positions.tolist(), strict=True))
        assert by_id[2] == in_region(K, 2, 2)[0].tolist()
        assert by_id[3] == last[0].tolist()
        np.testing.assert_array_equal(
            b.eventual.positions.positions_of([1, 2, 3]),
            a.eventual.positions.positions_of([1, 2, 3]),
        )
        # every row keeps its own HLC (not the batch's, which is the state change's)
        await wait_until(lambda: ("power", 1) in b.eventual.states)
        hlcs = a.eventual.positions.hlc_of([1, 2, 3])
        np.testing.assert_array_equal(b.eventual.positions.hlc_of([1, 2, 3]), hlcs)
        assert b.eventual.states[("power", 1)].hlc > int(hlcs.max())


async def test_move_creature_via_submit(sqlite_url: str) -> None:
    async with mesh(sqlite_url) as (a, b):
        stream = b.updates(K)
        p = tuple(in_region(K, 1, 5)[0].tolist())
        result = await a.submit(MoveCreature(creature_id=7, position=p, velocity=(1, 2, 3)))
        assert isinstance(result, worldstate.Accepted)
        batch = await next_of(stream, EntityBatch)
        assert batch.ids.tolist() == [7] and batch.region == K
        assert tuple(batch.positions[0].tolist()) == p
        assert batch.velocities is not None and batch.velocities[0].tolist() == [1, 2, 3]


async def test_resubmitted_op_is_not_applied_twice(sqlite_url: str) -> None:
    async with mesh(sqlite_url, n=1) as (a,):
        op = MoveCreature(creature_id=1, position=(5.0, 5.0, 5.0))
        first = await a.submit(op)
        hlc = int(a.eventual.positions.hlc_of([1])[0])
        await a.submit(MoveCreature(creature_id=1, position=(6.0, 6.0, 6.0)))
        assert await a.submit(op) == first  # the same op_id again: nothing more happens
        assert int(a.eventual.positions.hlc_of([1])[0]) > hlc
        assert a.eventual.positions.positions_of([1])[0].tolist() == [6.0, 6.0, 6.0]


async def test_state_ops_arrive_as_state_changes(sqlite_url: str) -> None:
    async with mesh(sqlite_url) as (a, b):
        stream = b.updates()
        ops = [
            SetPowerGrid(entity_id=5, position=(10.0, 20.0, 30.0), state={"on": True, "mw": 1.5}),
            CosmeticEffect(entity_id=5, region=K2, state={"fx": "sparks", "t": [1, 2]}),
            SetAutomation(entity_id=9, position=(40.0, 5.0, 5.0), state={"recipe": "gear"}),
        ]
        for op in ops:
            assert isinstance(await a.submit(op), worldstate.Accepted)
        got: dict[tuple[str, int], StateChange] = {}
        while len(got) < 3:
            ch = await next_of(stream, StateChange)
            got[(ch.op_type, ch.entity_id)] = ch
        assert dict(got[("SetPowerGrid", 5)].state) == {"on": True, "mw": 1.5}
        assert got[("SetPowerGrid", 5)].region == K
        assert dict(got[("CosmeticEffect", 5)].state) == {"fx": "sparks", "t": [1, 2]}
        assert got[("CosmeticEffect", 5)].region == K2
        assert dict(got[("SetAutomation", 9)].state) == {"recipe": "gear"}
        assert got[("SetAutomation", 9)].server_id == "gs-1"
        # an older write of the same entity loses everywhere
        newer = SetPowerGrid(entity_id=5, position=(10.0, 20.0, 30.0), state={"on": False})
        await a.submit(newer)
        ch = await next_of(stream, StateChange)
        assert dict(ch.state) == {"on": False}
        assert dict(b.eventual.states[("power", 5)].state) == {"on": False}


async def test_updates_respect_interest(sqlite_url: str) -> None:
    async with mesh(sqlite_url) as (a, b):
        only_k2 = b.updates(K2)
        a.move_entities([1], in_region(K, 1))
        a.move_entities([2], in_region(K2, 1))
        batch = await next_of(only_k2, EntityBatch)
        assert batch.region == K2 and batch.ids.tolist() == [2]


async def test_concurrent_writers_converge(sqlite_url: str) -> None:
    # every server hears every region here (no server owns or watches one): the merge is
    # under test, not the routing (interest fan-out: tests/worldstate/test_fanout.py)
    async with mesh(sqlite_url, n=3, fanout="world") as worlds:
        ids = np.arange(300, dtype=np.int64)
        rng = np.random.default_rng(7)
        for rnd in range(6):
            for w in worlds[:2]:  # two writers, one observer
                pick = np.sort(rng.choice(ids, 200, replace=False))
                pos = rng.uniform(0.0, 3900.0, (200, 3))
                w.move_entities(pick, pos)
                await asyncio.sleep(0.01 * rnd)

        def converged() -> bool:
            tables = [w.eventual.positions for w in worlds]
            if not all(t.contains(ids).all() for t in tables):
                return False
            first = tables[0]
            return all(
                np.array_equal(first.hlc_of(ids), t.hlc_of(ids))
                and np.array_equal(first.positions_of(ids), t.positions_of(ids))
                and first.writers_of(ids) == t.writers_of(ids)
                for t in tables[1:]
            )

        await wait_until(converged)
        assert worlds[0].eventual.positions == worlds[2].eventual.positions


async def test_equal_hlc_goes_to_the_lowest_server_id(sqlite_url: str) -> None:
    async with mesh(sqlite_url, fanout="world") as (a, b):  # both hear K without owning it
        hlc = a.hlc.now()  # a valid, current timestamp for both forged writers
        p_low, p_high = in_region(K, 2, 11)

        def batch(server: str, entity: int, p: npt.NDArray[np.float64]) -> bytes:
            return encode_batch(
                server_id=server, region=K, hlc=hlc, sent_at=a.clock(), ids=[entity], positions=[p]
            )

        # entity 1: the low id's write arrives first; entity 2: last
        inj = await injector(a)
        for payload in (
            batch("gs-0low", 1, p_low),
            batch("gs-9high", 1, p_high),
            batch("gs-9high", 2, p_high),
            batch("gs-0low", 2, p_low),
        ):
            await inj.publish(f"eventual/{K.morton}", payload)
        await wait_until(lambda: knows(a, [1, 2]) and knows(b, [1, 2]))
        await wait_until(lambda: b.eventual.stats()["messages_received"] >= 4)
        await inj.close()
        for w in (a, b):
            t = w.eventual.positions
            assert t.writers_of([1, 2]) == ["gs-0low", "gs-0low"]
            np.testing.assert_array_equal(t.positions_of([1, 2]), [p_low, p_low])


async def test_equal_hlc_from_fake_clocks_converges(sqlite_url: str) -> None:
    """Both servers write at the same HLC (frozen identical wall clocks, first event)."""
    from .fix_world import FakeClock

    bus = f"memory://tie-{abs(hash(sqlite_url))}"
    async with (
        # world-wide fan-out: neither owns the region both write
        open_world(sqlite_url, "gs-b", bus_url=bus, clock=FakeClock(), fanout="world") as b,
        open_world(sqlite_url, "gs-a", bus_url=bus, clock=FakeClock(), fanout="world") as a,
    ):
        # identical frozen wall clocks: bring both HLCs level (no await from here on, so no
        # message can move either), and their next timestamps are the same
        while a.hlc.last < b.hlc.last:
            a.hlc.now()
        while b.hlc.last < a.hlc.last:
            b.hlc.now()
        a.move_entities([42], [[1.0, 1.0, 1.0]])
        b.move_entities([42], [[2.0, 2.0, 2.0]])
        assert a.eventual.positions.hlc_of([42]) == b.eventual.positions.hlc_of([42])
        await wait_until(
            lambda: (
                a.eventual.stats()["rows_received"] >= 1
                and b.eventual.stats()["rows_received"] >= 1
            )
        )
        for w in (a, b):
            assert w.eventual.positions.writers_of([42]) == ["gs-a"]
            assert w.eventual.positions.positions_of([42])[0].tolist() == [1.0, 1.0, 1.0]


# -- bad local input ---------------------------------------------------------------------------

GOOD = in_region(K, 3)
BAD_MOVES: list[tuple[str, Any, Any, Any]] = [
    ("nan position", [1, 2, 3], np.array([[1.0, 1.0, 1.0], [np.nan, 0, 0], [2.0, 2.0, 2.0]]), None),
    ("inf position", [1, 2, 3], np.array([[1.0, 1.0, np.inf]] * 3), None),
    (
        "out of bounds",
        [1, 2, 3],
        np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1e6, 0.0, 0.0]]),
        None,
    ),
    (
        "below bounds",
        [1, 2, 3],
        np.array([[1.0, 1.0, 1.0], [-2e5, 0.0, 0.0], [1.0, 1.0, 1.0]]),
        None,
    ),
    ("positions (N, 2)", [1, 2, 3], GOOD[:, :2], None),
    ("positions 1-D", [1], GOOD[0], None),
    ("too few positions", [1, 2, 3], GOOD[:2], None),
    ("ids 2-D", [[1, 2, 3]], GOOD, None),
    ("negative id", [1, -2, 3], GOOD, None),
    ("float ids", [1.0, 2.0, 3.0], GOOD, None),
    ("bool ids", [True, False, True], GOOD, None),
    ("string ids", ["a", "b", "c"], GOOD, None),
    ("uint64 id too large", np.array([1, 2, 2**63], dtype=np.uint64), GOOD, None),
    ("string positions", [1, 2, 3], [["a", "b", "c"]] * 3, None),
    ("object positions", [1, 2, 3], np.array([[object()] * 3] * 3), None),
    ("nan velocity", [1, 2, 3], GOOD, np.array([[0.0, 0.0, np.nan]] * 3)),
    ("velocities wrong shape", [1, 2, 3], GOOD, np.zeros((3, 2))),
    ("ragged", [1, 2, 3], [[1.0, 2.0, 3.0], [1.0, 2.0], [1.0, 2.0, 3.0]], None),
]


@pytest.mark.parametrize(
    ("case", "ids", "positions", "velocities"), BAD_MOVES, ids=[c[0] for c in BAD_MOVES]
)
async def test_bad_move_input_is_refused_and_changes_nothing(
    sqlite_url: str, case: str, ids: Any, positions: Any, velocities: Any
) -> None:
    bounds = WorldBounds((-1e5, -1e5, -1e5), (1e5, 1e5, 1e5))
    async with mesh(sqlite_url, n=1, world_bounds=bounds, tick_rate=0.5) as (a,):
        a.move_entities([99], in_region(K, 1))
        hlc = a.hlc.last
        with pytest.raises(ValidationError):
            a.move_entities(ids, positions, velocities)
        s = a.eventual.stats()
        assert s["entities"] == 1 and s["pending_rows"] == 1
        assert a.hlc.last == hlc


async def test_too_many_rows_in_one_call(sqlite_url: str) -> None:
    async with mesh(sqlite_url, n=1) as (a,):
        n = MAX_MOVE_ROWS + 1
        with pytest.raises(ValidationError, match="limit"):
            a.move_entities(np.arange(n), np.zeros((n, 3)))
        assert a.eventual.stats()["entities"] == 0
        assert a.move_entities([], np.zeros((0, 3))) == 0


# -- bad bus messages --------------------------------------------------------------------------


def valid(
    server: str = "gs-evil", hlc: int = 0, region: RegionKey = K, **kw: Any
) -> dict[str, Any]:
    args: dict[str, Any] = {
        "server_id": server,
        "region": region,
        "hlc": hlc,
        "sent_at": 1.0,
        "ids": [500, 501],
        "positions": in_region(region, 2, 3),
    }
    args.update(kw)
    return args


async def test_malformed_messages_are_dropped_and_change_nothing(sqlite_url: str) -> None:
    async with mesh(sqlite_url, fanout="world") as (a, b):  # a hears K2 without owning it
        stream = b.updates()
        now = a.hlc.now()
        good = encode_batch(**valid(hlc=now))
        far_future = pack((now >> 16) + 3_600_000, 0)
        header = bytearray(good)
        struct.pack_into("<I", header, 32, 3)  # claims 3 rows, carries 2
        rng = np.random.default_rng(3)
        bad: list[tuple[str, bytes, RegionKey]] = [
            ("random bytes", rng.bytes(200), K),
            ("empty", b"", K),
            ("truncated", good[:-5], K),
            ("header only", good[: HEADER.size], K),
            ("wrong count", bytes(header), K),
            ("extra byte", good + b"\x00", K),
            (
                "nan position",
                encode_batch(**valid(hlc=now, positions=[[np.nan, 1, 1], [1, 1, 1]])),
                K,
            ),
            ("outside region", encode_batch(**valid(hlc=now, positions=in_region(K2, 2))), K),
            (
                "outside world",
                encode_batch(**valid(hlc=now, positions=[[1, 1, 1], [1, 1, -1e300]])),
                K,
            ),
            ("negative id", encode_batch(**valid(hlc=now, ids=[1, -1])), K),
            ("far-future hlc", encode_batch(**valid(hlc=far_future)), K),
            ("negative hlc", encode_batch(**valid(hlc=-5)), K),
            ("row hlc above batch", encode_batch(**valid(hlc=now, hlcs=[now, now + 1])), K),
            ("bad server id", encode_batch(**valid(server="gs/evil", hlc=now)), K),
            ("empty server id", encode_batch(**valid(server="", hlc=now)), K),
            (
                "nan velocity",
                encode_batch(**valid(hlc=now, velocities=[[0, 0, np.nan], [0, 0, 0]])),
                K,
            ),
            ("wrong topic", good, K2),
            ("bad magic", b"XXXX" + good[4:], K),
            ("bad state json", encode_batch(**valid(hlc=now, states=b"[{not json")), K),
            ("state not a list", encode_batch(**valid(hlc=now, states=b'{"a": 1}')), K),
            (
                "state bad kind",
                encode_batch(**valid(hlc=now, states=b'[["weird","X",1,1,1.0,1.0,1.0,{}]]')),
                K,
            ),
            (
                "state hlc above batch",
                encode_batch(
                    **valid(
                        hlc=now,
                        states=[
                            StateRecord("power", "SetPowerGrid", 1, now + 9, (1.0, 1.0, 1.0), {})
                        ],
                    )
                ),
                K,
            ),
            (
                "state outside region",
                encode_batch(
                    **valid(
                        hlc=now,
                        states=[
                            StateRecord("power", "SetPowerGrid", 1, now, (2500.0, 1.0, 1.0), {})
                        ],
                    )
                ),
                K,
            ),
        ]
        inj = await injector(a)
        for _, payload, region in bad:
            await inj.publish(f"eventual/{region.morton}", payload)
        # a valid message after them all: once it is in, every bad one was handled
        sentinel = encode_batch(**valid(hlc=a.hlc.now(), ids=[900], positions=in_region(K, 1, 9)))
        await inj.publish(f"eventual/{K.morton}", sentinel)
        await wait_until(lambda: knows(b, [900]))
        sb = b.eventual.stats()
        assert sb["dropped_total"] == len(bad), sb["dropped"]
        assert sb["dropped"]["clock_drift"] == 1
        assert sb["entities"] == 1 and sb["states"] == 0
        assert not b.eventual.positions.contains([500, 501]).any()
        # a saw them too (same bus) and refused them the same way
        await wait_until(lambda: knows(a, [900]))
        assert a.eventual.stats()["dropped_total"] == len(bad)
        await inj.close()
        # the far-future stamp did not drag the clock forward
        assert (b.hlc.last >> 16) < (far_future >> 16) - 1_000_000
        batch = await next_of(stream, EntityBatch)
        assert batch.ids.tolist() == [900]


# -- a backlog of batches ----------------------------------------------------------------------


async def test_a_backlog_of_one_senders_batches_is_coalesced(sqlite_url: str) -> None:
    """Batches arriving behind the first of a loop turn wait for the next turn; there an
    older batch of the same sender and region whose entities the newest one all carries
    is not merged (``coalesced``), while one with another entity, or with states, is."""
    async with mesh(sqlite_url, n=1) as (b,):
        path = b.eventual
        topic = f"eventual/{K.morton}"
        h = b.hlc.now()
        p = in_region(K, 4, 1)

        def batch(i: int, ids: list[int], pos: Any, **extra: Any) -> Message:
            payload = encode_batch(
                server_id="gs-9",
                region=K,
                hlc=h + i,
                sent_at=time.time(),
                ids=ids,
                positions=pos,
                **extra,
            )
            return Message(topic, payload, sender="gs-9")

        where = (float(p[3][0]), float(p[3][1]), float(p[3][2]))
        state = StateRecord("power", "SetPowerGrid", 7, h + 3, where, {"on": True})
        path._on_message(batch(1, [1, 2], p[:2]))  # the first of the turn: merged at once
        assert knows(b, [1, 2])
        path._on_message(batch(2, [1, 2, 3], p[1:4]))  # covered by the newest: coalesced
        path._on_message(batch(3, [1], p[3:4], states=[state]))  # has a state: merged
        path._on_message(batch(4, [4], p[:1]))  # id 4 is not in the newest: merged
        path._on_message(batch(5, [1, 2, 3], p[:3]))  # the newest
        assert not knows(b, [3, 4]) and ("power", 7) not in path.states
        await asyncio.sleep(0)  # the next turn: the drain ran
        st = path.stats()
        assert st["coalesced"] == 1
        assert st["rows_received"] == 2 + 1 + 1 + 3  # batch 2 was never decoded
        assert np.array_equal(path.positions.positions_of(np.array([1, 2, 3])), p[:3])
        assert np.array_equal(path.positions.positions_of(np.array([4])), p[:1])
        assert ("power", 7) in path.states
        assert len(path.lag_samples) == 5  # the coalesced batch's lag is counted too


# -- minority partition -----------------------------------------------------------------------


async def test_minority_side_does_not_publish_held_regions(sqlite_url: str) -> None:
    async with mesh(sqlite_url, tick_rate=0.5, fanout="world") as (a, b):  # b owns nothing
        await a.acquire_region(K)
        a.authoritative = False
        a.move_entities([1, 2], in_region(K, 2))
        a.move_entities([3], in_region(K2, 1))
        await a.eventual.tick()
        await wait_until(lambda: knows(b, [3]))
        assert not b.eventual.positions.contains([1, 2]).any()
        assert knows(a, [1, 2, 3])  # still applied locally
        assert a.eventual.stats()["suppressed_rows"] == 2
        a.authoritative = True


async def test_rows_suppressed_while_minority_are_sent_once_authoritative(sqlite_url: str) -> None:
    """Rows (and states) held back while this server was briefly non-authoritative for a
    region it holds go out with the first tick after it is authoritative again: the
    other servers converge on them even if those entities never move again."""
    async with mesh(sqlite_url, tick_rate=0.5, fanout="world") as (a, b):  # b owns nothing
        await a.acquire_region(K)
        a.authoritative = False
        a.move_entities([1, 2], in_region(K, 2))
        x, y, z = (float(c) for c in in_region(K, 1, 7)[0])
        where = (x, y, z)
        await a.submit(SetPowerGrid(entity_id=4, position=where, state={"on": True}))
        await a.eventual.tick()
        assert a.eventual.stats()["suppressed_rows"] == 2
        a.move_entities([2], in_region(K, 1, 3))  # a later write of 2 while still minority
        await a.eventual.tick()
        assert not b.eventual.positions.contains([1, 2]).any()
        a.authoritative = True
        await a.eventual.tick()  # nothing new was written: only what was held back
        await wait_until(lambda: knows(b, [1, 2]) and ("power", 4) in b.eventual.states)
        assert np.array_equal(
            b.eventual.positions.positions_of(np.array([1, 2])),
            a.eventual.positions.positions_of(np.array([1, 2])),
        )
        assert a.eventual.stats()["pending_rows"] == 0


# -- snapshots ---------------------------------------------------------------------------------


def count_loads(w: worldstate.World, key: RegionKey) -> tuple[list[RegionKey], Any]:
    """Make the eventual path's region reads of ``key`` countable (the anti-entropy of heard
    neighbours may read the others): the list they go to, and the real loader to restore."""
    loads: list[RegionKey] = []
    real_load = w.eventual.views.load

    async def counted_load(k: RegionKey, **kw: Any) -> Any:
        if k == key:
            loads.append(k)
        return await real_load(k, **kw)

    w.eventual.views.load = counted_load  # type: ignore[method-assign, assignment]
    return loads, real_load


async def test_flush_and_release_write_owned_region_state(backend: Backend) -> None:
    async with mesh(backend, snapshot_interval=3600.0) as (a, b):
        await a.acquire_region(K)
        snap = await a.load_region(K)
        wall = WorldObject("wall-1", "structure", (1.0, 1.0, 1.0), (3.0, 3.0, 3.0), {"hp": 5})
        await a.store_region(snap.with_objects([wall]), expected_version=snap.version)
        ids = np.arange(10, dtype=np.int64)
        pos = in_region(K, 10, 4)
        a.move_entities(ids, pos, np.ones((10, 3)))
        a.move_entities([50], in_region(K2, 1))  # not in the region: not in its snapshot
        await a.submit(SetPowerGrid(entity_id=3, position=(7.0, 8.0, 9.0), state={"on": True}))
        await a.eventual.flush_region(K)
        stored = await b.load_region(K)
        by_id = {o.id: o for o in stored.objects}
        assert set(by_id) == {"wall-1", "power:3"} | {f"creature:{i}" for i in range(10)}
        assert dict(by_id["wall-1"].data) == {"hp": 5}
        for i in range(10):
            o = by_id[f"creature:{i}"]
            assert o.kind == "creature" and o.center == tuple(pos[i].tolist())
            assert list(o.data["v"]) == [1.0, 1.0, 1.0] and o.data["writer"] == "gs-1"
        assert dict(by_id["power:3"].data) == {"on": True} and by_id["power:3"].kind == "power"
        # unchanged state: nothing new is written, and the region is not even read back
        version = stored.version
        loads, real_load = count_loads(a, K)
        await a.eventual.flush_region(K)
        assert loads == []
        assert (await b.load_region(K)).version == version
        a.move_entities(ids[:1], in_region(K, 1, 9))  # one creature moved: read and written
        await a.eventual.flush_region(K)
        assert loads == [K]
        a.eventual.views.load = real_load  # type: ignore[method-assign]

        # creatures 0..4 leave the region; release writes the region once more
        a.move_entities(ids[:5], in_region(K2, 5, 5))
        assert await a.release_region(K)
        after = {o.id for o in (await b.load_region(K)).objects}
        assert after == {"wall-1", "power:3"} | {f"creature:{i}" for i in range(5, 10)}
        assert a.eventual.stats()["snapshots"] == 3


async def test_a_taken_over_region_with_nothing_new_is_not_read_again(backend: Backend) -> None:
    """The snapshot read when a region is acquired is remembered: the first snapshot round
    after it reads (and writes) nothing until this server's eventual state there changes."""
    async with mesh(backend, n=1, snapshot_interval=3600.0) as (a,):
        await a.acquire_region(K)
        loads, real_load = count_loads(a, K)
        await a.eventual.flush_region(K)
        assert loads == []
        a.move_entities([1], in_region(K, 1, 3))
        await a.eventual.flush_region(K)
        assert loads == [K]
        a.eventual.views.load = real_load  # type: ignore[method-assign]
        assert any(o.kind == "creature" for o in (await a.load_region(K)).objects)


async def test_periodic_snapshot_and_seeding_a_new_owner(backend: Backend) -> None:
    async with mesh(backend, n=1, snapshot_interval=0.1) as (a,):
        await a.acquire_region(K)
        pos = in_region(K, 20, 6)
        a.move_entities(np.arange(20), pos, np.full((20, 3), 2.0))
        hlcs = a.eventual.positions.hlc_of(np.arange(20))

        async def stored_creatures() -> int:
            snap = await a.load_region(K)
            return sum(o.kind == "creature" for o in snap.objects)

        async with asyncio.timeout(TIMEOUT):
            while await stored_creatures() < 20:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await a.release_region(K)

    # another server on its own bus (it heard nothing) takes the region over and seeds
    async with open_world(backend, "gs-7", bus_url=f"memory://seed-{backend.namespace}") as c:
        await c.acquire_region(K)  # acquiring seeds the eventual state from the snapshot
        t = c.eventual.positions
        assert len(t) == 20
        np.testing.assert_array_equal(t.positions_of(np.arange(20)), pos)
        np.testing.assert_array_equal(t.hlc_of(np.arange(20)), hlcs)
        assert t.writers_of([0]) == ["gs-1"]
        np.testing.assert_array_equal(c.eventual.velocities.positions_of([0])[0], [2.0, 2.0, 2.0])
        assert c.eventual.seed_region(await c.load_region(K)) == 0  # idempotent


# -- the wire format ---------------------------------------------------------------------------

BOUNDS = DEFAULT_BOUNDS


def decode(payload: bytes) -> Batch:
    return decode_batch(payload, bounds=BOUNDS, max_rows=64)


finite = st.floats(min_value=0.0, max_value=1999.0, allow_nan=False)
json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_state = st.dictionaries(
    st.text(max_size=6),
    st.recursive(
        json_scalar,
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
        max_leaves=6,
    ),
    max_size=4,
)


@st.composite
def batches(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 12))
    region = RegionKey(draw(st.integers(-3, 3)), draw(st.integers(-3, 3)), draw(st.integers(0, 2)))
    lo, _ = region.bounds
    hlc = draw(st.integers(1, 2**62))
    pos = np.array(
        [[lo[j] + draw(finite) for j in range(3)] for _ in range(n)], dtype=np.float64
    ).reshape(n, 3)
    args: dict[str, Any] = {
        "server_id": draw(
            st.text(st.characters(codec="utf-8", categories=["L", "N"]), min_size=1, max_size=20)
        ),
        "region": region,
        "hlc": hlc,
        "sent_at": draw(st.floats(0, 2e9)),
        "ids": np.array(
            draw(st.lists(st.integers(0, 2**63 - 1), min_size=n, max_size=n)), np.int64
        ),
        "positions": pos,
    }
    if draw(st.booleans()):
        args["hlcs"] = np.array(
            draw(st.lists(st.integers(0, hlc), min_size=n, max_size=n)), np.int64
        )
    if draw(st.booleans()):
        args["velocities"] = np.array(
            # each axis within MAX_SPEED / sqrt(3): every row's magnitude is a valid speed
            draw(st.lists(st.floats(-5000, 5000), min_size=3 * n, max_size=3 * n)),
            np.float64,
        ).reshape(n, 3)
    states = []
    for _ in range(draw(st.integers(0, 3))):
        p = tuple(lo[j] + draw(finite) for j in range(3))
        states.append(
            StateRecord(
                draw(st.sampled_from(["effect", "automation", "power"])),
                draw(
                    st.sampled_from(["CosmeticEffect", "SetAutomation", "SetPowerGrid", "Custom"])
                ),
                draw(st.integers(0, 2**63 - 1)),
                draw(st.integers(0, hlc)),
                (p[0], p[1], p[2]),
                draw(json_state),
            )
        )
    args["states"] = states
    return args


@given(batches())
def test_wire_round_trip(args: dict[str, Any]) -> None:
    got = decode(encode_batch(**args))
    assert got.server_id == args["server_id"] and got.region == args["region"]
    assert got.hlc == args["hlc"] and got.sent_at == args["sent_at"]
    np.testing.assert_array_equal(got.ids, args["ids"])
    np.testing.assert_array_equal(got.positions, args["positions"])
    if "hlcs" in args:
        assert got.hlcs is not None
        np.testing.assert_array_equal(got.hlcs, args["hlcs"])
    else:
        assert got.hlcs is None
    if "velocities" in args:
        assert got.velocities is not None
        np.testing.assert_array_equal(got.velocities, args["velocities"])
    else:
        assert got.velocities is None
    assert [(s.kind, s.op_type, s.entity_id, s.hlc, s.position) for s in got.states] == [
        (s.kind, s.op_type, s.entity_id, s.hlc, s.position) for s in args["states"]
    ]
    for mine, theirs in zip(got.states, args["states"], strict=True):
        assert mine.state == theirs.state


@given(batches(), st.data())
def test_wire_truncation_is_refused(args: dict[str, Any], data: st.DataObject) -> None:
    payload = encode_batch(**args)
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(MalformedBatch):
        decode(payload[:cut])


@given(batches(), st.data())
def test_wire_corruption_decodes_or_is_refused(args: dict[str, Any], data: st.DataObject) -> None:
    payload = bytearray(encode_batch(**args))
    at = data.draw(st.integers(0, len(payload) - 1))
    payload[at] = data.draw(st.integers(0, 255).filter(lambda v: v != payload[at]))
    try:
        got = decode(bytes(payload))
    except MalformedBatch:
        return
    # whatever decoded is a valid batch
    assert isinstance(got, Batch) and (got.ids >= 0).all()
    assert np.isfinite(got.positions).all()
    assert (region_keys(got.positions) == got.region.morton).all() if len(got) else True


@given(st.binary(max_size=300))
def test_wire_random_bytes_never_crash(raw: bytes) -> None:
    with pytest.raises(MalformedBatch):
        decode(raw)


@given(st.binary(min_size=1, max_size=200))
def test_wire_random_body_after_a_valid_header(body: bytes) -> None:
    head = HEADER.pack(b"WSEB", 1, 0, 4, K.morton, 5, 1.0, 1, max(0, len(body) - 40))
    with suppress(MalformedBatch):
        decode(head + body)


def test_wire_error_is_a_value_error() -> None:
    assert issubclass(MalformedBatch, ValueError) and issubclass(MalformedBatch, ValidationError)
    with pytest.raises(MalformedBatch) as e:
        decode(b"WSEB")
    assert e.value.reason == "truncated"


def test_snapshots_of_held_regions_are_spread_over_the_interval() -> None:
    """The snapshot loop (the real method, on virtual time): with 4 regions held and a 2 s
    interval, one region every 0.5 s, each of them once per interval; a region released
    before its turn is skipped, and the next round spreads the regions left."""
    from types import SimpleNamespace

    from tests.sim.vloop import run_virtual
    from worldstate.eventual._path import EventualPath

    keys = [RegionKey(i, 0, 0) for i in range(4)]
    held = set(keys)
    taken: list[tuple[float, RegionKey]] = []

    async def snapshot(key: RegionKey) -> None:
        taken.append((round(asyncio.get_running_loop().time(), 6), key))
        if len(taken) == 6:
            held.discard(keys[3])  # released before its turn in this round

    stub = SimpleNamespace(
        ctx=SimpleNamespace(config=SimpleNamespace(snapshot_interval=2.0)),
        authority=SimpleNamespace(
            live=lambda: [k for k in keys if k in held], holds=held.__contains__
        ),
        _snapshot_quietly=snapshot,
    )

    async def main() -> None:
        with suppress(TimeoutError):
            async with asyncio.timeout(6.2):
                await EventualPath._snapshot_loop(stub)  # type: ignore[arg-type]

    run_virtual(main())
    third = [round(4.0 + 2.0 / 3 * i, 6) for i in (1, 2, 3)]
    assert (
        taken
        == [
            *((0.5 * (i + 1), k) for i, k in enumerate(keys)),
            *((2.0 + 0.5 * (i + 1), k) for i, k in enumerate(keys[:3])),  # keys[3]: skipped
            *zip(third, keys[:3], strict=True),
        ]
    )

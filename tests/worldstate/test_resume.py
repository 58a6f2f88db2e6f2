"""Resumable causal streams: a receiver killed mid-stream and restarted with its last
cursor delivers everything it missed in causal order, then live, with no duplicate (memory
bus, and real Mosquitto + PostgreSQL); the durable log's linearisation; retention and
`CursorExpired`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

import worldstate
from consistency import VectorClock
from regions import RegionKey
from tests.fix_services import Backend
from worldstate import CausalDelivery, EmitEvent
from worldstate.errors import CursorExpired, ValidationError
from worldstate.history import create_checkpoint, prune_events
from worldstate.updates import Cursor

from .fix_world import FakeClock, open_world

R0, R1 = RegionKey(0, 0, 0), RegionKey(1, 0, 0)
WAIT = 60.0


def pos(key: RegionKey, offset: float = 10.0) -> tuple[float, float, float]:
    lo, _ = key.bounds
    return (lo[0] + offset, lo[1] + offset, lo[2] + offset)


async def eventually(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def collecting(
    world: worldstate.World, interest: object = None, since: object = None
) -> AsyncIterator[list[CausalDelivery]]:
    got: list[CausalDelivery] = []
    stream = world.updates(interest, since=since)

    async def consume() -> None:
        async for u in stream:
            if isinstance(u, CausalDelivery):
                got.append(u)

    task = asyncio.create_task(consume())
    try:
        yield got
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, worldstate.WorldClosed):
            await task


def check_resumed(got: list[CausalDelivery], since: Cursor) -> None:
    """No duplicate; each origin's events continue right after the cursor, in seq order;
    nothing delivered before something that happened before it; each cursor is the
    previous one plus the event."""
    keys = [(d.origin, d.seq) for d in got]
    assert len(keys) == len(set(keys)), "duplicates delivered"
    last = dict(since.clock.items())
    for d in got:
        assert d.seq == last.get(d.origin, 0) + 1, f"{d.origin}:{d.seq} after {last.get(d.origin)}"
        last[d.origin] = d.seq
    clocks = [VectorClock(d.vclock) for d in got]
    for i, j in itertools.combinations(range(len(clocks)), 2):
        assert not clocks[j].happens_before(clocks[i]), f"{keys[i]} before {keys[j]}"
    for d in got:
        assert d.cursor is not None and d.cursor.clock.get(d.origin) == d.seq


def emit(stream: str, n: int, key: RegionKey = R0) -> EmitEvent:
    return EmitEvent(position=pos(key), stream=stream, payload={"n": n})


async def kill_and_resume(url: str, bus: str, namespace: str) -> None:
    common: dict[str, Any] = {"bus_url": bus, "namespace": namespace}
    async with (
        open_world(url, "gs-a", **common) as a,
        open_world(url, "gs-c", **common) as c,
    ):
        async with collecting(c) as at_c:
            async with open_world(url, "gs-b", **common) as b, collecting(b) as first:
                for i in range(1, 6):
                    await a.submit(emit("chain", i))
                await eventually(lambda: len(first) == 5, "b to get a:1..5")
                cursor = first[-1].cursor
                assert cursor is not None and cursor.clock.get("gs-a") == 5
            # b is gone; a goes on, and c answers some of a's events (depending on them)
            for i in range(6, 12):
                await a.submit(emit("chain", i))
                if i % 2 == 0:
                    await eventually(
                        lambda i=i: any(d.origin == "gs-a" and d.seq == i for d in at_c),  # type: ignore[misc]
                        f"c to get a:{i}",
                    )
                    await c.submit(emit("reply", i, R1))
            await eventually(lambda: sum(d.origin == "gs-a" for d in at_c) == 11, "c to get a:11")
            await a.submit(emit("chain", 12))  # 12 depends on 6-11 (and c's replies)
        token = str(cursor)
        async with (
            open_world(url, "gs-b", **common) as b2,
            collecting(b2, since=token) as resumed,
        ):
            await eventually(
                lambda: sum(d.origin == "gs-a" for d in resumed) >= 7, "b to replay a:6..12"
            )
            for i in range(13, 16):  # live again
                await a.submit(emit("chain", i))
            await c.submit(emit("reply", 99, R1))
            await eventually(
                lambda: (
                    sum(d.origin == "gs-a" for d in resumed) == 10
                    and sum(d.origin == "gs-c" for d in resumed) == 4
                ),
                "b to get a:6..15 and c's 4 replies",
            )
            await asyncio.sleep(0.2)  # nothing more (no duplicate) arrives
            check_resumed(resumed, cursor)
            seqs = [d.seq for d in resumed if d.origin == "gs-a"]
            assert seqs == list(range(6, 16))
            at12 = next(i for i, d in enumerate(resumed) if d.origin == "gs-a" and d.seq == 12)
            assert {d.seq for d in resumed[:at12] if d.origin == "gs-a"} == set(range(6, 12))


async def test_restarted_receiver_resumes_from_its_cursor(backend: Backend) -> None:
    await kill_and_resume(backend.store_url, f"memory://{backend.namespace}", backend.namespace)


async def test_restarted_receiver_resumes_over_mosquitto(
    pg_url: str, mqtt_url: str, namespace: str
) -> None:
    await kill_and_resume(pg_url, mqtt_url, namespace)


async def test_resume_respects_the_interest(sqlite_url: str, namespace: str) -> None:
    common: dict[str, Any] = {"bus_url": f"memory://{namespace}", "namespace": namespace}
    async with open_world(sqlite_url, "gs-a", **common) as a:
        for i in range(4):
            await a.submit(emit("x", i, R0 if i % 2 else R1))
        async with (
            open_world(sqlite_url, "gs-b", **common) as b,
            collecting(b, [R1], since=Cursor(VectorClock())) as got,
        ):
            await eventually(lambda: len(got) == 2, "the two R1 events")
            await a.submit(emit("x", 9, R1))
            await a.submit(emit("x", 10, R0))
            await eventually(lambda: len(got) == 3, "the live R1 event")
            await asyncio.sleep(0.1)
            assert [d.fields["payload"]["n"] for d in got] == [0, 2, 9]
            assert all(d.region == R1 for d in got)
        with pytest.raises(ValidationError, match="bad cursor"):
            a.updates(since="not-a-cursor")


# -- the log's linearisation -----------------------------------------------------------------


async def test_events_are_causally_ordered_and_deterministic(
    sqlite_url: str, namespace: str
) -> None:
    common: dict[str, Any] = {"bus_url": f"memory://{namespace}", "namespace": namespace}
    async with (
        open_world(sqlite_url, "gs-a", **common) as a,
        open_world(sqlite_url, "gs-b", **common) as b,
    ):
        async with collecting(b) as at_b:
            for i in range(6):
                await a.submit(emit("s", i))
                await eventually(lambda i=i: len(at_b) == i + 1, "b to get it")  # type: ignore[misc]
                await b.submit(emit("t", i, R1))
        events = [e async for e in a.events()]
        again = [e async for e in b.events()]
        # a replayed event looks exactly as it did live (b got a's events live)
        logged = {(e.origin, e.seq): e.payload for e in events}
        for live in at_b:
            replayed = logged[(live.origin, live.seq)]
            assert (replayed.op_id, replayed.op_type, replayed.region) == (
                live.op_id,
                live.op_type,
                live.region,
            )
            assert dict(replayed.fields) == dict(live.fields)
            assert dict(replayed.vclock) == dict(live.vclock)
        assert [(e.origin, e.seq) for e in events] == [(e.origin, e.seq) for e in again]
        assert len(events) == 12
        # a:i, then b:i which depends on it
        assert [(e.origin, e.seq) for e in events] == [
            x for i in range(1, 7) for x in (("gs-a", i), ("gs-b", i))
        ]
        for i, j in itertools.combinations(range(len(events)), 2):
            assert not events[j].clock.happens_before(events[i].clock)
        # from a cursor, until a cursor, by stream and region
        mid = events[5].payload.cursor
        rest = [(e.origin, e.seq) async for e in a.events(since=mid)]
        assert rest == [(e.origin, e.seq) for e in events[6:]]
        upto = [(e.origin, e.seq) async for e in a.events(until=mid)]
        assert upto == [(e.origin, e.seq) for e in events[:6]]
        assert [e.origin async for e in a.events(stream="t")] == ["gs-b"] * 6
        assert [e.origin async for e in a.events(region=R1)] == ["gs-b"] * 6
        assert [e async for e in a.events(region="world")] == []
        assert [e async for e in a.events(since=time.time() + 3600)] == []


# -- retention --------------------------------------------------------------------------------


async def test_pruned_cursor_raises_cursor_expired(sqlite_url: str, namespace: str) -> None:
    async with open_world(
        sqlite_url, "gs-a", bus_url=f"memory://{namespace}", namespace=namespace
    ) as a:
        for i in range(10):
            await a.submit(emit("s", i))
        events = [e async for e in a.events()]
        old = events[2].payload.cursor
        report = await prune_events(a.store, keep_per_origin=2)
        assert report.deleted == 8 and report.watermark.seqs == {"gs-a": 8}
        assert [e.seq async for e in a.events()] == [9, 10]
        with pytest.raises(CursorExpired, match="resync from a checkpoint"):
            _ = [e async for e in a.events(since=old)]
        assert [e.seq async for e in a.events(since=events[8].payload.cursor)] == [10]
        async with open_world(
            sqlite_url, "gs-b", bus_url=f"memory://{namespace}", namespace=namespace
        ) as b:
            stream = b.updates(since=old)
            with pytest.raises(CursorExpired):
                async with asyncio.timeout(10):
                    await stream.__anext__()


async def test_pruning_keeps_what_the_oldest_checkpoint_needs(
    sqlite_url: str, namespace: str
) -> None:
    clock = FakeClock()
    async with open_world(
        sqlite_url, "gs-a", clock=clock, bus_url=f"memory://{namespace}", namespace=namespace
    ) as a:
        for i in range(5):
            await a.submit(emit("s", i))
        cp = await create_checkpoint(a.store, "keep", by="t")
        assert dict(cp.heads) == {"gs-a": 5}
        clock.advance(100.0)
        for i in range(5):
            await a.submit(emit("s", 5 + i))
        clock.advance(100.0)
        # everything is older than 50 s, but events after the checkpoint's heads stay
        report = await prune_events(a.store, retention=50.0)
        assert report.deleted == 5 and report.watermark.seqs == {"gs-a": 5}
        assert [e.seq async for e in a.events()] == [6, 7, 8, 9, 10]
        with pytest.raises(CursorExpired):
            _ = [e async for e in a.events(since=clock.now - 10_000)]


async def test_prune_loop_runs_when_retention_is_set(sqlite_url: str, namespace: str) -> None:
    async with open_world(
        sqlite_url,
        "gs-a",
        bus_url=f"memory://{namespace}",
        namespace=namespace,
        event_retention_count=3,
        event_prune_interval=0.05,
    ) as a:
        for i in range(8):
            await a.submit(emit("s", i))
        deadline = time.monotonic() + WAIT
        while [e.seq async for e in a.events()] != [6, 7, 8]:
            assert time.monotonic() < deadline, "the prune loop never pruned"
            await asyncio.sleep(0.05)


def test_retention_settings_from_the_environment() -> None:
    cfg = worldstate.Config.from_env(
        {"WORLDSTATE_EVENT_RETENTION": "3600", "WORLDSTATE_EVENT_RETENTION_COUNT": "none"}
    )
    assert cfg.event_retention == 3600.0 and cfg.event_retention_count is None
    assert (
        worldstate.Config.from_env({"WORLDSTATE_EVENT_RETENTION_COUNT": "50"}).event_retention_count
        == 50
    )
    with pytest.raises(ValidationError, match="event_retention"):
        worldstate.Config(event_retention=-1.0)
    with pytest.raises(ValidationError, match="event_retention_count"):
        worldstate.Config(event_retention_count=0)

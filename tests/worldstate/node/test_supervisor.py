"""The supervisor owns every background loop: a crash fails the world loudly (submits and
`updates()` end with `WorldClosed` carrying the cause, health says so), nothing hangs, and
close completes. One bad job fails only itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

import worldstate
from regions import RegionKey
from tests.worldstate.fix_mesh import until
from tests.worldstate.fix_world import open_world
from worldstate import EmitEvent, PlaceStructure, SubmitTimeout, WorldClosed
from worldstate.node import LoopExited, Supervisor

K = RegionKey(0, 0, 0)


class Injected(RuntimeError):
    pass


def boom(*args: Any, **kwargs: Any) -> Any:
    raise Injected("injected crash")


async def aboom(*args: Any, **kwargs: Any) -> Any:
    raise Injected("injected crash")


# -- the supervisor alone ----------------------------------------------------------------------


async def test_a_crashed_loop_fails_the_supervisor_once_with_its_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sup = Supervisor("gs-t")
    seen: list[BaseException] = []
    sup.on_failure(seen.append)

    async def loop() -> None:
        await asyncio.sleep(0)
        raise Injected("x")

    sup.spawn(loop(), "ws-test-loop")
    sup.spawn(asyncio.sleep(3600), "ws-sleeper")
    with caplog.at_level(logging.ERROR, logger="worldstate.tasks"):
        for _ in range(5):
            await asyncio.sleep(0)
    assert len(seen) == 1 and isinstance(seen[0], Injected)
    assert sup.failure is seen[0] and sup.failed_task == "ws-test-loop"
    assert not sup.healthy
    assert "ws-test-loop" in caplog.text and "Traceback" in caplog.text
    await asyncio.wait_for(sup.close(), 2)
    assert sup.status()["loops"] == []


async def test_a_loop_that_returns_is_a_failure_too() -> None:
    sup = Supervisor("gs-t")

    async def quits() -> None:
        return None

    sup.spawn(quits(), "ws-quitter")
    await asyncio.sleep(0.01)
    assert isinstance(sup.failure, LoopExited)
    await sup.close()


async def test_a_failing_job_fails_only_itself(caplog: pytest.LogCaptureFixture) -> None:
    sup = Supervisor("gs-t")
    with caplog.at_level(logging.ERROR, logger="worldstate.tasks"):
        sup.spawn(aboom(), "ws-job", job=True)
        await asyncio.sleep(0.01)
    assert sup.failure is None and sup.healthy
    assert sup.status()["crashed_jobs"] == 1
    assert "ws-job" in caplog.text
    await sup.close()


async def test_close_does_not_hang_on_a_task_that_ignores_cancellation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sup = Supervisor("gs-t")
    done = asyncio.Event()

    async def stubborn() -> None:
        while not done.is_set():
            try:
                await done.wait()
            except asyncio.CancelledError:
                continue  # a bug: ignores cancellation

    task = sup.spawn(stubborn(), "ws-stubborn")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="worldstate.tasks"):
        await asyncio.wait_for(sup.close(timeout=0.2), 2)
    assert "ws-stubborn" in caplog.text
    done.set()  # let the test's loop end
    await task


async def test_spawn_after_close_is_refused() -> None:
    sup = Supervisor("gs-t")
    await sup.close()
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="closed"):
        sup.spawn(coro, "late")


# -- every loop of a world ---------------------------------------------------------------------

# (name of the loop as it appears in world.tasks.status()["loops"], how to make it crash)
Inject = Callable[[worldstate.World], None]


def _set(attr_path: str, fn: Any) -> Inject:
    def inject(world: worldstate.World) -> None:
        target: Any = world
        *parents, last = attr_path.split(".")
        for p in parents:
            target = getattr(target, p)
        setattr(target, last, fn)

    return inject


LOOPS: dict[str, Inject] = {
    "ws-renew": _set("authority.renew_all", aboom),
    "ws-heartbeat": _set("membership._beat", aboom),
    "ws-store-heartbeat": _set("membership._store_beat", aboom),
    "ws-eventual-tick": _set("eventual.tick", aboom),
    "ws-eventual-snapshot": _set("eventual._snapshot_quietly", aboom),
    "ws-causal-repair": _set("causal.repair", aboom),
    "ws-causal-heads": _set("causal._announce", aboom),
    "ws-causal-append": _set("causal._append", aboom),
    "ws-strong-regions": _set("strong.regions.commit_group", aboom),
    "ws-strong-notices": _set("strong.after_commit", aboom),
    "ws-shard-renew": _set("strong.inventories.renew", aboom),
}


def _fast(world: worldstate.World) -> None:
    world.causal.repair_interval = 0.05
    world.causal.head_interval = 0.05


@pytest.mark.parametrize("loop", sorted(LOOPS))
async def test_a_crash_in_any_loop_fails_the_world_loudly(
    loop: str, sqlite_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_world(
        sqlite_url,
        namespace=namespace,
        bus_url=f"memory://{namespace}",
        heartbeat_interval=0.05,
        lease_ttl=2.0,
        lease_renew_interval=0.05,
        clock_skew_margin=0.1,
        snapshot_interval=0.05,
        partition_timeout=1.0,
    ) as world:
        _fast(world)
        await world.acquire_region(K)
        names = world.tasks.status()["loops"]
        if loop != "ws-region":  # a region's pipeline starts with its first strong op
            assert any(n.startswith(loop) for n in names), names
        stream = world.updates()
        LOOPS[loop](world)
        with caplog.at_level(logging.ERROR):
            # something for the loops that only run on work: a strong op, a causal op
            place = PlaceStructure(
                structure_id="w1", kind="wall", lo=(10, 10, 10), hi=(12, 12, 12), owner="p"
            )
            strong = asyncio.ensure_future(world.submit(place, timeout=3.0))
            if loop == "ws-causal-append":
                with pytest.raises(WorldClosed) as ce:
                    await world.submit(
                        EmitEvent(position=(5, 5, 5), stream="q", payload={}), timeout=3.0
                    )
                assert isinstance(ce.value.cause, Injected)
            await until(lambda: world.tasks.failure is not None, "the world fails", 3)
            try:
                await asyncio.wait_for(strong, 3)
            except WorldClosed as e:
                assert e.cause is world.tasks.failure
            except SubmitTimeout:  # pragma: no cover - would mean a hang: fail loudly
                raise
        assert isinstance(world.tasks.failure, Injected)
        assert world.health()["ok"] is False
        assert "Injected" in (world.stats()["tasks"]["failure"] or "")
        with pytest.raises(WorldClosed) as ei:
            async with asyncio.timeout(3):
                async for _ in stream:
                    pass
        assert ei.value.cause is world.tasks.failure
        with pytest.raises(WorldClosed) as later:
            await world.submit(place)
        assert later.value.cause is world.tasks.failure
        assert "Traceback" in caplog.text and loop in caplog.text
    # leaving the `async with` closed it: no hang (the test's own timeout would say so)


async def test_a_crashed_world_still_closes_cleanly(sqlite_url: str, namespace: str) -> None:
    world = await worldstate.connect(
        sqlite_url, server_id="gs-c", bus=f"memory://{namespace}"
    ).__aenter__()
    world.eventual.tick = aboom  # type: ignore[method-assign]
    await until(lambda: world.tasks.failure is not None, "the world fails", 3)
    await asyncio.wait_for(world.close(), 10)
    await asyncio.wait_for(world.close(), 1)  # idempotent
    assert world.health()["closed"] is True

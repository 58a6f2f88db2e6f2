"""The mesh coordinator on the in-process bus: placement, reassignment after a partition
(epoch + 1), election and take-over, hand-off without losing strong writes or eventual
state, rebalancing with hysteresis, refused commands, the CLI and the simulation."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from regions import RegionKey
from tests.fix_services import Backend
from worldstate import (
    Committed,
    Fenced,
    HandoffFailed,
    MeshCoordinator,
    NotAuthoritative,
    PlaceStructure,
    RegionSnapshot,
    ValidationError,
    World,
    WorldStateError,
)
from worldstate.demo._simulation import SimulationSettings, run_partition_scenario

from .fix_mesh import Mesh, config_for, keys, mesh, until

FIVE = ("gs-1", "gs-2", "gs-3", "gs-4", "gs-5")


def sqlite_backend(sqlite_url: str, namespace: str) -> Backend:
    return Backend("sqlite", sqlite_url, "memory://", namespace)


def place(sid: str, key: RegionKey, slot: int) -> PlaceStructure:
    """A 4 m structure in its own 10 m slot of ``key`` (no two slots overlap)."""
    lo, _ = key.bounds
    x, y = lo[0] + 10 + (slot % 150) * 10, lo[1] + 10 + (slot // 150) * 10
    return PlaceStructure(structure_id=sid, lo=(x, y, 10.0), hi=(x + 4, y + 4, 14.0))


def owned(m: Mesh, ks: Sequence[RegionKey]) -> dict[RegionKey, str]:
    got = m.acting.owners()
    return {k: got[k].owner for k in ks if k in got}


async def test_registered_regions_are_placed_evenly(backend: Backend) -> None:
    ids = ("gs-1", "gs-2", "gs-3")
    async with mesh(backend, ids) as m:
        ks = keys(6)
        await m.acting.register_regions(ks)
        await until(lambda: len(owned(m, ks)) == 6, "all six placed")
        per = {s: list(owned(m, ks).values()).count(s) for s in ids}
        assert per == {"gs-1": 2, "gs-2": 2, "gs-3": 2}
        for k, sid in owned(m, ks).items():

            def held(k: RegionKey = k, sid: str = sid) -> bool:
                return m.holders(k) == [sid]

            await until(held, f"{sid} holds {k}")


async def test_minority_regions_are_reassigned_with_a_higher_epoch(backend: Backend) -> None:
    async with mesh(backend, FIVE) as m:
        coord = m.acting
        ks = keys(10)
        await coord.register_regions(ks)
        await until(lambda: len(owned(m, ks)) == 10, "all placed")
        before = coord.owners()
        minority = ("gs-4", "gs-5")
        lost = [k for k in ks if before[k].owner in minority]
        assert lost
        stale = await m[before[lost[0]].owner].load_region(lost[0])
        m.hub.partition([set(minority)])
        await until(lambda: m.demoted(minority), "the minority demotes")
        await until(
            lambda: all(
                (le := coord.owners().get(k)) is not None
                and le.owner not in minority
                and le.epoch > before[k].epoch
                for k in lost
            ),
            "the minority's regions are reassigned after their leases expire",
        )
        for k in ks:
            assert len(m.holders(k)) <= 1
        # the old owner can no longer write its former region, by any path
        old = m[before[lost[0]].owner]
        with pytest.raises(NotAuthoritative):
            await old.submit(place("late", lost[0], 1))
        with pytest.raises(Fenced):
            await old.store_region(stale, expected_version=None)
        # heal: everyone authoritative again, and the healed servers get regions again
        m.hub.heal()
        await until(lambda: m.authoritative(FIVE), "all authoritative after the heal")
        await until(lambda: set(coord.eligible()) == set(FIVE), "all eligible")
        await until(lambda: coord.membership()["members"] == list(FIVE), "all members")
        moves = await coord.rebalance()
        assert {mv.to_server for mv in moves} == set(minority)
        per = {s: list(owned(m, ks).values()).count(s) for s in FIVE}
        assert all(n == 2 for n in per.values()), per
        for k in ks:

            def one_holder(k: RegionKey = k) -> bool:
                return len(m.holders(k)) == 1

            await until(one_holder, f"one holder of {k}")


async def test_one_coordinator_acts_and_a_standby_takes_over(
    sqlite_url: str, namespace: str
) -> None:
    backend = sqlite_backend(sqlite_url, namespace)
    async with mesh(backend, ("gs-1", "gs-2"), coordinators=("coord-a", "coord-b")) as m:
        first = m.acting
        standby = next(c for c in m.coordinators if c is not first)
        assert not standby.acting
        assert standby.membership()["coordinator"] == first.coordinator_id
        with pytest.raises(NotAuthoritative):
            await standby.handoff(RegionKey(0, 0, 0), "gs-1")
        # a clean stop gives the lease up: the standby takes over at its next cycle
        await first.close()
        m.coordinators.remove(first)
        await until(lambda: standby.acting, "the standby takes over")
        assert standby.epoch >= 2
        await standby.assign(RegionKey(0, 0, 0), "gs-1")
        # a crash leaves the lease to expire; then the next one takes over
        third = await m.coordinator("coord-c")
        await standby.close(release=False)
        m.coordinators.remove(standby)
        await until(lambda: third.acting, "the third takes over after the lease expires")
        assert third.epoch > 2
        lease = await third.handoff(RegionKey(0, 0, 0), "gs-2")
        assert lease.owner == "gs-2"


async def test_handoff_loses_no_acknowledged_strong_write(backend: Backend) -> None:
    async with mesh(backend, ("gs-1", "gs-2")) as m:
        coord = m.acting
        k = RegionKey(0, 0, 0)
        first = await coord.assign(k, "gs-1")
        acked: list[str] = []
        stop = asyncio.Event()

        async def writer(w: World, prefix: str, start: int) -> None:
            slot = start
            while not stop.is_set():
                op = place(f"{prefix}-{slot}", k, slot)
                for _attempt in range(50):  # the same op_id until it is decided
                    try:
                        r = await w.submit(op)
                    except WorldStateError:  # NotAuthoritative, BusUnavailable: in transit
                        await asyncio.sleep(0.02)
                        continue
                    if isinstance(r, Committed):
                        acked.append(op.structure_id)
                    break
                slot += 2

        tasks = [
            asyncio.create_task(writer(m["gs-1"], "a", 0)),
            asyncio.create_task(writer(m["gs-2"], "b", 1)),
        ]
        epochs = [first.epoch]
        try:
            for target in ("gs-2", "gs-1", "gs-2"):
                await until(lambda: len(acked) >= 3 * len(epochs), "writes flow")
                lease = await coord.handoff(k, target)
                assert lease.owner == target
                epochs.append(lease.epoch)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        assert epochs == list(range(epochs[0], epochs[0] + 4))  # + 1 per hand-off
        snap = await m["gs-2"].load_region(k)
        stored = {o.id for o in snap.objects}
        assert acked and set(acked) <= stored
        assert snap.epoch == epochs[-1] and snap.owner == "gs-2"
        # the previous owner's write under its old epoch is fenced
        with pytest.raises(Fenced):
            stale = RegionSnapshot(k, snap.version, "gs-1", epochs[-2], ())
            await m["gs-1"].store_region(stale, expected_version=None)


async def test_clean_handoff_carries_eventual_state(sqlite_url: str, namespace: str) -> None:
    backend = sqlite_backend(sqlite_url, namespace)
    async with mesh(backend, ("gs-1", "gs-2")) as m:
        coord = m.acting
        k = RegionKey(0, 0, 0)
        await coord.assign(k, "gs-1")
        lo, _ = k.bounds
        ids = np.arange(100, 120, dtype=np.int64)
        pos = np.column_stack(
            [lo[0] + 5 + np.arange(20) * 10.0, np.full(20, lo[1] + 7), np.full(20, lo[2] + 9)]
        )
        m["gs-1"].move_entities(ids, pos)
        await coord.handoff(k, "gs-2")
        snap = await m["gs-2"].load_region(k)
        creatures = {o.id for o in snap.objects if o.kind == "creature"}
        assert creatures == {f"creature:{i}" for i in range(100, 120)}
        assert m["gs-2"].eventual.positions.contains(ids).all()


async def test_rebalance_moves_load_with_hysteresis(sqlite_url: str, namespace: str) -> None:
    backend = sqlite_backend(sqlite_url, namespace)
    async with mesh(backend, ("gs-1", "gs-2")) as m:
        coord = m.acting
        ks = keys(6)
        for k in ks:
            await coord.assign(k, "gs-1")
        moves = await coord.rebalance()
        assert len(moves) == 3
        assert all(mv.from_server == "gs-1" and mv.to_server == "gs-2" for mv in moves)
        per = {s: list(owned(m, ks).values()).count(s) for s in ("gs-1", "gs-2")}
        assert per == {"gs-1": 3, "gs-2": 3}
        assert await coord.rebalance() == []  # balanced: nothing moves back and forth
        # a small imbalance stays put (hysteresis); moved regions stay put (cooldown)
        extra = RegionKey(0, 1, 0)
        await coord.assign(extra, "gs-2")
        assert await coord.rebalance() == []


async def test_commands_are_validated_and_refused(sqlite_url: str, namespace: str) -> None:
    backend = sqlite_backend(sqlite_url, namespace)
    async with mesh(backend, ("gs-1", "gs-2")) as m:
        coord = m.acting
        with pytest.raises(ValidationError):
            await coord.assign((1, 2), "gs-1")  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            await coord.assign(RegionKey(0, 0, 0), "gs/1")
        with pytest.raises(HandoffFailed, match="not a live"):
            await coord.handoff(RegionKey(0, 0, 0), "gs-9")  # nobody there
        assert not m.holders(RegionKey(0, 0, 0))
        # a server that has seen a newer coordinator epoch refuses older commands
        m["gs-1"].commands.coordinator_epoch = coord.epoch + 100
        with pytest.raises(HandoffFailed, match="coordinator epoch"):
            await coord.assign(RegionKey(1, 0, 0), "gs-1")
        m["gs-1"].commands.coordinator_epoch = 0
        # a demoted server refuses to take regions
        m.hub.partition([{"gs-2"}])
        await until(lambda: not m["gs-2"].authoritative, "gs-2 demotes")
        await until(lambda: "gs-2" not in coord.eligible(), "gs-2 is not eligible")
        await coord.assign(RegionKey(2, 0, 0), "gs-1")
        with pytest.raises(HandoffFailed, match="not a live"):
            await coord.handoff(RegionKey(2, 0, 0), "gs-2")
        assert m.holders(RegionKey(2, 0, 0)) == ["gs-1"]  # it stays where it was
        with pytest.raises(ValidationError):
            MeshCoordinator("not a config")  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            MeshCoordinator(config_for(backend), hysteresis=-1)


async def test_dead_members_leave_the_membership(sqlite_url: str, namespace: str) -> None:
    backend = sqlite_backend(sqlite_url, namespace)
    ids = ("gs-1", "gs-2", "gs-3")
    async with mesh(backend, ids) as m:
        coord = m.acting
        gen = coord.membership()["generation"]
        await m["gs-3"].close()  # a clean leave
        await until(lambda: coord.membership()["members"] == ["gs-1", "gs-2"], "gs-3 left")
        assert coord.membership()["generation"] > gen
        await m.open("gs-3")  # and it comes back
        await until(lambda: coord.membership()["members"] == list(ids), "gs-3 rejoined")
        await until(lambda: m.authoritative(ids), "all authoritative")


def test_coordinator_cli_runs_until_sigterm(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    env = {**os.environ, "WORLDSTATE_HEARTBEAT_INTERVAL": "0.1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worldstate.cli.main",
            "coordinator",
            "--store",
            url,
            "--bus",
            "memory://",
            "--namespace",
            f"cli{uuid.uuid4().hex[:8]}",
            "--id",
            "coord-cli",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "acting" in line:
                break
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert any("coord-cli: acting" in line for line in lines)
    assert "stopped" in err


async def test_simulated_partition_loses_nothing(sqlite_url: str) -> None:
    report = await run_partition_scenario(
        sqlite_url, SimulationSettings(servers=3, regions_per_server=1)
    )
    assert report["split"] == "2|1"
    assert report["lost"] == 0 and report["acknowledged"] > 0
    assert report["refused_on_minority"] > 0
    assert report["timing"]["partition_timeout"] > 0


async def test_automatic_rebalance_gives_a_new_server_regions(
    sqlite_url: str, namespace: str
) -> None:
    backend = sqlite_backend(sqlite_url, namespace)
    async with mesh(backend, ("gs-1",), coordinators=()) as m:
        coord = await m.coordinator("coord-auto", rebalance_interval=0.5)
        await until(lambda: coord.acting and coord.eligible() == ["gs-1"], "acting")
        ks = keys(4)
        await coord.register_regions(ks)
        await until(lambda: len(owned(m, ks)) == 4, "all on gs-1")
        await m.open("gs-2")  # joins; the next automatic rebalance moves two regions over
        await until(
            lambda: sorted(owned(m, ks).values()) == ["gs-1", "gs-1", "gs-2", "gs-2"],
            "rebalanced automatically",
        )

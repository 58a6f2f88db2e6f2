"""The mesh for real: game-server processes (`tests.integration.mesh_server`) on PostgreSQL
and Mosquitto, a mesh coordinator in the test process, TCP proxies in front of the broker
to partition groups of servers. Checks what the acknowledged-writes files promise against
the store at the end: no acknowledged strong write is ever lost.

(a) kill -9 a region owner: its regions are reassigned, at a higher epoch.
(b) a bus partition 3|2: the two demote, the three take their regions, all converge after.
(c) 2|2 with the lowest id on one side: that side keeps authority.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from regions import RegionKey
from tests.fix_mqtt_proxy import MqttProxy, MqttProxyFactory
from worldstate import Config, MeshCoordinator
from worldstate.bus import open_bus
from worldstate.store import Store, schema

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]
TIMING: dict[str, Any] = {
    "heartbeat_interval": 0.2,
    "partition_timeout": 1.5,
    "lease_ttl": 2.0,
    "lease_renew_interval": 0.5,
}
DEADLINE = 60.0


@dataclass
class Server:
    server_id: str
    proc: subprocess.Popen[bytes]
    acks: Path
    status_path: Path
    log: Path

    def status(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {}
        return doc

    @property
    def authoritative(self) -> bool:
        s = self.status()
        return bool(s.get("authoritative")) and time.time() - s.get("t", 0) < 5

    def acked(self) -> set[str]:
        try:
            text = self.acks.read_text()
        except OSError:
            return set()
        return {line.split()[0] for line in text.splitlines() if line.strip()}


@dataclass
class Mesh:
    store_url: str
    namespace: str
    tmp: Path
    servers: dict[str, Server] = field(default_factory=dict)
    coordinator: MeshCoordinator | None = None

    def start(self, server_id: str, index: int, bus_url: str) -> Server:
        acks = self.tmp / f"{server_id}.acks"
        status = self.tmp / f"{server_id}.status"
        log = self.tmp / f"{server_id}.log"
        env = {**os.environ, **{f"WORLDSTATE_{k.upper()}": str(v) for k, v in TIMING.items()}}
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.mesh_server",
                    "--server-id",
                    server_id,
                    "--index",
                    str(index),
                    "--store",
                    self.store_url,
                    "--bus",
                    bus_url,
                    "--namespace",
                    self.namespace,
                    "--acks",
                    str(acks),
                    "--status",
                    str(status),
                    "--rate",
                    "25",
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = Server(server_id, proc, acks, status, log)
        self.servers[server_id] = server
        return server

    @property
    def coord(self) -> MeshCoordinator:
        assert self.coordinator is not None
        return self.coordinator

    def owners(self) -> dict[RegionKey, tuple[str, int]]:
        return {k: (le.owner, le.epoch) for k, le in self.coord.owners().items()}

    def authoritative(self, ids: Sequence[str]) -> bool:
        return all(self.servers[s].authoritative for s in ids)

    def demoted(self, ids: Sequence[str]) -> bool:
        now = time.time()
        for sid in ids:
            s = self.servers[sid].status()
            if s.get("authoritative", True) or now - s.get("t", 0) > 5:
                return False
        return True

    def logs(self) -> str:
        return "\n".join(
            f"--- {s.server_id}\n{s.log.read_text(errors='replace')[-3000:]}"
            for s in self.servers.values()
        )


async def until(cond: Any, what: str, mesh: Mesh, timeout: float = DEADLINE) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout} s\n{mesh.logs()}")
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


@asynccontextmanager
async def running_mesh(
    pg_url: str,
    mqtt_url: str,
    namespace: str,
    tmp: Path,
    groups: Sequence[tuple[MqttProxy | None, Sequence[str]]],
    regions: int,
) -> AsyncIterator[Mesh]:
    """Start the servers (each group through its proxy, or straight to the broker), a
    coordinator straight to the broker, register ``regions`` regions and wait until every
    one is placed; stop everything afterwards and clear the retained messages."""
    mesh = Mesh(pg_url, namespace, tmp)
    ids = [sid for _, members in groups for sid in members]
    t0 = time.monotonic()
    store = Store(pg_url)
    await store.open()  # the schema, before six processes race to create it
    await store.close()
    index = 0
    for proxy, members in groups:
        for sid in members:
            mesh.start(sid, index, proxy.url if proxy is not None else mqtt_url)
            index += 1
    config = Config(store_url=pg_url, bus_url=mqtt_url, namespace=namespace, **TIMING)
    coord = MeshCoordinator(config, coordinator_id="coord-test")
    try:
        await coord.start()
        mesh.coordinator = coord
        await until(lambda: coord.acting, "the coordinator acts", mesh)
        await until(
            lambda: (
                coord.membership()["members"] == sorted(ids) and set(coord.eligible()) == set(ids)
            ),
            "every server is a member",
            mesh,
        )
        await coord.register_regions([RegionKey(i, 0, 0) for i in range(regions)])
        await until(lambda: len(coord.owners()) == regions, "every region placed", mesh)
        print(f"mesh of {len(ids)} up, {regions} regions placed in {time.monotonic() - t0:.1f} s")
        yield mesh
    finally:
        for s in mesh.servers.values():
            if s.proc.poll() is None:
                s.proc.send_signal(signal.SIGTERM)
        for s in mesh.servers.values():
            try:
                await asyncio.to_thread(s.proc.wait, 30)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                await asyncio.to_thread(s.proc.wait)
        await coord.close()
        bus = open_bus(mqtt_url, client_id=f"cleanup-{namespace}", prefix=namespace)
        async with bus:
            await bus.publish("mesh/membership", b"", qos=1, retain=True)


async def check_no_acknowledged_write_lost(mesh: Mesh) -> int:
    acked: set[str] = set()
    for s in mesh.servers.values():
        acked |= s.acked()
    store = Store(mesh.store_url)
    try:
        t = schema.objects

        async def body(c: Any) -> set[str]:
            return {r[0] for r in (await c.execute(select(t.c.object_id))).all()}

        stored = await store.run(body, "list objects", read=True)
    finally:
        await store.close()
    missing = acked - stored
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:5]}"
    return len(acked)


async def test_killed_owner_regions_are_reassigned_and_nothing_acked_is_lost(
    pg_url: str, mqtt_url: str, namespace: str, tmp_path: Path
) -> None:
    ids = ("gs-1", "gs-2", "gs-3", "gs-4", "gs-5")
    async with running_mesh(pg_url, mqtt_url, namespace, tmp_path, [(None, ids)], 10) as mesh:
        await until(lambda: all(s.acked() for s in mesh.servers.values()), "ops flow", mesh)
        before = mesh.owners()
        victim = before[RegionKey(0, 0, 0)][0]
        lost = [k for k, (owner, _) in before.items() if owner == victim]
        os.kill(mesh.servers[victim].proc.pid, signal.SIGKILL)
        took = await until(
            lambda: all(
                (o := mesh.owners().get(k)) is not None and o[0] != victim and o[1] > before[k][1]
                for k in lost
            ),
            "the killed owner's regions are reassigned",
            mesh,
        )
        print(
            f"reassigned {len(lost)} regions {took:.2f} s after kill -9 (TTL {TIMING['lease_ttl']})"
        )
        await until(
            lambda: victim not in mesh.coord.membership()["members"], "victim dropped", mesh
        )
        survivors = [s for s in ids if s != victim]
        counts = {s: len(mesh.servers[s].acked()) for s in survivors}
        await until(
            lambda: all(len(mesh.servers[s].acked()) > counts[s] for s in survivors),
            "ops keep flowing",
            mesh,
        )
    n = await check_no_acknowledged_write_lost(mesh)
    assert n > 0


async def test_bus_partition_3_2_minority_demotes_and_all_converge(
    pg_url: str,
    mqtt_url: str,
    namespace: str,
    tmp_path: Path,
    mqtt_proxy_factory: MqttProxyFactory,
) -> None:
    a, b = await mqtt_proxy_factory(), await mqtt_proxy_factory()
    majority, minority = ("gs-1", "gs-2", "gs-3"), ("gs-4", "gs-5")
    groups = [(a, majority), (b, minority)]
    async with running_mesh(pg_url, mqtt_url, namespace, tmp_path, groups, 10) as mesh:
        await until(lambda: all(s.acked() for s in mesh.servers.values()), "ops flow", mesh)
        before = mesh.owners()
        lost = [k for k, (owner, _) in before.items() if owner in minority]
        await b.cut()
        took = await until(lambda: mesh.demoted(minority), "the minority demotes", mesh)
        print(
            f"minority demoted {took:.2f} s after the cut (partition timeout "
            f"{TIMING['partition_timeout']} + heartbeat {TIMING['heartbeat_interval']})"
        )
        assert mesh.authoritative(majority)
        await until(
            lambda: all(
                (o := mesh.owners().get(k)) is not None and o[0] in majority and o[1] > before[k][1]
                for k in lost
            ),
            "the majority takes the minority's regions",
            mesh,
        )
        await b.restore()
        took = await until(lambda: mesh.authoritative(majority + minority), "all converge", mesh)
        print(f"all authoritative {took:.2f} s after the heal")
        await until(
            lambda: (
                set(mesh.coord.eligible()) == set(majority + minority)
                and len(mesh.coord.membership()["members"]) == 5
            ),
            "all members again",
            mesh,
        )
        moves = await mesh.coord.rebalance()
        assert {m.to_server for m in moves} == set(minority)
        await until(
            lambda: all(mesh.servers[s].status().get("leases") for s in minority),
            "the healed servers hold regions again",
            mesh,
        )
    await check_no_acknowledged_write_lost(mesh)


async def test_half_with_the_lowest_id_keeps_authority(
    pg_url: str,
    mqtt_url: str,
    namespace: str,
    tmp_path: Path,
    mqtt_proxy_factory: MqttProxyFactory,
) -> None:
    a, b = await mqtt_proxy_factory(), await mqtt_proxy_factory()
    low, high = ("gs-1", "gs-2"), ("gs-3", "gs-4")
    async with running_mesh(
        pg_url, mqtt_url, namespace, tmp_path, [(a, low), (b, high)], 6
    ) as mesh:
        await b.cut()
        await until(lambda: mesh.demoted(high), "the half without gs-1 demotes", mesh)
        assert mesh.authoritative(low)
        for sid in low:  # never demoted, not even for a moment
            assert mesh.servers[sid].status()["partition"]["demotions"] == 0
        await until(
            lambda: {o for o, _ in mesh.owners().values()} <= set(low) and len(mesh.owners()) == 6,
            "the lowest half holds every region",
            mesh,
        )
        for sid in low:
            assert mesh.servers[sid].status()["partition"]["demotions"] == 0
        await b.restore()
        await until(lambda: mesh.authoritative(low + high), "all converge", mesh)
    await check_no_acknowledged_write_lost(mesh)

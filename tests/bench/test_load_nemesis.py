"""The load harness's fault injection (`bench.load._nemesis`) against a scripted mesh (no
processes, no services): a healed partition or a restarted broker is rebalanced only once
the coordinator hears every server, a rebalance that fails is reported, and the db fault
waits only for the servers that have players to act for."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.load import _nemesis as nemesis
from bench.load._nemesis import Fault

SERVERS = ["gs-1", "gs-2", "gs-3", "gs-4"]


class ScriptedMesh:
    """Four servers and 8 regions. A cut server demotes and loses its regions at once; after
    the heal it is authoritative at once but the coordinator hears it only after a few
    polls (as when its next heartbeat has not arrived yet); a rebalance gives it one region
    if it is eligible then."""

    def __init__(self, *, eligible_after: int = 3, rebalance_fails: bool = False) -> None:
        self._t0 = time.time()
        self.cut_off: set[str] = set()
        self.unheard: dict[str, int] = {}
        self.eligible_after = eligible_after
        self.rebalance_fails = rebalance_fails
        self.placement = {m: SERVERS[m % 4] for m in range(8)}
        self.rebalanced_while_unheard = 0
        self.db_killed = False
        self.commits = dict.fromkeys(SERVERS, 0)

    @property
    def t0(self) -> float:
        return self._t0

    def kill(self, server: str) -> None:
        raise AssertionError("not in this test")

    async def restart(self, server: str) -> None:
        raise AssertionError("not in this test")

    async def cut(self, server: str) -> None:
        self.cut_off.add(server)
        for m, o in self.placement.items():
            if o == server:
                self.placement[m] = "gs-1"

    async def heal(self, server: str) -> None:
        self.cut_off.discard(server)
        self.unheard[server] = self.eligible_after

    async def restart_broker(self) -> bool:
        # every lease ran out; gs-2 reconnects last, after its regions went to the others
        for m, o in self.placement.items():
            if o == "gs-2":
                self.placement[m] = "gs-1"
        self.unheard["gs-2"] = self.eligible_after
        return True

    async def kill_db_connections(self) -> int | None:
        self.db_killed = True
        return 5

    def owners(self) -> dict[int, str]:
        return dict(self.placement)

    def eligible(self) -> list[str]:
        out = []
        for s in SERVERS:
            if s in self.cut_off:
                continue
            if self.unheard.get(s, 0) > 0:
                self.unheard[s] -= 1  # heard after a few more polls
                continue
            out.append(s)
        return out

    def all_regions(self) -> int:
        return len(self.placement)

    def status(self) -> dict[str, dict[str, Any]]:
        out = {}
        for s in SERVERS:
            cells = [m for m, o in self.placement.items() if o == s]
            if self.db_killed and cells:
                self.commits[s] += 1  # servers with players commit again
            out[s] = {
                "authoritative": s not in self.cut_off,
                "bus_connected": True,
                "age": 0.1,
                "cells": cells,
                "ok": {"build": self.commits[s]},
            }
        return out

    async def rebalance(self) -> int:
        if self.rebalance_fails:
            raise RuntimeError("the coordinator is not acting")
        idle = [s for s in self.eligible() if s not in self.placement.values()]
        unheard = [s for s in SERVERS if s not in self.cut_off and s not in self.eligible()]
        self.rebalanced_while_unheard += len(unheard)
        for s in idle:
            m = next(m for m, o in self.placement.items() if o == "gs-1")
            self.placement[m] = s
        return len(idle)


async def test_a_healed_partition_is_rebalanced_once_the_side_is_heard() -> None:
    mesh = ScriptedMesh()
    fault = Fault("partition", at=0.0, length=0.2, target="gs-3")
    async with asyncio.timeout(30):
        await nemesis.run(mesh, [fault], lambda _: None)
    assert fault.note is None
    assert fault.recovered_s is not None and fault.ended is not None
    assert fault.details["eligible_s"] is not None
    assert mesh.rebalanced_while_unheard == 0
    assert fault.details["moved_back"] == 1
    assert fault.details["held_after"] == 1  # the healed side holds regions again


async def test_a_failed_rebalance_is_reported() -> None:
    mesh = ScriptedMesh(eligible_after=0, rebalance_fails=True)
    fault = Fault("partition", at=0.0, length=0.2, target="gs-3")
    async with asyncio.timeout(30):
        await nemesis.run(mesh, [fault], lambda _: None)
    assert fault.recovered_s is not None
    assert fault.note is not None and "not acting" in fault.note


async def test_a_restarted_broker_is_rebalanced_once_every_server_is_heard() -> None:
    mesh = ScriptedMesh()
    fault = Fault("broker", at=0.0)
    async with asyncio.timeout(30):
        await nemesis.run(mesh, [fault], lambda _: None)
    assert fault.note is None and fault.recovered_s is not None
    assert mesh.rebalanced_while_unheard == 0
    assert fault.details["moved_back"] == 1
    assert fault.details["servers_without_regions"] == []


async def test_the_db_fault_waits_for_the_servers_with_players_only() -> None:
    mesh = ScriptedMesh()
    mesh.placement = {m: ("gs-1", "gs-3", "gs-4")[m % 3] for m in range(8)}  # gs-2: none
    fault = Fault("db", at=0.0)
    async with asyncio.timeout(30):
        await nemesis.run(mesh, [fault], lambda _: None)
    assert fault.note is None
    assert fault.details["servers"] == ["gs-1", "gs-3", "gs-4"]
    assert fault.recovered_s is not None

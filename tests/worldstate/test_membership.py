"""Membership and split brain on the in-process bus (the hub partitions, heals and kills):
heartbeats, views, the verdict of each side, demotion and promotion, bootstrap, clean
leaves, last wills, malformed presences."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import orjson
import pytest

from regions import RegionKey
from tests.fix_services import Backend
from worldstate import Committed, NotAuthoritative, PlaceStructure
from worldstate.bus import Message
from worldstate.mesh._agent import (
    Departure,
    Presence,
    RegionLoad,
    decode_membership,
    decode_presence,
    encode_goodbye,
    encode_membership,
)
from worldstate.protocol._envelope import parse as parse_envelope
from worldstate.store import Store, mesh_state
from worldstate.store.mesh_state import AgreedMembership

from .fix_mesh import TIMING, keys, mesh, until

FIVE = ("gs-1", "gs-2", "gs-3", "gs-4", "gs-5")


def place(sid: str, key: RegionKey, offset: float = 10.0) -> PlaceStructure:
    lo, _ = key.bounds
    a = (lo[0] + offset, lo[1] + offset, lo[2] + 10.0)
    return PlaceStructure(structure_id=sid, lo=a, hi=(a[0] + 4, a[1] + 4, a[2] + 4))


# -- wire format -----------------------------------------------------------------------------


def test_presence_round_trip() -> None:
    p = Presence("gs-1", 7, 1_800_000_000.5, True, 3, {5: RegionLoad(10, 2.5)})
    got = decode_presence(Message("members/gs-1", p.encode(), retain=True))
    assert got == p
    assert decode_presence(Message("members/gs-1", b"")) == Departure("gs-1")
    bye = decode_presence(Message("members/gs-1", encode_goodbye("gs-1", 7)))
    assert bye == Departure("gs-1", 7, clean=True)
    m = AgreedMembership(4, frozenset({"gs-1", "gs-2"}), 12.0, "coord-a")
    assert decode_membership(encode_membership(m)) == m


def _doc(**changes: Any) -> bytes:
    doc: dict[str, Any] = {"s": "gs-1", "i": 1, "at": 1.0, "a": True, "g": 0, "l": []}
    doc.update(changes)
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("members/gs-1", b"not json"),
        ("members/gs-1", b"[1, 2]"),
        ("members/gs-1", _doc(s="gs-2")),  # forged: names another server
        ("members/gs-1", _doc(a="yes")),
        ("members/gs-1", _doc(i=-1)),
        ("members/gs-1", b'{"s": "gs-1", "i": 1, "at": "x", "a": true, "g": 0}'),
        ("members/gs-1", _doc(l=[[1, 2]])),
        ("members/gs-1", _doc(l=[[-5, 1, 1.0]])),
        ("members/gs-1", _doc(l="many")),
        ("members/gs-1", b"x" * 300_000),
        ("members/a/b", _doc()),
        ("other/gs-1", _doc()),
    ],
)
def test_malformed_presence_is_refused(topic: str, payload: bytes) -> None:
    with pytest.raises(ValueError):
        decode_presence(Message(topic, payload))


# -- in a mesh -------------------------------------------------------------------------------


async def test_without_a_coordinator_every_server_keeps_authority(backend: Backend) -> None:
    ids = ("gs-1", "gs-2", "gs-3")
    async with mesh(backend, ids, coordinators=()) as m:
        await until(
            lambda: all(set(m[s].partition_status()["view"]) == set(ids) for s in ids),
            "every server hears every other",
        )
        for sid in ids:
            status = m[sid].partition_status()
            assert status["majority"] is True and m[sid].authoritative
            assert status["membership"] == [] and status["generation"] == 0
            assert {"view", "majority", "since", "membership", "reason"} <= status.keys()
        # a partition changes nothing while no membership was ever agreed
        m.hub.partition([{"gs-3"}])
        await until(lambda: m["gs-1"].partition_status()["view"] == ["gs-1", "gs-2"], "view")
        assert m.authoritative(ids)


async def test_minority_demotes_and_majority_keeps_authority(backend: Backend) -> None:
    async with mesh(backend, FIVE) as m:
        k1, k4 = RegionKey(0, 0, 0), RegionKey(1, 0, 0)
        await m.acting.assign(k1, "gs-1")
        await m.acting.assign(k4, "gs-4")
        minority = ("gs-4", "gs-5")
        m.hub.partition([set(minority)])
        await until(lambda: m.demoted(minority), "the minority demotes")
        assert m.authoritative(("gs-1", "gs-2", "gs-3"))
        status = m["gs-4"].partition_status()
        assert status["majority"] is False
        assert set(status["view"]) <= set(minority)
        assert "no majority" in status["reason"]
        # strong writes: refused on the minority, anywhere; committed on the majority
        for target in (k1, k4):
            with pytest.raises(NotAuthoritative):
                await m["gs-4"].submit(place(f"min-{target.morton}", target))
        assert isinstance(await m["gs-1"].submit(place("maj-1", k1)), Committed)
        # the minority's leases are not renewed: they run out
        await until(lambda: not m["gs-4"].leases(), "the minority's leases lapse")
        # heal: everyone hears a majority again
        m.hub.heal()
        await until(lambda: m.authoritative(FIVE), "all authoritative after the heal")
        assert m["gs-4"].partition_status()["majority"] is True
        assert m["gs-4"].membership.demotions == 1
        assert m["gs-4"].membership.promotions == 1


async def test_exact_half_with_the_lowest_id_keeps_authority(backend: Backend) -> None:
    ids = ("gs-1", "gs-2", "gs-3", "gs-4")
    async with mesh(backend, ids) as m:
        coord = m.acting
        # the coordinator sits with the side that lacks the lowest id
        m.hub.partition([{"gs-1", "gs-2"}, {"gs-3", "gs-4", coord.coordinator_id}])
        await until(lambda: m.demoted(("gs-3", "gs-4")), "the half without gs-1 demotes")
        assert m.authoritative(("gs-1", "gs-2"))
        assert "lowest" in m["gs-3"].partition_status()["reason"]
        await until(lambda: "lowest" in m["gs-1"].partition_status()["reason"], "gs-1's view")
        assert m.authoritative(("gs-1", "gs-2"))
        assert m["gs-1"].membership.demotions == m["gs-2"].membership.demotions == 0
        await until(lambda: not coord.acting, "the coordinator on the losing half stands down")
        assert coord.partition_status()["majority"] is False
        m.hub.heal()
        await until(lambda: m.authoritative(ids), "all authoritative after the heal")
        await until(lambda: coord.acting, "the coordinator acts again")


async def test_a_starting_server_is_not_authoritative_before_it_hears_a_majority(
    sqlite_url: str, namespace: str
) -> None:
    backend = Backend("sqlite", sqlite_url, "memory://", namespace)
    store = Store(sqlite_url)
    await store.open()
    try:
        await store.run(
            lambda c: mesh_state.write_membership(c, 0, {"gs-1", "gs-2", "gs-3"}, 1.0, "test"),
            "seed membership",
        )
    finally:
        await store.close()
    async with mesh(backend, coordinators=()) as m:
        a = await m.open("gs-1")
        # alone, against a recorded membership of three: not authoritative from the start
        assert not a.authoritative
        status = a.partition_status()
        assert status["majority"] is False and status["membership"] == ["gs-1", "gs-2", "gs-3"]
        with pytest.raises(NotAuthoritative):
            await a.submit(place("early", RegionKey(0, 0, 0)))
        await m.open("gs-2")
        await until(lambda: m.authoritative(("gs-1", "gs-2")), "two of three keep authority")


async def test_clean_leaves_do_not_count_against_the_majority(
    sqlite_url: str, namespace: str
) -> None:
    backend = Backend("sqlite", sqlite_url, "memory://", namespace)
    ids = ("gs-1", "gs-2", "gs-3")
    async with mesh(backend, ids) as m:
        await m.coordinators[0].close()  # nobody shrinks the membership from now on
        await m["gs-2"].close()
        await m["gs-3"].close()
        a = m["gs-1"]
        await until(lambda: a.membership.tracker.members() == {"gs-1"}, "the others left")
        # gs-1 alone holds every member that has not left: it keeps authority
        await asyncio.sleep(2 * TIMING["partition_timeout"])
        assert a.authoritative
        rows = {
            r.server_id: r for r in await a.store.run(mesh_state.member_rows, "rows", read=True)
        }
        assert rows["gs-2"].state == rows["gs-3"].state == "left"
        assert rows["gs-1"].state == "up" and rows["gs-1"].authoritative


async def test_a_killed_server_is_dropped_at_once_through_its_last_will(
    sqlite_url: str, namespace: str
) -> None:
    backend = Backend("sqlite", sqlite_url, "memory://", namespace)
    ids = ("gs-1", "gs-2", "gs-3")
    async with mesh(backend, ids) as m:
        retained = f"{namespace}/members/gs-3"
        assert retained in m.hub.retained_topics()
        m.hub.kill("gs-3")
        # the will replaced the presence with a signed, empty tombstone (a departure)
        kept = m.hub._retained[retained].payload
        assert parse_envelope(kept).will and not bytes(parse_envelope(kept).body)
        await until(lambda: "gs-3" not in m["gs-1"].partition_status()["view"], "gs-1's view")
        # the killed server hears only itself: 1 of 3, it demotes
        await until(lambda: not m["gs-3"].authoritative, "the killed server demotes")
        assert m.authoritative(("gs-1", "gs-2"))
        # the coordinator drops it from the agreed membership
        await until(lambda: m.acting.membership()["members"] == ["gs-1", "gs-2"], "gs-3 dropped")


async def test_malformed_presences_on_the_bus_are_dropped_and_counted(
    sqlite_url: str, namespace: str
) -> None:
    backend = Backend("sqlite", sqlite_url, "memory://", namespace)
    async with mesh(backend, ("gs-1", "gs-2"), coordinators=()) as m:
        a = m["gs-1"]
        before = a.membership.tracker.dropped
        for payload in (b"junk", _doc(s="gs-2"), b"{}"):
            await m["gs-2"].bus.publish("members/gs-9", payload)
        await m["gs-2"].bus.publish("mesh/membership", b'{"g": "x"}')
        # presences naming another server than their signer are dropped by the signing bus
        # (forged), the rest by the tracker (malformed)
        await until(
            lambda: a.membership.tracker.dropped + a.bus.stats.rejected["forged"] >= before + 4,
            "drops counted",
        )
        assert "gs-9" not in a.partition_status()["view"]
        assert a.authoritative and a.membership.tracker.agreed.generation == 0


async def test_store_heartbeats_record_each_server(backend: Backend) -> None:
    async with mesh(backend, ("gs-1", "gs-2"), coordinators=()) as m:
        await until(lambda: set(m["gs-1"].partition_status()["view"]) == {"gs-1", "gs-2"}, "view")
        store = m["gs-1"].store

        async def rows() -> dict[str, mesh_state.MemberRow]:
            got = await store.run(mesh_state.member_rows, "rows", read=True)
            return {r.server_id: r for r in got}

        first = await rows()
        assert set(first) == {"gs-1", "gs-2"}
        assert first["gs-1"].incarnation == m["gs-1"].membership.incarnation
        await asyncio.sleep(4 * TIMING["lease_renew_interval"])
        later = await rows()
        assert later["gs-1"].heartbeat_at > first["gs-1"].heartbeat_at
        assert set(later["gs-1"].view) == {"gs-1", "gs-2"}


async def test_load_reported_in_heartbeats(sqlite_url: str, namespace: str) -> None:
    backend = Backend("sqlite", sqlite_url, "memory://", namespace)
    async with mesh(backend, ("gs-1", "gs-2")) as m:
        k = keys(1)[0]
        await m.acting.assign(k, "gs-1")
        lo, _ = k.bounds
        ids = np.arange(1, 51, dtype=np.int64)
        pos = np.tile(np.array([lo[0] + 50, lo[1] + 50, lo[2] + 50]), (50, 1))
        m["gs-1"].move_entities(ids, pos)
        for i in range(5):
            await m["gs-1"].submit(place(f"load-{i}", k, 10.0 + 8 * i))
        await until(
            lambda: (
                (p := m.acting.tracker.peers.get("gs-1")) is not None
                and p.load.get(k.morton, RegionLoad()).entities == 50
            ),
            "the coordinator hears gs-1's load",
        )
        assert m.acting.membership()["servers"]["gs-1"]["load"] > 1.0

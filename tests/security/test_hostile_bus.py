"""An attacker who can reach only the MQTT broker (and, for the insider cases, a server that
holds the bus keys but not the coordinator lease) against a real mesh: two servers and a
coordinator on the real Mosquitto (own topic prefix) and PostgreSQL (own database).

For every topic family the worlds use, forged, replayed, stale, truncated, oversized and
wrong-typed messages are published with the attacker's own client; nothing is committed,
released, demoted or moved, the drop counters show them, the same forgeries signed with a
revoked key are dropped, and the mesh keeps working afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from regions import RegionKey
from tests.fix_services import Backend
from tests.worldstate.fix_mesh import Mesh, config_for, until
from worldstate import Committed, MeshCoordinator, PlaceStructure, World
from worldstate.bus import Message, MqttBus, SignedBus
from worldstate.protocol._envelope import KeySet, Signer, derive_server_key, seal
from worldstate.protocol._ops import encode_op
from worldstate.store import bus_keys, schema

pytestmark = pytest.mark.services

A, B = RegionKey(0, 0, 0), RegionKey(1, 0, 0)
"""Held by gs-1 and gs-2."""


def place(sid: str, key: RegionKey, slot: int = 0) -> PlaceStructure:
    lo, _ = key.bounds
    x = lo[0] + 10 + slot * 10
    return PlaceStructure(structure_id=sid, lo=(x, lo[1] + 10, 10.0), hi=(x + 4, lo[1] + 14, 14.0))


@dataclass
class Attacker:
    """A raw MQTT client on the world's prefix (no keys), a sniffer recording every message
    on the wire, and the world key (for the insider and revoked-key cases)."""

    bus: MqttBus
    world_key: bytes
    key_id: int
    wire: list[Message] = field(default_factory=list)
    seq: int = 1000

    def seal(
        self,
        topic: str,
        body: bytes,
        *,
        sender: str,
        at: float | None = None,
        key: bytes | None = None,
        kid: int | None = None,
        epoch: int = -1,
    ) -> bytes:
        self.seq += 1
        return seal(
            Signer(derive_server_key(key or self.world_key, sender)),
            topic,
            body,
            key_id=self.key_id if kid is None else kid,
            sender=sender,
            incarnation=time.time_ns() // 1000,
            seq=self.seq,
            conn=1,
            sent_at=time.time() if at is None else at,
            epoch=epoch,
        )

    def captured(self, prefix: str) -> Message:
        got = [m for m in self.wire if m.topic.startswith(prefix) and m.payload]
        assert got, f"nothing captured on {prefix}*"
        return got[-1]

    async def send(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        await self.bus.publish(topic, payload, qos=1, retain=retain)


@asynccontextmanager
async def hostile_mesh(
    pg_url: str, mqtt_url: str, namespace: str
) -> AsyncIterator[tuple[Mesh, MeshCoordinator, Attacker]]:
    backend = Backend("postgresql", pg_url, "memory://", namespace)
    async with AsyncExitStack() as stack:
        m = Mesh(backend, stack)
        for sid in ("gs-1", "gs-2"):
            await m.open(sid, bus_url=mqtt_url, bus_key_refresh=0.2)
        coord = MeshCoordinator(
            config_for(backend, bus_url=mqtt_url, bus_key_refresh=0.2),
            coordinator_id="coord-a",
            rebalance_interval=None,
        )
        await coord.start()
        stack.push_async_callback(coord.close)
        m.coordinators.append(coord)
        await until(lambda: coord.acting, "the coordinator acts")
        await until(lambda: set(coord.eligible()) == {"gs-1", "gs-2"}, "both servers eligible")
        await coord.assign(A, "gs-1")
        await coord.assign(B, "gs-2")
        keys = await m["gs-1"].store.run(lambda c: bus_keys.load(c, time.time()), "keys")
        raw = MqttBus(mqtt_url, client_id="mallory", prefix=namespace, max_payload=4 << 20)
        attacker = Attacker(raw, keys.keys[keys.current], keys.current)
        await stack.enter_async_context(raw)
        sniff = raw.subscribe("#", attacker.wire.append)
        await sniff.wait_active(timeout=10)
        try:
            yield m, coord, attacker
        finally:
            for topic in ("mesh/membership", "members/gs-1", "members/gs-2", "members/gs-9"):
                await raw.publish(topic, b"", qos=1, retain=True)  # leave no retained state


def signed(w: World) -> SignedBus:
    assert isinstance(w.bus, SignedBus)
    return w.bus


def keys_of(w: World) -> KeySet:
    keys = signed(w).keys
    assert keys is not None
    return keys


def rejected(m: Mesh, coord: MeshCoordinator) -> dict[str, int]:
    total: dict[str, int] = {}
    for bus in [w.bus for w in m.worlds.values()] + [coord.bus]:
        for reason, n in bus.stats.rejected.items():
            total[reason] = total.get(reason, 0) + n
    return total


async def structures(m: Mesh, prefix: str) -> int:
    o = schema.objects
    q = select(func.count()).select_from(o).where(o.c.object_id.like(f"{prefix}%"))

    async def count(c: Any) -> int:
        return int(await c.scalar(q) or 0)

    return await m["gs-1"].store.run(count, "count", read=True)


async def test_forgeries_on_every_topic_family_change_nothing(
    pg_url: str, mqtt_url: str, namespace: str
) -> None:
    async with hostile_mesh(pg_url, mqtt_url, namespace) as (m, coord, atk):
        g1, g2 = m["gs-1"], m["gs-2"]
        # real traffic to capture: a forwarded op (gs-1 → owner gs-2), its reply, a hand-off
        # command pair, presences, the membership, eventual batches, a notice
        assert isinstance(await g1.submit(place("real-0", B)), Committed)
        g2.move_entities(
            __import__("numpy").array([7], dtype="int64"),
            __import__("numpy").array([[2100.0, 10.0, 10.0]]),
        )
        await until(lambda: any(x.topic.startswith("eventual/") for x in atk.wire), "a batch")
        await until(lambda: any(x.topic == "mesh/membership" for x in atk.wire), "membership")
        await coord.handoff(A, "gs-2")
        await coord.handoff(A, "gs-1")
        await until(lambda: g1.holds(A) and g2.holds(B), "placement back")

        epoch_seen = g1.commands.coordinator_epoch
        generation = g1.membership.tracker.agreed.generation
        served = g2.strong.served_forwards
        moved = len(g1.eventual.positions)
        before = rejected(m, coord)
        dropped_transport = signed(g2).inner.stats.dropped_incoming

        # 1. strong forwards on ops/<owner>: a well-formed request, as the attack
        evil = place("evil-0", B, slot=3)
        request = orjson.dumps(
            {"r": uuid.uuid4().hex, "from": "gs-1", "op": orjson.Fragment(encode_op(evil))}
        )
        real_op = atk.captured("ops/gs-2")
        attacks: list[tuple[str, bytes]] = [
            ("ops/gs-2", request),  # unsigned
            ("ops/gs-2", b"\0" * 80 + request),  # junk envelope
            ("ops/gs-2", atk.seal("ops/gs-2", request, sender="gs-1", key=b"k" * 32)),
            ("ops/gs-2", atk.seal("ops/gs-2", request, sender="gs-1", at=time.time() - 600)),
            ("ops/gs-2", atk.seal("ops/gs-2", request, sender="gs-1", kid=99)),
            ("ops/gs-2", real_op.payload),  # replayed
            ("ops/gs-2", real_op.payload[: len(real_op.payload) - 7]),  # truncated
            ("ops/gs-2", atk.seal("ops/gs-3", request, sender="gs-1")),  # for another topic
        ]
        # 2. coordinator commands: a forged release for gs-1's region, with a huge epoch
        release = orjson.dumps(
            {"r": "abc", "from": "coord-a", "ce": 10**6, "c": "release", "k": A.morton}
        )
        real_cmd = atk.captured("cmd/gs-1")
        attacks += [
            ("cmd/gs-1", release),
            ("cmd/gs-1", atk.seal("cmd/gs-1", release, sender="coord-a", at=time.time() + 60)),
            ("cmd/gs-1", real_cmd.payload),
            ("cmd/gs-1", real_cmd.payload[:40]),
        ]
        # 3. presence and membership (retained): a demotion of the whole mesh
        ghost = orjson.dumps({"g": 10**9, "m": ["ghost-1", "ghost-2", "ghost-3"], "at": 1.0})
        fake_presence = orjson.dumps(
            {"s": "gs-1", "i": 1, "at": time.time(), "a": False, "g": 0, "l": []}
        )
        attacks += [
            ("mesh/membership", ghost),
            (
                "mesh/membership",
                atk.seal("mesh/membership", ghost, sender="coord-b", key=b"x" * 32),
            ),
            ("members/gs-1", fake_presence),
            (
                "members/gs-1",
                atk.seal("members/gs-1", fake_presence, sender="gs-2"),
            ),  # in gs-1's name
            ("members/gs-2", atk.captured("members/gs-2").payload),
        ]
        # 4. eventual batches, causal events, replies, notices
        real_batch = atk.captured("eventual/")
        attacks += [
            (real_batch.topic, real_batch.payload),
            (real_batch.topic, b"\x00" * 200),
            (
                f"eventual/{A.morton}",
                atk.seal(f"eventual/{A.morton}", b"x" * 64, sender="gs-9", key=b"z" * 32),
            ),
            ("causal/events/gs-2", b'{"v":1,"o":"gs-2","e":[]}'),
            ("replies/gs-1", orjson.dumps({"r": "x" * 32, "k": "committed", "v": 1})),
            ("cmd-replies/coord-a", orjson.dumps({"r": "abc", "ok": True})),
            (f"notice/{B.morton}", orjson.dumps({"v": 10**9, "s": "gs-2"})),
            (f"notice/{B.morton}", atk.captured("notice/").payload),
        ]
        # 5. oversized: past what the signing bus accepts, and past the transport's limit
        big = atk.seal("ops/gs-2", b"x" * ((1 << 20) - 100), sender="gs-1")
        attacks += [("ops/gs-2", big), ("ops/gs-2", b"y" * (2 << 20))]
        for topic, payload in attacks:
            retain = topic.startswith(("mesh/", "members/"))
            await atk.send(topic, payload, retain=retain)

        def drops() -> int:
            now = rejected(m, coord)
            return sum(now.values()) - sum(before.values())

        # every attack reaches at least one subscriber, and each is dropped there
        await until(lambda: drops() >= len(attacks) - 1, "every forgery dropped")

        def got() -> dict[str, int]:
            return {r: n - before.get(r, 0) for r, n in rejected(m, coord).items()}

        reasons = ("malformed", "forged", "replayed", "stale", "unknown_key", "oversized")
        await until(lambda: all(got()[r] > 0 for r in reasons), f"drops of every kind: {got()}")
        await until(
            lambda: signed(g2).inner.stats.dropped_incoming > dropped_transport, "2 MiB dropped"
        )

        # 6. the insider: a server of the world (it holds the keys) that is not the
        # coordinator commands a release, announces a membership, forwards in another's name
        insider_release = atk.seal("cmd/gs-1", release, sender="coord-a")
        await atk.send("cmd/gs-1", insider_release)
        insider_ghost = atk.seal("mesh/membership", ghost, sender="coord-b", epoch=10**6)
        await atk.send("mesh/membership", insider_ghost, retain=True)
        await atk.send("ops/gs-2", atk.seal("ops/gs-2", request, sender="gs-9"))
        await atk.send(
            "ops/gs-2", atk.seal("ops/gs-2", b'{"r": 1, "from": [], "op": 2}', sender="gs-1")
        )
        await until(lambda: g1.commands.refused >= 1, "the insider's command refused")
        tracker = g1.membership.tracker
        await until(
            lambda: max(tracker.hinted, tracker.agreed.generation) >= 10**9, "the ghost arrived"
        )
        await until(lambda: g2.strong.dropped_requests >= 2, "wrong-typed forwards dropped")
        await asyncio.sleep(1.0)  # let anything that would act, act
        # clearing the forged retained membership changes nothing either
        await atk.send("mesh/membership", b"", retain=True)
        await asyncio.sleep(0.5)

        assert await structures(m, "evil-") == 0
        assert g2.strong.served_forwards == served
        assert g1.holds(A) and g2.holds(B), "nothing released"
        assert g1.commands.coordinator_epoch == epoch_seen, "the epoch was not raised"
        assert g1.authoritative and g2.authoritative, "nobody demoted"
        assert g1.membership.tracker.agreed.generation == generation
        assert set(coord.membership()["members"]) == {"gs-1", "gs-2"}
        assert len(g1.eventual.positions) == moved, "no creature moved or appeared"

        # the mesh keeps working
        assert isinstance(await g1.submit(place("after-0", B, slot=5)), Committed)
        await coord.handoff(B, "gs-1")
        await until(lambda: g1.holds(B), "a real hand-off after the junk")


async def test_messages_signed_with_a_revoked_key_or_server_are_dropped(
    pg_url: str, mqtt_url: str, namespace: str
) -> None:
    async with hostile_mesh(pg_url, mqtt_url, namespace) as (m, _coord, atk):
        g1, g2 = m["gs-1"], m["gs-2"]
        now = time.time()
        store = g1.store
        # a compromised server gs-9 (holds the key), and then a rotation retiring the old key
        await store.run(lambda c: bus_keys.revoke_server(c, "gs-9", now, "test"), "revoke")
        evil = place("evil-r", B, slot=4)
        request = orjson.dumps(
            {"r": secrets.token_hex(16), "from": "gs-9", "op": orjson.Fragment(encode_op(evil))}
        )
        await until(
            lambda: all("gs-9" in keys_of(w).revoked_servers for w in (g1, g2)),
            "the revocation reached the servers",
        )
        base = g2.bus.stats.rejected["revoked"]
        await atk.send("ops/gs-2", atk.seal("ops/gs-2", request, sender="gs-9"))
        presence = orjson.dumps(
            {"s": "gs-9", "i": 1, "at": time.time(), "a": True, "g": 0, "l": []}
        )
        await atk.send(
            "members/gs-9", atk.seal("members/gs-9", presence, sender="gs-9"), retain=True
        )
        await until(lambda: g2.bus.stats.rejected["revoked"] >= base + 2, "revoked drops")

        old_kid = atk.key_id
        await store.run(lambda c: bus_keys.rotate(c, time.time(), retire_previous=True), "rotate")
        await until(
            lambda: all(old_kid in keys_of(w).revoked_keys for w in (g1, g2)),
            "the rotation reached the servers",
        )
        base = g2.bus.stats.rejected["revoked"]
        request = orjson.dumps(
            {"r": secrets.token_hex(16), "from": "gs-1", "op": orjson.Fragment(encode_op(evil))}
        )
        await atk.send("ops/gs-2", atk.seal("ops/gs-2", request, sender="gs-1"))  # old key
        await until(lambda: g2.bus.stats.rejected["revoked"] >= base + 1, "old key refused")
        assert await structures(m, "evil-") == 0
        assert "gs-9" not in g1.partition_status()["view"]
        # the servers moved to the new key and still talk to each other
        assert isinstance(await g1.submit(place("after-r", B, slot=6)), Committed)
        assert g1.authoritative and g2.authoritative

"""The causal chain test on the production-like stack: three servers on real Mosquitto and
PostgreSQL. The broker does not lose or duplicate on its own, so one server's publishes are
tampered with: some group messages never leave it (the others must fetch those events from
the log) and some leave twice (the others must drop the copies)."""

from __future__ import annotations

import itertools
from contextlib import AsyncExitStack
from typing import Any

from consistency import VectorClock
from tests.worldstate.fix_world import open_world
from tests.worldstate.test_causal import (
    SERVERS,
    check_causal_order,
    log_seqs,
    receiving,
    run_chains,
    speed_up,
)
from worldstate import World


def tamper(world: World, *, lose_every: int, duplicate_every: int) -> dict[str, int]:
    """Lose every ``lose_every``-th and send twice every ``duplicate_every``-th causal group
    message ``world`` publishes; returns the counts."""
    real = world.bus.publish
    n = itertools.count()
    done = {"lost": 0, "duplicated": 0}

    async def publish(topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        if topic.startswith("causal/events/"):
            i = next(n)
            if i % lose_every == lose_every - 1:
                done["lost"] += 1
                return
            if i % duplicate_every == duplicate_every - 1:
                done["duplicated"] += 1
                await real(topic, payload, qos=qos, retain=retain)
        await real(topic, payload, qos=qos, retain=retain)

    world.bus.publish = publish  # type: ignore[method-assign]
    return done


async def test_causal_chains_on_mosquitto_and_postgresql(
    pg_url: str, mqtt_url: str, namespace: str
) -> None:
    rounds, noise = 8, 4
    async with AsyncExitStack() as stack:
        worlds: list[World] = []
        for server in SERVERS:
            w = await stack.enter_async_context(
                open_world(pg_url, server, bus_url=mqtt_url, namespace=namespace)
            )
            speed_up(w)
            worlds.append(w)
        receivers = [await stack.enter_async_context(receiving(w)) for w in worlds]
        tampered = tamper(worlds[1], lose_every=4, duplicate_every=3)

        accepted = await run_chains(worlds, receivers, rounds=rounds, noise=noise)

        total = sum(len(v) for v in accepted.values())
        assert total == len(SERVERS) * rounds * (1 + noise)
        for rec in receivers:
            check_causal_order(rec)
            assert len(rec.got) == total - len(accepted[rec.server])
        chain: dict[tuple[str, int], Any] = {
            (d.origin, d.fields["payload"]["round"]): d
            for rec in receivers
            for d in rec.got
            if d.fields.get("stream") == "chain"
        }
        for r in range(rounds):
            for i in range(1, len(SERVERS)):
                a, b = chain[(SERVERS[i - 1], r)], chain[(SERVERS[i], r)]
                assert VectorClock(a.vclock).happens_before(VectorClock(b.vclock))
        stats = {w.server_id: w.causal.stats() for w in worlds}
        assert tampered["lost"] > 0 and tampered["duplicated"] > 0
        assert stats["gs-1"]["repaired"] > 0 and stats["gs-3"]["repaired"] > 0
        assert stats["gs-1"]["duplicates"] > 0 and stats["gs-3"]["duplicates"] > 0
        for w in worlds:
            st = stats[w.server_id]
            assert st["dropped_total"] == 0 and st["pending"] == 0
            assert st["delivered_clock"] == {x: len(ids) for x, ids in accepted.items()}
            assert await log_seqs(worlds[0], w.server_id) == list(
                range(1, len(accepted[w.server_id]) + 1)
            )
        owners = [dict(w.causal.creature_owners) for w in worlds]
        assert owners[0] == owners[1] == owners[2] and len(owners[0]) == len(SERVERS) * rounds

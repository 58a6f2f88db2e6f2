"""`worldstate serve` and `worldstate coordinator` as real processes on PostgreSQL, Redis and
Mosquitto (a private database, key prefix and topic namespace per test):

- /readyz turns 200, /metrics parses with prometheus_client's parser and carries every
  family the runbook lists, with non-zero values after the --play load;
- SIGTERM hands the server's regions off (another server owns them), loses no acknowledged
  op, and exits 0;
- kill -9 of a server: the survivors own every region and their /readyz is 200.
"""

from __future__ import annotations

import functools
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.serve.cluster import Cluster, get, metric_values, owners, stored_ids, total, wait_for

pytestmark = pytest.mark.services

REGIONS = "0,0,0:1,1,0"  # four regions
N_REGIONS = 4

FAMILIES_NONZERO: list[tuple[str, dict[str, str]]] = [
    # (sample name, labels that must match): each must be > 0 after the load
    ("worldstate_ops_total", {"class": "strong", "outcome": "committed"}),
    ("worldstate_ops_total", {"class": "eventual", "outcome": "accepted"}),
    ("worldstate_ops_total", {"class": "causal", "outcome": "accepted"}),
    ("worldstate_op_duration_seconds_count", {"class": "strong"}),
    ("worldstate_op_duration_seconds_bucket", {"class": "strong", "le": "+Inf"}),
    ("worldstate_store_transactions_total", {}),
    ("worldstate_cache_requests_total", {}),
    ("worldstate_cache_writes_total", {}),
    ("worldstate_bus_messages_total", {"direction": "out", "family": "eventual"}),
    ("worldstate_bus_messages_total", {"direction": "in", "family": "all"}),
    ("worldstate_regions_owned", {}),
    ("worldstate_leases_renewed_total", {}),
    ("worldstate_partition_majority", {}),
    ("worldstate_partition_since_timestamp_seconds", {}),
    ("worldstate_eventual_tick_duration_seconds_count", {}),
    ("worldstate_eventual_ticks_total", {}),
    ("worldstate_eventual_rows_total", {"stage": "sent"}),
    ("worldstate_causal_events_total", {"stage": "appended"}),
    ("worldstate_strong_group_commits_total", {}),
    ("worldstate_handoff_duration_seconds_count", {"command": "acquire", "outcome": "ok"}),
    ("worldstate_conflicts_total", {}),
]
FAMILIES_PRESENT = [
    "worldstate_store_retries_total",
    "worldstate_store_retries_exhausted_total",
    "worldstate_bus_dropped_total",
    "worldstate_leases_lost_total",
    "worldstate_eventual_tick_overruns_total",
    "worldstate_causal_buffer_depth",
    "worldstate_causal_repairs_total",
    "worldstate_server_info",
]


@pytest.fixture
async def cluster(
    pg_url: str, redis_url: str, mqtt_url: str, namespace: str, tmp_path: Path
) -> AsyncIterator[Cluster]:
    c = Cluster(pg_url, redis_url, mqtt_url, namespace, tmp_path)
    try:
        yield c
    finally:
        c.stop_all()
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url)
        try:
            keys = [k async for k in client.scan_iter(match=f"{namespace}:*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


def ready(port: int) -> bool:
    status, body = get(port, "/readyz")
    return status == 200 and bool(json.loads(body)["ok"])


async def test_serve_metrics_and_sigterm_handoff(cluster: Cluster) -> None:
    gs1 = cluster.server("gs-1")
    gs2 = cluster.server("gs-2")
    # both in the mesh before the coordinator places regions (no rebalancing in this test)
    await wait_for("gs-1 /readyz 200", lambda: ready(gs1.port), cluster)
    await wait_for("gs-2 /readyz 200", lambda: ready(gs2.port), cluster)
    coord = cluster.coordinator("co-1", REGIONS)
    placed: dict[int, str] = {}

    async def both_own() -> bool:
        placed.clear()
        placed.update(await owners(cluster.store_url))
        return len(placed) == N_REGIONS and set(placed.values()) == {"gs-1", "gs-2"}

    await wait_for("both servers to own regions", both_own, cluster)
    await wait_for("gs-1 /readyz 200", lambda: ready(gs1.port), cluster)
    await wait_for("gs-2 /readyz 200", lambda: ready(gs2.port), cluster)
    assert get(gs1.port, "/healthz")[0] == 200

    zero: list[object] = []

    def loaded() -> bool:
        status, text = get(gs1.port, "/metrics")
        if status != 200:
            return False
        v = metric_values(text)
        zero[:] = [(n, lb) for n, lb in FAMILIES_NONZERO if total(v, n, **lb) <= 0]
        return not zero

    try:
        await wait_for("every metric family non-zero on gs-1", loaded, cluster)
    except AssertionError as e:
        raise AssertionError(f"still zero: {zero}\n{e}") from None
    _, text = get(gs1.port, "/metrics")
    values = metric_values(text)
    missing = [n for n in FAMILIES_PRESENT if n not in values]
    assert not missing, f"families absent from /metrics: {missing}"
    assert all(name.startswith("worldstate_") for name in values), sorted(values)
    # the coordinator exposes its own
    cstatus, ctext = get(coord.port, "/metrics")
    assert cstatus == 200
    cvals = metric_values(ctext)
    assert total(cvals, "worldstate_coordinator_acting") == 1
    assert total(cvals, "worldstate_coordinator_placements_total") >= N_REGIONS
    assert get(coord.port, "/readyz")[0] == 200

    # SIGTERM: gs-1 hands its regions off and exits 0
    gs1_regions = sorted(m for m, o in placed.items() if o == "gs-1")
    gs1.proc.send_signal(signal.SIGTERM)
    rc = gs1.proc.wait(timeout=40)
    assert rc == 0, cluster.tails()
    log_text = gs1.log.read_text()
    assert '"event": "drained"' in log_text, log_text[-3000:]

    async def gs2_owns_all() -> bool:
        got = await owners(cluster.store_url)
        return len(got) == N_REGIONS and set(got.values()) == {"gs-2"}

    await wait_for("gs-2 to own gs-1's regions", gs2_owns_all, cluster)
    await wait_for("gs-2 /readyz 200 after the hand-off", lambda: ready(gs2.port), cluster)
    acked = gs1.acked()
    assert acked, "gs-1 acknowledged no strong op during the run"
    lost = acked - await stored_ids(cluster.store_url, gs1_regions)
    assert not lost, f"{len(lost)} acknowledged structures of gs-1 are not in the store"


async def test_kill9_survivors_ready(cluster: Cluster) -> None:
    servers = {n: cluster.server(n, play=10) for n in ("gs-1", "gs-2", "gs-3")}
    for n, p in servers.items():
        await wait_for(f"{n} /readyz 200", functools.partial(ready, p.port), cluster)
    cluster.coordinator("co-1", REGIONS)
    got: dict[int, str] = {}

    async def placed_on_all() -> bool:
        got.clear()
        got.update(await owners(cluster.store_url))
        return len(got) == N_REGIONS and len(set(got.values())) == 3

    await wait_for("regions placed on all three servers", placed_on_all, cluster)
    victim = min(got.values())
    victim_regions = sorted(m for m, o in got.items() if o == victim)
    servers[victim].proc.send_signal(signal.SIGKILL)
    servers[victim].proc.wait(timeout=10)
    survivors = [n for n in servers if n != victim]

    async def reassigned() -> bool:
        o = await owners(cluster.store_url)
        return len(o) == N_REGIONS and set(o.values()) <= set(survivors)

    await wait_for("the victim's regions reassigned to the survivors", reassigned, cluster)
    for n in survivors:
        await wait_for(f"{n} /readyz 200", functools.partial(ready, servers[n].port), cluster)
    lost = servers[victim].acked() - await stored_ids(cluster.store_url, victim_regions)
    assert not lost, f"{len(lost)} acknowledged structures of {victim} lost after kill -9"

"""Every `worldstate inspect` view, in text and --json, against a SQLite and a PostgreSQL
world: structures counted, a corrupt region flagged, a released lease shown as released,
the mesh tables (membership, verdicts, acting coordinator) in `servers`, the map with and
without --json, cache states told truthfully."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import update

from regions import RegionKey
from tests.worldstate.fix_world import obj, open_world
from worldstate import Config, MeshCoordinator
from worldstate.cli.inspect_cmd import cache_state
from worldstate.cli.main import main
from worldstate.operations import PlaceStructure
from worldstate.store import Store, schema

K1, K2, K3 = RegionKey(0, 0, 0), RegionKey(1, 0, 0), RegionKey(2, 0, 0)


async def _populate(url: str, bus: str) -> None:
    async with open_world(url, "gs-1", bus_url=bus) as w:
        for k in (K1, K2, K3):
            await w.acquire_region(k)
            snap = await w.load_region(k)
            await w.store_region(snap.with_objects([obj(f"o{k.ix}", k)]), expected_version=0)
        res = await w.submit(
            PlaceStructure(structure_id="p1", lo=(100, 100, 100), hi=(110, 110, 110))
        )
        assert type(res).__name__ == "Committed"
        await w.release_region(K2)
        coord = MeshCoordinator(Config(store_url=url, bus_url=bus), coordinator_id="co-1")
        async with coord:
            assert await coord.wait_acting(10.0)
            for _ in range(50):  # the coordinator records the membership it hears
                if coord.membership()["generation"] >= 1:
                    break
                await asyncio.sleep(0.1)
            # leave the coordinator lease live: `servers` must name the acting coordinator
            await coord.close(release=False)
    store = Store(url)
    await store.open()
    try:  # corrupt K3's current row: its checksum no longer matches
        await store.run(
            lambda c: c.execute(
                update(schema.regions)
                .where(schema.regions.c.region_key == K3.morton)
                .values(checksum=b"\x00" * 32)
            ),
            "corrupt",
        )
    finally:
        await store.close()


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def _text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_every_view(
    store_url: str, namespace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_populate(store_url, f"memory://{namespace}"))
    base = ["inspect", "--store", store_url]

    rows = _json(capsys, *base, "regions", "--json")
    assert isinstance(rows, list)
    by = {tuple(r["key"]): r for r in rows}
    assert by[(0, 0, 0)]["objects"] == 2 and by[(0, 0, 0)]["committed_objects"] == 1
    assert by[(2, 0, 0)]["checksum_ok"] is False and by[(0, 0, 0)]["checksum_ok"] is True
    text = _text(capsys, *base, "regions")
    assert "CORRUPT" in text and "1 region(s) fail their checksum" in text

    region = _json(capsys, *base, "region", "1,0,0", "--json")
    assert isinstance(region, dict)
    assert region["lease"]["state"] == "released" and region["lease"]["expires_at"] is None
    text = _text(capsys, *base, "region", "1,0,0")
    assert "lease: released by gs-1" in text and "until -" not in text
    text = _text(capsys, *base, "region", "0,0,0")
    assert "lease: released by gs-1" in text  # a clean close releases every lease
    text = _text(capsys, *base, "region", "2,0,0")
    assert "fails its checksum" in text

    servers = _json(capsys, *base, "servers", "--json")
    assert isinstance(servers, dict)
    assert servers["membership"]["generation"] >= 1 and "gs-1" in servers["membership"]["members"]
    assert servers["coordinator"]["owner"] == "co-1" and servers["coordinator"]["acting"]
    gs1 = next(s for s in servers["servers"] if s["server"] == "gs-1")
    assert gs1["state"] == "left" and gs1["verdict"] == "left the mesh"
    text = _text(capsys, *base, "servers")
    assert "coordinator: co-1 acting" in text and "membership: generation" in text

    for view in ("conflicts", "incidents"):
        assert isinstance(_json(capsys, *base, view, "--json"), list)
        _text(capsys, *base, view)
    assert _json(capsys, *base, "cache", "--cache", "memory://", "--json") == []
    assert "cache memory://" in _text(capsys, *base, "cache", "--cache", "memory://")

    cols = _json(capsys, *base, "map", "--json")
    assert isinstance(cols, list)
    assert {(c["ix"], c["iy"]) for c in cols} == {(0, 0), (1, 0), (2, 0)}
    assert next(c for c in cols if (c["ix"], c["iy"]) == (0, 0))["objects"] == 2  # + p1
    png = tmp_path / "map.png"
    assert main([*base, "map", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()


def test_builtin_png_writer(tmp_path: Path) -> None:
    """The default-install map engine (no matplotlib): a valid PNG of the right size."""
    import struct
    import zlib

    from worldstate.cli.region_map import write_png

    out = tmp_path / "m.png"
    write_png({(0, 0): ("gs-1", 3, 1), (2, 1): (None, 0, 1)}, str(out))
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    assert w > 0 and h > 0 and w > h  # 3 columns wide, 2 rows high
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
    assert len(zlib.decompress(idat)) == h * (1 + 3 * w)


@pytest.mark.parametrize(
    ("version", "size", "stored", "expected"),
    [
        (3, 100, 3, "current"),
        (2, 100, 3, "stale (store v3)"),
        (3, 0, 3, "empty marker"),
        (3, 100, None, "orphan"),
        (4, 100, 3, "ahead of the store"),
    ],
)
def test_cache_states_are_truthful(
    version: int, size: int, stored: int | None, expected: str
) -> None:
    assert cache_state(version, size, stored).startswith(expected)


def test_cache_view_on_redis(
    pg_url: str, redis_url: str, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cache view against a real Redis: a current entry, a stale one, an empty marker."""
    from worldstate.cache import open_cache

    async def populate() -> None:
        async with open_world(
            pg_url, "gs-1", cache_url=redis_url, namespace=namespace, bus_url="memory://cv"
        ) as w:
            for k in (K1, K2, K3):
                await w.acquire_region(k)
                snap = await w.load_region(k)
                await w.store_region(snap.with_objects([obj(f"o{k.ix}", k)]), expected_version=0)
                await w.load_region(k)  # cached at the stored version
            snap = await w.load_region(K2)
            await w.store_region(snap, expected_version=snap.version)  # K2 moves on
        cache = open_cache(
            redis_url,
            prefix=f"{namespace}:",
            ttl=60.0,
            max_entries=8,
            timeout=1.0,
            breaker_failures=3,
            breaker_reset=1.0,
        )
        try:
            await cache.invalidate(K2.morton)
            assert await cache.put(K2.morton, 1, b"old")  # behind the store's version
            await cache.invalidate(K3.morton)
            assert await cache.mark_newer(K3.morton, 1)  # an entry without a snapshot
        finally:
            await cache.close()

    asyncio.run(populate())
    argv = ["inspect", "--store", pg_url, "cache", "--cache", redis_url, "--namespace", namespace]
    rows = _json(capsys, *argv, "--json")
    assert isinstance(rows, list)
    state = {r["region"]: r["state"] for r in rows}
    assert state[str(K1)] == "current"
    assert state[str(K2)].startswith("stale (store v")
    assert state[str(K3)].startswith("empty marker")
    text = _text(capsys, *argv)
    assert "current" in text and "stale" in text and "empty marker" in text

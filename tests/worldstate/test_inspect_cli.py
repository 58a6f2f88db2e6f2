"""`worldstate inspect`: every view runs read-only against a populated store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from regions import RegionKey
from worldstate.cli.main import main
from worldstate.operations import PlaceStructure

from .fix_world import obj, open_world

K = RegionKey(0, 0, 0)


async def _populate(url: str) -> None:
    async with open_world(url, "gs-1") as w:
        await w.acquire_region(K)
        snap = await w.load_region(K)
        await w.store_region(
            snap.with_objects([obj("a", K), obj("b", K, 40.0)]), expected_version=0
        )
        await w.submit_many(
            [
                PlaceStructure(structure_id="p1", lo=(100, 100, 100), hi=(110, 110, 110)),
                PlaceStructure(structure_id="p2", lo=(105, 105, 105), hi=(115, 115, 115)),
            ]
        )
        await w.store.release(K, "gs-1", w.leases()[K].epoch)


def test_inspect_views(sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_populate(sqlite_url))  # the CLI runs its own event loop
    assert main(["inspect", "--store", sqlite_url, "regions", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    # two snapshot objects + the committed structure p1 (p2 lost the overlap)
    assert rows[0]["key"] == [0, 0, 0] and rows[0]["version"] == 2 and rows[0]["objects"] == 3
    assert main(["inspect", "--store", sqlite_url, "region", "0,0,0", "--json"]) == 0
    region = json.loads(capsys.readouterr().out)
    assert sorted(o["id"] for o in region["objects"]) == ["a", "b", "p1"]
    assert region["lease"]["owner"] == "gs-1" and region["history"][0]["valid"]
    assert main(["inspect", "--store", sqlite_url, "conflicts", "--json"]) == 0
    conflicts = json.loads(capsys.readouterr().out)
    assert conflicts and conflicts[0]["subject"] in ("p1", "p2")
    assert main(["inspect", "--store", sqlite_url, "servers"]) == 0
    assert "gs-1" in capsys.readouterr().out
    out = tmp_path / "map.png"
    assert main(["inspect", "--store", sqlite_url, "map", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["inspect", "--store", sqlite_url, "region", "not-a-key"]) == 1

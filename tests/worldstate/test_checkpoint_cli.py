"""`worldstate checkpoint …` and `worldstate inspect events|incidents` end to end on SQLite
files: create, list, show, export, import --restore into another store, prune; help for
every command."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from regions import RegionKey
from worldstate.cli.main import main
from worldstate.operations import ChangeInventory, EmitEvent

from .fix_world import open_world

K = RegionKey(0, 0, 0)


async def _populate(url: str) -> None:
    async with open_world(url, "gs-1") as w:
        await w.submit(ChangeInventory(inventory_id="p1", item="gold", delta=9))
        for i in range(3):
            await w.submit(EmitEvent(position=(10.0, 10.0, 10.0), stream="quest", payload={"i": i}))


async def _inventory(url: str) -> dict[str, int]:
    async with open_world(url, "gs-2") as w:
        return await w.get_inventory("p1")


def test_checkpoint_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = f"sqlite+aiosqlite:///{tmp_path}/src.db"
    dst = f"sqlite+aiosqlite:///{tmp_path}/dst.db"
    asyncio.run(_populate(src))
    assert main(["checkpoint", "--store", src, "create", "nightly", "--no-progress"]) == 0
    assert "checkpoint nightly" in capsys.readouterr().out
    assert main(["checkpoint", "--store", src, "list", "--json"]) == 0
    [cp] = json.loads(capsys.readouterr().out)
    assert cp["name"] == "nightly" and cp["heads"] == {"gs-1": 3}
    assert main(["checkpoint", "--store", src, "show", "nightly"]) == 0
    assert "gs-1:3" in capsys.readouterr().out
    out = tmp_path / "nightly.wscp"
    assert main(["checkpoint", "--store", src, "export", "nightly", "--out", str(out)]) == 0
    assert out.exists() and "wrote" in capsys.readouterr().out
    assert main(["checkpoint", "--store", dst, "import", str(out), "--restore", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["imported"]["name"] == "nightly" and doc["restored"]["regions"] >= 0
    assert asyncio.run(_inventory(dst)) == {"gold": 9}
    assert main(["inspect", "--store", dst, "events", "--stream", "quest", "--json"]) == 0
    events = json.loads(capsys.readouterr().out)
    assert [e["fields"]["payload"]["i"] for e in events] == [0, 1, 2]
    since = events[0]["cursor"]
    assert main(["inspect", "--store", dst, "events", "--since", since, "--json"]) == 0
    assert [e["seq"] for e in json.loads(capsys.readouterr().out)] == [2, 3]
    assert main(["inspect", "--store", dst, "incidents", "--json"]) == 0
    [incident] = json.loads(capsys.readouterr().out)
    assert incident["kind"] == "restored" and "nightly" in incident["detail"]
    assert main(["checkpoint", "--store", src, "create", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["checkpoint", "--store", src, "prune", "--keep", "1"]) == 0
    assert "deleted 1" in capsys.readouterr().out
    # errors are one clear line, exit 1
    assert main(["checkpoint", "--store", src, "show", "nightly"]) == 1
    assert "no checkpoint named" in capsys.readouterr().err
    bad = tmp_path / "bad.wscp"
    bad.write_bytes(b"not gzip")
    assert main(["checkpoint", "--store", dst, "import", str(bad)]) == 1
    assert "not a readable" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["checkpoint"],
        *(
            ["checkpoint", a]
            for a in ("create", "list", "show", "restore", "export", "import", "prune")
        ),
        ["inspect", "events"],
    ],
)
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    assert "usage: worldstate" in capsys.readouterr().out

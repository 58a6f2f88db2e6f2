"""`worldstate inspect map` after a plain `pip install .` (no extras: no matplotlib) in a
fresh virtualenv draws a PNG. Slow (builds and installs the distribution): marked slow."""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_map_after_plain_install(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", str(ROOT)],
        check=True,
        timeout=840,
        cwd=tmp_path,
    )
    probe = subprocess.run(
        [str(py), "-c", "import importlib.util as u; print(u.find_spec('matplotlib'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "None", "a plain install must not pull matplotlib"
    db = tmp_path / "w.db"
    url = f"sqlite+aiosqlite:///{db}"
    script = (
        "import asyncio, worldstate\n"
        "async def m():\n"
        f"    async with worldstate.connect({url!r}, server_id='gs-1') as w:\n"
        "        await w.acquire_region((0, 0, 0))\n"
        "        await w.acquire_region((1, 2, 0))\n"
        "        await w.submit(worldstate.PlaceStructure(structure_id='s', lo=(1, 1, 1),"
        " hi=(2, 2, 2)))\n"
        "asyncio.run(m())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDSTATE_")}
    subprocess.run([str(py), "-c", script], check=True, cwd=tmp_path, env=env, timeout=120)
    out = tmp_path / "map.png"
    cli = env_dir / "bin" / "worldstate"
    res = subprocess.run(
        [str(cli), "inspect", "--store", url, "map", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert "built-in PNG writer" in res.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    js = subprocess.run(
        [str(cli), "inspect", "--store", url, "map", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert js.returncode == 0 and '"ix": 0' in js.stdout, js.stderr

"""The CI entry point (``.ci/run``) and the reproducible part of ``deploy/``.

The service checks are exercised against a port where nothing listens, in the script's dry-run
mode: it must notice each service is down, plan the install (``apt-get update`` once) and the
start command, and fail naming every service that does not answer. Nothing is installed or
started, and the machine's real services are never touched.
"""

from __future__ import annotations

import bisect
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from regions import morton

ROOT = Path(__file__).resolve().parent.parent
CI_RUN = ROOT / ".ci" / "run"
SPLITS = ROOT / "deploy" / "cockroach" / "splits.py"
SCHEMA = ROOT / "deploy" / "cockroach" / "schema.sql"

needs_bash = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("timeout") is None,
    reason="needs bash and coreutils timeout",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@needs_bash
def test_ci_script_parses() -> None:
    subprocess.run(["bash", "-n", str(CI_RUN)], check=True)
    assert os.access(CI_RUN, os.X_OK), ".ci/run must be executable"


@needs_bash
def test_services_down_are_installed_started_and_reported() -> None:
    port = _free_port()
    env = {
        **os.environ,
        "WS_CI_PG_PORT": str(port),
        "WS_CI_REDIS_PORT": str(port),
        "WS_CI_MQTT_PORT": str(port),
        "WS_CI_WAIT_SECS": "1",
        "WS_CI_DRY_RUN": "1",
        "WS_CI_PRETEND_MISSING": "postgresql redis mosquitto",
    }
    proc = subprocess.run(
        ["bash", str(CI_RUN), "services"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    out, err = proc.stdout, proc.stderr
    assert proc.returncode != 0, out + err
    for name in ("PostgreSQL", "Redis", "Mosquitto"):
        assert f"{name} (127.0.0.1:{port}): down" in out
        assert f"{name} (127.0.0.1:{port}) did not answer within 1s" in err
    assert "FAIL: services not available: PostgreSQL Redis Mosquitto" in err
    # apt-get update once, then one install per missing service
    assert out.count("apt-get update") == 1
    assert "apt-get install -y postgresql" in out
    assert "apt-get install -y redis-server" in out
    assert "apt-get install -y mosquitto mosquitto-clients" in out
    # the machine's own start commands
    assert "pg_ctlcluster --skip-systemctl-redirect" in out
    assert "127.0.0.1/32 trust" in out
    assert f"redis-server --daemonize yes --bind 127.0.0.1 -::1 --port {port}" in out
    assert "mosquitto -d" in out


@needs_bash
def test_unknown_stage_fails() -> None:
    proc = subprocess.run(
        ["bash", str(CI_RUN), "no-such-stage"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert "unknown stage 'no-such-stage'" in proc.stderr


def _splits(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(SPLITS), *args], capture_output=True, text=True, check=True
    )
    return proc.stdout


def _values(sql: str, table: str = "ws_regions") -> list[int]:
    block = sql.split(f"ALTER TABLE {table} SPLIT AT VALUES", 1)[1].split(";", 1)[0]
    return [int(v) for v in re.findall(r"\((\d+)\)", block)]


def test_schema_sql_split_block_is_the_generator_output() -> None:
    text = SCHEMA.read_text()
    match = re.search(r"^-- BEGIN GENERATED: ([^\n]*)\n.*?^-- END GENERATED\n", text, re.M | re.S)
    assert match is not None, "schema.sql has no generated block"
    command = match.group(1).split()
    assert command[:2] == ["python3", "deploy/cockroach/splits.py"]
    assert match.group(0) == _splits(*command[2:]), (
        "deploy/cockroach/schema.sql is out of date: regenerate its block with: " + match.group(1)
    )


def test_whole_space_splits_are_octree_cells() -> None:
    assert _values(_splits("--depth", "1")) == [k << 60 for k in range(1, 8)]
    assert _values(_splits("--depth", "2")) == [k << 57 for k in range(1, 64)]


def test_bounded_splits_cut_the_world_into_equal_cells() -> None:
    # 128 km x 128 km x 8 km around the origin is 64 x 64 x 4 regions. Depth 3 halves the
    # longest side three times: cells of 8 regions per side, 8 x 8 in x and y and 2 in z
    # (z indices -2..1 straddle a cell boundary at the origin): 128 cells of 128 regions.
    values = _values(_splits("--depth", "3", "--bounds=-64000,-64000,-4000,64000,64000,4000"))
    assert values == sorted(values)
    keys = sorted(
        morton.encode(x, y, z) for x in range(-32, 32) for y in range(-32, 32) for z in range(-2, 2)
    )
    counts: dict[int, int] = {}
    for key in keys:
        cell = bisect.bisect_right(values, key)
        counts[cell] = counts.get(cell, 0) + 1
    assert len(counts) == 128
    assert set(counts.values()) == {8 * 8 * 2}

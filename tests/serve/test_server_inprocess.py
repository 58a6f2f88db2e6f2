"""`ServerProcess` in this process (SQLite + the in-process bus): the HTTP responder's
routes and errors, readiness while starting and draining, the drain releasing held leases
on stop (exit 0), and a crashed loop making the process exit 1 (so it is restarted)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from worldstate.config import Config
from worldstate.serve import ServerProcess, ServeSettings
from worldstate.store import Store


async def request(port: int, line: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{line} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def _started(tmp_path: Path, name: str) -> tuple[ServerProcess, asyncio.Task[int]]:
    cfg = Config(
        store_url=f"sqlite+aiosqlite:///{tmp_path}/w.db",
        bus_url=f"memory://{name}",
        server_id="gs-1",
    )
    proc = ServerProcess(ServeSettings(cfg, metrics_host="127.0.0.1", metrics_port=0))
    task = asyncio.create_task(proc.run())
    for _ in range(200):
        if proc.phase == "serving":
            break
        await asyncio.sleep(0.05)
    assert proc.phase == "serving"
    return proc, task


async def test_routes_and_clean_stop(tmp_path: Path) -> None:
    proc, task = await _started(tmp_path, "serve-routes")
    port = proc.http.port
    status, body = await request(port, "GET /readyz")
    assert status == 200 and json.loads(body)["ok"]
    assert (await request(port, "GET /healthz"))[0] == 200
    status, body = await request(port, "GET /metrics")
    assert status == 200 and "worldstate_ops_total" in body
    assert (await request(port, "GET /nope"))[0] == 404
    assert (await request(port, "POST /metrics"))[0] == 405
    assert (await request(port, "NONSENSE"))[0] == 400
    await proc.world.acquire_region((0, 0, 0))
    proc.stop.set()
    assert await asyncio.wait_for(task, 30) == 0
    assert proc.phase == "stopped"
    store = Store(f"sqlite+aiosqlite:///{tmp_path}/w.db", read_only=True)
    await store.open()
    try:
        lease = await store.lease(proc.world._key((0, 0, 0)))
    finally:
        await store.close()
    assert lease is not None and lease.expires_at <= 0  # released by the drain


async def test_crashed_loop_exits_1(tmp_path: Path) -> None:
    proc, task = await _started(tmp_path, "serve-crash")
    proc.world.tasks.fail(RuntimeError("a loop crashed (test)"), "test loop")
    assert await asyncio.wait_for(task, 30) == 1
    assert isinstance(proc.failure, RuntimeError)

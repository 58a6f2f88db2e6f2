"""Faults during a load run, on a schedule, each timed until the mesh has recovered.

- ``kill``: SIGKILL a server; recovered when the coordinator has placed all of its regions
  on live servers (its leases expired, epoch + 1). The server is then started again (a new
  incarnation) and the coordinator rebalances.
- ``partition``: cut one server's TCP proxy to the broker (a 3|1 split of the bus for 4
  servers; with ``mixed``, not the server that ``kill`` killed) for a while; recovered
  when, after the heal, every server is authoritative again (the time until the cut side
  demoted and until its regions were reassigned is recorded); once the coordinator hears
  the healed side again, it rebalances regions back onto it.
- ``broker``: stop the run's private Mosquitto and start it again on the same port;
  recovered when every server is connected and authoritative again (then, once the
  coordinator hears every server, it rebalances: the servers back first took the regions).
- ``db``: ``pg_terminate_backend`` every connection to the run's PostgreSQL database;
  recovered when every server holding regions has committed a strong op again (SQLite:
  skipped).

`plan` lays the faults of ``--faults kill|partition|broker|db|mixed`` over the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

FAULT_KINDS = ("kill", "partition", "broker", "db")
RECOVERY_TIMEOUT = 60.0
REBALANCE_TIMEOUT = 60.0
"""Seconds one rebalance (a few hand-offs) may take before the fault reports it failed."""


@dataclass
class Fault:
    kind: str
    at: float
    """Seconds after the start of the load."""
    length: float = 0.0
    target: str | None = None
    started: float | None = None
    """Seconds after the start when it was injected (and ended, for partitions)."""
    ended: float | None = None
    recovered_s: float | None = None
    """Seconds from the fault (from the heal, for a partition) until the mesh recovered."""
    details: dict[str, Any] = field(default_factory=dict)
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan(kind: str, duration: float, servers: list[str]) -> list[Fault]:
    if kind == "none":
        return []
    kinds = FAULT_KINDS if kind == "mixed" else (kind,)
    if any(k not in FAULT_KINDS for k in kinds):
        raise ValueError(f"unknown fault kind {kind!r}")
    slots = {"kill": 0.15, "partition": 0.4, "broker": 0.65, "db": 0.8}
    # with both, kill the last server and cut the one before it (a killed server that is
    # still rejoining cannot also be partitioned)
    targets = {
        "kill": servers[-1] if len(servers) > 1 else None,
        "partition": (servers[-2] if kind == "mixed" and len(servers) > 2 else servers[-1])
        if len(servers) > 1
        else None,
    }
    out = []
    for k in kinds:
        at = duration * (slots[k] if kind == "mixed" else 0.3)
        length = min(8.0, 0.15 * duration) if k == "partition" else 0.0
        out.append(Fault(k, at, length, targets.get(k)))
    return out


class Mesh(Protocol):
    """What the nemesis needs from the orchestrator."""

    @property
    def t0(self) -> float: ...

    def kill(self, server: str) -> None: ...
    async def restart(self, server: str) -> None: ...
    async def cut(self, server: str) -> None: ...
    async def heal(self, server: str) -> None: ...
    async def restart_broker(self) -> bool: ...
    async def kill_db_connections(self) -> int | None: ...
    def owners(self) -> dict[int, str]: ...
    def eligible(self) -> list[str]: ...
    def all_regions(self) -> int: ...
    def status(self) -> dict[str, dict[str, Any]]: ...
    async def rebalance(self) -> int: ...


async def until(cond: Callable[[], bool], timeout: float = RECOVERY_TIMEOUT) -> float | None:
    """Seconds until ``cond()`` held (polled every 50 ms), or None after ``timeout``."""
    t = time.time()
    while not cond():
        if time.time() - t > timeout:
            return None
        await asyncio.sleep(0.05)
    return time.time() - t


def _all_authoritative(mesh: Mesh, fresh: float = 2.0) -> bool:
    st = mesh.status()
    return bool(st) and all(
        d.get("authoritative") and d.get("bus_connected") and d["age"] < fresh for d in st.values()
    )


async def _rebalance(mesh: Mesh) -> int:
    """One coordinator rebalance (hand-offs over the bus and the store), with a deadline."""
    async with asyncio.timeout(REBALANCE_TIMEOUT):
        return await mesh.rebalance()


async def inject(mesh: Mesh, fault: Fault) -> None:
    def rel() -> float:
        return time.time() - mesh.t0

    fault.started = rel()
    if fault.kind == "kill" and fault.target is not None:
        mesh.kill(fault.target)
        gone = fault.target
        fault.recovered_s = await until(
            lambda: len(mesh.owners()) == mesh.all_regions() and gone not in mesh.owners().values()
        )
        fault.ended = rel()
        await mesh.restart(gone)
        fault.details["rejoined_s"] = rel() - fault.ended
        fault.details["moved_back"] = await _rebalance(mesh)
        fault.details["held_after"] = sum(1 for o in mesh.owners().values() if o == gone)
    elif fault.kind == "partition" and fault.target is not None:
        side = fault.target
        await mesh.cut(side)

        def st() -> dict[str, Any]:
            return mesh.status().get(side, {})

        fault.details["demoted_s"] = await until(
            lambda: not st().get("authoritative", True), fault.length + 30
        )
        fault.details["reassigned_s"] = await until(
            lambda: side not in mesh.owners().values(), fault.length + 30
        )
        left = fault.length - (rel() - fault.started)
        if left > 0:
            await asyncio.sleep(left)
        await mesh.heal(side)
        fault.ended = rel()
        fault.recovered_s = await until(lambda: _all_authoritative(mesh))
        # the coordinator places regions only on servers it hears report authority: until
        # it has heard the healed side, a rebalance would leave it with nothing
        fault.details["eligible_s"] = await until(lambda: side in mesh.eligible(), 30)
        fault.details["moved_back"] = await _rebalance(mesh)
        fault.details["held_after"] = sum(1 for o in mesh.owners().values() if o == side)
    elif fault.kind == "broker":
        if not await mesh.restart_broker():
            fault.note = "no private broker (needs the mosquitto binary): skipped"
            return
        fault.ended = rel()
        fault.recovered_s = await until(lambda: _all_authoritative(mesh))
        # every lease ran out while nobody could renew: the coordinator placed the regions
        # on the servers that were back first, and a server that reconnected later (the
        # backoff is jittered) holds nothing until a rebalance
        fault.details["eligible_s"] = await until(
            lambda: set(mesh.status()) <= set(mesh.eligible()), 30
        )
        fault.details["moved_back"] = await _rebalance(mesh)
        held = set(mesh.owners().values())
        fault.details["servers_without_regions"] = sorted(set(mesh.status()) - held)
    elif fault.kind == "db":
        killed = await mesh.kill_db_connections()
        if killed is None:
            fault.note = "the store is not PostgreSQL: skipped"
            return
        fault.details["connections_terminated"] = killed
        fault.ended = rel()
        # the servers with players to act for (a server holding no region has none, so it
        # submits nothing: waiting for it would time the end of the run, not the recovery)
        before = {
            s: sum(d.get("ok", {}).get(k, 0) for k in ("build", "mine", "trade"))
            for s, d in mesh.status().items()
            if d.get("cells")
        }
        fault.details["servers"] = sorted(before)

        def committed_again() -> bool:
            st = mesh.status()
            return all(
                sum(st[s].get("ok", {}).get(k, 0) for k in ("build", "mine", "trade")) > n
                for s, n in before.items()
                if s in st and st[s]["age"] < 2.0
            )

        fault.recovered_s = await until(committed_again)


async def run(mesh: Mesh, faults: list[Fault], on_event: Callable[[str], None]) -> None:
    """Inject every fault at its time, each in its own task (a slow recovery never delays
    the next fault), and wait for all of them."""

    async def one(fault: Fault) -> None:
        wait = mesh.t0 + fault.at - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        on_event(f"fault {fault.kind} {fault.target or ''} at {fault.at:.0f}s")
        try:
            await inject(mesh, fault)
        except Exception as e:  # a fault that could not be injected is reported, not fatal
            fault.note = f"{type(e).__name__}: {e}"
        on_event(f"fault {fault.kind}: recovered in {fault.recovered_s}")

    await asyncio.gather(*(one(f) for f in faults))


class PrivateBroker:
    """A Mosquitto of the run's own, on a free port, that can be restarted."""

    def __init__(self) -> None:
        self.binary = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
        )
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="ws-load-broker-"))

    @property
    def available(self) -> bool:
        return self.binary is not None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        assert self.binary is not None
        if self.port == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        conf = self._dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 100000\nmax_inflight_messages 0\n"
            "message_size_limit 2097152\n"
            # as deploy/mosquitto/mosquitto.conf: with Nagle on, each small packet written
            # after an unacknowledged one waits out the client's delayed ACK (~40 ms)
            "set_tcp_nodelay true\n",
            encoding="utf-8",
        )
        log = (self._dir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the broker runs on
            [self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
        if await until(lambda: _port_open(self.port), 10.0) is None:
            raise RuntimeError(f"private mosquitto did not listen on {self.port}")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.proc.wait, 5.0)
            if self.proc.poll() is None:
                self.proc.kill()
        self.proc = None

    async def restart(self, down: float = 2.0) -> None:
        await self.stop()
        await asyncio.sleep(down)
        await self.start()

    async def close(self) -> None:
        await self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


async def terminate_pg_connections(store_url: str) -> int | None:
    """``pg_terminate_backend`` on every other connection to the URL's database."""
    u = urlsplit(store_url)
    if not u.scheme.startswith(("postgresql", "cockroachdb")) or "cockroach" in u.scheme:
        return None
    import psycopg

    dsn = f"postgresql://{u.netloc}/postgres"
    db = u.path.lstrip("/")

    def work() -> int:
        with psycopg.connect(dsn, autocommit=True) as c:
            rows = c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (db,),
            ).fetchall()
            return sum(1 for (ok,) in rows if ok)

    return await asyncio.to_thread(work)


def kill_process(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


Awaiting = Callable[[], Awaitable[None]]

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "Mesh",
    "PrivateBroker",
    "kill_process",
    "plan",
    "run",
    "terminate_pg_connections",
    "until",
]

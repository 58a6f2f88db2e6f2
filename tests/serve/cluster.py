"""Helpers of the serve tests: `worldstate serve` / `worldstate coordinator` subprocesses
on the real services, HTTP probes, and the store's view of who owns what."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from worldstate.errors import WorldStateError
from worldstate.store import Store

TIMING = {
    "WORLDSTATE_HEARTBEAT_INTERVAL": "0.2",
    "WORLDSTATE_PARTITION_TIMEOUT": "1.5",
    "WORLDSTATE_LEASE_TTL": "2.0",
    "WORLDSTATE_LEASE_RENEW_INTERVAL": "0.5",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str, timeout: float = 3.0) -> tuple[int, str]:
    """(status, body) of GET http://127.0.0.1:port/path; (0, error) if nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()
    except (OSError, urllib.error.URLError) as e:
        return 0, str(e)


def metric_values(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Family name → {sorted labels → value} for every sample (parsed by prometheus_client)."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        out.setdefault(fam.name, {})  # a family without samples yet is still present
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = float(s.value)
    return out


def total(
    values: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str
) -> float:
    want = set(labels.items())
    return sum(v for k, v in values.get(name, {}).items() if want <= set(k))


@dataclass
class Proc:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    acks: Path | None = None

    def tail(self, n: int = 40) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return f"--- {self.name} (rc {self.proc.poll()}) ---\n" + "\n".join(lines[-n:])

    def acked(self) -> set[str]:
        if self.acks is None or not self.acks.exists():
            return set()
        return {ln.split()[2] for ln in self.acks.read_text().splitlines() if ln.strip()}


@dataclass
class Cluster:
    store_url: str
    cache_url: str
    bus_url: str
    namespace: str
    tmp: Path
    procs: dict[str, Proc] = field(default_factory=dict)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDSTATE_")}
        env.update(TIMING)
        env.update(
            WORLDSTATE_STORE_URL=self.store_url,
            WORLDSTATE_CACHE_URL=self.cache_url,
            WORLDSTATE_BUS_URL=self.bus_url,
            WORLDSTATE_NAMESPACE=self.namespace,
            PYTHONUNBUFFERED="1",
        )
        return env

    def _start(self, name: str, args: list[str], acks: Path | None = None) -> Proc:
        port = free_port()
        log = self.tmp / f"{name}.log"
        cmd = [
            sys.executable,
            "-m",
            "worldstate.cli.main",
            *args,
            "--metrics-port",
            str(port),
            "--metrics-host",
            "127.0.0.1",
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, env=self._env(), stdout=out, stderr=subprocess.STDOUT)
        p = Proc(name, port, proc, log, acks)
        self.procs[name] = p
        return p

    def coordinator(self, name: str, regions: str) -> Proc:
        return self._start(
            name, ["coordinator", "--id", name, "--regions", regions, "--rebalance-interval", "0"]
        )

    def server(self, name: str, play: int = 20) -> Proc:
        acks = self.tmp / f"{name}.acks"
        return self._start(
            name,
            [
                "serve",
                "--id",
                name,
                "--play",
                str(play),
                "--record-acks",
                str(acks),
                "--log-format",
                "json",
            ],
            acks,
        )

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.proc.poll() is None:
                p.proc.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait(timeout=10)

    def tails(self) -> str:
        return "\n".join(p.tail() for p in self.procs.values())


async def wait_for(
    what: str,
    check: Callable[[], bool | Awaitable[bool]],
    cluster: Cluster,
    timeout: float = 60.0,
) -> None:
    """Poll ``check`` (sync or async) until true; fail with every process's log tail."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{cluster.tails()}")
        await asyncio.sleep(0.3)


async def owners(store_url: str) -> dict[int, str]:
    """Morton code → owner of every live lease, as the store says ({} before the schema)."""
    store = Store(store_url, read_only=True)
    try:
        await store.open()
        now = time.time()
        return {le.key.morton: le.owner for le in await store.leases() if le.live(now)}
    except WorldStateError:
        return {}  # the servers have not created the schema yet
    finally:
        await store.close()


async def stored_ids(store_url: str, mortons: list[int]) -> set[str]:
    """Ids of every object stored in the given regions."""
    from regions import RegionKey

    store = Store(store_url, read_only=True)
    try:
        await store.open()
        ids: set[str] = set()
        for m in mortons:
            snap = (await store.load_region(RegionKey.from_morton(m), repair=False)).snapshot
            ids.update(o.id for o in snap.objects)
        return ids
    finally:
        await store.close()

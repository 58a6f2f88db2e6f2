"""The ``worldstate serve`` process: one game server of the mesh, without a game.

It opens a `World` (joining the mesh: heartbeats, membership verdicts, coordinator
commands, forwarded strong ops, the causal and eventual machinery), serves ``/metrics``,
``/healthz`` and ``/readyz`` on one small HTTP port, optionally drives simulated players
(``--play N``), and on SIGTERM or SIGINT hands its regions off cleanly — leave the mesh,
drain every region's strong pipeline, snapshot its eventual state, release its lease —
before closing and exiting 0.

- ``/healthz`` (liveness): 200 while the world is open and every background loop runs
  (`World.health`); 503 with the reason otherwise (a crashed loop: restart the process).
- ``/readyz`` (readiness): 200 when the store answers within a second, this server is on
  the majority side of the mesh and its leases are being renewed (`World.readiness`); 503
  while starting, draining, demoted or cut off from the store.
- ``/metrics``: the world's Prometheus registry (`World.metrics`), text format 0.0.4.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import time
from dataclasses import dataclass
from typing import TextIO

from prometheus_client import CONTENT_TYPE_LATEST, disable_created_metrics, generate_latest

from worldstate.config import Config
from worldstate.serve._http import HttpEndpoint, Response
from worldstate.serve._play import Players
from worldstate.world import World

log = logging.getLogger("worldstate.serve")


@dataclass(frozen=True, slots=True)
class ServeSettings:
    config: Config
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9464
    """0: any free port (logged at start)."""
    play: int = 0
    record_acks: str | None = None
    """File to append every acknowledged strong op of ``--play`` to (tests, load runs)."""
    drain_timeout: float = 20.0
    """Seconds the SIGTERM hand-off may take before the process closes anyway (leases
    not released by then expire after ``Config.lease_ttl``)."""


class ServerProcess:
    """State of one ``serve`` run, shared by the HTTP handlers."""

    def __init__(self, settings: ServeSettings) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created: noise here
        self.settings = settings
        self.world = World(settings.config)
        self.phase = "starting"
        """starting → serving → draining → stopped."""
        self.stop = asyncio.Event()
        self.http = HttpEndpoint(
            {"/metrics": self.metrics, "/healthz": self.healthz, "/readyz": self.readyz},
            host=settings.metrics_host,
            port=settings.metrics_port,
        )
        self.players: Players | None = None
        self.failure: BaseException | None = None

    async def metrics(self) -> Response:
        if self.phase == "starting":
            return Response(503, b"# starting\n")
        body = generate_latest(self.world.metrics)
        return Response(200, body, CONTENT_TYPE_LATEST)

    async def healthz(self) -> Response:
        if self.phase == "starting":
            return _json(200, {"ok": True, "phase": self.phase})  # alive, still opening
        h = self.world.health()
        return _json(200 if h["ok"] or self.phase != "serving" else 503, h | {"phase": self.phase})

    async def readyz(self) -> Response:
        if self.phase != "serving":
            return _json(503, {"ok": False, "phase": self.phase})
        r = await self.world.readiness()
        r["phase"] = self.phase
        r["regions"] = len(self.world.leases())
        return _json(200 if r["ok"] else 503, r)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop.set)
        port = await self.http.start()
        cfg = self.settings.config
        log.info(
            "worldstate serve %s: /metrics /healthz /readyz on %s:%d",
            cfg.server_id,
            self.settings.metrics_host,
            port,
            extra={"event": "listening", "port": port},
        )
        try:
            await self.world.open()
        except BaseException:
            await self.http.close()
            raise
        _ = self.world.metrics  # start observing submits
        self.world.tasks.on_failure(self._on_world_failure)
        # what start-up built (modules, the world's services) lives as long as the process:
        # move it out of the collector's sight, so full collections only walk what the
        # server allocates from now on (shorter pauses; docs/operations.md "Latency")
        gc.collect()
        gc.freeze()
        self.phase = "serving"
        log.info(
            "worldstate serve %s: in the mesh (store %s, namespace %r)",
            cfg.server_id,
            self.world.store.describe(),
            cfg.namespace,
            extra={"event": "serving"},
        )
        play_task: asyncio.Task[None] | None = None
        acks = None
        if self.settings.play > 0:
            if self.settings.record_acks:
                acks = _open_acks(self.settings.record_acks)
            self.players = Players(self.world, self.settings.play, acks=acks)
            play_task = asyncio.create_task(self.players.run(), name="ws-serve-play")  # owned
        try:
            await self.stop.wait()
        finally:
            try:
                await self._stop(play_task)
            finally:
                if acks is not None:
                    acks.close()
        if self.failure is not None:
            log.error("exiting 1: the world failed: %r", self.failure, extra={"event": "failed"})
            return 1
        return 0

    def _on_world_failure(self, cause: BaseException) -> None:
        """A supervised loop crashed and the world closed itself: stop and exit non-zero,
        so the container runtime restarts the process."""
        self.failure = cause
        self.stop.set()

    async def _stop(self, play_task: asyncio.Task[None] | None) -> None:
        self.phase = "draining"
        started = time.monotonic()
        if play_task is not None and self.players is not None:
            self.players.stop()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await play_task
            play_task.cancel()
        released: list[object] = []
        try:
            async with asyncio.timeout(self.settings.drain_timeout):
                if self.failure is None:  # a failed world has closed itself already
                    released = list(await self.world.drain())
        except TimeoutError:
            log.warning(
                "hand-off did not finish within %.0f s; closing (unreleased leases expire)",
                self.settings.drain_timeout,
            )
        except Exception:
            log.exception("hand-off failed; closing")
        log.info(
            "handed off %d region(s) in %.2f s: %s",
            len(released),
            time.monotonic() - started,
            ", ".join(str(k) for k in released) or "-",
            extra={"event": "drained"},
        )
        await self.world.close()
        self.phase = "stopped"
        await self.http.close()
        log.info("stopped", extra={"event": "stopped"})


def _open_acks(path: str) -> TextIO:
    """The ``--record-acks`` file, opened once at start (a brief blocking open is fine)."""
    return open(path, "a", encoding="utf-8")  # closed when the run ends


def _json(status: int, doc: object) -> Response:
    return Response(status, json.dumps(doc, default=str).encode() + b"\n", "application/json")


async def run_server(settings: ServeSettings) -> int:
    """Run a ``serve`` process until SIGTERM/SIGINT; 0 after a clean hand-off."""
    return await ServerProcess(settings).run()

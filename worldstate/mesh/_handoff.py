"""The server side of the mesh coordinator's commands: take a region, give one up.

The coordinator asks on ``cmd/{server_id}`` (QoS 1) and the server answers on
``cmd-replies/{coordinator_id}``:

- ``acquire`` — take the region's lease (`World.acquire_region`: a takeover bumps the
  epoch, the fencing token; it then loads the region from the store — the previous owner's
  final snapshot and every strong write are there — and seeds this server's eventual state
  from it). Refused while this server is on the minority side of a partition.
- ``release`` — give the lease up (`World.release_region`): the region's strong pipeline
  drains first (every queued operation commits under the old epoch and is acknowledged),
  then its eventual state is flushed into the region's snapshot, then the lease ends.
  Nothing acknowledged is lost, and a clean hand-off loses no eventual state either.

A command carries the coordinator's election epoch; a server refuses commands older than
the newest epoch it has seen, so a deposed coordinator that still believes it acts cannot
move regions. It also obeys only the holder of the live coordinator lease at that epoch,
as the store has it (read when the sender or epoch is not the one last checked, or that
check's lease has run out), and only a command whose signed envelope names that holder:
a forged or replayed command, or one from a coordinator that lost its lease, is refused
(``not-coordinator``) and cannot raise the epoch this server believes in.

Commands on one region run one at a time, in arrival order. Duplicates (QoS 1
is at-least-once) are harmless: re-acquiring a held lease renews it, releasing a region not
held answers ``released: false``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from regions import RegionKey
from worldstate._validation import check_id
from worldstate.bus import Message, Subscription
from worldstate.errors import Fenced, RegionOwned, ValidationError, WorldStateError
from worldstate.protocol import _topics as topics
from worldstate.store import mesh_state
from worldstate.store.mesh_state import CoordinatorLease

if TYPE_CHECKING:
    from worldstate.node import Authority, NodeContext
    from worldstate.objects import Lease

log = logging.getLogger("worldstate.mesh._handoff")

COMMAND_TOPIC = topics.COMMANDS
REPLY_TOPIC = topics.COMMAND_REPLIES
COMMANDS = ("acquire", "release")
MAX_COMMAND_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Command:
    request: str
    sender: str
    coordinator_epoch: int
    name: str
    key: RegionKey

    def fields(self) -> dict[str, Any]:
        """The command's wire fields without the request id (`Rpc.call` adds it)."""
        return {
            "from": self.sender,
            "ce": self.coordinator_epoch,
            "c": self.name,
            "k": self.key.morton,
        }

    def encode(self) -> bytes:
        return orjson.dumps({"r": self.request, **self.fields()})


def decode_command(payload: bytes) -> Command:
    """Parse a command; `ValueError` (or `ValidationError`) if malformed."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise ValueError("command too large")
    doc = orjson.loads(payload)
    if not isinstance(doc, dict):
        raise ValueError("command must be an object")
    req, sender, ce, name, k = (doc.get(f) for f in ("r", "from", "ce", "c", "k"))
    if not (isinstance(req, str) and 0 < len(req) <= 64 and req.isalnum()):
        raise ValueError("bad request id")
    if isinstance(ce, bool) or not isinstance(ce, int) or ce < 0:
        raise ValueError("bad coordinator epoch")
    if name not in COMMANDS:
        raise ValueError(f"unknown command {name!r}")
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError("bad region key")
    return Command(req, check_id(sender, "coordinator id"), ce, name, RegionKey.from_morton(k))


class CommandHandler:
    """Serves the coordinator's commands for one server (started by `World.open`).

    ``acquire`` and ``release`` are the composition root's: taking a region also loads it and
    seeds eventual state; giving it up drains the strong pipeline and flushes eventual state
    first. Only the world knows both paths, so it passes those steps in."""

    def __init__(
        self,
        ctx: NodeContext,
        authority: Authority,
        *,
        acquire: Callable[[RegionKey], Awaitable[Lease]],
        release: Callable[[RegionKey], Awaitable[bool]],
    ) -> None:
        self.ctx = ctx
        self.authority = authority
        self._acquire = acquire
        self._release = release
        self.coordinator_epoch = 0
        """The newest coordinator election epoch seen: older commands are refused."""
        self.served = 0
        self.refused = 0
        self.dropped = 0
        self.timings: dict[tuple[str, str], tuple[int, float]] = {}
        """(command, ok|refused) → (count, total seconds): worldstate.metrics."""
        self._locks: dict[RegionKey, asyncio.Lock] = {}
        self._sub: Subscription | None = None
        self._verified: CoordinatorLease | None = None
        """The coordinator lease last confirmed in the store."""

    def start(self) -> None:
        self._sub = self.ctx.bus.subscribe(
            f"{COMMAND_TOPIC}/{self.ctx.server_id}", self._on_command
        )

    async def close(self) -> None:
        if self._sub is not None:
            self._sub.cancel()
            self._sub = None

    def _on_command(self, msg: Message) -> None:
        try:
            cmd = decode_command(msg.payload)
        except (ValueError, orjson.JSONDecodeError) as e:  # ValidationError is a ValueError
            self.dropped += 1
            log.debug("%s: dropped a malformed command: %s", self.ctx.server_id, e)
            return
        if msg.sender is not None and msg.sender != cmd.sender:
            self.dropped += 1
            log.warning(
                "%s: dropped a command signed by %r in the name of %r",
                self.ctx.server_id,
                msg.sender,
                cmd.sender,
            )
            return
        self.ctx.tasks.spawn(self._serve(cmd), f"ws-command-{cmd.name}-{cmd.key}", job=True)

    async def _serve(self, cmd: Command) -> None:
        reply: dict[str, Any] = {"r": cmd.request, "s": self.ctx.server_id, "c": cmd.name}
        why = await self._not_coordinator(cmd)
        if why is not None:
            self.refused += 1
            log.warning("%s: refused a %s command: %s", self.ctx.server_id, cmd.name, why)
            reply.update(ok=False, code="not-coordinator", error=why)
        elif cmd.coordinator_epoch < self.coordinator_epoch:
            self.refused += 1
            reply.update(
                ok=False,
                code="stale-coordinator",
                error=f"coordinator epoch {cmd.coordinator_epoch} < {self.coordinator_epoch}",
            )
        else:
            self.coordinator_epoch = cmd.coordinator_epoch
            lock = self._locks.setdefault(cmd.key, asyncio.Lock())
            async with lock:
                started = time.monotonic()
                reply.update(await self._run(cmd))
                outcome = "ok" if reply.get("ok") else "refused"
                n, total = self.timings.get((cmd.name, outcome), (0, 0.0))
                self.timings[(cmd.name, outcome)] = (n + 1, total + time.monotonic() - started)
        with contextlib.suppress(WorldStateError):
            await self.ctx.bus.publish(f"{REPLY_TOPIC}/{cmd.sender}", orjson.dumps(reply), qos=1)

    async def _not_coordinator(self, cmd: Command) -> str | None:
        """None if ``cmd.sender`` holds the live coordinator lease at ``cmd``'s epoch (per
        the store), else why not."""
        ctx = self.ctx
        now = ctx.clock()
        v = self._verified
        if (
            v is not None
            and (v.owner, v.epoch) == (cmd.sender, cmd.coordinator_epoch)
            and v.live(now)
        ):
            return None
        try:
            async with asyncio.timeout(ctx.config.forward_timeout * 2):
                lease = await ctx.store.run(
                    mesh_state.read_coordinator, "check the coordinator lease", read=True
                )
        except (TimeoutError, WorldStateError) as e:
            return f"could not check the coordinator lease in the store: {e}"
        if lease is None:
            return f"{cmd.sender!r} does not hold the coordinator lease (no coordinator)"
        if (lease.owner, lease.epoch) != (cmd.sender, cmd.coordinator_epoch):
            return (
                f"{cmd.sender!r} at epoch {cmd.coordinator_epoch} is not the coordinator "
                f"({lease.owner!r} holds epoch {lease.epoch})"
            )
        if not lease.live(now - ctx.config.clock_skew_margin):
            return f"the coordinator lease of {cmd.sender!r} has expired"
        self._verified = lease
        return None

    async def _run(self, cmd: Command) -> dict[str, Any]:
        try:
            if cmd.name == "acquire":
                return await self.acquire(cmd.key)
            return await self.release(cmd.key)
        except RegionOwned as e:
            self.refused += 1
            return {"ok": False, "code": "owned", "owner": e.owner, "error": str(e)}
        except (Fenced, ValidationError, WorldStateError) as e:
            self.refused += 1
            code = "not-authoritative" if not self.authority.authoritative else "error"
            return {"ok": False, "code": code, "error": str(e)[:500]}

    async def acquire(self, key: RegionKey) -> dict[str, Any]:
        """Take ``key`` (epoch + 1 on a takeover), load it and seed eventual state."""
        if not self.authority.authoritative:
            self.refused += 1
            return {
                "ok": False,
                "code": "not-authoritative",
                "error": f"{self.ctx.server_id} is on the minority side of a partition",
            }
        # acquire_region loads the region from the store (every strong write and the previous
        # owner's final snapshot are there) and seeds this server's eventual state from it
        lease = await self._acquire(key)
        self.served += 1
        log.info(
            "%s took region %s at epoch %d",
            self.ctx.server_id,
            key,
            lease.epoch,
            extra={"event": "acquired", "region": str(key), "epoch": lease.epoch},
        )
        return {"ok": True, "epoch": lease.epoch, "expires_at": lease.expires_at}

    async def release(self, key: RegionKey) -> dict[str, Any]:
        """Drain, flush and give ``key`` up."""
        lease = self.authority.live().get(key)
        released = await self._release(key)
        self.served += 1
        log.info(
            "%s released region %s (held: %s)",
            self.ctx.server_id,
            key,
            released,
            extra={
                "event": "released",
                "region": str(key),
                "epoch": lease.epoch if lease else None,
            },
        )
        return {"ok": True, "released": released, "epoch": lease.epoch if lease else None}

"""Membership and split brain, as one server lives them.

Every server runs a `MembershipAgent` (started by `World.open`):

- **Heartbeats on the bus.** Every ``Config.heartbeat_interval`` seconds it publishes its
  presence, retained, on ``members/{server_id}``: incarnation, time, whether it keeps
  authority, the membership generation it knows and the load of the regions it holds. The
  world's bus carries a last will that clears that retained message, so the broker tells
  everyone at once when a server's connection dies; a clean close clears it too.
- **Heartbeats in the store** (``ws_members``), every few seconds: the coordinator's and the
  operator's durable record of who runs, and the proof that a server that went silent on
  the bus is still alive (partitioned, not dead).
- **The view**: the servers it heard within ``Config.partition_timeout``
  (`consistency.MembershipView`; retained presences replayed on (re)subscription count from
  the time they were sent, never from when they were replayed).
- **The verdict**: on every heartbeat and every change it hears, `consistency.PartitionState`
  decides with `conflicts.decide_partition` against the *agreed* membership — the set the
  mesh coordinator records in the store (``ws_membership``) and publishes, retained, on
  ``mesh/membership``. A strict majority keeps authority; exactly half keeps it only with the
  membership's lowest server id. Losing it demotes the server at once:
  ``authority.demote()``, so strong operations raise `NotAuthoritative`, leases are
  not renewed (they run out; the majority's coordinator then gives the regions to others at
  epoch + 1), and eventual batches of its regions are no longer published. Hearing a
  majority again (after a heal, or once the coordinator has recorded a membership it is
  part of) promotes it back.

Bootstrap. A mesh whose membership was never recorded (no coordinator ran: generation 0)
has nothing to split from, so every server keeps authority, exactly as a single server
does. Once a membership is recorded, a starting server reads it from the store and waits
(at most about one heartbeat interval) for the retained presences of the others before
its first verdict: it never claims authority merely because it has not heard anyone yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

import conflicts
from consistency import ConsistencyInputError, MembershipView, PartitionState, check_server_id
from regions import RegionKey
from worldstate._validation import check_id
from worldstate.bus import Bus, Message, Subscription
from worldstate.errors import ValidationError, WorldStateError
from worldstate.protocol import _topics as topics
from worldstate.store import mesh_state
from worldstate.store.mesh_state import NO_MEMBERSHIP, AgreedMembership, MemberRow

if TYPE_CHECKING:
    from worldstate.node import Authority, NodeContext

LoadSource = Callable[[], tuple[Mapping[int, int], Mapping[RegionKey, int]]]
"""What the agent reports as load: (eventual entities per region Morton code, strong ops
committed so far per held region). The world wires the two paths' counters into it."""

log = logging.getLogger("worldstate.mesh._agent")

PRESENCE_TOPIC = topics.PRESENCE
"""``members/{server_id}``: a server's retained presence (its heartbeat)."""
MEMBERSHIP_TOPIC = topics.MEMBERSHIP
"""The agreed membership, retained, published by the acting coordinator."""
MAX_LOAD_REGIONS = 2000
"""Regions whose load one heartbeat reports (the busiest first)."""
MAX_PRESENCE_BYTES = 256 * 1024
SUBSCRIBE_TIMEOUT = 5.0
LEAVE_TIMEOUT = 2.0
"""Seconds a clean close spends telling the mesh it leaves (bus and store), at most."""


def presence_topic(server_id: str) -> str:
    return f"{PRESENCE_TOPIC}/{server_id}"


def last_will(server_id: str) -> Message:
    """The will every world's bus carries: clear the retained presence (the broker then
    tells every subscriber, with an empty message, that the server is gone)."""
    return Message(presence_topic(server_id), b"", qos=1, retain=True)


# -- wire format -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegionLoad:
    """What one held region costs its owner: eventual entities in it and strong operations
    committed per second (smoothed)."""

    entities: int = 0
    ops_per_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Presence:
    """One heartbeat as sent on ``members/{server_id}``."""

    server_id: str
    incarnation: int
    at: float
    """When it was sent, by the sender's clock."""
    authoritative: bool
    generation: int
    """The membership generation the sender knew."""
    load: Mapping[int, RegionLoad] = field(default_factory=dict)
    """Morton code → load, for the regions the sender holds."""

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "s": self.server_id,
                "i": self.incarnation,
                "at": self.at,
                "a": self.authoritative,
                "g": self.generation,
                "l": [[k, v.entities, round(v.ops_per_s, 3)] for k, v in self.load.items()],
            }
        )


@dataclass(frozen=True, slots=True)
class Departure:
    """A server went: ``clean`` when it said goodbye (a clean close: it holds nothing and
    leaves the membership), else its retained presence was cleared (its last will: it may
    be dead or only cut off)."""

    server_id: str
    incarnation: int | None = None
    clean: bool = False


def encode_goodbye(server_id: str, incarnation: int) -> bytes:
    return orjson.dumps({"s": server_id, "i": incarnation, "bye": True})


def _num(x: object) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise ValueError(f"not a finite number: {x!r}")
    return float(x)


def _int(x: object) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 0:
        raise ValueError(f"not an int >= 0: {x!r}")
    return x


def decode_presence(msg: Message) -> Presence | Departure:
    """Parse a message on ``members/+``; `ValueError` if it is malformed or forged (the
    sender named in the payload must be the topic's)."""
    parts = msg.topic.split("/")
    if len(parts) != 2 or parts[0] != PRESENCE_TOPIC:
        raise ValueError(f"not a presence topic: {msg.topic!r}")
    sid = check_id(parts[1], "server id")
    check_server_id(sid)
    if not msg.payload:
        return Departure(sid)
    if len(msg.payload) > MAX_PRESENCE_BYTES:
        raise ValueError("presence too large")
    doc = orjson.loads(msg.payload)
    if not isinstance(doc, dict) or doc.get("s") != sid:
        raise ValueError("presence does not name its topic's server")
    if doc.get("bye") is True:
        return Departure(sid, _int(doc.get("i")), clean=True)
    auth = doc.get("a")
    if not isinstance(auth, bool):
        raise ValueError("bad authoritative flag")
    load: dict[int, RegionLoad] = {}
    rows = doc.get("l", [])
    if not isinstance(rows, list) or len(rows) > MAX_LOAD_REGIONS:
        raise ValueError("bad load")
    for row in rows:
        if not isinstance(row, list) or len(row) != 3:
            raise ValueError("bad load row")
        morton = _int(row[0])
        RegionKey.from_morton(morton)
        load[morton] = RegionLoad(_int(row[1]), max(0.0, _num(row[2])))
    return Presence(sid, _int(doc.get("i")), _num(doc.get("at")), auth, _int(doc.get("g")), load)


def encode_membership(m: AgreedMembership) -> bytes:
    return orjson.dumps(
        {"g": m.generation, "m": sorted(m.members), "at": m.changed_at, "by": m.changed_by}
    )


def decode_membership(payload: bytes) -> AgreedMembership:
    doc = orjson.loads(payload)
    if not isinstance(doc, dict):
        raise ValueError("membership must be an object")
    members = doc.get("m")
    if not isinstance(members, list) or len(members) > 10_000:
        raise ValueError("bad member list")
    ids = frozenset(check_server_id(check_id(m, "member")) for m in members)
    by = doc.get("by", "")
    return AgreedMembership(
        _int(doc.get("g")), ids, _num(doc.get("at", 0.0)), by if isinstance(by, str) else ""
    )


# -- hearing the mesh ------------------------------------------------------------------------


class PresenceTracker:
    """Who one bus client hears, and the latest agreed membership it has learnt. Shared by
    the servers' `MembershipAgent` and the `MeshCoordinator`.

    ``on_change`` is called (on the event loop) when a server appears, departs or the
    membership changes: the owner re-decides at once instead of at its next tick.

    The membership published on the bus is only a hint: ``on_hint`` is called when one newer
    than the known generation arrives, and the owner then reads the store, which alone is
    believed (`learn`). A forged, replayed or stale retained ``mesh/membership`` therefore
    never demotes anyone, and clearing it changes nothing.
    """

    def __init__(
        self,
        self_id: str,
        timeout: float,
        clock: Callable[[], float],
        on_change: Callable[[], None] = lambda: None,
        on_hint: Callable[[], None] = lambda: None,
    ) -> None:
        self.self_id = self_id
        self.on_hint = on_hint
        self.hinted = 0
        """The newest membership generation announced on the bus (unconfirmed)."""
        self.view = MembershipView(self_id, timeout)
        self.clock = clock
        self.on_change = on_change
        self.peers: dict[str, Presence] = {}
        """The latest heartbeat of every server heard (departed ones removed)."""
        self.agreed: AgreedMembership = NO_MEMBERSHIP
        self.departed: dict[str, float] = {}
        """When each server's presence was last cleared (its will, or a goodbye)."""
        self.left: dict[str, int] = {}
        """Servers that left cleanly (said goodbye, or the store says so), by incarnation:
        they count in no majority until a newer incarnation is heard."""
        self.dropped = 0
        self._subs: list[Subscription] = []

    def subscribe(self, bus: Bus) -> list[Subscription]:
        self._subs = [
            bus.subscribe(f"{PRESENCE_TOPIC}/+", self._on_presence),
            bus.subscribe(MEMBERSHIP_TOPIC, self._on_membership),
        ]
        return self._subs

    def cancel(self) -> None:
        for sub in self._subs:
            sub.cancel()
        self._subs = []

    def heard(self, now: float | None = None) -> frozenset[str]:
        """Servers heard within the timeout, this client itself included."""
        return self.view.view(self.clock() if now is None else now)

    def members(self) -> frozenset[str]:
        """The agreed membership without the servers that left it cleanly. (Safe to judge
        majorities by: a server that left is on no side, so two sides that disagree on
        whether it counts still cannot both keep authority.)"""
        return self.agreed.members - self.left.keys()

    def note_rows(self, rows: Iterable[MemberRow]) -> bool:
        """Take clean leaves (and returns) from the store's heartbeat rows; True if the
        set of left servers changed."""
        before = dict(self.left)
        for r in rows:
            if r.server_id == self.self_id:
                continue
            seen = self.peers.get(r.server_id)
            if r.state == "left":
                if seen is None or seen.incarnation <= r.incarnation:
                    self.left[r.server_id] = max(r.incarnation, self.left.get(r.server_id, -1))
            elif r.incarnation > self.left.get(r.server_id, r.incarnation):
                del self.left[r.server_id]
        return before != self.left

    def learn(self, membership: AgreedMembership) -> bool:
        """Take ``membership`` if it is newer than the one known; True if it was."""
        if membership.generation <= self.agreed.generation:
            return False
        self.agreed = membership
        return True

    def _on_presence(self, msg: Message) -> None:
        try:
            got = decode_presence(msg)
        except (ValueError, ConsistencyInputError, ValidationError, orjson.JSONDecodeError) as e:
            self.dropped += 1
            log.debug("%s: dropped a presence on %r: %s", self.self_id, msg.topic, e)
            return
        if got.server_id == self.self_id:
            return
        if isinstance(got, Departure):
            known = got.server_id in self.peers
            self.view.left(got.server_id, got.incarnation)
            self.peers.pop(got.server_id, None)
            self.departed[got.server_id] = self.clock()
            if got.clean and got.incarnation is not None:
                self.left[got.server_id] = got.incarnation
            if known or got.clean:
                self.on_change()
            return
        now = self.clock()
        # a retained presence is replayed on (re)subscription: it counts from when it was
        # sent; a live one from now (no clock skew involved)
        at = min(now, got.at) if msg.retain else now
        before = got.server_id in self.view.view(now)
        self.view.heard(got.server_id, at, got.incarnation)
        last = self.peers.get(got.server_id)
        if last is None or (got.incarnation, got.at) >= (last.incarnation, last.at):
            self.peers[got.server_id] = got
        if got.incarnation > self.left.get(got.server_id, got.incarnation):
            del self.left[got.server_id]  # it came back
        if not before and got.server_id in self.view.view(now):
            self.on_change()

    def _on_membership(self, msg: Message) -> None:
        if not msg.payload:
            return
        try:
            m = decode_membership(msg.payload)
        except (ValueError, ConsistencyInputError, ValidationError, orjson.JSONDecodeError):
            self.dropped += 1
            return
        if m.generation > max(self.agreed.generation, self.hinted):
            self.hinted = m.generation
            self.on_hint()


# -- the agent -------------------------------------------------------------------------------


class MembershipAgent:
    """Heartbeats, view and verdict of one `World` (see the module docs)."""

    def __init__(self, ctx: NodeContext, authority: Authority, load_source: LoadSource) -> None:
        self.ctx = ctx
        self.authority = authority
        self._load_source = load_source
        cfg = ctx.config
        self.incarnation = time.time_ns() // 1_000_000
        """Milliseconds since the Unix epoch at start: a restart under the same id is newer."""
        self.started_at = ctx.clock()
        self.tracker = PresenceTracker(
            ctx.server_id, cfg.partition_timeout, ctx.clock, self._changed, self._hinted
        )
        self._hint = asyncio.Event()
        self.state = PartitionState(ctx.server_id, since=self.started_at)
        self.demotions = 0
        self.promotions = 0
        self._store_interval = min(
            max(cfg.heartbeat_interval, cfg.lease_renew_interval), cfg.partition_timeout / 2
        )
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._ops_seen: dict[RegionKey, tuple[int, float, float]] = {}
        """Per held region: (ops committed, when counted, smoothed ops/s)."""
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe, learn the agreed membership from the store, settle the first verdict
        (waiting briefly for the others' retained presences when a membership exists), then
        heartbeat in the background."""
        ctx = self.ctx
        subs = self.tracker.subscribe(ctx.bus)
        for sub in subs:
            try:
                await sub.wait_active(timeout=SUBSCRIBE_TIMEOUT)
            except WorldStateError as e:
                log.warning("%s: membership subscription not yet active: %s", ctx.server_id, e)
        await self._read_store()
        if self.tracker.members():
            await self._settle()
        self.decide()
        await self._beat()
        await self._store_beat()
        sid = ctx.server_id
        self._tasks = [
            ctx.tasks.spawn(self._beat_loop(), f"ws-heartbeat-{sid}"),
            ctx.tasks.spawn(self._store_loop(), f"ws-store-heartbeat-{sid}"),
            ctx.tasks.spawn(self._confirm_loop(), f"ws-membership-confirm-{sid}"),
        ]

    async def _settle(self) -> None:
        """Wait until what we hear would keep authority, or about one heartbeat interval."""
        cfg = self.ctx.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(2 * cfg.heartbeat_interval, cfg.partition_timeout / 2)
        while loop.time() < deadline:
            members = self.tracker.members()
            if not members:
                return
            verdict = conflicts.decide_partition(
                members, self.tracker.heard(), self_id=self.ctx.server_id
            )
            if verdict.keeps_authority:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - loop.time()):
                    await self._wake.wait()

    async def close(self) -> None:
        """Stop heartbeating and leave cleanly: the store row says ``left`` (the coordinator
        drops the server from the membership) and the retained presence is cleared."""
        if self._closed:
            return
        self._closed = True
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.tracker.cancel()
        ctx = self.ctx
        now = ctx.clock()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(LEAVE_TIMEOUT):
                await ctx.store.run(
                    lambda c: mesh_state.mark_left(c, ctx.server_id, self.incarnation, now),
                    "leave the mesh",
                )
        with contextlib.suppress(Exception):
            async with asyncio.timeout(LEAVE_TIMEOUT):
                topic = presence_topic(ctx.server_id)
                await ctx.bus.publish(topic, encode_goodbye(ctx.server_id, self.incarnation))
                await ctx.bus.publish(topic, b"", qos=1, retain=True)

    # -- the verdict -----------------------------------------------------------------------

    def _changed(self) -> None:
        self._wake.set()
        if self._tasks:  # settled: re-decide at once on what we just heard
            self.decide()

    def decide(self) -> bool:
        """Judge again what we hear against the agreed membership; on a change of standing
        demote or promote the world at once. True when the standing changed."""
        now = self.ctx.clock()
        t = self.tracker
        if not self.state.update(t.members(), t.heard(now), now):
            return False
        me = self.ctx.server_id
        if self.state.majority:
            self.authority.promote(self.state.reason)
            self.promotions += 1
            log.info(
                "%s PROMOTED: keeps authority again: %s",
                me,
                self.state.reason,
                extra={"event": "promoted"},
            )
        else:
            self.authority.demote(self.state.reason)
            self.demotions += 1
            log.info(
                "%s DEMOTED (partition: no strong writes, no lease renewals): %s",
                me,
                self.state.reason,
                extra={"event": "demoted"},
            )
        return True

    def status(self) -> dict[str, Any]:
        """``{"view", "membership", "majority", "since", "reason", "generation",
        "incarnation", "peers", "demotions", "promotions"}``."""
        doc = self.state.as_dict()
        doc["view"] = sorted(self.tracker.heard())
        doc["generation"] = self.tracker.agreed.generation
        doc["incarnation"] = self.incarnation
        doc["peers"] = sorted(self.tracker.peers)
        doc["demotions"] = self.demotions
        doc["promotions"] = self.promotions
        return doc

    # -- heartbeats ------------------------------------------------------------------------

    async def _beat_loop(self) -> None:
        interval = self.ctx.config.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            self.decide()
            await self._beat()

    async def _beat(self) -> None:
        ctx = self.ctx
        p = Presence(
            ctx.server_id,
            self.incarnation,
            ctx.clock(),
            self.authority.authoritative,
            self.tracker.agreed.generation,
            self.load(),
        )
        try:
            await ctx.bus.publish(presence_topic(ctx.server_id), p.encode(), retain=True)
        except WorldStateError as e:
            log.debug("%s: heartbeat not published: %s", ctx.server_id, e)

    def _hinted(self) -> None:
        self._hint.set()

    async def _confirm_loop(self) -> None:
        """A newer membership was announced on the bus: read the store, which alone is
        believed (at most one read in flight, each under a deadline)."""
        timeout = self.ctx.config.partition_timeout / 2
        while True:
            await self._hint.wait()
            self._hint.clear()
            try:
                async with asyncio.timeout(timeout):
                    changed = await self._read_store()
            except (TimeoutError, WorldStateError) as e:
                log.warning("%s: could not confirm the membership: %s", self.ctx.server_id, e)
                continue
            if changed:
                self.decide()

    async def _store_loop(self) -> None:
        while True:
            await asyncio.sleep(self._store_interval)
            await self._store_beat()

    async def _store_beat(self) -> None:
        ctx = self.ctx
        now = ctx.clock()
        load = self.load()
        row = MemberRow(
            ctx.server_id,
            self.incarnation,
            "up",
            self.authority.authoritative,
            self.started_at,
            now,
            self.tracker.agreed.generation,
            tuple(sorted(self.tracker.heard(now))),
            {
                "regions": len(load),
                "entities": sum(v.entities for v in load.values()),
                "ops_per_s": round(sum(v.ops_per_s for v in load.values()), 3),
            },
        )
        try:
            await ctx.store.run(lambda c: mesh_state.put_member(c, row), "store heartbeat")
            changed = await self._read_store()
        except WorldStateError as e:
            log.warning("%s: store heartbeat failed: %s", ctx.server_id, e)
            return
        if changed:
            self.decide()

    async def _read_store(self) -> bool:
        """Learn the agreed membership and clean leaves from the store; True if either
        changed what we know."""

        async def body(c: Any) -> tuple[AgreedMembership, list[MemberRow]]:
            return await mesh_state.read_membership(c), await mesh_state.member_rows(c)

        agreed, rows = await self.ctx.store.run(body, "read membership", read=True)
        learnt = self.tracker.learn(agreed)
        return self.tracker.note_rows(rows) or learnt

    def load(self) -> dict[int, RegionLoad]:
        """Load of each region this server holds: eventual entities in it, and strong
        operations per second (exponentially smoothed between heartbeats)."""
        held = set(self.authority.live())
        if not held:
            self._ops_seen.clear()
            return {}
        now = self.ctx.clock()  # the injected clock: the simulation stays deterministic
        entities, ops_of = self._load_source()
        out: dict[int, RegionLoad] = {}
        for key in held:
            ops = ops_of.get(key, 0)
            last = self._ops_seen.get(key)
            rate = 0.0
            if last is not None:
                dt = now - last[1]
                inst = (ops - last[0]) / dt if dt > 0 and ops >= last[0] else 0.0
                rate = 0.5 * last[2] + 0.5 * inst
            self._ops_seen[key] = (ops, now, rate)
            out[key.morton] = RegionLoad(int(entities.get(key.morton, 0)), rate)
        for key in [k for k in self._ops_seen if k not in held]:
            self._ops_seen.pop(key, None)
        if len(out) > MAX_LOAD_REGIONS:
            busiest = sorted(out.items(), key=lambda kv: -(kv[1].entities + kv[1].ops_per_s))
            out = dict(busiest[:MAX_LOAD_REGIONS])
        return out

"""The causal path: `EmitEvent` and `TransferCreature` (and game types routed CAUSAL) as
vector-clocked events, appended to the durable event log before they are acknowledged,
broadcast at-least-once and delivered in causal order at every server.

Guarantee: causal order at every receiver; no acknowledged event is lost (it is in the log
before `Accepted` returns, and every receiver that misses its message fetches it from there).

One causal domain per world namespace
-------------------------------------
Each server runs one `CausalBuffer` (``self_id = server_id``) over every region and the
world-wide stream, subscribes to ``causal/#`` and delivers everything in causal order;
`World.updates` streams pick the deliveries of their regions (`World.publish_update`
filters). Causality thus holds across regions (a quest step in one region after a chat line
in another) at the price of scale: every server receives, validates and orders every causal
event of the world, and a vector clock carries one entry per server that ever emitted. That
suits a mesh of tens of servers and thousands of events per second (see
``bench/causal_bench.py``); past that, the domain would be split (per shard of regions, with
cross-shard causality carried by explicit dependencies), which this layout leaves room for:
the log is already keyed per origin and indexed per region.

Appending (group commit)
------------------------
`submit` queues the op; one appender task takes everything queued (after gathering for
``Config.group_commit_window``) and writes it in ONE transaction (`event_log.append_group`):
ops whose op_id already has an outcome get no event (idempotency; both callers get
`Accepted`); the fresh ones become this server's next events, numbered in queue order, each
depending on everything delivered here (``deps``) and on the ones before it; their rows and
their ``accepted`` outcomes are inserted. Only when that commits are the events delivered
locally, the submitters answered, and the group published as one bus message (QoS 1).

Seqs are assigned inside the transaction, from this server's delivered count, and consumed
only by a commit, so a failed append leaves no hole: its submitters get the error at once
(`StoreUnavailable`; resubmitting the same op_id is safe) and the next append reuses the
seqs. A commit whose acknowledgement was lost is the one case where the log holds events
this server does not know it wrote: after any failed append the next transaction first reads
this server's rows beyond its delivered count and adopts them (delivers and publishes them),
and while the queue is idle a background reconciliation does the same, with capped backoff,
until it succeeds.

Receiving and repair
--------------------
A message is validated whole before anything changes (`worldstate.protocol._causal`: its
sender, whom the signing bus authenticated, size, structure, ids, seq >= 1, vector clock,
region, every op exactly as a local submit checks it, HLC drift) — anything wrong drops the
message and counts it by reason. Each event is
offered to the buffer; duplicates (at-least-once delivery, repair overlap, our own echo) are
dropped there. Every delivered event goes to `World.publish_update` as a `CausalDelivery`.
A repair task (every `REPAIR_INTERVAL` s) fetches from the log the holes that persisted for
`REPAIR_AFTER` s, and the tails that head announcements (``causal/heads/<origin>``, every
`HEAD_INTERVAL` s and on close) reveal — events whose message was lost with nothing later
referring to them.

A restarted server seeds its buffer from the log (each origin's highest seq), so it goes on
with its own sequence and joins the others at their heads instead of replaying history.

Trust: messages travel on the world's signing bus (`worldstate.bus.SignedBus`): keys from
the store, so a publisher that cannot reach the database cannot inject events, and only the
server a ``causal/*/<origin>`` topic names may publish there (the envelope's sender is
checked against it, here too). Replays are the envelope's to refuse, and a replayed event
would be a duplicate for the buffer anyway. Servers of the world are trusted not to lie (a
broker ACL keeps each to its own topics, see `worldstate.protocol._causal`). A signed
event that no server appended could at worst wait in the buffer (bounded by
``max_pending``) and cost a log read per `REPAIR_AFTER`. Own-origin messages are ignored
outright: this server's events come only from itself.

Ownership transfers: a delivered `TransferCreature` updates `creature_owners` (creature id
→ server). Concurrent transfers of one creature resolve the same way everywhere: of the
transfers no later transfer causally follows, the highest (hlc, origin) wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import orjson

from consistency import (
    CausalBuffer,
    CausalEvent,
    ClockError,
    ConsistencyClass,
    ConsistencyInputError,
    VectorClock,
)
from regions import RegionKey
from worldstate.bus import Message, Subscription
from worldstate.causal._repair import plan_repair
from worldstate.errors import (
    Overloaded,
    StoreUnavailable,
    ValidationError,
    WorldClosed,
    WorldStateError,
)
from worldstate.node._deadlines import Deadlines
from worldstate.operations import Operation, TransferCreature
from worldstate.protocol import _causal as wire
from worldstate.results import Accepted
from worldstate.store import event_log
from worldstate.updates import CausalDelivery, Cursor

if TYPE_CHECKING:
    from worldstate.node import Fanout, NodeContext, Router

log = logging.getLogger("worldstate.causal")

MAX_GROUP = 2048
"""Most ops one append transaction takes."""
MAX_QUEUED = 100_000
"""Ops waiting for the appender; beyond it `submit` raises `Overloaded` (nothing taken)."""
MAX_PENDING = 20_000
"""Events a receiver buffers while waiting for dependencies (the buffer's overflow policy
drops beyond it, and repair fetches them again)."""
REPAIR_INTERVAL = 0.25
REPAIR_AFTER = 0.5
"""Seconds a gap must persist before it is fetched from the log (and between two fetches
of the same origin's gaps)."""
REPAIR_LIMIT = 5000
"""Most events one repair round reads."""
HEAD_INTERVAL = 1.0
PUBLISH_SLOTS = 16
"""Group messages being published at once; the appender waits for a slot (back-pressure)."""
MAX_ORIGINS = 4096
SUBSCRIBE_TIMEOUT = 5.0
CLOSE_GRACE = 2.0
RECONCILE_MIN, RECONCILE_MAX = 0.05, 2.0


@dataclass(slots=True)
class _Waiting:
    """One op waiting to be appended, with every submit of its op_id waiting for it (each
    caller has its own future: one that gives up cancels only its own)."""

    op: Operation
    key: RegionKey | None
    oid: str
    futures: list[asyncio.Future[Accepted]]


@dataclass(frozen=True, slots=True)
class _Transfer:
    server: str
    clock: VectorClock
    hlc: int
    origin: str


def _region_of_row(region_key: int, op: Operation) -> RegionKey | None:
    """The region a log row names (our own rows: trusted, not checked again)."""
    return None if region_key == event_log.GLOBAL_REGION else wire.region_of_morton(region_key)


class CausalPath:
    """The causal path of one world (see the module docstring)."""

    def __init__(self, ctx: NodeContext, router: Router, fanout: Fanout) -> None:
        self.ctx = ctx
        self.router = router
        self.fanout = fanout
        self.buffer = CausalBuffer(ctx.server_id, max_pending=MAX_PENDING)
        self._queue: deque[_Waiting] = deque()
        self._inflight: dict[str, _Waiting] = {}
        self._deadlines = Deadlines()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._publishing: set[asyncio.Task[None]] = set()
        self._publish_slots = asyncio.Semaphore(PUBLISH_SLOTS)
        self._subscription: Subscription | None = None
        self._heads: dict[str, int] = {}
        self._senders: set[str] = set()
        self._tail_since: dict[str, float] = {}
        self._retry_at: dict[str, float] = {}
        self.repair_interval = REPAIR_INTERVAL
        self.repair_after = REPAIR_AFTER
        self.head_interval = HEAD_INTERVAL
        """Timings (seconds), read by the background loops on every round: tests shorten
        them."""
        self._uncertain = False
        self._started = False
        self._closed = False
        self._transfers: dict[int, list[_Transfer]] = {}
        self._owners: dict[int, str] = {}
        self.dropped: Counter[str] = Counter()
        self.emitted = 0
        self.appended = 0
        self.append_batches = 0
        self.append_failures = 0
        self.already_recorded = 0
        self.received = 0
        self.delivered = 0
        self.repaired = 0
        self.repair_queries = 0
        self.published = 0
        self.publish_failures = 0
        self.heads_received = 0
        self.echoes = 0
        self._cursor = Cursor(VectorClock())
        """The resume point just after the last event delivered here (own ones included)."""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe, seed the buffer from the log, start the appender, repair and head
        tasks. Messages that arrive before the seed are buffered and sorted out by it."""
        ctx = self.ctx
        self._subscription = ctx.bus.subscribe(wire.SUBSCRIPTION, self._on_message)
        with contextlib.suppress(WorldStateError):
            await self._subscription.wait_active(timeout=SUBSCRIBE_TIMEOUT)
        heads = await ctx.store.run(event_log.heads, "read the causal log's heads", read=True)
        valid: dict[str, int] = {}
        for origin, seq in heads.items():
            try:
                VectorClock({origin: seq})
            except ConsistencyInputError:
                log.warning("causal log holds events of a malformed origin %r; ignored", origin)
                continue
            valid[origin] = seq
        now = asyncio.get_running_loop().time()
        self._cursor = Cursor(VectorClock(valid))
        for event in self.buffer.seed(VectorClock(valid), now=now):
            self._deliver(event)
        me = ctx.server_id
        spawn = ctx.tasks.spawn
        self._tasks = [
            spawn(self._append_loop(), f"ws-causal-append-{me}"),
            spawn(self._repair_loop(), f"ws-causal-repair-{me}"),
            spawn(self._heads_loop(), f"ws-causal-heads-{me}"),
        ]
        self._started = True

    async def close(self) -> None:
        """Refuse new ops, fail the queued ones with `WorldClosed`, let the append in
        progress finish (up to `CLOSE_GRACE` s), flush publishes, announce this server's head
        (so others fetch whatever they missed from the log), stop the tasks."""
        if self._closed:
            return
        self._closed = True
        if self._subscription is not None:
            self._subscription.cancel()
        closed = WorldClosed("the world was closed before the causal op was appended")
        while self._queue:
            self._settle(self._queue.popleft(), closed)
        if self._started:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_GRACE):
                    await self._idle.wait()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._publishing:
            await asyncio.wait(list(self._publishing), timeout=CLOSE_GRACE)
            for task in list(self._publishing):
                task.cancel()
        if self._started:
            with contextlib.suppress(WorldStateError, TimeoutError):
                async with asyncio.timeout(CLOSE_GRACE):
                    await self._announce(qos=1)
        for w in list(self._inflight.values()):
            self._settle(w, closed)
        self._deadlines.close()

    # -- submitting and appending -------------------------------------------------------------

    async def submit(
        self, op: Operation, key: RegionKey | None, *, timeout: float | None = None
    ) -> Accepted:
        """Append ``op`` (already validated and stamped by `World.submit`) to the log as this
        server's next event; `Accepted` once durable. The same op_id twice: one event, and
        `Accepted` both times (a concurrent second submit waits for the first).

        ``timeout``: `TimeoutError` after that many seconds (up to `Deadlines`' grain late)
        if the op is not durable by then — it may still be appended. The deadlines of all
        submits share one timer instead of an `asyncio.timeout` each."""
        if self._closed or not self._started:
            raise WorldClosed("the world is closed; open a new one with worldstate.connect()")
        oid = str(op.op_id)
        fut: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        w = self._inflight.get(oid)
        if w is None:
            if len(self._queue) >= MAX_QUEUED:
                raise Overloaded(
                    f"{len(self._queue)} causal ops are waiting to be appended; retry later "
                    "with the same op_id"
                )
            w = self._inflight[oid] = _Waiting(op, key, oid, [fut])
            self._queue.append(w)
            self._idle.clear()
            self._wakeup.set()
        else:
            w.futures.append(fut)
        if timeout is not None:
            self._deadlines.add(fut, timeout)
        return await fut

    def _settle(self, w: _Waiting, outcome: Accepted | BaseException) -> None:
        """Answer every submit waiting for ``w`` (those that gave up are skipped)."""
        if self._inflight.get(w.oid) is w:
            del self._inflight[w.oid]
        if isinstance(outcome, BaseException):
            for fut in w.futures:
                if not fut.done():
                    fut.set_exception(outcome)
        else:
            for fut in w.futures:
                if not fut.done():
                    fut.set_result(outcome)

    async def _append_loop(self) -> None:
        delay = RECONCILE_MIN
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                if not self._uncertain:
                    await self._wakeup.wait()
                    continue
                try:
                    async with asyncio.timeout(delay):
                        await self._wakeup.wait()
                except TimeoutError:
                    delay = (
                        RECONCILE_MIN if await self._reconcile() else min(2 * delay, RECONCILE_MAX)
                    )
                continue
            self._idle.clear()
            if len(self._queue) < MAX_GROUP:
                await asyncio.sleep(self.ctx.config.group_commit_window)
            batch = [self._queue.popleft() for _ in range(min(MAX_GROUP, len(self._queue)))]
            await self._append(batch)

    async def _append(self, batch: list[_Waiting]) -> None:
        ctx = self.ctx
        me = ctx.server_id
        entries = [(w.op, w.key) for w in batch]
        recover = self._uncertain
        base = self.buffer.delivered
        attempts = 0

        async def body(conn: Any) -> event_log.AppendResult:
            nonlocal attempts, base
            attempts += 1
            base = self.buffer.delivered  # only grows; own events change only here
            return await event_log.append_group(
                conn,
                origin=me,
                entries=entries,
                first_seq=base[me] + 1,
                encode=wire.body_encoder(me, base),
                recover=recover or attempts > 1,
                now=ctx.clock(),
                morton=wire.morton_of,
            )

        try:
            result = await ctx.store.run(body, f"append {len(entries)} causal events")
        except asyncio.CancelledError:
            self._uncertain = True
            self._fail(batch, WorldClosed("the world closed while the causal op was appended"))
            raise
        except WorldStateError as e:
            self._uncertain = True
            self.append_failures += 1
            self._fail(batch, e)
            return
        except Exception as e:  # a driver error the store layer did not classify
            self._uncertain = True
            self.append_failures += 1
            log.exception("appending %d causal events failed", len(entries))
            self._fail(batch, StoreUnavailable(f"appending causal events failed: {e}"))
            return
        self._uncertain = False
        self.appended += len(result.appended)
        self.already_recorded += len(result.recorded)
        self.append_batches += 1
        bodies: list[bytes] = []
        try:
            bodies = self._adopt(result.recovered)
            now = asyncio.get_running_loop().time()
            for a in result.appended:
                event = wire.WireEvent(me, a.seq, base.with_counter(me, a.seq - 1), a.key, a.op)
                self._deliver_own(event.causal(), now)
                bodies.append(a.body)
        finally:
            for w in batch:  # durable: acknowledged whatever happens next
                self._settle(w, Accepted(w.op.op_id))
        await self._broadcast(bodies)

    def _fail(self, batch: Sequence[_Waiting], err: Exception) -> None:
        for w in batch:
            self._settle(w, err)

    def _deliver_own(self, event: CausalEvent, now: float) -> None:
        out = self.buffer.offer(event, now=now)
        if len(out) != 1 or out[0] is not event:  # cannot happen: only the appender emits
            log.error("own causal event %s:%d was not delivered locally", event.origin, event.seq)
            return
        self.emitted += 1
        self._cursor = self._cursor.after(event.origin, event.seq)
        if isinstance(event.payload, wire.WireEvent):
            self._apply(event.payload)

    def _adopt(self, rows: Sequence[event_log.LoggedEvent]) -> list[bytes]:
        """Deliver locally this server's own events found in the log beyond its delivered
        count (an append whose commit was not acknowledged); their bodies, to publish."""
        bodies: list[bytes] = []
        now = asyncio.get_running_loop().time()
        for row in rows:
            event = self._from_log(row)
            if event is None:
                break  # cannot happen for rows we wrote; never skip a seq of our own
            self._deliver_own(event, now)
            bodies.append(row.body)
        if rows:
            log.warning(
                "%s adopted %d causal events whose append was not acknowledged",
                self.ctx.server_id,
                len(bodies),
            )
        return bodies

    def _from_log(self, row: event_log.LoggedEvent) -> CausalEvent | None:
        """The event of a log row. The log is trusted (servers wrote it after validating
        the op, and only they can reach it): the body's structure is checked, but not the
        world-dependent limits again — a server whose configuration or registered types
        differ must not refuse an event every other server took, or its causal order would
        stall behind it. An op this server cannot rebuild is delivered without effects or
        update (the order goes on); None if the row is not a causal event at all."""
        try:
            ev = wire.decode_body(
                row.origin,
                row.body,
                self.router.op_types,
                functools.partial(_region_of_row, row.region_key),
                seq=row.seq,
            )
            return ev.causal()
        except wire.WireError as e:
            self._drop("log-" + e.reason, e)
            log.error("causal event %s:%d in the log is unreadable: %s", row.origin, row.seq, e)
        try:
            deps = VectorClock.from_dict(orjson.loads(row.body)["d"])
            return CausalEvent(row.origin, row.seq, deps, None)
        except (ValueError, KeyError, TypeError):
            return None

    async def _reconcile(self) -> bool:
        """After a failed append, with nothing queued: adopt whatever of ours the log holds
        beyond our delivered count. True when done (or nothing to do)."""
        me = self.ctx.server_id
        after = self.buffer.delivered[me]
        try:
            rows = await self.ctx.store.run(
                lambda c: event_log.read_after(c, me, after),
                "reconcile own causal events",
                read=True,
            )
        except WorldStateError as e:
            log.warning("reconciling causal events after a failed append: %s", e)
            return False
        if not self._uncertain or self.buffer.delivered[me] != after:
            return True  # an append succeeded meanwhile and did it
        self._uncertain = False
        await self._broadcast(self._adopt(rows))
        return True

    async def _broadcast(self, bodies: list[bytes]) -> None:
        if not bodies:
            return
        topic = f"{wire.EVENTS_TOPIC}/{self.ctx.server_id}"
        for document in wire.encode_groups(self.ctx.server_id, bodies):
            await self._publish_slots.acquire()
            task = self.ctx.tasks.spawn(self._publish(topic, document), topic, job=True)
            self._publishing.add(task)
            task.add_done_callback(self._published)

    async def _publish(self, topic: str, payload: bytes) -> None:
        try:
            await self.ctx.bus.publish(topic, payload, qos=1)
            self.published += 1
        except WorldStateError as e:
            # the events are in the log: receivers fetch them once a head or a later event
            # tells them they exist
            self.publish_failures += 1
            log.warning("publishing causal events failed (they stay in the log): %s", e)

    def _published(self, task: asyncio.Task[None]) -> None:
        self._publishing.discard(task)
        self._publish_slots.release()

    # -- receiving -------------------------------------------------------------------------

    def _check_op(self, op: Operation) -> RegionKey | None:
        # `check_received` is `check` plus the id rule on the sender's stamp: a stamp that
        # passed it once (one per server of the world) is not checked again per event
        sender = op.server_id
        if sender in self._senders:
            _, cls, key = self.router.check(op)
        else:
            _, cls, key = self.router.check_received(op)
            if len(self._senders) < MAX_ORIGINS:
                self._senders.add(sender)
        if cls is not ConsistencyClass.CAUSAL:
            raise ValidationError(f"{op.op_type} is not routed CAUSAL on this server")
        return key

    def _drop(self, reason: str, err: Exception | None = None) -> None:
        self.dropped[reason] += 1
        log.debug("dropped a causal message (%s): %s", reason, err)

    def _on_message(self, msg: Message) -> None:
        where = wire.topic_origin(msg.topic)
        if where is None:
            self._drop("topic")
            return
        kind, origin = where
        if origin == self.ctx.server_id:
            self.echoes += 1  # our own events come from us, never from the bus
            return
        if msg.sender is not None and msg.sender != origin:
            self._drop("origin")  # the signing bus checks this already: never in another's name
            return
        document = msg.payload
        try:
            if kind == "heads":
                self._on_head(origin, wire.decode_head(document, origin))
                return
            events = wire.decode_group(document, origin, self.router.op_types, self._check_op)
            self.ctx.hlc.update(max(e.op.hlc for e in events))
        except wire.WireError as e:
            self._drop(e.reason, e)
            return
        except ClockError as e:
            self._drop("hlc", e)
            return
        except Exception as e:  # never let a message break the handler or half-apply
            log.exception("unexpected error decoding a causal message on %r", msg.topic)
            self._drop("error", e)
            return
        self.received += len(events)
        self._offer([e.causal() for e in events])

    def _on_head(self, origin: str, seq: int) -> None:
        self.heads_received += 1
        if seq <= self._heads.get(origin, 0):
            return
        if origin not in self._heads and len(self._heads) >= MAX_ORIGINS:
            self._drop("origins")
            return
        self._heads[origin] = seq

    def _offer(self, events: Sequence[CausalEvent]) -> int:
        """Offer events to the buffer, deliver what becomes deliverable; how many were new."""
        now = asyncio.get_running_loop().time()
        fresh = 0
        buf = self.buffer
        for ev in events:
            seen = buf.duplicates
            for event in buf.offer(ev, now=now):
                self._deliver(event)
            fresh += buf.duplicates == seen
        return fresh

    def _deliver(self, event: CausalEvent) -> None:
        # origin and seq passed the buffer's checks: the cursor and the event's clock are
        # built without checking them again
        origin, seq = event.origin, event.seq
        self._cursor = cursor = Cursor(self._cursor.clock.trusted_with(origin, seq))
        ev = event.payload
        if not isinstance(ev, wire.WireEvent):
            return
        self.delivered += 1
        self._apply(ev)
        op = ev.op
        self.fanout.publish(
            ev.region,
            CausalDelivery(
                ev.region,
                ev.origin,
                ev.seq,
                op.op_type,
                str(op.op_id),
                MappingProxyType(wire.op_fields(op)),
                MappingProxyType(ev.deps.trusted_with(origin, seq).to_dict()),
                cursor,
            ),
        )

    @property
    def cursor(self) -> Cursor:
        """The resume point just after the last causal event delivered on this server: an
        update stream opened now receives, live, exactly the events after it."""
        return self._cursor

    def _apply(self, ev: wire.WireEvent) -> None:
        """The effects of a delivered event on this server's state: ownership transfers."""
        op = ev.op
        if not isinstance(op, TransferCreature):
            return
        clock = ev.clock
        # keep the transfers no delivered transfer causally follows (all of them concurrent);
        # the highest (hlc, origin) of those is the owner, whatever the delivery order
        live = [t for t in self._transfers.get(op.creature_id, ()) if not t.clock <= clock]
        live.append(_Transfer(op.to_server, clock, op.hlc, ev.origin))
        self._transfers[op.creature_id] = live
        self._owners[op.creature_id] = max(live, key=lambda t: (t.hlc, t.origin)).server

    @property
    def creature_owners(self) -> Mapping[int, str]:
        """Creature id → the server its causally latest transfer names (read-only view)."""
        return MappingProxyType(self._owners)

    def owns_creature(self, creature_id: int) -> bool:
        return self._owners.get(creature_id) == self.ctx.server_id

    # -- repair ----------------------------------------------------------------------------

    async def _repair_loop(self) -> None:
        while True:
            await asyncio.sleep(self.repair_interval)
            try:
                await self.repair()
            except WorldStateError as e:  # the store is down: next round
                log.warning("causal repair failed: %s", e)

    async def repair(self, *, min_age: float | None = None) -> int:
        """One repair round: fetch from the log the gaps (and announced tails) that persisted
        for ``min_age`` seconds (default `repair_after`) and offer them. Returns how many
        events were new here."""
        if min_age is None:
            min_age = self.repair_after
        loop = asyncio.get_running_loop()
        now = loop.time()
        me = self.ctx.server_id
        buf = self.buffer
        plan = plan_repair(
            me=me,
            gaps=buf.missing(now),
            heads=self._heads,
            known=buf.known.__getitem__,
            delivered=buf.delivered.__getitem__,
            tail_since=self._tail_since,
            retry_at=self._retry_at,
            now=now,
            min_age=min_age,
            limit=REPAIR_LIMIT,
        )
        self._tail_since, self._retry_at = plan.tail_since, plan.retry_at
        wanted = list(plan.wanted)
        if not wanted:
            return 0
        rows = await self.ctx.store.run(
            lambda c: event_log.read_ranges(c, wanted, limit=REPAIR_LIMIT),
            f"read {len(wanted)} causal gaps",
            read=True,
        )
        self.repair_queries += 1
        events: list[CausalEvent] = []
        for row in rows:
            if row.origin != me:
                event = self._from_log(row)
                if event is not None:
                    events.append(event)
        hlcs = [e.payload.op.hlc for e in events if isinstance(e.payload, wire.WireEvent)]
        if hlcs:
            with contextlib.suppress(ClockError):
                self.ctx.hlc.update(max(hlcs))
        fresh = self._offer(events)
        self.repaired += fresh
        return fresh

    # -- heads -----------------------------------------------------------------------------

    async def _heads_loop(self) -> None:
        while True:
            await asyncio.sleep(self.head_interval)
            with contextlib.suppress(WorldStateError):
                await self._announce(qos=0)

    async def _announce(self, *, qos: int) -> None:
        me = self.ctx.server_id
        seq = self.buffer.delivered[me]
        if seq:
            topic = f"{wire.HEADS_TOPIC}/{me}"
            await self.ctx.bus.publish(topic, wire.encode_head(me, seq), qos=qos)

    # -- observability ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            "emitted": self.emitted,
            "appended": self.appended,
            "append_batches": self.append_batches,
            "append_failures": self.append_failures,
            "already_recorded": self.already_recorded,
            "received": self.received,
            "delivered": self.delivered,
            "duplicates": self.buffer.duplicates,
            "repaired": self.repaired,
            "repair_queries": self.repair_queries,
            "dropped": dict(self.dropped),
            "dropped_total": sum(self.dropped.values()),
            "pending": self.buffer.pending(),
            "overflowed": self.buffer.overflowed,
            "queued": len(self._queue),
            "published": self.published,
            "publish_failures": self.publish_failures,
            "heads_received": self.heads_received,
            "echoes": self.echoes,
            "delivered_clock": self.buffer.delivered.to_dict(),
        }

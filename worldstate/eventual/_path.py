"""The eventual path: creature positions and entity state, applied locally, broadcast per
region per tick, merged last-writer-wins everywhere.

What it does
------------
- `EventualPath.submit` (``MoveCreature``, ``CosmeticEffect``, ``SetAutomation``,
  ``SetPowerGrid``, already validated and stamped by `World.submit`) and
  `EventualPath.move_entities` (the vectorised ``MoveCreature``) apply the write to this
  server's state at once and queue it for the next tick.
- State: creature positions in a `consistency.EntityTable` (and velocities in a second one
  that receives exactly the same winning writes, so the two never disagree about who won);
  entity state in a last-writer-wins map keyed by ``(kind, entity_id)`` with kind ``effect``,
  ``automation`` or ``power``. Writes are ordered by ``(HLC, server id)``: the higher HLC
  wins, equal HLCs go to the lowest server id (`consistency.lww_wins`).
- A tick task (``Config.tick_rate`` Hz) turns what was queued into ONE message per region
  (`worldstate.protocol._eventual`; QoS 0 on ``eventual/{morton}``): entity ids, positions,
  velocities and HLCs as raw arrays, state changes as a small JSON section. Within a tick,
  the last write of an entity wins. A region with more than `MAX_ROWS_PER_MESSAGE` rows (or
  more than `MAX_STATE_SECTION_BYTES` of state) that tick is split over several messages, to
  stay under the bus's payload limit.
- A server subscribes to the ``eventual/{morton}`` topics of the regions it owns, their
  neighbours and its streams' interests (`worldstate.node._interest`, docs/fanout.md)
  only (no `eventual/+`). A received batch is decoded and validated whole (`decode_batch`), its
  HLC is fed to the hybrid clock (which refuses far-future stamps), then merged with
  `EntityTable.apply_batch_mask`; the rows and state changes that won go to
  `World.updates` subscribers as `EntityBatch` / `StateChange`. Our own messages (echoed by
  the broker) are skipped. The first batch of a loop turn is merged at once; batches
  behind it in the same turn (a backlog the bus hands on together) are merged at the start
  of the next turn, where an older batch of a sender for a region that the newest one of
  the same sender and region fully covers (same entities or more, no states) is neither
  decoded nor merged (``coalesced``): under load the path skips superseded work instead
  of queueing it. A malformed, truncated or forged message is dropped and counted by
  reason in `stats()`; it changes nothing.
- While ``self.authority.authoritative`` is False (this server is on the minority side of a
  partition) nothing is published for the regions it holds leases on: the majority side will
  take them over. Writes are still applied locally, and what was held back stays queued
  (coalesced to each entity's latest write, so bounded by the entities of those regions):
  it goes out with the first tick after the server is authoritative again, and converges
  by LWW with whatever the majority side wrote meanwhile.

Durability
----------
Eventual state lives in memory. Every ``Config.snapshot_interval`` seconds, and at once when
a region is released (`flush_region`), the state of each region this server holds is
written into that region's snapshot (``creature:{id}`` objects with a zero-size box at the
position and data ``{"v": velocity, "hlc": ..., "writer": ...}``, and ``effect:{id}``,
``automation:{id}``, ``power:{id}`` objects whose data is the state) with a conditional
`World.store_region`, retried on `VersionConflict`. **A crash loses at most the last
snapshot interval of eventual writes** of the regions it held (other servers still hold
what they heard, and rewrite it when they next snapshot those regions as owners). A new
owner seeds its state from the region's snapshot (`seed_region`; each snapshot round also
seeds from the snapshot it reads before writing it back, so nothing stored is dropped by an
owner that never heard of it). Only held regions are snapshotted: a creature whose latest
position lies in a region nobody holds is durable only once some server holds that region.

Cost: a tick of 10,000 rows is a few array operations (validation by per-axis min/max, region
cells by one division and floor, one stable sort to group by region, raw array encoding);
receiving is one decode (a handful of reductions) and one vectorised LWW merge per region
message. With MQTT, the broker also sends a server its own batches back (skipped after a
header peek); subscribing with MQTT 5 "no local" would spare the broker and the sender that
traffic.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import zip_longest
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson

from consistency import ClockDriftError, ClockError, ConsistencyInputError, EntityTable, lww_wins
from consistency.hlc import MAX_TIMESTAMP
from regions import RegionKey, Vec3, morton
from worldstate._validation import MAX_SPEED, check_data, check_velocities, geometry
from worldstate.bus import Message, Subscription
from worldstate.errors import (
    BusUnavailable,
    ValidationError,
    VersionConflict,
    WorldClosed,
    WorldStateError,
)
from worldstate.eventual._reliable import RELIABLE, ReliableChannel
from worldstate.objects import Lease, RegionSnapshot, WorldObject
from worldstate.operations import (
    CosmeticEffect,
    MoveCreature,
    Operation,
    SetAutomation,
    SetPowerGrid,
)
from worldstate.protocol import _topics as topics
from worldstate.protocol._eventual import (
    HEADER,
    MAGIC,
    STATE_KINDS,
    Batch,
    MalformedBatch,
    StateRecord,
    check_points,
    decode_batch,
    encode_batch,
    encode_states,
    peek_server_id,
    region_cells,
)
from worldstate.results import Accepted
from worldstate.store import event_log
from worldstate.updates import EntityBatch, StateChange

if TYPE_CHECKING:
    from worldstate.node import Authority, Fanout, NodeContext, RegionViews, Router

log = logging.getLogger("worldstate.eventual")

TOPIC = topics.EVENTUAL
"""Batches go to ``eventual/{morton}`` (relative to the world's namespace)."""
MAX_MOVE_ROWS = 1 << 18
"""Most rows one `move_entities` call takes (262,144)."""
MAX_ROWS_PER_MESSAGE = 8192
"""Rows per bus message (at most 64 bytes each: 512 KiB, under the 1 MiB payload limit)."""
MAX_STATE_SECTION_BYTES = 256 * 1024
"""State JSON per bus message before the region's states continue in another message."""
MAX_ENTITIES = 1 << 22
"""Most creatures one server tracks; a batch that would pass it is dropped (``table_full``)."""
MAX_STATES = 1 << 20
"""Most entity states one server tracks; further new ones are dropped (``table_full``)."""
SNAPSHOT_ATTEMPTS = 5
"""Tries of a region snapshot against concurrent writers (`VersionConflict`)."""
SEEN_OPS = 65_536
"""Recent op_ids remembered, so a resubmitted operation is not applied twice."""
MAX_INBOX = 4096
"""Most received batches held for the next turn's coalescing (`EventualPath._drain`)."""
LAG_SAMPLES = 10_000
"""Recent receive lags kept for `stats()` (``lag_ms``)."""
SUBSCRIBE_TIMEOUT = 10.0

CREATURE = "creature"
_STATE_KIND_OF: tuple[tuple[type[Operation], str], ...] = (
    (CosmeticEffect, "effect"),
    (SetAutomation, "automation"),
    (SetPowerGrid, "power"),
)
_EVENTUAL_KINDS = frozenset((CREATURE, *STATE_KINDS))
INT64_MAX = (1 << 63) - 1

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(slots=True)
class _StateEntry:
    """The write that currently holds one entity's state."""

    hlc: int
    server_id: str
    op_type: str
    region: RegionKey
    position: Vec3
    state: Mapping[str, Any]


@dataclass(slots=True)
class _Moves:
    """Rows applied locally and waiting for the next tick (private copies)."""

    ids: IntArray
    hlc: int | IntArray
    positions: FloatArray
    velocities: FloatArray
    cells: IntArray
    """Each row's region as a packed cell code (`_cell_codes`)."""


@dataclass(slots=True)
class _Outgoing:
    cell: int
    region: RegionKey
    payload: bytes
    rows: int
    states: int
    moves: _Moves | None
    """The message's rows, to queue again if it is held back (`EventualPath._hold_back`)."""
    records: tuple[StateRecord, ...]


def _state_kind(op: Operation) -> str | None:
    for cls, kind in _STATE_KIND_OF:
        if isinstance(op, cls):
            return kind
    return None


def _eventual_object_id(oid: str, kind: str) -> int | None:
    """The entity id of an eventual snapshot object (``f"{kind}:{id}"``), else None."""
    prefix, sep, rest = oid.partition(":")
    if not sep or prefix != kind or kind not in _EVENTUAL_KINDS:
        return None
    if not rest.isascii() or not rest.isdigit() or len(rest) > 19:
        return None
    value = int(rest)
    return value if value <= INT64_MAX else None


class EventualPath:
    """The eventual consistency class of one `World` (see the module docs)."""

    def __init__(
        self,
        ctx: NodeContext,
        authority: Authority,
        fanout: Fanout,
        views: RegionViews,
        *,
        router: Router | None = None,
        peers: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        """``router`` and ``peers`` (the servers this one hears) enable acknowledged
        delivery for types registered at-least-once / effectively-once (`_reliable`)."""
        self.ctx = ctx
        self.router = router
        self.peers = peers
        self.authority = authority
        self.fanout = fanout
        self.views = views
        self._stored_marks: dict[RegionKey, bytes] = {}
        """region -> `_mark` of what this server last stored (or found) in its snapshot"""
        self.strong_rows_kept: Callable[[RegionKey, int, int], None] = lambda k, r, w: None
        """Told (region, version read, version written) after a snapshot write that kept
        every strong row as read; the composition root points it at the strong path."""
        self.positions = EntityTable()
        """Latest position (and its HLC and writer) of every creature this server knows."""
        self.velocities = EntityTable()
        """The velocity of the same writes (a mirror of `positions`)."""
        self.states: dict[tuple[str, int], _StateEntry] = {}
        self._pending_moves: list[_Moves] = []
        self._pending_states: dict[int, dict[tuple[str, int], StateRecord]] = {}
        self._seen_ops: dict[uuid.UUID, None] = {}
        self._sub: Subscription | None = None
        self._inbox: collections.deque[Message] = collections.deque()
        """Batches received behind the first of a loop turn, for `_drain`."""
        self._drain_handle: asyncio.Handle | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.lag_samples: collections.deque[float] = collections.deque(maxlen=LAG_SAMPLES)
        """Seconds from send (sender's clock) to merge (ours) of recent received batches."""
        self.dropped: collections.Counter[str] = collections.Counter()
        self._counts: collections.Counter[str] = collections.Counter()
        self.reliable: ReliableChannel | None = None
        """Acknowledged delivery of types registered at-least-once / effectively-once."""
        self.on_tick: Callable[[float], None] | None = None
        """Called with each tick's duration in seconds (worldstate.metrics observes it)."""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the tick and snapshot tasks (and acknowledged delivery). Batches come in
        through `on_message`, subscribed by the world's interest subscriptions."""
        ctx = self.ctx
        router, peers = self.router, self.peers
        if router is not None and peers is not None:
            key = await ctx.store.run(event_log.mesh_key, "read the mesh key")
            self.reliable = ReliableChannel(
                bus=ctx.bus,
                server_id=ctx.server_id,
                key=lambda: key,
                peers=peers,
                types=router.op_types,
                delivery_of=router.delivery_of,
                check=self._check_reliable,
                apply=self._apply_reliable,
                tasks=ctx.tasks,
            )
            await self.reliable.start()
        sid = ctx.server_id
        self._tasks = [
            ctx.tasks.spawn(self._tick_loop(), f"ws-eventual-tick-{sid}"),
            ctx.tasks.spawn(self._snapshot_loop(), f"ws-eventual-snapshot-{sid}"),
        ]

    async def close(self) -> None:
        """Stop the tasks and the subscription. Nothing queued is sent or stored."""
        if self.reliable is not None:
            await self.reliable.close()
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._sub is not None:
            self._sub.cancel()
            self._sub = None
        if self._drain_handle is not None:
            self._drain_handle.cancel()
            self._drain_handle = None
        self._inbox.clear()

    # -- local writes ----------------------------------------------------------------------

    def submit(self, op: Operation, key: RegionKey | None) -> Accepted:
        """Apply one eventual operation locally and queue it for this tick's batch.
        Submitting an ``op_id`` again (within the last `SEEN_OPS`) does nothing more."""
        if key is None:
            raise ValidationError(f"{op.op_type} has no position: eventual writes are spatial")
        if op.op_id in self._seen_ops:
            return Accepted(op.op_id)
        acked = (
            self.reliable is not None
            and self.router is not None
            and self.router.delivery_of(type(op)) in RELIABLE
        )
        if acked:
            assert self.reliable is not None
            self.reliable.check_room()
        if isinstance(op, MoveCreature):
            self._apply_local(
                np.array([op.creature_id], np.int64),
                np.array([op.position], np.float64),
                np.array([op.velocity], np.float64),
                op.hlc,
                op.server_id,
                np.array([_key_code(key)], np.int64),
                queue=not acked,
            )
        elif isinstance(op, (CosmeticEffect, SetAutomation, SetPowerGrid)):
            kind = _state_kind(op)
            where = op.where()
            assert kind is not None and where is not None  # a position or a region, always
            state = check_data(op.state, "state", self.ctx.config.max_object_data_bytes)
            record = StateRecord(kind, op.op_type, op.entity_id, op.hlc, where, state)
            if self._merge_state(record, op.server_id, key) and not acked:
                self._pending_states.setdefault(_key_code(key), {})[(kind, op.entity_id)] = record
        else:
            raise ValidationError(
                f"{op.op_type} cannot take the eventual path: only MoveCreature, "
                "CosmeticEffect, SetAutomation, SetPowerGrid and their subclasses can"
            )
        self._remember(op.op_id)
        if acked:
            assert self.reliable is not None
            self.reliable.send(op)  # instead of the tick batch
        return Accepted(op.op_id)

    def _check_reliable(self, op: Operation) -> RegionKey | None:
        """A received acknowledged op, checked as a local submit checks it."""
        from consistency import ConsistencyClass
        from worldstate._validation import check_op_limits

        router, config = self.router, self.ctx.config
        if router is None or router.consistency_of(type(op)) is not ConsistencyClass.EVENTUAL:
            raise ValidationError(f"{op.op_type} is not routed EVENTUAL on this server")
        check_op_limits(op, config)
        key = router.region_key_of(op)
        if key is None:
            raise ValidationError(f"{op.op_type} has no position")
        if isinstance(op, (CosmeticEffect, SetAutomation, SetPowerGrid)):
            check_data(op.state, "state", config.max_object_data_bytes)
        elif not isinstance(op, MoveCreature):
            raise ValidationError(f"{op.op_type} cannot take the eventual path")
        return key

    def _apply_reliable(self, op: Operation, key: Any, sender: str, duplicate: bool) -> None:
        """Merge a received acknowledged op (last-writer-wins) and tell the update streams:
        when it won, and for an at-least-once copy of an op already received (a receiver of
        at-least-once ops may see them twice)."""
        with contextlib.suppress(ClockError):
            self.ctx.hlc.update(op.hlc)
        if isinstance(op, MoveCreature):
            ids = np.array([op.creature_id], np.int64)
            pos = np.array([op.position], np.float64)
            vel = np.array([op.velocity], np.float64)
            if not self._room_for(ids):
                self._drop("table_full", f"more than {MAX_ENTITIES} creatures")
                return
            won = bool(self.positions.apply_batch_mask(ids, pos, op.hlc, sender).all())
            if won:
                self.velocities.apply_batch(ids, vel, op.hlc, sender)
            if won or duplicate:
                self.fanout.publish(key, EntityBatch(key, sender, op.hlc, ids, pos, vel))
            return
        kind = _state_kind(op)
        where = op.where()
        if (
            kind is None
            or where is None
            or not isinstance(op, (CosmeticEffect, SetAutomation, SetPowerGrid))
        ):
            return
        state = MappingProxyType(dict(op.state))
        record = StateRecord(kind, op.op_type, op.entity_id, op.hlc, where, state)
        if self._merge_state(record, sender, key) or duplicate:
            self.fanout.publish(
                key, StateChange(key, sender, op.hlc, op.op_type, op.entity_id, state)
            )

    def _remember(self, op_id: uuid.UUID) -> None:
        seen = self._seen_ops
        seen[op_id] = None
        if len(seen) > SEEN_OPS:
            del seen[next(iter(seen))]

    def move_entities(self, ids: object, positions: object, velocities: object = None) -> int:
        """Move many creatures at once: ``ids`` int ``(N,)`` (>= 0), ``positions`` float
        ``(N, 3)`` (finite, inside ``Config.world_bounds``), optional ``velocities`` float
        ``(N, 3)`` (finite, magnitude at most `worldstate.MAX_SPEED`; default zero). One HLC
        for the call; within it the last row of an entity wins. Applied now, broadcast with
        the next tick. Returns the rows applied.

        Raises `ValidationError` (and changes nothing) on bad input or more than
        `MAX_MOVE_ROWS` rows."""
        cfg = self.ctx.config
        id_arr = _check_ids(ids)
        n = id_arr.size
        pos = _check_vectors(positions, n, "positions")
        geometry(check_points, pos, cfg.world_bounds, "positions")
        if velocities is None:
            vel = np.zeros((n, 3))
        else:
            vel = _check_vectors(velocities, n, "velocities")
            check_velocities(vel)
        if n == 0:
            return 0
        cells = region_cells(pos, cfg.region_size)
        if not (
            bool((cells.min(axis=0) >= morton.AXIS_MIN).all())
            and bool((cells.max(axis=0) <= morton.AXIS_MAX).all())
        ):
            raise ValidationError("positions lie outside the addressable region range")
        return self._apply_local(
            id_arr, pos, vel, self.ctx.hlc.now(), self.ctx.server_id, _cell_codes(cells)
        )

    def _apply_local(
        self,
        ids: IntArray,
        positions: FloatArray,
        velocities: FloatArray,
        hlc: int,
        server_id: str,
        cells: IntArray,
        *,
        queue: bool = True,
    ) -> int:
        if not self._room_for(ids):
            raise ValidationError(
                f"this server already tracks {len(self.positions)} creatures; the limit is "
                f"{MAX_ENTITIES}"
            )
        try:
            won = self.positions.apply_batch_mask(ids, positions, hlc, server_id)
        except ConsistencyInputError as e:
            raise ValidationError(str(e)) from None
        if bool(won.all()):
            # private copies: the caller may reuse its arrays for the next tick
            ids, positions = ids.copy(), positions.copy()
            velocities, cells = velocities.copy(), cells.copy()
        else:
            ids, positions = ids[won], positions[won]
            velocities, cells = velocities[won], cells[won]
        if ids.size:
            self.velocities.apply_batch(ids, velocities, hlc, server_id)
            if queue:
                self._pending_moves.append(_Moves(ids, hlc, positions, velocities, cells))
        return int(ids.size)

    def _room_for(self, ids: IntArray) -> bool:
        have = len(self.positions)
        if have + ids.size <= MAX_ENTITIES:
            return True
        fresh = np.unique(ids[~self.positions.contains(ids)]).size
        return have + fresh <= MAX_ENTITIES

    def _merge_state(self, rec: StateRecord, server_id: str, region: RegionKey) -> bool:
        key = (rec.kind, rec.entity_id)
        cur = self.states.get(key)
        if cur is not None:
            if not lww_wins(rec.hlc, server_id, cur.hlc, cur.server_id):
                return False
        elif len(self.states) >= MAX_STATES:
            self._drop("table_full", f"more than {MAX_STATES} entity states")
            return False
        self.states[key] = _StateEntry(
            rec.hlc, server_id, rec.op_type, region, rec.position, rec.state
        )
        return True

    # -- ticks -----------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.ctx.config.tick_rate
        next_at = loop.time() + period
        while True:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_at = loop.time()  # fell behind: carry on, do not burst to catch up
            next_at += period
            started = loop.time()
            try:
                await self.tick()
                took = loop.time() - started
                if took > period:
                    self._counts["tick_overruns"] += 1
                if self.on_tick is not None:
                    self.on_tick(took)
            except WorldClosed:
                return
            except WorldStateError as e:  # the bus is down, a region moved: next tick
                self._counts["tick_errors"] += 1
                log.warning("%s: eventual tick failed: %s", self.ctx.server_id, e)

    async def tick(self) -> int:
        """Publish what was queued since the last tick: one message per region (more only
        for very large regions). Returns the messages published. The tick task calls this
        ``Config.tick_rate`` times a second; tests may call it to send at once."""
        self._counts["ticks"] += 1
        moves, self._pending_moves = self._pending_moves, []
        states, self._pending_states = self._pending_states, {}
        if not moves and not states:
            return 0
        ctx = self.ctx
        held: frozenset[int] = frozenset()
        if not self.authority.authoritative:
            held = frozenset(_key_code(k) for k in self.authority.live())
        sent = 0
        for out in self._outgoing(moves, states, ctx.clock()):
            if out.cell in held:
                self._counts["suppressed_rows"] += out.rows
                self._counts["suppressed_states"] += out.states
                self._hold_back(out)
                continue
            try:
                await ctx.bus.publish(f"{TOPIC}/{out.region.morton}", out.payload, qos=0)
            except (ValidationError, BusUnavailable) as e:
                self._counts["publish_failures"] += 1
                log.warning("%s: eventual batch not published: %s", ctx.server_id, e)
                continue
            sent += 1
            self._counts["batches_sent"] += 1
            self._counts["rows_sent"] += out.rows
            self._counts["states_sent"] += out.states
            self._counts["bytes_sent"] += len(out.payload)
        return sent

    def _hold_back(self, out: _Outgoing) -> None:
        """Queue a suppressed message's rows and states again, ahead of what was written
        since (so a later write of the same entity still wins the tick's coalescing): they
        go out with the first tick after this server is authoritative again. Coalescing
        keeps this bounded by the entities of the held regions, however long it lasts."""
        if out.moves is not None:
            self._pending_moves.insert(0, out.moves)
        if out.records:
            pending = self._pending_states.setdefault(out.cell, {})
            for r in out.records:
                pending.setdefault((r.kind, r.entity_id), r)  # a newer pending write stays

    def _outgoing(
        self,
        moves: list[_Moves],
        states: dict[int, dict[tuple[str, int], StateRecord]],
        sent_at: float,
    ) -> list[_Outgoing]:
        server = self.ctx.server_id
        rows = _group_moves(moves)
        out: list[_Outgoing] = []
        for cell in sorted(rows.keys() | states.keys()):
            region = _cell_key(cell)
            row_chunks = rows.get(cell, [])
            state_chunks = _chunk_states(list(states.get(cell, {}).values()))
            for chunk, st in zip_longest(row_chunks, state_chunks):
                ids, hlc, pos, vel = chunk if chunk is not None else (_NO_IDS, 0, _NO_POS, None)
                records, encoded = st if st is not None else ((), b"")
                batch_hlc = max(
                    [hlc if isinstance(hlc, int) else int(hlc.max())] + [r.hlc for r in records]
                )
                if isinstance(hlc, int) and hlc != batch_hlc and ids.size:
                    # rows without their own HLCs get the batch HLC: only when it is theirs
                    hlc = np.full(ids.size, hlc, np.int64)
                payload = encode_batch(
                    server_id=server,
                    region=region,
                    hlc=batch_hlc,
                    sent_at=sent_at,
                    ids=ids,
                    positions=pos,
                    hlcs=None if isinstance(hlc, int) else hlc,
                    velocities=vel,
                    states=encoded,
                )
                moves_of = None
                if ids.size:
                    moves_of = _Moves(
                        ids,
                        hlc,
                        pos,
                        np.zeros((ids.size, 3)) if vel is None else vel,
                        np.full(ids.size, cell, np.int64),
                    )
                out.append(
                    _Outgoing(cell, region, payload, int(ids.size), len(records), moves_of, records)
                )
        return out

    # -- receiving -------------------------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        """Receive one batch. The first of a loop turn is merged at once; the ones that
        follow it in the same turn (a backlog handed on together by the bus) wait for
        `_drain`, at the start of the next turn, which coalesces them."""
        ctx = self.ctx
        self._counts["messages_received"] += 1
        if peek_server_id(msg.payload) == ctx.server_id:
            self._counts["echoes"] += 1  # our own batch, back from the broker
            return
        if self._drain_handle is not None:
            self._inbox.append(msg)
            if len(self._inbox) > MAX_INBOX:  # bounded: the oldest is merged now
                self._receive(self._inbox.popleft())
            return
        self._receive(msg)
        self._drain_handle = asyncio.get_running_loop().call_soon(self._drain)

    def _receive(self, msg: Message) -> None:
        batch = self._check(msg)
        if batch is not None:
            self._merge(batch)
            self.lag_samples.append(self.ctx.clock() - batch.sent_at)

    def _drain(self) -> None:
        """Merge the batches that arrived behind the first one of the last turn. Of a
        sender's batches for one region, an older one without states whose entities all
        appear in the newest one is not decoded nor merged (``coalesced``): the newest
        carries later writes of every one of them (a sender's HLCs only grow, so the older
        rows would lose LWW anyway). Its lag is counted when the newest is merged."""
        self._drain_handle = None
        inbox, self._inbox = self._inbox, collections.deque()
        try:
            self._coalesce(inbox)
        except Exception:  # a bug: say so, count it, and keep receiving
            self._counts["receive_errors"] += 1
            log.exception("%s: eventual receive failed", self.ctx.server_id)

    def _coalesce(self, inbox: Iterable[Message]) -> None:
        groups: dict[tuple[str | None, str], list[Message]] = {}
        for m in inbox:
            groups.setdefault((m.sender, m.topic), []).append(m)
        for group in groups.values():
            newest = self._check(group[-1])
            covered: list[float] = []
            for older in group[:-1]:
                if newest is not None:
                    sent_at = _covered_by(older.payload, newest)
                    if sent_at is not None:
                        self._counts["coalesced"] += 1
                        covered.append(sent_at)
                        continue
                self._receive(older)
            if newest is not None:
                self._merge(newest)
                now = self.ctx.clock()
                self.lag_samples.extend(now - t for t in (*covered, newest.sent_at))

    def _check(self, msg: Message) -> Batch | None:
        """The message's batch, decoded and validated, its HLC fed to our clock; None (and
        the drop counted) if it is refused."""
        ctx = self.ctx
        try:
            morton = int(msg.topic.rsplit("/", 1)[1])
        except (ValueError, IndexError):
            self._drop("topic", f"topic {msg.topic!r}")
            return None
        cfg = ctx.config
        try:
            batch = decode_batch(
                msg.payload,
                bounds=cfg.world_bounds,
                max_rows=MAX_ROWS_PER_MESSAGE * 2,
                region_size=cfg.region_size,
                max_state_bytes=cfg.max_object_data_bytes,
                max_id_length=cfg.max_id_length,
            )
        except MalformedBatch as e:
            self._drop(e.reason, str(e))
            return None
        if batch.region.morton != morton:
            self._drop("topic", f"batch for region {batch.region} on topic {msg.topic!r}")
            return None
        if batch.server_id == ctx.server_id:
            self._counts["echoes"] += 1
            return None
        try:
            ctx.hlc.update(batch.hlc)
        except ClockDriftError as e:
            self._drop("clock_drift", str(e))
            return None
        except ClockError as e:
            self._drop("hlc", str(e))
            return None
        return batch

    on_message = _on_message
    """The handler of ``eventual/{morton}`` messages (the world subscribes it by interest)."""

    def _merge(self, batch: Batch) -> None:
        self._counts["rows_received"] += len(batch)
        self._counts["states_received"] += len(batch.states)
        if len(batch):
            if not self._room_for(batch.ids):
                self._drop("table_full", f"more than {MAX_ENTITIES} creatures")
                return
            try:
                won = self.positions.apply_batch_mask(
                    batch.ids, batch.positions, batch.row_hlcs(), batch.server_id
                )
            except ConsistencyInputError as e:  # e.g. too many distinct writers
                self._drop("refused", str(e))
                return
            applied = int(won.sum())
            if applied:
                all_won = applied == len(batch)
                ids = batch.ids if all_won else batch.ids[won]
                pos = batch.positions if all_won else batch.positions[won]
                if batch.velocities is None:
                    vel: FloatArray = np.zeros((applied, 3))
                else:
                    vel = batch.velocities if all_won else batch.velocities[won]
                row_hlc = batch.row_hlcs()
                hlc = row_hlc if isinstance(row_hlc, int) or all_won else row_hlc[won]
                self.velocities.apply_batch(ids, vel, hlc, batch.server_id)
                self._counts["rows_applied"] += applied
                self.fanout.publish(
                    batch.region,
                    EntityBatch(batch.region, batch.server_id, batch.hlc, ids, pos, vel),
                )
        for rec in batch.states:
            state = MappingProxyType(dict(rec.state))
            rec = StateRecord(rec.kind, rec.op_type, rec.entity_id, rec.hlc, rec.position, state)
            if self._merge_state(rec, batch.server_id, batch.region):
                self._counts["states_applied"] += 1
                self.fanout.publish(
                    batch.region,
                    StateChange(
                        batch.region, batch.server_id, rec.hlc, rec.op_type, rec.entity_id, state
                    ),
                )

    def _drop(self, reason: str, why: str) -> None:
        self.dropped[reason] += 1
        # the first of each kind is worth a warning; a flood of them is not worth a log each
        level = logging.WARNING if self.dropped[reason] == 1 else logging.DEBUG
        log.log(level, "%s: dropped an eventual message: %s", self.ctx.server_id, why)

    # -- snapshots -------------------------------------------------------------------------

    async def _snapshot_loop(self) -> None:
        """Each held region's snapshot about every ``snapshot_interval``, the regions spread
        evenly over it (one every ``interval / n``), not all of them back to back: a
        snapshot is a burst of CPU (objects built, encoded, checksummed) and of writes, and
        n of them at once held every strong commit and tick of the server behind them."""
        interval = self.ctx.config.snapshot_interval
        while True:
            keys = list(self.authority.live())
            if not keys:
                await asyncio.sleep(interval)
                continue
            for key in keys:
                await asyncio.sleep(interval / len(keys))
                if self.authority.holds(key):
                    await self._snapshot_quietly(key)

    async def flush_region(self, key: RegionKey) -> None:
        """Write the region's eventual state into its snapshot now (on release). Failures
        are logged and counted, not raised: losing eventual state is within its contract,
        and the release should go on."""
        if self.authority.holds(key):
            await self._snapshot_quietly(key)

    async def _snapshot_quietly(self, key: RegionKey) -> None:
        try:
            await self.snapshot_region(key)
        except asyncio.CancelledError:
            raise
        except (WorldStateError, ValueError) as e:
            self._counts["snapshot_failures"] += 1
            log.warning("%s: eventual snapshot of region %s failed: %s", self.ctx.server_id, key, e)

    async def snapshot_region(self, key: RegionKey) -> bool:
        """Write this server's eventual state of ``key`` into the region's snapshot: read it
        (consistent), seed from it (`seed_region`: LWW, so only what we lack is taken),
        replace its eventual objects by ours, store it conditionally on the version read;
        on `VersionConflict` read again and retry (`SNAPSHOT_ATTEMPTS`). False when nothing
        had changed (nothing written). Raises what `store_region` raises otherwise."""
        lease = self.authority.held().get(key)
        mark = self._mark(key, None if lease is None else lease.epoch)
        if mark is not None and self._stored_marks.get(key) == mark:
            return False  # nothing eventual changed here since we last stored it: no read
        for _ in range(SNAPSHOT_ATTEMPTS):
            snap = await self.views.load(key)
            self.seed_region(snap)
            objects = self._region_objects(snap)
            if objects is None:
                self._remember_mark(key, lease)
                return False
            try:
                written = await self.views.store(
                    snap.with_objects(objects), expected_version=snap.version
                )
            except VersionConflict:
                self._counts["snapshot_conflicts"] += 1
                continue
            # every non-eventual object went back as read at snap.version, and the write
            # was conditional on it: the strong state moves to the new version unreloaded
            self.strong_rows_kept(key, snap.version, written)
            self._counts["snapshots"] += 1
            self._remember_mark(key, lease)
            return True
        raise VersionConflict(key, None, -1)

    def _mark(self, key: RegionKey, epoch: int | None) -> bytes | None:
        """A fingerprint of this server's eventual state of ``key`` under the lease epoch
        it holds (None when it holds none): equal marks mean nothing to write."""
        if epoch is None:
            return None
        fresh = sorted(
            (o.id, o.lo, o.hi, dict(o.data))
            for o in (*self._creature_objects(key), *self._state_objects(key))
        )
        return orjson.dumps([epoch, fresh], option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)

    def _remember_mark(self, key: RegionKey, lease: Lease | None) -> None:
        # what the snapshot now holds is ours (after seeding): taken again after the write
        mark = self._mark(key, None if lease is None else lease.epoch)
        if mark is None:
            self._stored_marks.pop(key, None)
        else:
            self._stored_marks[key] = mark

    def _region_objects(self, snap: RegionSnapshot) -> list[WorldObject] | None:
        """The snapshot's objects with its eventual ones replaced by ours; None if ours are
        what it already holds."""
        key = snap.key
        fresh = {o.id: o for o in (*self._creature_objects(key), *self._state_objects(key))}
        kept: list[WorldObject] = []
        old: dict[str, WorldObject] = {}
        for o in snap.objects:
            if _eventual_object_id(o.id, o.kind) is None:
                kept.append(o)
            else:
                old[o.id] = o  # after seed_region we know each of these entities
        if old.keys() == fresh.keys() and all(
            o.lo == fresh[i].lo and o.hi == fresh[i].hi and dict(o.data) == dict(fresh[i].data)
            for i, o in old.items()
        ):
            return None
        return kept + list(fresh.values())

    def _creature_objects(self, key: RegionKey) -> list[WorldObject]:
        table = self.positions
        if not len(table):
            return []
        size = self.ctx.config.region_size
        ids = table.ids
        pos = table.positions_of(ids)
        inside = _cell_codes(region_cells(pos, size)) == _key_code(key)
        if not inside.any():
            return []
        ids, pos = ids[inside], pos[inside]
        vel = self.velocities.positions_of(ids)
        vel = np.where(np.isfinite(vel), vel, 0.0)
        hlcs = table.hlc_of(ids).tolist()
        writers = table.writers_of(ids)
        lo, hi = key.bounds_for(size)
        # the object's centre must lie in [lo, hi) however the division rounded
        pos = np.clip(pos, lo, np.nextafter(np.asarray(hi), -np.inf))
        return [
            WorldObject(
                f"{CREATURE}:{i}",
                CREATURE,
                (p[0], p[1], p[2]),
                (p[0], p[1], p[2]),
                {"v": v, "hlc": h, "writer": w},
            )
            for i, p, v, h, w in zip(
                ids.tolist(), pos.tolist(), vel.tolist(), hlcs, writers, strict=True
            )
        ]

    def _state_objects(self, key: RegionKey) -> list[WorldObject]:
        lo, hi = key.bounds_for(self.ctx.config.region_size)
        out = []
        for (kind, eid), e in self.states.items():
            if e.region == key:
                p = _inside(e.position, lo, hi)
                out.append(WorldObject(f"{kind}:{eid}", kind, p, p, dict(e.state)))
        return out

    def take_over(self, snapshot: RegionSnapshot) -> int:
        """`seed_region` when this server has just taken the region: if the snapshot then
        holds exactly this server's eventual state of it, that is remembered, so the next
        snapshot round writes (and reads) nothing until something changes."""
        taken = self.seed_region(snapshot)
        if self._region_objects(snapshot) is None:
            self._remember_mark(snapshot.key, self.authority.held().get(snapshot.key))
        return taken

    def seed_region(self, snapshot: RegionSnapshot) -> int:
        """Merge a region snapshot's eventual objects into this server's state (by LWW:
        what we already have newer stays). Creatures keep the HLC and writer they were
        stored with; states were stored without them and come in at HLC 0 (any write beats
        them). Call it when this server takes a region over. Returns the entities taken."""
        by_writer: dict[str, list[tuple[int, Vec3, Any, int]]] = {}
        taken = 0
        default_writer = snapshot.owner or self.ctx.server_id
        for o in snapshot.objects:
            eid = _eventual_object_id(o.id, o.kind)
            if eid is None:
                continue
            if o.kind == CREATURE:
                data = o.data
                hlc = data.get("hlc", 0)
                if type(hlc) is not int or not 0 <= hlc <= MAX_TIMESTAMP:
                    hlc = 0
                writer = data.get("writer")
                if not isinstance(writer, str) or not writer:
                    writer = default_writer
                by_writer.setdefault(writer, []).append((eid, o.center, data.get("v"), hlc))
            else:
                rec = StateRecord(o.kind, _OP_TYPE_OF[o.kind], eid, 0, o.center, o.data)
                if self._merge_state(rec, default_writer, snapshot.key):
                    taken += 1
        for writer, rows in by_writer.items():
            ids = np.array([r[0] for r in rows], np.int64)
            pos = np.array([r[1] for r in rows], np.float64)
            vel = np.array([_vec_or_zero(r[2]) for r in rows], np.float64)
            hlc = np.array([r[3] for r in rows], np.int64)
            if not self._room_for(ids):
                continue
            try:
                won = self.positions.apply_batch_mask(ids, pos, hlc, writer)
            except ConsistencyInputError as e:
                log.warning(
                    "region %s snapshot: creatures by %r not seeded: %s", snapshot.key, writer, e
                )
                continue
            if won.any():
                self.velocities.apply_batch(ids[won], vel[won], hlc[won], writer)
                taken += int(won.sum())
        return taken

    # -- observability ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters since the world opened: ``ticks``, ``batches_sent``, ``rows_sent``,
        ``states_sent``, ``bytes_sent``, ``suppressed_rows``/``suppressed_states`` (minority
        partition), ``messages_received``, ``echoes``, ``coalesced`` (received behind a newer
        batch of the same sender and region that covers them: not merged), ``rows_received``,
        ``rows_applied``
        (won LWW), ``states_received``, ``states_applied``, ``dropped`` by reason and
        ``dropped_total``, ``snapshots``, ``snapshot_conflicts``, ``snapshot_failures``,
        ``publish_failures``, ``tick_errors``; the sizes ``entities``, ``states``,
        ``pending_rows``; and ``lag_ms`` (p50/p99/max of recent send→merge lags)."""
        c = self._counts
        names = (
            "ticks",
            "batches_sent",
            "rows_sent",
            "states_sent",
            "bytes_sent",
            "suppressed_rows",
            "suppressed_states",
            "messages_received",
            "echoes",
            "coalesced",
            "rows_received",
            "rows_applied",
            "states_received",
            "states_applied",
            "snapshots",
            "snapshot_conflicts",
            "snapshot_failures",
            "publish_failures",
            "tick_errors",
            "tick_overruns",
            "receive_errors",
        )
        out: dict[str, Any] = {name: c[name] for name in names}
        out["dropped"] = dict(self.dropped)
        if self.reliable is not None:
            out["reliable"] = self.reliable.stats()
        out["dropped_total"] = sum(self.dropped.values())
        out["entities"] = len(self.positions)
        out["states"] = len(self.states)
        out["pending_rows"] = sum(m.ids.size for m in self._pending_moves)
        if self.lag_samples:
            lag = np.asarray(self.lag_samples) * 1000.0
            out["lag_ms"] = {
                "p50": float(np.percentile(lag, 50)),
                "p99": float(np.percentile(lag, 99)),
                "max": float(lag.max()),
            }
        else:
            out["lag_ms"] = None
        return out


_OP_TYPE_OF = {"effect": "CosmeticEffect", "automation": "SetAutomation", "power": "SetPowerGrid"}
_NO_IDS: IntArray = np.empty(0, np.int64)
_NO_POS: FloatArray = np.empty((0, 3), np.float64)


_CELL_BITS = morton.AXIS_BITS
_CELL_MASK = (1 << _CELL_BITS) - 1


def _cell_codes(cells: FloatArray) -> IntArray:
    """One int64 per row packing its region indices (offset to be non-negative, 21 bits
    each): cheap to compute and to group by, unlike Morton codes, which are only worked
    out for the few distinct regions of a tick."""
    c = cells.astype(np.int64) - morton.AXIS_MIN
    codes: IntArray = (c[:, 0] << (2 * _CELL_BITS)) | (c[:, 1] << _CELL_BITS) | c[:, 2]
    return codes


def _key_code(key: RegionKey) -> int:
    lo = morton.AXIS_MIN
    return ((key.ix - lo) << (2 * _CELL_BITS)) | ((key.iy - lo) << _CELL_BITS) | (key.iz - lo)


def _cell_key(code: int) -> RegionKey:
    lo = morton.AXIS_MIN
    return RegionKey(
        ((code >> (2 * _CELL_BITS)) & _CELL_MASK) + lo,
        ((code >> _CELL_BITS) & _CELL_MASK) + lo,
        (code & _CELL_MASK) + lo,
    )


def _inside(p: Vec3, lo: Vec3, hi: Vec3) -> Vec3:
    """``p`` moved into ``[lo, hi)`` (it is there up to the rounding of ``p / size``)."""
    x, y, z = (
        min(max(c, a), float(np.nextafter(b, -np.inf))) for c, a, b in zip(p, lo, hi, strict=True)
    )
    return (x, y, z)


def _vec_or_zero(v: object) -> tuple[float, float, float]:
    if isinstance(v, (list, tuple)) and len(v) == 3:
        try:
            x, y, z = (float(c) for c in v)
        except (TypeError, ValueError):
            return (0.0, 0.0, 0.0)
        if np.isfinite((x, y, z)).all() and x * x + y * y + z * z <= MAX_SPEED * MAX_SPEED:
            return (x, y, z)
    return (0.0, 0.0, 0.0)


def _check_ids(ids: object) -> IntArray:
    try:
        arr = np.asarray(ids)
    except (TypeError, ValueError) as e:
        raise ValidationError(f"ids must be a 1-D integer array ({e})") from None
    if arr.ndim != 1:
        raise ValidationError(f"ids must be a 1-D array, got shape {arr.shape}")
    if arr.size > MAX_MOVE_ROWS:
        raise ValidationError(f"{arr.size} rows in one call; the limit is {MAX_MOVE_ROWS}")
    if arr.size == 0:
        return np.empty(0, np.int64)
    if arr.dtype.kind not in "iu":
        raise ValidationError(f"ids must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and int(arr.max()) > INT64_MAX:
        raise ValidationError("ids must fit in int64")
    out = arr.astype(np.int64, copy=False)
    if int(out.min()) < 0:
        bad = int(np.flatnonzero(out < 0)[0])
        raise ValidationError(f"ids[{bad}] = {int(out[bad])} is negative; entity ids are >= 0")
    return out


def _check_vectors(values: object, n: int, name: str) -> FloatArray:
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as e:
        raise ValidationError(f"{name} must be an ({n}, 3) array of numbers ({e})") from None
    if arr.shape != (n, 3):
        raise ValidationError(f"{name} must have shape ({n}, 3) (one row per id), got {arr.shape}")
    if n and arr.dtype.kind not in "iuf":
        raise ValidationError(f"{name} must be numbers, got dtype {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(out).all():
        bad = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
        raise ValidationError(f"{name}[{bad}] = {out[bad].tolist()} is not finite")
    return out


def _group_moves(
    moves: list[_Moves],
) -> dict[int, list[tuple[IntArray, int | IntArray, FloatArray, FloatArray | None]]]:
    """This tick's rows by region: the last row of each entity only, then one group per
    Morton code (a stable sort, no per-entity Python), split into message-sized chunks."""
    if not moves:
        return {}
    if len(moves) == 1:
        m = moves[0]
        ids, hlc, pos, vel, mor = m.ids, m.hlc, m.positions, m.velocities, m.cells
    else:
        ids = np.concatenate([m.ids for m in moves])
        pos = np.concatenate([m.positions for m in moves])
        vel = np.concatenate([m.velocities for m in moves])
        mor = np.concatenate([m.cells for m in moves])
        hl = np.concatenate(
            [
                np.full(m.ids.size, m.hlc, np.int64) if isinstance(m.hlc, int) else m.hlc
                for m in moves
            ]
        )
        # keep each entity's last row (rows are in write order, and a server's HLCs only grow)
        order = np.argsort(ids, kind="stable")
        s = ids[order]
        last = np.ones(s.size, np.bool_)
        last[:-1] = s[1:] != s[:-1]
        if not last.all():
            keep = np.sort(order[last])
            ids, pos, vel, mor, hl = ids[keep], pos[keep], vel[keep], mor[keep], hl[keep]
        hlc = int(hl[0]) if bool((hl == hl[0]).all()) else hl
    out: dict[int, list[tuple[IntArray, int | IntArray, FloatArray, FloatArray | None]]] = {}
    if bool((mor == mor[0]).all()):
        groups: list[tuple[int, npt.NDArray[np.intp] | None]] = [(int(mor[0]), None)]
    else:
        order = np.argsort(mor, kind="stable")
        sm = mor[order]
        cuts = np.flatnonzero(sm[1:] != sm[:-1]) + 1
        starts = np.concatenate(([0], cuts)).tolist()
        ends = np.concatenate((cuts, [sm.size])).tolist()
        groups = [(int(sm[a]), order[a:b]) for a, b in zip(starts, ends, strict=True)]
    for region, idx in groups:
        g_ids = ids if idx is None else ids[idx]
        g_pos = pos if idx is None else pos[idx]
        g_vel = vel if idx is None else vel[idx]
        g_hlc: int | IntArray = hlc if isinstance(hlc, int) or idx is None else hlc[idx]
        chunks = []
        for a in range(0, g_ids.size, MAX_ROWS_PER_MESSAGE):
            b = a + MAX_ROWS_PER_MESSAGE
            c_vel = g_vel[a:b]
            c_hlc = g_hlc if isinstance(g_hlc, int) else g_hlc[a:b]
            if not isinstance(c_hlc, int) and bool((c_hlc == c_hlc[0]).all()):
                c_hlc = int(c_hlc[0])
            chunks.append((g_ids[a:b], c_hlc, g_pos[a:b], c_vel if c_vel.any() else None))
        out[region] = chunks
    return out


def _covered_by(payload: bytes, newer: Batch) -> float | None:
    """The send time of the batch in ``payload`` when ``newer`` (decoded, validated, from
    the same sender on the same topic) supersedes it: the same claimed sender, no state
    section, and every one of its entity ids among ``newer``'s. Else None. Reads the header
    and the id array only (a malformed payload is simply not covered)."""
    if len(payload) < HEADER.size or peek_server_id(payload) != newer.server_id:
        return None
    magic, _, _, server_len, _, _, sent_at, n, state_len = HEADER.unpack_from(payload, 0)
    offset = HEADER.size + ((server_len + 7) & ~7)
    if magic != MAGIC or state_len or n > len(newer) or len(payload) < offset + 8 * n:
        return None
    ids = np.frombuffer(payload, "<i8", n, offset)
    if n and not bool(np.isin(ids, newer.ids, assume_unique=False).all()):
        return None
    return float(sent_at)


def _chunk_states(records: list[StateRecord]) -> list[tuple[tuple[StateRecord, ...], bytes]]:
    """A region's state records, split so that each message's JSON stays under
    `MAX_STATE_SECTION_BYTES` (a record is at most ``max_object_data_bytes`` of state)."""
    out: list[tuple[tuple[StateRecord, ...], bytes]] = []
    chunk: list[StateRecord] = []
    size = 0
    for r in records:
        cost = len(orjson.dumps(dict(r.state))) + 160
        if chunk and size + cost > MAX_STATE_SECTION_BYTES:
            out.append((tuple(chunk), encode_states(chunk)))
            chunk, size = [], 0
        chunk.append(r)
        size += cost
    if chunk:
        out.append((tuple(chunk), encode_states(chunk)))
    return out


__all__ = ["MAX_MOVE_ROWS", "MAX_ROWS_PER_MESSAGE", "EventualPath"]

"""The strong path: where each strong operation commits.

- A region this server owns: its `RegionPipeline` (one asyncio task per owned region with a
  bounded queue) gathers ops for ``Config.group_commit_window`` seconds, then commits them
  as one fenced transaction; while one batch commits the next one gathers.
- A region another live server owns: the op is forwarded to that owner over the bus
  (request/response, ``Config.forward_timeout``; safe to repeat: idempotent by op_id).
- A region nobody owns: the submitting server commits it in its own transaction.
- Inventories (not spatial): committed directly, one transaction per op.

Overflow policy: a full region queue refuses new ops at once with `Overloaded` (nothing is
applied; resubmit the same op_id later) rather than buffering without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson

from consistency import ConsistencyClass
from regions import RegionKey
from worldstate.bus import Message
from worldstate.errors import (
    BusUnavailable,
    Fenced,
    NotAuthoritative,
    Overloaded,
    RegionOwned,
    StoreUnavailable,
    ValidationError,
    WorldClosed,
    WorldStateError,
)
from worldstate.operations import ChangeInventory, Operation, TransferItems
from worldstate.protocol import _topics as topics
from worldstate.protocol._ops import decode_op, encode_op
from worldstate.protocol._rpc import Rpc
from worldstate.results import Committed, Rejected, Result
from worldstate.store.strong_commit import (
    OpOutcome,
    RegionBatch,
    commit_batches,
    commit_inventory_ops,
    commit_region_batch,
)

if TYPE_CHECKING:
    from worldstate.node import Authority, NodeContext, RegionViews, Router

log = logging.getLogger("worldstate.strong")

MAX_BATCH = 512
MAX_GROUP_OPS = 4096
MAX_REQUEST_BYTES = 256 * 1024


def to_result(out: OpOutcome) -> Result:
    op_id = uuid.UUID(out.op_id)
    if out.committed:
        return Committed(op_id, out.version or 0)
    winner = uuid.UUID(out.winner_op_id) if out.winner_op_id else None
    return Rejected(op_id, out.reason or "rejected", winner)


class RegionPipeline:
    """The single writer of one owned region."""

    def __init__(self, path: StrongPath, key: RegionKey) -> None:
        self.path = path
        self.key = key
        self.queue: deque[tuple[Operation, asyncio.Future[Result]]] = deque()
        self.wakeup = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.batches = 0
        self.ops = 0
        self.task = path.ctx.tasks.spawn(self._run(), f"ws-region-{path.ctx.server_id}-{key}")

    def submit(self, op: Operation) -> asyncio.Future[Result]:
        cfg = self.path.ctx.config
        if len(self.queue) >= cfg.region_queue_size:
            raise Overloaded(
                f"region {self.key}: {len(self.queue)} operations already queued "
                f"(Config.region_queue_size); retry later with the same op_id"
            )
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.queue.append((op, fut))
        self.idle.clear()
        self.wakeup.set()
        return fut

    async def _run(self) -> None:
        window = self.path.ctx.config.group_commit_window
        backlog = False
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            if not self.queue:
                continue
            if window > 0 and not backlog:
                await asyncio.sleep(window)  # gather; ops that piled up meanwhile need not
            batch = [self.queue.popleft() for _ in range(min(MAX_BATCH, len(self.queue)))]
            try:
                # one batch of this region in flight at a time: the region's single writer
                await self.path.commit(self, batch)
            except BaseException as e:  # cancelled by close, or a crash the supervisor reports
                self._fail(
                    batch, WorldClosed("the world closed before the commit", cause=_crash(e))
                )
                raise
            backlog = bool(self.queue)
            if backlog:
                self.wakeup.set()
            else:
                self.idle.set()

    @staticmethod
    def _fail(batch: list[tuple[Operation, asyncio.Future[Result]]], err: Exception) -> None:
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(err)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.wait([self.task])  # a crash of it is the supervisor's to report
        while self.queue:
            _, fut = self.queue.popleft()
            if not fut.done():
                fut.set_exception(WorldClosed("the world closed before the commit"))


class StrongPath:
    def __init__(
        self, ctx: NodeContext, authority: Authority, router: Router, views: RegionViews
    ) -> None:
        self.ctx = ctx
        self.authority = authority
        self.router = router
        self.views = views
        self.pipelines: dict[RegionKey, RegionPipeline] = {}
        self._ready: deque[
            tuple[
                RegionPipeline, list[tuple[Operation, asyncio.Future[Result]]], asyncio.Future[None]
            ]
        ] = deque()
        self._ready_event = asyncio.Event()
        self._committers: list[asyncio.Task[None]] = []
        """Config.max_concurrent_commits tasks, each running one group transaction at a
        time: batches grow while they wait instead of transactions fighting (on
        PostgreSQL, whose serializable mode tracks reads by index page, concurrent commits
        into a small table abort each other far more often than on CockroachDB)."""
        self.group_commits = 0
        self.rpc = Rpc(ctx.bus)
        self._owner_cache: dict[RegionKey, tuple[str | None, float]] = {}
        self.forwarded = 0
        self.served_forwards = 0
        self.dropped_requests = 0
        self.direct_commits = 0

    async def commit(
        self, pipeline: RegionPipeline, batch: list[tuple[Operation, asyncio.Future[Result]]]
    ) -> None:
        """Queue a region's batch for the next group transaction and wait until it is
        done (its futures resolved). Batches of all owned regions that are ready while a
        transaction runs go into the next one together."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ready.append((pipeline, batch, done))
        self._ready_event.set()
        await done

    async def _committer(self) -> None:
        window = self.ctx.config.group_commit_window
        while True:
            await self._ready_event.wait()
            if window > 0:
                await asyncio.sleep(window)  # let the other regions' batches join this group
            self._ready_event.clear()
            while self._ready:
                group = []
                n = 0
                while self._ready and n < MAX_GROUP_OPS:
                    item = self._ready.popleft()
                    group.append(item)
                    n += len(item[1])
                try:
                    await self._commit_group(group)
                except BaseException as e:  # cancelled by close, or a crash the supervisor reports
                    closed = WorldClosed(
                        "the world closed before the commit finished", cause=_crash(e)
                    )
                    for _, batch, _ in group:
                        RegionPipeline._fail(batch, closed)
                    raise
                finally:
                    for _, _, done in group:
                        if not done.done():
                            done.set_result(None)

    async def _commit_group(
        self,
        group: list[
            tuple[
                RegionPipeline, list[tuple[Operation, asyncio.Future[Result]]], asyncio.Future[None]
            ]
        ],
    ) -> None:
        ctx = self.ctx
        live = [(pipeline, batch, 0) for pipeline, batch, _ in group]
        while live:
            # (again) before every attempt: a retry after a fenced region must not go out
            # once this server has been demoted meanwhile
            checked = []
            for pipeline, batch, _ in live:
                try:
                    lease = self.authority.lease_of(pipeline.key)
                except NotAuthoritative as e:
                    RegionPipeline._fail(batch, e)
                    continue
                checked.append((pipeline, batch, lease.epoch))
            live = checked
            if not live:
                break
            batches = [RegionBatch(p.key, [op for op, _ in b], epoch) for p, b, epoch in live]
            try:
                outcomes = await ctx.store.run(
                    lambda c, batches=batches: commit_batches(  # type: ignore[misc]
                        c,
                        batches,
                        writer=ctx.server_id,
                        policy=ctx.policy,
                        now=ctx.clock(),
                        region_size=ctx.config.region_size,
                    ),
                    f"commit {sum(len(b.ops) for b in batches)} ops in {len(batches)} region(s)",
                )
            except (Fenced, RegionOwned) as e:
                self.authority.lost(e.key, str(e))
                err = NotAuthoritative(
                    f"{ctx.server_id} lost region {e.key} ({e}); the ops were not applied "
                    "— resubmit them (same op_ids)",
                    key=e.key,
                )
                for p, b, _ in live:
                    if p.key == e.key:
                        RegionPipeline._fail(b, err)
                live = [item for item in live if item[0].key != e.key]
                continue  # commit the other regions' batches without the fenced one
            except WorldStateError as e:
                for _, b, _ in live:
                    RegionPipeline._fail(b, e)
                return
            self.group_commits += 1
            for p, b, _ in live:
                p.batches += 1
                p.ops += len(b)
                for op, fut in b:
                    if not fut.done():
                        fut.set_result(to_result(outcomes[str(op.op_id)]))
            changed: dict[RegionKey, int] = {}
            for p, b, _ in live:
                for op, _ in b:
                    o = outcomes[str(op.op_id)]
                    if o.committed and o.version:
                        changed[p.key] = max(changed.get(p.key, 0), o.version)
            for key, version in changed.items():
                await self.after_commit(key, version)
            return

    async def start(self) -> None:
        me = self.ctx.server_id
        for i in range(self.ctx.config.max_concurrent_commits):
            self._committers.append(
                self.ctx.tasks.spawn(self._committer(), f"ws-committer-{me}-{i}")
            )
        bus = self.ctx.bus
        bus.subscribe(topics.of(topics.OPS, me), self._on_request)
        bus.subscribe(topics.of(topics.REPLIES, me), self.rpc.on_reply)

    async def close(self) -> None:
        for p in list(self.pipelines.values()):
            await p.close()
        for t in self._committers:
            t.cancel()
        if self._committers:
            await asyncio.wait(self._committers)  # a crash of one is the supervisor's to report
        for _, batch, done in self._ready:
            RegionPipeline._fail(batch, WorldClosed("the world closed before the commit"))
            if not done.done():
                done.set_result(None)
        self.pipelines.clear()
        self.rpc.fail_all("the world closed while waiting for an owner")

    def pipeline(self, key: RegionKey) -> RegionPipeline:
        p = self.pipelines.get(key)
        if p is None:
            p = self.pipelines[key] = RegionPipeline(self, key)
        return p

    async def drop_pipeline(self, key: RegionKey) -> None:
        p = self.pipelines.pop(key, None)
        if p is not None:
            await p.idle.wait()  # queued ops commit while the lease is still held
            await p.close()

    # -- routing ---------------------------------------------------------------------------

    async def submit(self, op: Operation, key: RegionKey | None) -> Result:
        if key is None:
            assert isinstance(op, (ChangeInventory, TransferItems))
            return await self.commit_inventory([op])
        for _attempt in range(3):
            if self.authority.holds(key):
                return await self.pipeline(key).submit(op)
            owner = await self._owner(key)
            if owner is not None and owner != self.ctx.server_id:
                try:
                    return await self._forward(owner, op)
                except _NotOwner:
                    self._owner_cache.pop(key, None)
                    continue
            try:
                return await self._commit_direct(key, op)
            except RegionOwned as e:
                self._owner_cache[key] = (e.owner, e.expires_at)
                continue
        raise NotAuthoritative(
            f"region {key}: ownership kept moving while routing op {op.op_id}; retry it",
            key=key,
        )

    def _require_authority(self, key: RegionKey | None) -> None:
        """No strong write leaves a demoted server, whatever path it takes (the standing
        may have changed while the op was being routed)."""
        if not self.authority.authoritative:
            raise NotAuthoritative(
                f"{self.ctx.server_id} is on the minority side of a partition: strong "
                "operations are refused until it rejoins",
                key=key,
            )

    async def commit_inventory(self, ops: list[ChangeInventory | TransferItems]) -> Result:
        ctx = self.ctx
        self._require_authority(None)
        outs = await ctx.store.run(
            lambda c: commit_inventory_ops(c, ops, now=ctx.clock()),
            f"commit {ops[0].op_type} {ops[0].op_id}",
        )
        return to_result(outs[0])

    async def _commit_direct(self, key: RegionKey, op: Operation) -> Result:
        ctx = self.ctx
        self._require_authority(key)
        outs = await ctx.store.run(
            lambda c: commit_region_batch(
                c,
                key,
                [op],
                epoch=None,
                writer=ctx.server_id,
                policy=ctx.policy,
                now=ctx.clock(),
                region_size=ctx.config.region_size,
            ),
            f"commit {op.op_type} {op.op_id} in unowned region {key}",
        )
        self.direct_commits += 1
        if outs[0].committed and outs[0].version:
            await self.after_commit(key, outs[0].version)
        return to_result(outs[0])

    async def _owner(self, key: RegionKey) -> str | None:
        now = self.ctx.clock()
        hit = self._owner_cache.get(key)
        if hit is not None and (hit[1] > now):
            return hit[0]
        lease = await self.ctx.store.lease(key)
        if lease is not None and lease.live(now):
            self._owner_cache[key] = (lease.owner, lease.expires_at)
            return lease.owner
        self._owner_cache[key] = (None, now + 0.25)  # the world's clock: deterministic in sims
        return None

    async def after_commit(self, key: RegionKey, version: int) -> None:
        """Tell caches and other servers the region changed."""
        ctx = self.ctx
        await ctx.cache.mark_newer(key.morton, version)  # older snapshots are refused
        self.views.mark_stale(key)
        with contextlib.suppress(WorldStateError):
            await ctx.bus.publish(
                topics.of(topics.NOTICES, key.morton),
                orjson.dumps({"v": version, "s": ctx.server_id}),
                qos=0,
            )

    # -- forwarding ------------------------------------------------------------------------

    async def _forward(self, owner: str, op: Operation) -> Result:
        ctx = self.ctx
        request = {"from": ctx.server_id, "op": orjson.Fragment(encode_op(op))}
        try:
            reply = await self.rpc.call(
                topics.of(topics.OPS, owner), request, ctx.config.forward_timeout
            )
        except TimeoutError:
            raise BusUnavailable(
                f"owner {owner!r} did not answer op {op.op_id} within "
                f"{ctx.config.forward_timeout}s; it may or may not have applied — resubmit "
                "the same op_id"
            ) from None
        self.forwarded += 1
        kind = reply.get("k")
        if kind == "committed":
            return Committed(op.op_id, int(reply.get("v") or 0))
        if kind == "rejected":
            w = reply.get("w")
            return Rejected(
                op.op_id,
                str(reply.get("reason", "rejected")),
                uuid.UUID(w) if isinstance(w, str) else None,
            )
        if kind == "not-owner":
            raise _NotOwner
        if kind == "invalid":  # the owner's rules refuse it (its Config differs from ours)
            raise ValidationError(
                f"region owner {owner!r} refused op {op.op_id}: {reply.get('error')}"
            )
        raise NotAuthoritative(f"owner {owner!r} refused op {op.op_id}: {reply.get('error')}")

    def _on_request(self, msg: Message) -> None:
        if len(msg.payload) > MAX_REQUEST_BYTES:
            self.dropped_requests += 1
            return
        try:
            doc = orjson.loads(msg.payload)
            req, sender = doc["r"], doc["from"]
            if not (isinstance(req, str) and len(req) == 32 and isinstance(sender, str)):
                raise ValidationError("bad request header")
            from worldstate._validation import check_id

            check_id(sender, "sender")
            if msg.sender is not None and msg.sender != sender:
                raise ValidationError(f"signed by {msg.sender!r} in the name of {sender!r}")
            op = decode_op(orjson.dumps(doc["op"]), self.router.op_types)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValidationError) as e:
            self.dropped_requests += 1
            log.debug("dropped a malformed forwarded op: %s", e)
            return
        self.ctx.tasks.spawn(self._serve(req, sender, op), f"ws-serve-op-{op.op_id}", job=True)

    async def _serve(self, req: str, sender: str, op: Operation) -> None:
        ctx = self.ctx
        reply: dict[str, Any]
        try:  # a forwarded op passes the same rules as a local submit
            _, cls, key = self.router.check_received(op)
            if cls is not ConsistencyClass.STRONG:
                raise ValidationError(f"{op.op_type} is not routed STRONG on this server")
        except ValidationError as e:
            self.dropped_requests += 1
            reply = {"r": req, "k": "invalid", "error": str(e)[:500]}
            with contextlib.suppress(WorldStateError):
                await ctx.bus.publish(topics.of(topics.REPLIES, sender), orjson.dumps(reply), qos=1)
            return
        if key is None or not self.authority.holds(key):
            reply = {"r": req, "k": "not-owner"}
        else:
            try:
                res = await self.pipeline(key).submit(op)
                self.served_forwards += 1
                if isinstance(res, Committed):
                    reply = {"r": req, "k": "committed", "v": res.version}
                else:
                    assert isinstance(res, Rejected)
                    reply = {
                        "r": req,
                        "k": "rejected",
                        "reason": res.reason,
                        "w": str(res.winner_op_id) if res.winner_op_id else None,
                    }
            except NotAuthoritative:
                reply = {"r": req, "k": "not-owner"}
            except (WorldStateError, StoreUnavailable) as e:
                reply = {"r": req, "k": "error", "error": str(e)[:500]}
        with contextlib.suppress(WorldStateError):
            await ctx.bus.publish(topics.of(topics.REPLIES, sender), orjson.dumps(reply), qos=1)


def _crash(e: BaseException) -> BaseException | None:
    """The cause to report for an interrupted commit: None when it was cancelled."""
    return None if isinstance(e, asyncio.CancelledError) else e


class _NotOwner(Exception):
    pass

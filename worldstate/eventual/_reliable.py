"""Acknowledged delivery for eventual operation types registered ``at-least-once`` or
``effectively-once`` (`World.register_operation(..., delivery=...)`).

The eventual path's tick batches are fire-and-forget (QoS 0: ``at-most-once``). An op of a
type registered with a stronger delivery skips the batch and travels on its own, signed
with the world's key (as causal messages are):

- The sender publishes it on ``rel/<sender>/all`` (QoS 1) and keeps it in an outbox with the
  servers it must reach: the others it hears now (its membership view).
- A receiver validates it whole (signature, structure, the op as a local submit checks it,
  the type routed EVENTUAL here), acknowledges it on ``relack/<sender>`` and applies it
  through the normal last-writer-wins merge.
- The sender re-publishes to each server that has not acknowledged
  (``rel/<sender>/to/<receiver>``), with capped exponential backoff, until all have — or
  have left its view, or `GIVE_UP` seconds passed (counted as ``expired``: the outbox lives
  in memory, so a sender that crashes takes its unacknowledged ops with it).

``at-least-once``: every copy that arrives is applied and handed to the update streams, so a
receiver may see an op twice (a redelivery after a lost ack, a duplicate on the wire);
state stays right because a copy carries the op's own HLC (last-writer-wins never lets it
override a newer write). ``effectively-once``: the same, plus deduplication by ``op_id``
over the last `SEEN_WINDOW` ops: each op reaches the update streams once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from worldstate.bus import Bus, Message, Subscription
from worldstate.errors import Overloaded, ValidationError, WorldStateError
from worldstate.node._routing import (
    AT_LEAST_ONCE,
    AT_MOST_ONCE,
    DELIVERIES,
    EFFECTIVELY_ONCE,
    RELIABLE,
    check_delivery,
)
from worldstate.node._tasks import Supervisor
from worldstate.operations import Operation
from worldstate.protocol import _causal as signing
from worldstate.protocol import _topics as topics
from worldstate.protocol._ops import encode_op, op_from_dict

log = logging.getLogger("worldstate.eventual")

TOPIC = topics.RELIABLE
ACK_TOPIC = topics.RELIABLE_ACKS
RETRY_MIN, RETRY_MAX = 0.1, 2.0
"""Seconds before the first redelivery, and the cap of the backoff."""
GIVE_UP = 60.0
MAX_OUTBOX = 50_000
SEEN_WINDOW = 100_000
MAX_MESSAGE_BYTES = 256 * 1024
WIRE_VERSION = 1

Check = Callable[[Operation], object]
"""Validates a received op as a local submit would (raises `ValidationError`); returns its
region."""
Apply = Callable[[Operation, Any, str, bool], None]
"""Applies a received op (op, its region, its sender, whether it is a duplicate copy)."""


@dataclass(slots=True)
class _Pending:
    op_id: str
    document: bytes
    targets: set[str]
    acked: set[str] = field(default_factory=set)
    sent_at: float = 0.0
    next_at: float = 0.0
    attempts: int = 1


class ReliableChannel:
    """One server's sender outbox and receiver for acknowledged eventual ops."""

    def __init__(
        self,
        *,
        bus: Bus,
        server_id: str,
        key: Callable[[], bytes],
        peers: Callable[[], Iterable[str]],
        types: Mapping[str, type[Operation]],
        delivery_of: Callable[[type[Operation]], str],
        check: Check,
        apply: Apply,
        tasks: Supervisor,
    ) -> None:
        self.bus, self.me = bus, server_id
        self._supervisor = tasks
        self._key, self._peers, self._types = key, peers, types
        self._delivery_of, self._check, self._apply = delivery_of, check, apply
        self._outbox: dict[str, _Pending] = {}
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._subs: list[Subscription] = []
        self._loop_task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self.counts: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.retry_min = RETRY_MIN

    async def start(self) -> None:
        me = self.me
        self._subs = [
            self.bus.subscribe(f"{TOPIC}/+/all", self._on_op),
            self.bus.subscribe(f"{TOPIC}/+/to/{me}", self._on_op),
            self.bus.subscribe(f"{ACK_TOPIC}/{me}", self._on_ack),
        ]
        for sub in self._subs:
            with contextlib.suppress(WorldStateError):
                await sub.wait_active(timeout=5.0)
        self._loop_task = self._supervisor.spawn(self._retry_loop(), f"ws-reliable-{me}")

    async def close(self) -> None:
        """Stop receiving and redelivering (the supervisor owns and reaps the tasks)."""
        for sub in self._subs:
            sub.cancel()
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- sending ---------------------------------------------------------------------------

    def check_room(self) -> None:
        if len(self._outbox) >= MAX_OUTBOX:
            raise Overloaded(
                f"{len(self._outbox)} acknowledged eventual ops await their acks; retry later "
                "with the same op_id"
            )

    def send(self, op: Operation) -> None:
        """Publish ``op`` and keep it until every peer acknowledges (module docstring)."""
        oid = str(op.op_id)
        if oid in self._outbox:
            return
        targets = set(self._peers()) - {self.me}
        doc = orjson.dumps({"v": WIRE_VERSION, "o": self.me, "op": orjson.Fragment(encode_op(op))})
        now = asyncio.get_running_loop().time()
        self.counts["sent"] += 1
        if targets:
            self._outbox[oid] = _Pending(
                oid, doc, targets, sent_at=now, next_at=now + self.retry_min
            )
            self._wakeup.set()
        self._publish(f"{TOPIC}/{self.me}/all", doc)

    def _publish(self, topic: str, document: bytes) -> None:
        payload = signing.sign(self._key(), topic, document)
        with contextlib.suppress(RuntimeError):  # closing: redelivery is over anyway
            self._supervisor.spawn(
                self._publish_now(topic, payload), f"ws-rel-pub-{self.me}", job=True
            )

    async def _publish_now(self, topic: str, payload: bytes) -> None:
        try:
            async with asyncio.timeout(5.0):
                await self.bus.publish(topic, payload, qos=1)
        except (WorldStateError, TimeoutError) as e:
            self.counts["publish_failures"] += 1  # redelivery will try again
            log.debug("publishing on %s failed: %s", topic, e)

    async def _retry_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._outbox:
                self._wakeup.clear()
                await self._wakeup.wait()
            await asyncio.sleep(self.retry_min / 2)
            now = loop.time()
            peers = set(self._peers())
            for oid, p in list(self._outbox.items()):
                missing = (p.targets & peers) - p.acked
                if not missing:
                    del self._outbox[oid]
                    self.counts["completed"] += 1
                    continue
                if now - p.sent_at > GIVE_UP:
                    del self._outbox[oid]
                    self.counts["expired"] += 1
                    log.warning("op %s: %s never acknowledged; given up", oid, sorted(missing))
                    continue
                if now < p.next_at:
                    continue
                p.attempts += 1
                p.next_at = now + min(RETRY_MAX, self.retry_min * 2 ** (p.attempts - 1))
                for r in sorted(missing):
                    self.counts["redelivered"] += 1
                    self._publish(f"{TOPIC}/{self.me}/to/{r}", p.document)

    def _on_ack(self, msg: Message) -> None:
        try:
            doc = orjson.loads(signing.verify(self._key(), msg.topic, msg.payload))
            sender, ids = doc["from"], doc["ids"]
            if not isinstance(sender, str) or not isinstance(ids, list):
                raise ValueError("bad ack")
        except (WorldStateError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            self.dropped["ack"] += 1
            return
        if msg.sender is not None and msg.sender != sender:
            self.dropped["forged"] += 1
            return
        for oid in ids:
            p = self._outbox.get(oid) if isinstance(oid, str) else None
            if p is not None:
                p.acked.add(sender)
                self.counts["acks"] += 1

    # -- receiving -------------------------------------------------------------------------

    def _on_op(self, msg: Message) -> None:
        parts = msg.topic.split("/")
        sender = parts[1] if len(parts) >= 3 else ""
        if sender == self.me:
            return  # our own echo
        if msg.sender is not None and msg.sender != sender:
            self.dropped["forged"] += 1  # a signed bus names the signer: it must be the sender
            return
        try:
            if len(msg.payload) > MAX_MESSAGE_BYTES:
                raise ValidationError("message too large")
            doc = orjson.loads(signing.verify(self._key(), msg.topic, msg.payload))
            if not isinstance(doc, dict) or doc.get("v") != WIRE_VERSION or doc.get("o") != sender:
                raise ValidationError("bad envelope")
            op = op_from_dict(doc["op"], self._types)
            if op.server_id != sender:
                raise ValidationError("op of another server")
            mode = self._delivery_of(type(op))
            if mode not in RELIABLE:
                raise ValidationError(f"{op.op_type} is {mode} here")
            region = self._check(op)
        except signing.WireError:
            self.dropped["auth"] += 1
            return
        except (ValidationError, ValueError, KeyError, TypeError, orjson.JSONDecodeError) as e:
            self.dropped["invalid"] += 1
            log.debug("dropped an acknowledged eventual op: %s", e)
            return
        oid = str(op.op_id)
        ack = orjson.dumps({"from": self.me, "ids": [oid]})
        self._publish(f"{ACK_TOPIC}/{sender}", ack)
        duplicate = oid in self._seen
        if not duplicate:
            self._seen[oid] = None
            if len(self._seen) > SEEN_WINDOW:
                self._seen.popitem(last=False)
        self.counts["received"] += 1
        if duplicate:
            self.counts["duplicates"] += 1
            if mode == EFFECTIVELY_ONCE:
                return
        self._apply(op, region, sender, duplicate)

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "outbox": len(self._outbox), "dropped": dict(self.dropped)}


__all__ = [
    "AT_LEAST_ONCE",
    "AT_MOST_ONCE",
    "DELIVERIES",
    "EFFECTIVELY_ONCE",
    "RELIABLE",
    "ReliableChannel",
    "check_delivery",
]

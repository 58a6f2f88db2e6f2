"""Forwarding strong ops to the server that owns their region or inventory shard, over the
bus (request/response on ``ops/<owner>`` and ``replies/<sender>``, within
``Config.forward_timeout``; safe to repeat: idempotent by op_id)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from worldstate._validation import check_id
from worldstate.bus import Bus, Message
from worldstate.errors import (
    BusUnavailable,
    NotAuthoritative,
    ValidationError,
    WorldStateError,
)
from worldstate.operations import Operation
from worldstate.protocol import _topics as topics
from worldstate.protocol._ops import decode_op, encode_op
from worldstate.protocol._rpc import Rpc
from worldstate.results import Committed, Rejected, Result

log = logging.getLogger("worldstate.strong")

__all__ = ["Forwarder", "NotOwner"]

MAX_REQUEST_BYTES = 256 * 1024


class NotOwner(Exception):
    """The server asked does not own the op's region or shard (any more)."""


Serve = Callable[[Operation], Awaitable[Result | None]]
"""Run a forwarded op if this server owns it; None when it does not."""
Spawn = Callable[..., "asyncio.Task[Any]"]
"""The supervisor's ``spawn(coro, name, job=...)``."""


class Forwarder:
    def __init__(
        self,
        *,
        bus: Bus,
        spawn: Spawn,
        server_id: str,
        timeout: float,
        op_types: Mapping[str, type[Operation]],
        serve: Serve,
    ) -> None:
        self.bus = bus
        self.spawn = spawn
        self.rpc = Rpc(bus)
        self.server_id = server_id
        self.timeout = timeout
        self.op_types = op_types
        self._serve_op = serve
        self.forwarded = 0
        self.served = 0
        self.dropped = 0

    def start(self) -> None:
        self.bus.subscribe(topics.of(topics.OPS, self.server_id), self._on_request)
        self.bus.subscribe(topics.of(topics.REPLIES, self.server_id), self.rpc.on_reply)

    async def close(self) -> None:
        self.rpc.fail_all("the world closed while waiting for an owner")

    async def forward(self, owner: str, op: Operation) -> Result:
        cls = type(op)
        if self.op_types.get(cls.__name__) is not cls:
            raise ValidationError(
                f"{cls.__name__} is not a registered operation type, so {owner!r} (the owner "
                f"of its region) cannot decode op {op.op_id}: call world.register_operation() "
                "for it on every server first"
            )
        request = {"from": self.server_id, "op": orjson.Fragment(encode_op(op))}
        try:
            reply = await self.rpc.call(topics.of(topics.OPS, owner), request, self.timeout)
        except TimeoutError:
            raise BusUnavailable(
                f"owner {owner!r} did not answer op {op.op_id} within {self.timeout}s; it may "
                "or may not have applied — resubmit the same op_id"
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
            raise NotOwner
        if kind == "invalid":
            raise ValidationError(str(reply.get("error", "refused by the owner"))[:500])
        raise NotAuthoritative(f"owner {owner!r} refused op {op.op_id}: {reply.get('error')}")

    def _on_request(self, msg: Message) -> None:
        if len(msg.payload) > MAX_REQUEST_BYTES:
            self.dropped += 1
            return
        try:
            doc = orjson.loads(msg.payload)
            req, sender = doc["r"], doc["from"]
            if not (isinstance(req, str) and len(req) == 32 and isinstance(sender, str)):
                raise ValidationError("bad request header")
            check_id(sender, "sender")
            if msg.sender is not None and msg.sender != sender:  # a signed bus names it
                raise ValidationError(f"signed by {msg.sender!r} in the name of {sender!r}")
            op = decode_op(orjson.dumps(doc["op"]), self.op_types)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValidationError) as e:
            self.dropped += 1
            log.debug("dropped a malformed forwarded op: %s", e)
            return
        self.spawn(self._serve(req, sender, op), f"ws-serve-op-{op.op_id}", job=True)

    async def _serve(self, req: str, sender: str, op: Operation) -> None:
        reply: dict[str, Any]
        try:
            res = await self._serve_op(op)
            if res is None:
                reply = {"r": req, "k": "not-owner"}
            elif isinstance(res, Committed):
                self.served += 1
                reply = {"r": req, "k": "committed", "v": res.version}
            else:
                assert isinstance(res, Rejected)
                self.served += 1
                reply = {
                    "r": req,
                    "k": "rejected",
                    "reason": res.reason,
                    "w": str(res.winner_op_id) if res.winner_op_id else None,
                }
        except NotAuthoritative:
            reply = {"r": req, "k": "not-owner"}
        except ValidationError as e:  # refused by the same rules as a local submit
            self.dropped += 1
            reply = {"r": req, "k": "invalid", "error": str(e)[:500]}
        except TimeoutError:
            reply = {"r": req, "k": "error", "error": "no outcome within the owner's deadline"}
        except WorldStateError as e:
            reply = {"r": req, "k": "error", "error": str(e)[:500]}
        with contextlib.suppress(WorldStateError):
            await self.bus.publish(topics.of(topics.REPLIES, sender), orjson.dumps(reply), qos=1)
